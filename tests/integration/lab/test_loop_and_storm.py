"""A notification loop across the nodes stops at the TTL; a storm of fires
coalesces into a few runs, and the last fire is still followed by a run."""

from __future__ import annotations

import json
import time

import pytest

from lab.base import MANIFESTS
from tests.integration.lab import checks
from trigger.layout import Layout

pytestmark = [pytest.mark.root, pytest.mark.etcd, pytest.mark.tsp, pytest.mark.puppet, pytest.mark.slow]

TTL = 3
NEXT = {"node1": "node2", "node2": "node3", "node3": "node1"}
LOOP_MANIFEST = f"{MANIFESTS}/50-loop.pp"


def loop_manifest(next_node: str) -> str:
    # A notify always changes, so every run of this node fires the next one.
    return f"""\
notify {{ 'trigger lab: loop to {next_node}': }}
~> trigger {{ 'lab loop': hosts => ['{next_node}'], ttl => {TTL} }}
"""


def refusals(lab, host, since: float) -> list[dict]:
    prefix = Layout().refused_key("")
    out = host.check_output(checks.etcdctl(lab.endpoints("node1"), f"get --prefix --print-value-only {prefix}"))
    found = []
    for line in out.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("refused_at", 0) > since:
            found.append(record)
    return found


def test_a_loop_across_the_nodes_stops_at_the_ttl(lab, hosts, settled):
    for node, next_node in NEXT.items():
        lab.put(node, LOOP_MANIFEST, loop_manifest(next_node))
    try:
        started = checks.fire(hosts["node3"], "lab loop", ["node1"], lab.endpoints("node3"), ttl=TTL)
        # hop 1 on node1 (fired by node3), 2 on node2, 3 on node3; node3's fire would be hop 4
        refused = checks.wait_until(lambda: refusals(lab, hosts["node1"], started), 90,
                                    "the loop was never refused")
        assert len(refused) == 1
        assert refused[0]["hop"] == TTL + 1 and refused[0]["chain"] == ["node3", "node1", "node2", "node3"]
        checks.wait_until(lambda: all(checks.idle(h) for h in hosts.values()), 60, "runs still going")
        time.sleep(3)  # a run the loop should not have made would show up by now
        trace = sorted((run.start, node, run.hop, run.chain)
                       for node, host in hosts.items() for run in checks.runs_since(host, started))
        assert [(node, hop, chain) for _, node, hop, chain in trace] == [
            ("node1", 1, ("node3",)),
            ("node2", 2, ("node3", "node1")),
            ("node3", 3, ("node3", "node1", "node2")),
        ]
    finally:
        for node in NEXT:
            lab.remove(node, LOOP_MANIFEST)


def test_a_storm_of_fires_coalesces_and_the_last_fire_gets_a_run(lab, hosts, settled):
    fires = 30
    targets = ["node1", "node2"]
    node3 = hosts["node3"]
    started = checks.now(node3)
    endpoints = ",".join(lab.endpoints("node3"))
    # All at once, as many notifications in one Puppet run (or many runs) would.
    out = node3.run(
        f"for i in $(seq {fires}); do trigger fire --hosts {','.join(targets)} --endpoints {endpoints} "
        f"-- storm-$i >/dev/null & done; wait; date +%s.%N")
    assert out.rc == 0, out.stderr
    last_fire = float(out.stdout.split()[-1])
    checks.assert_followed_by_runs(hosts, targets, last_fire, timeout=90)
    checks.wait_until(lambda: all(checks.idle(hosts[n]) for n in targets), 60, "runs still going")
    for node in targets:
        made = checks.runs_since(hosts[node], started)
        # Fires landing while a run is queued join it; those landing while one
        # runs cause one more. Never a run per fire.
        assert 1 <= len(made) <= fires // 5, f"{node}: {len(made)} runs for {fires} fires"
    assert checks.runs_since(node3, started) == []
