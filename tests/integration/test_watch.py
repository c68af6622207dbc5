"""The watcher daemon against a real etcd and a real task-spooler.

Every test checks the delivery rule: each fire is followed by a run that
started after it. Run times come from the run command itself.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest

from tests.eventually import eventually
from trigger.results import list_runs

pytestmark = [pytest.mark.etcd, pytest.mark.tsp]


def test_back_to_back_fires_are_all_followed_by_a_run(node):
    """The README's promise: fires landing while a run is queued join it. All
    30 join the first run, unless it claimed while they were still landing;
    then exactly one more run serves the rest.

    Which fires a run claimed is read from its record: a fire's own time is
    taken before its write lands, so comparing times would miscount the
    last fire of the burst."""
    node.start_watcher(run_seconds=0.1)
    node.wait_in_sync()
    ids = [node.fire_entry().id for _ in range(30)]
    assert node.wait_served() == []
    node.wait_idle()
    records = sorted(node.run_records(), key=lambda r: r.started_at)
    print(f"30 back-to-back fires -> {len(records)} runs, serving {[len(r.served) for r in records]}")
    assert sorted(s for r in records for s in r.served) == sorted(ids)  # each fire claimed once
    assert len(records) == (1 if len(records[0].served) == 30 else 2)
    assert len(node.runs()) == len(records)


def test_storm_during_a_running_run_causes_at_most_one_more(node):
    node.start_watcher(run_seconds=1.0)
    node.fire()
    eventually(lambda: _states(node) == ["started"], what="the first run to start")
    for _ in range(30):
        node.fire()
    assert node.wait_served() == []
    node.wait_idle()  # a third run would be queued or running now
    runs = node.runs()
    print(f"storm of 30 during a 1 s run -> {len(runs)} runs in all")
    assert len(runs) == 2


def test_fires_before_the_watcher_starts_are_served(node):
    for _ in range(3):
        node.fire()
    node.start_watcher()
    assert node.wait_served() == []
    assert len(node.runs()) == 1


def test_inbox_entries_are_acknowledged_and_run_records_kept(node):
    node.start_watcher()
    node.fire()
    assert node.wait_served() == []
    eventually(lambda: not node.store.get_prefix(node.layout.host_prefix(node.host) + "0")[0]
             and _states(node) == ["finished"], what="the run to finish")
    (record,) = list_runs(node.store, node.layout, node.host)[0]
    assert record.exit_code == 0 and record.started_at <= record.finished_at
    assert record.hop == 1 and record.chain == ("tester",)
    assert node.runs()[0]["hop"] == "1" and node.runs()[0]["chain"] == "tester"


def _states(node):
    return [run.state for run in list_runs(node.store, node.layout, node.host)[0]]


def test_failing_run_records_its_exit_code(node):
    node.start_watcher(exit_code=4)
    node.fire()
    eventually(lambda: _states(node) == ["finished"], what="the run to finish")
    (run,) = list_runs(node.store, node.layout, node.host)[0]
    assert run.exit_code == 4


def test_kill_9_at_random_moments_loses_no_fire(node):
    rng = random.Random(7)
    node.start_watcher(run_seconds=0.05, check_interval=0.3)
    kills = 0
    for i in range(50):
        node.fire()
        time.sleep(rng.uniform(0, 0.08))
        if rng.random() < 0.3:
            node.kill_watcher()
            kills += 1
            time.sleep(rng.uniform(0, 0.1))
            node.start_watcher(run_seconds=0.05, check_interval=0.3)
    unserved = node.wait_served(timeout=40)
    print(f"50 fires, {kills} kill -9s -> {len(node.runs())} runs, {len(unserved)} fires unserved")
    assert kills > 5 and unserved == []


def _one_running_one_queued(node, run_seconds):
    node.start_watcher(run_seconds=run_seconds, check_interval=0.3)
    node.fire()
    eventually(lambda: _states(node) == ["started"], what="the first run to start")
    node.fire()
    eventually(lambda: "queued" in node.tsp("-l"), what="the second run to be queued")


def test_watcher_killed_while_its_run_is_queued_and_queue_server_killed(node):
    """Phase: run queued behind a long one, watcher and task-spooler both die."""
    _one_running_one_queued(node, run_seconds=2.0)
    node.kill_watcher()
    node.tsp("-K")  # the queued run vanishes with the server
    node.start_watcher(run_seconds=0.1, check_interval=0.3)
    assert node.wait_served() == []
    assert "lost" in _states(node)


def test_queue_server_death_is_noticed_by_a_running_watcher(node):
    _one_running_one_queued(node, run_seconds=1.5)
    node.tsp("-K")
    assert node.wait_served(timeout=20) == []


def test_etcd_restart_loses_nothing(node, etcd_server):
    node.start_watcher(check_interval=0.3)
    node.fire()
    assert node.wait_served() == []
    etcd_server.restart()
    node.fire()
    assert node.wait_served() == []
    etcd_server.stop()
    time.sleep(1.0)  # the outage: the watcher retries against a dead endpoint meanwhile
    etcd_server.start()
    node.fire()
    assert node.wait_served() == []
    assert node.proc.poll() is None


def test_cli_fire_prints_the_event_id_and_writes_the_inbox(node):
    out = subprocess.run([sys.executable, "-m", "trigger", "fire", "refresh lbs",
                          "--hosts", "a.test,b.test", "--endpoints", node.endpoint],
                         capture_output=True, text=True, env=node.env)
    assert out.returncode == 0, out.stderr
    event_id = out.stdout.strip()
    for host in ("a.test", "b.test"):
        kv = node.store.get(node.layout.entry_key(host, event_id))
        assert json.loads(kv.value)["trigger"] == "refresh lbs"


def test_cli_fire_inside_a_run_carries_the_hop_and_stops_at_ttl(node):
    env = {**node.env, "TRIGGER_HOP": "2", "TRIGGER_CHAIN": "a.test,b.test", "TRIGGER_HOST": "a.test"}
    ok = subprocess.run([sys.executable, "-m", "trigger", "fire", "t", "--hosts", "b.test",
                         "--ttl", "3", "--endpoints", node.endpoint], capture_output=True, text=True, env=env)
    event_id = ok.stdout.strip()
    assert json.loads(node.store.get(node.layout.entry_key("b.test", event_id)).value)["hop"] == 3
    env["TRIGGER_HOP"] = "3"
    refused = subprocess.run([sys.executable, "-m", "trigger", "fire", "t", "--hosts", "b.test",
                              "--ttl", "3", "--endpoints", node.endpoint], capture_output=True, text=True, env=env)
    assert refused.returncode == 3
    assert refused.stderr.strip() == (
        "trigger: warning: loop refused: trigger 't' would be hop 4 > ttl 3; chain a.test -> b.test -> a.test")
    assert node.store.get_prefix(node.layout.prefix + "/refused/")[0]


def test_unreachable_etcd_is_a_one_line_error(node):
    out = subprocess.run([sys.executable, "-m", "trigger", "fire", "t", "--hosts", "a",
                          "--endpoints", "http://127.0.0.1:9"], capture_output=True, text=True, env=node.env)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("trigger: error:")
    assert "127.0.0.1:9" in out.stderr


def test_corrupt_inbox_value_is_quarantined_and_the_watcher_keeps_serving(node):
    node.start_watcher()
    node.store.put(node.layout.entry_key(node.host, "garbage"), b"\x00not json")
    node.fire()
    assert node.wait_served() == []
    q = node.store.get(node.layout.quarantine_key(node.host, "garbage"))
    assert q is not None and q.value == b"\x00not json"
    assert node.store.get(node.layout.entry_key(node.host, "garbage")) is None
    assert "quarantine" in node.watch_log.read_text()
    assert node.proc.poll() is None
