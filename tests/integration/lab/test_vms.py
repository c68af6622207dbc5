"""What only real machines show (the Vagrant lab): systemd, not a test
helper, restarts a watcher killed with SIGKILL; a node rebooted while a run
is queued gets that run after it boots."""

from __future__ import annotations

import pytest

from lab.base import MANIFESTS
from tests.integration.lab import checks
from tests.integration.lab.test_faults import WATCHER, watcher_pids

# namespaced nodes have no systemd and do not reboot
pytestmark = [pytest.mark.root, pytest.mark.etcd, pytest.mark.tsp, pytest.mark.puppet, pytest.mark.slow,
              pytest.mark.backend("vagrant")]

SLOW_RUN = f"{MANIFESTS}/40-slow.pp"


def restarts(host) -> int:
    return int(host.check_output("systemctl show --property=NRestarts --value trigger-watch"))


def test_systemd_restarts_a_watcher_killed_with_sigkill(lab, hosts, settled):
    node2 = hosts["node2"]
    before, restarted = watcher_pids(node2), restarts(node2)
    node2.run_test(f"pkill -KILL -f '{WATCHER}'")
    checks.wait_until(lambda: watcher_pids(node2) - before, 30, "systemd did not restart node2's watcher")
    assert restarts(node2) == restarted + 1
    assert node2.service("trigger-watch").is_running
    fired = checks.fire(hosts["node3"], "after systemd restart", ["node2"], lab.endpoints("node3"))
    checks.assert_followed_by_runs(hosts, ["node2"], fired)


def test_a_node_rebooted_while_a_run_is_queued_gets_its_run_after_boot(lab, hosts, settled):
    node1 = hosts["node1"]
    # A run that takes long enough to be rebooted under, so the next fire waits queued.
    lab.put("node1", SLOW_RUN, "exec { 'trigger lab: a slow run': command => '/bin/sleep 600' }\n")
    try:
        checks.fire(hosts["node3"], "start a slow run", ["node1"], lab.endpoints("node3"))
        checks.wait_until(lambda: any(j.state == "running" for j in checks.tsp_jobs(node1)), 60,
                          "the slow run never started on node1")
        fired = checks.fire(hosts["node3"], "queued behind it", ["node1"], lab.endpoints("node3"))
        checks.wait_until(lambda: any(j.state == "queued" for j in checks.tsp_jobs(node1)), 30,
                          "no run queued behind the slow one")
        lab.run("node1", ["rm", "-f", SLOW_RUN], check=True)
        lab.reboot("node1")
    finally:
        lab.run("node1", ["rm", "-f", SLOW_RUN])
    checks.assert_followed_by_runs(hosts, ["node1"], fired, timeout=90)
