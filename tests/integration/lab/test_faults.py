"""Faults: a watcher killed with SIGKILL, a node cut off the network for 20 s,
an etcd member stopped. During and after each, every fire is followed by a
run on each of its targets; once the fault is repaired, a new fire is too."""

from __future__ import annotations

import time

import pytest

from tests.integration.lab import checks

pytestmark = [pytest.mark.root, pytest.mark.etcd, pytest.mark.tsp, pytest.mark.puppet, pytest.mark.slow]

TARGETS = ["node1", "node2"]
WATCHER = "[t]rigger watch --host"  # the brackets keep pkill/pgrep from matching the shell running them


def watcher_pids(host) -> set[str]:
    return set(host.run(f"pgrep -f '{WATCHER}'").stdout.split())


def fire_and_check(lab, hosts, name: str, from_node: str = "node3", timeout: float = 60) -> None:
    fired = checks.fire(hosts[from_node], name, TARGETS, lab.endpoints(from_node))
    checks.assert_followed_by_runs(hosts, TARGETS, fired, timeout=timeout)


def test_a_watcher_killed_with_sigkill_comes_back_and_loses_no_fire(lab, hosts, settled):
    node1 = hosts["node1"]
    before = watcher_pids(node1)
    assert len(before) == 1
    node1.run_test(f"pkill -KILL -f '{WATCHER}'")
    # Fired while node1 has no watcher: the fire waits in node1's inbox.
    fired = checks.fire(hosts["node3"], "after sigkill", TARGETS, lab.endpoints("node3"))
    checks.assert_followed_by_runs(hosts, TARGETS, fired)
    after = checks.wait_until(lambda: watcher_pids(node1), 30, "node1's watcher was not restarted")
    assert after != before
    fire_and_check(lab, hosts, "restarted watcher")


def test_a_node_cut_off_for_20s_gets_its_run_when_it_is_back(lab, hosts, settled):
    lab.link("node1", up=False)
    try:
        cut_at = time.monotonic()
        fired = checks.fire(hosts["node3"], "while node1 is cut off", TARGETS, lab.endpoints("node3"))
        # The node that can be reached gets its run at once...
        checks.assert_followed_by_runs(hosts, ["node2"], fired, timeout=30)
        # ...and the one that cannot, none while it is cut off.
        assert checks.runs_since(hosts["node1"], fired) == []
        time.sleep(max(0.0, 20 - (time.monotonic() - cut_at)))
        assert checks.runs_since(hosts["node1"], fired) == []
    finally:
        lab.link("node1", up=True)
    checks.assert_followed_by_runs(hosts, ["node1"], fired, timeout=60)
    fire_and_check(lab, hosts, "node1 back")


def test_with_one_etcd_member_stopped_fires_get_through_the_others(lab, hosts, settled):
    lab.service("node1", "etcd", "stop")
    try:
        # node1 fires through its own endpoint list, whose first member (its
        # own) is down, to itself (whose watcher loses its member) and node2.
        fire_and_check(lab, hosts, "member down, from node1", from_node="node1")
        fire_and_check(lab, hosts, "member down, from node3", from_node="node3")
    finally:
        lab.service("node1", "etcd", "start")
        lab.wait_etcd_healthy()
    fire_and_check(lab, hosts, "member back")
