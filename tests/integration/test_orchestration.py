"""Results, concurrency limits, elections, roles and the exec provider,
on a real etcd with real watchers and task-spooler servers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.eventually import eventually

pytestmark = [pytest.mark.etcd, pytest.mark.tsp]

FAST = ("--member-ttl", "2")


def trigger(node, *args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "trigger", *args, "--endpoints", node.endpoint],
                          capture_output=True, text=True, env=env or node.env, timeout=timeout)


def hosts_of(nodes):
    return ",".join(n.host for n in nodes)


def test_wait_reports_each_hosts_result_and_fails_on_a_failing_run(nodes):
    good, bad = nodes[0], nodes[1]
    good.start_watcher(run_seconds=0.3)
    bad.start_watcher(run_seconds=0.1, exit_code=4)
    done = trigger(good, "fire", "t", "--hosts", good.host, "--wait", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    assert good.host in done.stdout and "ok" in done.stdout
    both = trigger(good, "fire", "t", "--hosts", hosts_of(nodes[:2]), "--wait", "--timeout", "30")
    assert both.returncode == 4
    row = [line for line in both.stdout.splitlines() if bad.host in line][0]
    assert row.split("\t")[:3] == [bad.host, "failed", "4"]  # piped: plain rows


def test_wait_times_out_on_a_host_without_watcher(nodes):
    out = trigger(nodes[0], "fire", "t", "--hosts", nodes[0].host, "--wait", "--timeout", "1")
    event_id, row = out.stdout.splitlines()  # the event id, then a row per host
    assert out.returncode == 4 and row.split("\t")[:2] == [nodes[0].host, "no watcher"]


def test_history_and_status_show_the_outcome(nodes):
    n = nodes[0]
    n.start_watcher(extra=("--roles", "web"))
    assert trigger(n, "fire", "deploy", "--hosts", n.host, "--wait", "--timeout", "30").returncode == 0
    history = trigger(n, "history").stdout
    assert "deploy" in history
    row = [line for line in history.splitlines() if "deploy" in line][0]
    assert row.split("\t")[5] == "1"  # ok (piped: plain rows)
    status = json.loads(trigger(n, "status", "--json").stdout)
    (mine,) = [h for h in status if h["host"] == n.host]
    assert mine["alive"] and mine["roles"] == ["web"] and mine["last"]["exit_code"] == 0


def _intervals(nodes):
    return sorted((r["start"], r["end"], n.host) for n in nodes for r in n.runs())


def _max_overlap(intervals):
    events = sorted([(s, 1) for s, _, _ in intervals] + [(e, -1) for _, e, _ in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def _claimed_by_finished_runs(node) -> set[str]:
    return {event_id for record in node.run_records() if record.state == "finished"
            for event_id in record.served}


def test_max_concurrent_is_never_exceeded_under_a_storm(nodes):
    for n in nodes:
        n.start_watcher(run_seconds=0.4, check_interval=0.3)
    event_ids = []
    for _ in range(5):
        out = trigger(nodes[0], "fire", "rolling", "--hosts", hosts_of(nodes), "--max-concurrent", "2")
        assert out.returncode == 0, out.stderr
        event_ids.append(out.stdout.strip())  # the event id, piped
        time.sleep(0.2)
    for n in nodes:
        # Served: a finished run's record claims the fire's entry (a run
        # claims only what is in the inbox when it starts: fired before it).
        eventually(lambda n=n: set(event_ids) <= _claimed_by_finished_runs(n), timeout=60,
                   what=f"every fire claimed by a finished run on {n.host}")
    intervals = _intervals(nodes)
    print(f"{len(intervals)} runs on 4 hosts, at most {_max_overlap(intervals)} at once")
    assert len(intervals) >= 4 and _max_overlap(intervals) == 2


def test_serial_rolling_refresh_never_runs_two_at_once(nodes):
    lbs = nodes[:2]
    for n in lbs:
        n.start_watcher(run_seconds=0.5)
    out = trigger(lbs[0], "fire", "refresh lbs", "--hosts", hosts_of(lbs), "--serial",
                  "--wait", "--timeout", "30")
    assert out.returncode == 0, out.stdout + out.stderr
    (a, b) = sorted((r["start"], r["end"]) for n in lbs for r in n.runs())
    assert a[1] <= b[0], f"runs overlap: {a} {b}"


def test_killed_leader_loses_the_election_when_its_lease_ends(nodes):
    first, second = nodes[0], nodes[1]
    first.start_watcher(extra=("--elections", "db master", *FAST))
    eventually(lambda: trigger(first, "leader", "db master").stdout.strip() == first.host,
             what="the first node to lead")
    second.start_watcher(extra=("--elections", "db master", *FAST))
    eventually(lambda: second.store.get(second.layout.candidate_key("db%20master", second.host)),
               what="the second node to stand as a candidate")
    assert trigger(first, "leader", "db master").stdout.strip() == first.host
    first.kill_watcher()
    killed = time.monotonic()
    eventually(lambda: trigger(first, "leader", "db master").stdout.strip() == second.host,
             timeout=15, what="the second node to take over")
    print(f"leadership moved {time.monotonic() - killed:.1f}s after kill -9 (member ttl 2 s)")


def test_role_targets_follow_members_coming_and_going(nodes):
    for n in nodes[:3]:
        n.start_watcher(extra=("--roles", "loadbalancer", *FAST))
    nodes[3].start_watcher(extra=("--roles", "web", *FAST))

    def targets():
        out = trigger(nodes[0], "fire", "t", "--hosts", "role:loadbalancer", "--provider", "exec",
                      "--exec-cmd", "true {host}", "--ok-codes", "0")
        return sorted(line.split("\t")[0] for line in out.stdout.splitlines())

    eventually(lambda: targets() == ["node1.test", "node2.test", "node3.test"], what="three members")
    nodes[1].kill_watcher()
    eventually(lambda: targets() == ["node1.test", "node3.test"], timeout=15, what="node2 to leave")
    nodes[1].start_watcher(extra=("--roles", "loadbalancer", *FAST))
    eventually(lambda: targets() == ["node1.test", "node2.test", "node3.test"], what="node2 to return")
    none = trigger(nodes[0], "fire", "t", "--hosts", "role:nobody")
    assert none.returncode == 2 and "role:nobody has no live member" in none.stderr


def test_exec_provider_runs_argv_per_host_without_a_shell(nodes, tmp_path):
    log = tmp_path / "argv.jsonl"
    env = {**nodes[0].env, "ARGV_LOG": str(log), "TRIGGER_HOP": "1", "TRIGGER_CHAIN": "x.test"}
    recorder = Path(__file__).with_name("argv_recorder.py")
    template = f"{sys.executable} {recorder} runonce -I {{host}} '--note=a b;$(x)'"
    out = trigger(nodes[0], "fire", "t", "--hosts", "h1.test,h2.test", "--provider", "exec",
                  "--exec-cmd", template, env=env)
    assert out.returncode == 0, out.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [
        {"argv": ["runonce", "-I", "h1.test", "--note=a b;$(x)"], "hop": "2"},
        {"argv": ["runonce", "-I", "h2.test", "--note=a b;$(x)"], "hop": "2"},
    ]
    env["ARGV_EXIT"] = "1"
    failed = trigger(nodes[0], "fire", "t", "--hosts", "h1.test", "--provider", "exec",
                     "--exec-cmd", template, env=env)
    assert failed.returncode == 4
    missing = trigger(nodes[0], "fire", "t", "--hosts", "h1.test", "--provider", "exec",
                      "--exec-cmd", "mco puppet runonce")
    assert missing.returncode == 2 and "{host}" in missing.stderr
