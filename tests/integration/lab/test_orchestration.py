"""Issue 7 on the lab's nodes: a serial rolling refresh never runs two
hosts at once, --wait reports each host's result, a stopped lock holder
loses its election when its lease ends, and role:NAME follows the live
watchers. Roles and elections are files in /etc/trigger, as the module's
trigger::role and trigger::election write them."""

from __future__ import annotations

import base64
import json
import shlex

import pytest

from lab.base import MANIFESTS
from tests.integration.lab import checks
from trigger.layout import Layout

pytestmark = [pytest.mark.root, pytest.mark.etcd, pytest.mark.tsp, pytest.mark.puppet, pytest.mark.slow]

CONFIG_DIR = "/etc/trigger"
MEMBER_TTL = 10  # the watcher's default


def trigger(lab, host, node: str, *args: str):
    argv = ["trigger", *args, "--endpoints", ",".join(lab.endpoints(node))]
    return host.run(shlex.join(argv))


def run_records(lab, host, node: str) -> list[dict]:
    """The node's run records, active and finished (trigger.results.list_runs's two places)."""
    records = []
    for prefix in (Layout().runs_prefix(node), Layout().done_prefix(node)):
        out = host.check_output(checks.etcdctl(lab.endpoints(node), f"get --prefix --print-value-only {prefix}"))
        records += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return records


def revision(lab, host, node: str) -> int:
    out = host.check_output(checks.etcdctl(lab.endpoints(node), "get / -w json"))
    return int(json.loads(out)["header"]["revision"])


def started_at_revision(lab, host, node: str, run_id: str, since: int) -> int:
    """The etcd revision at which the run's record said 'started': etcd's one order of
    events, where the VMs' clocks (minutes apart under emulation, no NTP) have none."""
    key = Layout().run_key(node, run_id)
    out = host.run("timeout 5 env " + checks.etcdctl(lab.endpoints(node),
                                                     f"watch --rev {since} -w json {shlex.quote(key)}")).stdout
    for line in out.splitlines():
        for event in json.loads(line).get("Events") or []:
            kv = event["kv"]
            if event.get("type", 0) == 0 and json.loads(base64.b64decode(kv["value"]))["state"] == "started":
                return int(kv["mod_revision"])
    raise AssertionError(f"{node}: no 'started' in the history of {key} since revision {since}")


def finished_at_revision(lab, host, node: str, run_id: str) -> int:
    """The revision of the run's finish: its record's creation under P/done/."""
    out = host.check_output(checks.etcdctl(lab.endpoints(node),
                                           f"get -w json {shlex.quote(Layout().done_key(node, run_id))}"))
    return int(json.loads(out)["kvs"][0]["create_revision"])


def test_a_serial_rolling_refresh_never_runs_both_hosts_at_once(lab, hosts, settled):
    since = revision(lab, hosts["node3"], "node3")
    out = trigger(lab, hosts["node3"], "node3", "fire", "lab rolling", "--hosts", "node1,node2",
                  "--serial", "--wait", "--timeout", str(int(120 * checks.TIME_SCALE)))
    assert out.rc == 0, out.stdout + out.stderr
    event_id = out.stdout.split()[0]
    spans = []
    for node in ("node1", "node2"):
        (run,) = [r for r in run_records(lab, hosts[node], node) if event_id in r["served"]]
        assert run["state"] == "finished" and run["limits"] == [["lab rolling", 1]]
        spans.append((started_at_revision(lab, hosts[node], node, run["run_id"], since),
                      finished_at_revision(lab, hosts[node], node, run["run_id"]), node))
    first, second = sorted(spans)
    assert first[1] < second[0], f"both ran at once (etcd revisions): {spans}"


def test_wait_reports_a_failing_host(lab, hosts, settled):
    failing = f"{MANIFESTS}/60-fail.pp"
    lab.put("node2", failing, "fail('trigger lab: this run fails on purpose')\n")
    try:
        out = trigger(lab, hosts["node3"], "node3", "fire", "lab wait", "--hosts", "node1,node2",
                      "--wait", "--timeout", str(int(120 * checks.TIME_SCALE)))
        assert out.rc == 4, out.stdout + out.stderr
        rows = {line.split("\t")[0]: line for line in out.stdout.splitlines() if "\t" in line}  # plain rows
        assert "ok" in rows["node1"] and "failed" in rows["node2"]
    finally:
        lab.remove("node2", failing)


def test_a_stopped_lock_holder_loses_the_lock_when_its_lease_ends(lab, hosts, settled):
    election = f"{CONFIG_DIR}/elections/lab-db"
    leader = lambda: trigger(lab, hosts["node3"], "node3", "leader", "lab-db").stdout.strip()  # noqa: E731
    try:
        lab.put("node1", election, "")
        checks.wait_until(lambda: leader() == "node1", 30, "node1 never led")
        lab.put("node2", election, "")
        checks.wait_until(lambda: "node2" in trigger(lab, hosts["node3"], "node3", "status", "--json").stdout,
                          30, "node2 never registered")
        assert leader() == "node1"
        lab.service("node1", "trigger-watch", "stop")
        checks.wait_until(lambda: leader() == "node2", MEMBER_TTL + 20,
                          "node2 did not take over after node1's lease ended")
    finally:
        lab.service("node1", "trigger-watch", "start")
        for node in ("node1", "node2"):
            lab.run(node, ["rm", "-f", election])


def test_role_targets_follow_the_live_watchers(lab, hosts, settled):
    role = f"{CONFIG_DIR}/roles/lab-lb"

    def targets() -> list[str]:
        out = trigger(lab, hosts["node3"], "node3", "fire", "lab role", "--hosts", "role:lab-lb",
                      "--provider", "exec", "--exec-cmd", "true {host}", "--ok-codes", "0")
        return sorted(line.split("\t")[0] for line in out.stdout.splitlines()
                      if "\t" in line and "node" in line)

    try:
        for node in ("node1", "node2"):
            lab.put(node, role, "")
        checks.wait_until(lambda: targets() == ["node1", "node2"], 30, "the role never had both")
        fired = checks.now(hosts["node3"])
        out = trigger(lab, hosts["node3"], "node3", "fire", "lab role", "--hosts", "role:lab-lb")
        assert out.rc == 0, out.stderr
        checks.assert_followed_by_runs(hosts, ["node1", "node2"], fired)
        lab.service("node2", "trigger-watch", "stop")
        checks.wait_until(lambda: targets() == ["node1"], MEMBER_TTL + 20, "node2 still targeted")
        lab.service("node2", "trigger-watch", "start")
        checks.wait_until(lambda: targets() == ["node1", "node2"], 30, "node2 never came back")
    finally:
        lab.service("node2", "trigger-watch", "start")
        for node in ("node1", "node2"):
            lab.run(node, ["rm", "-f", role])
