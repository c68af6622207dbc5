"""The seed's demo: on the third node, `puppet apply` of the module's example
(examples/etcd-test.pp, the seed's tests/etcd-test.pp) with
hosts => [node1, node2]; a Puppet run is queued and executed in
task-spooler on node1 and node2, and not on node3."""

from __future__ import annotations

import re
import time

import pytest

from lab.base import REPO
from tests.integration.lab import checks

pytestmark = [pytest.mark.root, pytest.mark.etcd, pytest.mark.tsp, pytest.mark.puppet, pytest.mark.slow]

EXAMPLE = REPO / "puppet" / "trigger" / "examples" / "etcd-test.pp"


def seed_example(hosts: list[str]) -> str:
    text = EXAMPLE.read_text()
    replaced, count = re.subn(r"hosts\s*=>\s*\[[^\]]*\]",
                              "hosts    => [" + ", ".join(f"'{h}'" for h in hosts) + "]", text)
    assert count == 1, f"{EXAMPLE} should declare one trigger with hosts => [...]"
    return replaced


def test_seed_demo_runs_puppet_on_node1_and_node2_only(lab, hosts, settled):
    node3 = hosts["node3"]
    lab.put("node3", "/root/etcd-test.pp", seed_example(["node1", "node2"]))
    node3.run_test("rm -f /tmp/foo")  # the example's exec fires only while /tmp/foo is missing
    jobs_before = {node: len(checks.tsp_jobs(host)) for node, host in hosts.items()}
    started = checks.now(node3)

    applied = node3.run("puppet apply --color=false /root/etcd-test.pp")
    assert applied.rc == 0, applied.stderr
    assert "Trigger[refresh load balancers]" in applied.stdout  # the exec notified it

    found = checks.assert_followed_by_runs(hosts, ["node1", "node2"], started)
    for node, run in found.items():
        assert (run.hop, run.chain) == (1, ("node3",)), f"{node}: {run}"
        new_jobs = checks.tsp_jobs(hosts[node])[jobs_before[node]:]
        assert [job.run_id for job in new_jobs] == [run.run_id], f"{node}: tsp jobs {new_jobs}"

    time.sleep(3)  # what would reach node3 has had time to
    assert checks.runs_since(node3, started) == []
    assert len(checks.tsp_jobs(node3)) == jobs_before["node3"]

    # Applied again, the exec has nothing to do: nothing notifies the trigger.
    again = node3.run("puppet apply --color=false /root/etcd-test.pp")
    assert again.rc == 0 and "Trigger[" not in again.stdout, again.stdout
