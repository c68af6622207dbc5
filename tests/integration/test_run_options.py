"""Noop and tags per fire, and a run's output coming back, on a real etcd,
task-spooler and watcher: what `fire --wait`, `history` and `logs` show."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.eventually import eventually
from tests.integration.test_cli_etcd import trigger, wait_member
from trigger.fire import Lineage, fire

FAKE_PUPPET = Path(__file__).with_name("fake_puppet.py")


def install_puppet(node, exit_code: int) -> str:
    """A `puppet` in the node's directory that records its argv; the run command using it."""
    bin_dir = node.tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    puppet = bin_dir / "puppet"
    puppet.write_text(f"#!{sys.executable}\n" + FAKE_PUPPET.read_text())
    puppet.chmod(0o755)
    node.env.update(FAKE_PUPPET_LOG=str(node.tmp / "puppet.jsonl"), FAKE_PUPPET_EXIT=str(exit_code))
    return f"{puppet} agent --test --detailed-exitcodes"


def puppet_runs(node) -> list[dict]:
    log = node.tmp / "puppet.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def start(node, exit_code: int, *extra: str) -> None:
    run_cmd = install_puppet(node, exit_code)
    node.proc = None
    import subprocess

    node.proc = subprocess.Popen(
        [sys.executable, "-m", "trigger", "watch", "--host", node.host, "--queue", "tsp",
         "--endpoints", node.endpoint, "--run-cmd", run_cmd, "--check-interval", "0.5", *extra],
        env=node.env, stdout=subprocess.DEVNULL, stderr=open(node.watch_log, "a"), start_new_session=True)
    wait_member(node)


@pytest.mark.etcd
@pytest.mark.tsp
def test_a_noop_fire_runs_noop_and_leaves_a_normal_fire_for_a_run_of_its_own(node):
    # Both fires wait in the inbox before the watcher starts: one run could
    # serve them both, but a noop run never serves a normal fire.
    noop = fire(node.store, node.layout, "deploy", [node.host], Lineage(), "tester", noop=True,
                tags=("nginx",), retention=600)
    normal = fire(node.store, node.layout, "deploy", [node.host], Lineage(), "tester", retention=600)
    start(node, 2)
    eventually(lambda: len(puppet_runs(node)) == 2, 30, lambda: node.watch_log.read_text())
    first, second = puppet_runs(node)
    assert first["argv"] == ["agent", "--test", "--detailed-exitcodes", "--noop", "--tags", "nginx"]
    assert second["argv"] == ["agent", "--test", "--detailed-exitcodes"]  # no --noop: its own run
    runs = {r.run_id: r for r in node.run_records()}
    assert runs[first["run_id"]].served == (noop.id,) and runs[first["run_id"]].noop
    assert runs[second["run_id"]].served == (normal.id,) and not runs[second["run_id"]].noop

    shown = trigger(node.endpoint, "history", noop.id)
    assert shown.stdout.split("\t")[1:3] == ["ok (noop: would change)", "2"], shown.stdout + shown.stderr
    waited = json.loads(trigger(node.endpoint, "wait", noop.id, "--timeout", "10", "-o", "json").stdout)
    assert [(h["result"], h["exit_code"], h.get("noop")) for h in waited["hosts"]] == [("ok", 2, True)]
    plain = trigger(node.endpoint, "history", normal.id).stdout.split("\t")
    assert plain[1:3] == ["ok", "2"]


@pytest.mark.etcd
@pytest.mark.tsp
def test_a_tag_the_watcher_does_not_allow_is_refused_and_nothing_runs(node):
    start(node, 0, "--run-options", "noop")
    done = trigger(node.endpoint, "fire", "deploy", "--hosts", node.host, "--tags", "nginx", "--wait",
                   "--timeout", "20")
    assert done.returncode == 4, done.stderr
    event_id, row = done.stdout.splitlines()
    assert row.split("\t")[:3] == [node.host, "refused option", "-"]
    assert "this watcher does not allow --tags (it allows: --noop)" in done.stderr
    assert puppet_runs(node) == []  # nothing ran
    shown = trigger(node.endpoint, "history", event_id).stdout
    assert shown.split("\t")[1] == "refused option"
    listed = json.loads(trigger(node.endpoint, "history", "-o", "json").stdout)
    assert [(f["event_id"], f["refused_option"]) for f in listed] == [(event_id, 1)]
    # the fire was served, not left to be refused again: the next one runs
    assert trigger(node.endpoint, "fire", "deploy", "--hosts", node.host, "--noop", "--wait",
                   "--timeout", "20").returncode == 0
    assert [r["argv"][-1] for r in puppet_runs(node)] == ["--noop"]


@pytest.mark.etcd
@pytest.mark.tsp
def test_the_output_tail_of_a_failed_run_comes_back_and_still_reaches_task_spooler(node):
    from trigger.queue.tsp import parse_tsp_list
    from trigger.records import OUTPUT_TAIL_BYTES

    start(node, 1)
    done = trigger(node.endpoint, "fire", "deploy", "--hosts", node.host, "--wait", "--timeout", "20")
    assert done.returncode == 4, done.stderr
    event_id, row = done.stdout.splitlines()  # plain rows stay rows: the tail goes to stderr
    assert row.split("\t")[:3] == [node.host, "failed", "1"]
    run_id = row.split("\t")[4]
    assert f"--- {node.host}: failed, last lines of run {run_id} (all kept: trigger logs {event_id} " \
           f"--host {node.host})" in done.stderr
    assert "    Error: Could not find package nginx-ultra" in done.stderr  # stderr of the command too
    assert f"    Notice: run {run_id} ends" in done.stderr

    shown = trigger(node.endpoint, "history", event_id, "-o", "json")
    [host] = json.loads(shown.stdout)["hosts"]
    assert host["output"].endswith(f"Notice: run {run_id} ends\n")
    assert len(host["output"].encode()) <= OUTPUT_TAIL_BYTES and "filler line 0\n" not in host["output"]

    for asked in (event_id, run_id):
        logs = trigger(node.endpoint, "logs", asked, "--host", node.host)
        assert logs.returncode == 0 and logs.stdout == host["output"], logs.stderr
    missing = trigger(node.endpoint, "logs", "0000000000000000-00000000")
    assert missing.returncode == 5 and missing.stderr.count("\n") == 1

    # task-spooler's output file still has all of it, as before
    eventually(lambda: all(j.state == "finished" for j in parse_tsp_list(node.tsp("-l"))), 10)
    job = parse_tsp_list(node.tsp("-l"))[-1]
    kept = Path(node.tsp("-o", str(job.id)).strip()).read_text()
    assert "Info: filler line 0\n" in kept and f"Notice: run {run_id} ends" in kept
