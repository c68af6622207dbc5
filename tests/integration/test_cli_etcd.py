"""The command line against a real etcd and real watchers: what scripts and
people see (plain rows, JSON, progress on a terminal, Ctrl-C), and that a
rejected option leaves etcd untouched."""

from __future__ import annotations

import json
import os
import re
import pty
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest

from tests.closed_pipe import with_closed_stdout
from tests.conftest import need
from trigger.layout import Layout
from trigger.store import open_store

LONG = "lb01.a-very-long-subdomain-of-the-datacentre-that-goes-on-and-on.example.com"


def trigger(endpoint, *args, env=None, timeout=60):
    env = {k: v for k, v in (env or os.environ).items() if not k.startswith("ETCDCTL_")}
    return subprocess.run([sys.executable, "-m", "trigger", *args, "--endpoints", endpoint],
                          capture_output=True, text=True, env={**env, "COLUMNS": "80"},
                          timeout=timeout, stdin=subprocess.DEVNULL)


def keyspace(endpoint) -> list[str]:
    """Every key in etcd, read with etcdctl (not through trigger's own store)."""
    etcdctl = need("etcdctl", "etcd-client")
    done = subprocess.run([etcdctl, "--endpoints", endpoint, "get", "", "--from-key", "--keys-only"],
                          capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, check=True)
    return [line for line in done.stdout.splitlines() if line]


@pytest.mark.etcd
@pytest.mark.parametrize("argv", [
    ["fire", "t", "--hosts", "a.example.com", "--wait", "--ok-codes", "abc"],
    ["fire", "t", "--hosts", "a.example.com", "--wait", "--timeout", "-5"],
    ["fire", "t", "--hosts", "a.example.com", "--exec-cmd", "ssh {host} true"],
    ["fire", "t", "--hosts", "a.example.com", "--retention", "-1"],
    ["watch", "--host", "a.example.com", "--config-dir", "/no/such/dir", "--queue", "inline"],
    ["watch", "--host", "a.example.com", "--member-ttl", "0", "--queue", "inline"],
])
def test_a_rejected_option_writes_nothing(etcd_server, argv):
    done = trigger(etcd_server.endpoint, *argv)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert keyspace(etcd_server.endpoint) == []


@pytest.mark.etcd
@pytest.mark.tsp
def test_fire_wait_piped_plain_rows_summary_and_no_watcher(node):
    node.start_watcher(run_seconds=0.1, exit_code=1)
    wait_member(node)
    done = trigger(node.endpoint, "fire", "deploy", "--hosts", f"NODE1.test,{LONG}", "--wait",
                   "--timeout", "8", "--ok-codes", "0,1")
    assert done.returncode == 4, done.stderr  # the host without a watcher did not run
    event_id, *lines = done.stdout.splitlines()  # the event id first, as without --wait
    rows = [line.split("\t") for line in lines]
    assert [r[:3] for r in rows] == [[LONG, "no watcher", "-"], ["node1.test", "ok", "1"]]
    assert "1 of 2 host(s) have no live watcher (no member key)" in done.stderr
    assert LONG in done.stderr.splitlines()[0]
    assert f"'deploy' {event_id}: 1 ok, 0 failed, 1 no watcher of 2 host(s)" in done.stderr

    # history judges with the exit codes the fire was made with
    listed = json.loads(trigger(node.endpoint, "history", "-o", "json").stdout)
    assert [(f["event_id"], f["ok"], f["failed"], f["no_watcher"], f["ok_codes"]) for f in listed] == \
        [(event_id, 1, 0, 1, [0, 1])]
    one = json.loads(trigger(node.endpoint, "history", event_id, "-o", "json").stdout)
    assert_fire_document(one, event_id, "deploy")
    assert [(h["host"], h["result"], h["exit_code"]) for h in one["hosts"]] == \
        [(LONG, "no watcher", None), ("node1.test", "ok", 1)]
    plain = trigger(node.endpoint, "history").stdout.splitlines()
    assert plain[0].split("\t")[1:3] == ["deploy", event_id]


def assert_fire_document(doc, event_id, trigger_name):
    assert set(doc) == {"event_id", "trigger", "fired_at", "ok_codes", "hosts", "summary"}
    assert (doc["event_id"], doc["trigger"]) == (event_id, trigger_name)
    assert doc["fired_at"].endswith("Z") and datetime.fromisoformat(doc["fired_at"].replace("Z", "+00:00"))
    for host in doc["hosts"]:
        assert set(host) == {"host", "result", "exit_code", "duration", "run_id", "started_at", "finished_at"}
        if host["result"] == "ok":
            assert host["started_at"].endswith("Z") and host["duration"] >= 0
    assert set(doc["summary"]) >= {"ok", "failed", "lost", "running", "waiting", "no_watcher", "hosts"}


@pytest.mark.etcd
@pytest.mark.tsp
def test_wait_reattaches_to_a_fire_and_json_documents_it(node):
    node.start_watcher(run_seconds=0.1)
    wait_member(node)
    fired = trigger(node.endpoint, "fire", "refresh", "--hosts", "node1.test", "-o", "json")
    assert fired.returncode == 0, fired.stderr
    doc = json.loads(fired.stdout)
    assert (doc["hosts"], doc["no_watcher"], doc["ok_codes"]) == (["node1.test"], [], [0, 2])
    waited = trigger(node.endpoint, "wait", doc["event_id"], "--timeout", "20", "-o", "json")
    assert waited.returncode == 0, waited.stderr
    result = json.loads(waited.stdout)
    assert_fire_document(result, doc["event_id"], "refresh")
    assert [(h["host"], h["result"]) for h in result["hosts"]] == [("node1.test", "ok")]
    assert trigger(node.endpoint, "wait", "0000000000000000-00000000").returncode == 5


@pytest.mark.etcd
def test_drop_removes_the_stale_inbox_of_a_retired_host(etcd_server):
    for _ in range(3):
        assert trigger(etcd_server.endpoint, "fire", "t", "--hosts", "old.example.com").returncode == 0
    dry = trigger(etcd_server.endpoint, "drop", "--host", "OLD.example.com", "--dry-run")
    assert dry.returncode == 0 and len(dry.stdout.split()) == 3 and "would drop 3 inbox entries" in dry.stderr
    inbox = Layout().host_prefix("old.example.com")
    assert sum(k.startswith(inbox) for k in keyspace(etcd_server.endpoint)) == 3
    done = trigger(etcd_server.endpoint, "drop", "--host", "old.example.com")
    assert done.returncode == 0 and done.stdout == "dropped 3 inbox entries of old.example.com\n"
    assert not any(k.startswith(inbox) for k in keyspace(etcd_server.endpoint))


@pytest.mark.etcd
@pytest.mark.tsp
def test_drop_refuses_a_host_with_a_live_watcher(node):
    node.start_watcher()
    wait_member(node)
    done = trigger(node.endpoint, "drop", "--host", "node1.test")
    assert done.returncode == 2 and "has a live watcher" in done.stderr


@pytest.mark.etcd
@pytest.mark.tsp
def test_progress_on_a_terminal_then_ctrl_c_tells_how_to_reattach(node):
    node.start_watcher(run_seconds=0.1)
    wait_member(node)
    output, code = in_pty(node.endpoint, ["fire", "t", "--hosts", "node1.test,ghost.example.com",
                                          "--wait", "--timeout", "60"],
                          interrupt_after="done 1 ")
    assert code == 130, output
    assert "done 1 · failed 0 · running 0 · no watcher 1" in output, output  # rich progress
    assert "ghost.example.com" in output and "no watcher" in output
    assert "1 ok, 0 failed, 1 no watcher of 2 host(s)" in output and "(interrupted)" in output
    event_id = re.search(r"'t' (\S+): 1 ok", output).group(1)  # from the summary line
    assert f"Re-attach with: trigger wait {event_id} --endpoints {node.endpoint}" in output


def in_pty(endpoint, argv, interrupt_after: str, timeout: float = 30.0) -> tuple[str, int]:
    """Run trigger with a terminal on stdin, stdout and stderr; once
    `interrupt_after` has been shown, send SIGINT as Ctrl-C would."""
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    proc = subprocess.Popen([sys.executable, "-m", "trigger", *argv, "--endpoints", endpoint],
                            stdin=secondary, stdout=secondary, stderr=secondary,
                            env={**env, "TERM": "xterm", "COLUMNS": "160"}, start_new_session=True)
    os.close(secondary)
    seen, sent, deadline = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if not sent and interrupt_after.encode() in seen:
                proc.send_signal(signal.SIGINT)
                sent = True
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)
    assert sent, seen.decode(errors="replace")
    return seen.decode(errors="replace"), code


def wait_member(node, timeout: float = 20.0) -> None:
    store = open_store("etcd", endpoints=[node.endpoint])
    try:
        deadline = time.monotonic() + timeout
        while store.get(Layout().member_key(node.host)) is None:
            assert time.monotonic() < deadline, node.watch_log.read_text()
            time.sleep(0.05)
    finally:
        store.close()


# -- what an operator sees: closed pipes, hosts without a watcher, tables, event ids, refusals ----------


def closed_pipe(endpoint, *args) -> subprocess.CompletedProcess:
    """trigger with stdout a pipe whose reader is gone, as after `| head -1` has read its line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    return with_closed_stdout([sys.executable, "-m", "trigger", *args, "--endpoints", endpoint], env=env)


@pytest.mark.etcd
@pytest.mark.parametrize("argv", [
    ["history"], ["history", "last"], ["history", "-o", "json"], ["status"], ["status", "-o", "table"],
    ["fire", "t", "--hosts", "a.example.com"], ["fire", "t", "--hosts", "a.example.com", "--dry-run"],
    ["wait", "last", "--timeout", "1"], ["leader", "db", "-o", "json"], ["drop", "--host", "a.example.com",
                                                                          "--dry-run"],
])
def test_a_closed_pipe_ends_every_command_quietly_with_141(etcd_server, argv):
    for _ in range(2):
        assert trigger(etcd_server.endpoint, "fire", "t", "--hosts", "a.example.com").returncode == 0
    done = closed_pipe(etcd_server.endpoint, *argv)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr and "Exception" not in done.stderr


@pytest.mark.etcd
def test_head_1_through_a_real_pipe_is_quiet(etcd_server):
    """The shell's own pipe: whether head has gone before trigger writes is up to the scheduler;
    either way, no traceback, and trigger's exit is 0 (all written in time) or 141."""
    for _ in range(3):
        assert trigger(etcd_server.endpoint, "fire", "t", "--hosts", "a.example.com").returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    done = subprocess.run(["bash", "-c", 'set -o pipefail; "$0" -m trigger history --endpoints "$1" | head -1; '
                           'echo "status ${PIPESTATUS[0]}" >&2', sys.executable, etcd_server.endpoint],
                          capture_output=True, text=True, env=env, timeout=60)
    assert len(done.stdout.splitlines()) == 1 and "\tt\t" in done.stdout
    assert "Traceback" not in done.stderr and re.search(r"status (0|141)\n", done.stderr), done.stderr


@pytest.mark.etcd
@pytest.mark.tsp
def test_a_host_without_a_watcher_is_reported_in_seconds_not_at_the_timeout(node):
    from trigger.policy import NO_WATCHER_GRACE

    node.start_watcher(run_seconds=0.1)
    wait_member(node)
    began = time.monotonic()
    done = trigger(node.endpoint, "fire", "t", "--hosts", "node1.test,ghost.example.com", "--wait",
                   "--timeout", "600")
    took = time.monotonic() - began
    assert done.returncode == 4, done.stderr
    assert [line.split("\t")[:2] for line in done.stdout.splitlines()[1:]] == \
        [["ghost.example.com", "no watcher"], ["node1.test", "ok"]]
    assert NO_WATCHER_GRACE <= took < NO_WATCHER_GRACE + 15, took
    # --wait-for-absent waits for it to the timeout
    began = time.monotonic()
    waited = trigger(node.endpoint, "fire", "t", "--hosts", "ghost.example.com", "--wait", "--timeout",
                     str(NO_WATCHER_GRACE + 2), "--wait-for-absent")
    assert waited.returncode == 4 and time.monotonic() - began >= NO_WATCHER_GRACE + 2
    assert waited.stdout.splitlines()[1].split("\t")[:2] == ["ghost.example.com", "no watcher"]


FQDNS = ["lb01.example.com", "web07.prod.eu-west-1.example.com", "db01.example.com"]


@pytest.mark.etcd
def test_tables_at_80_and_120_columns_keep_host_names_and_event_ids_whole(etcd_server):
    fired = trigger(etcd_server.endpoint, "fire", "t", "--hosts", ",".join(FQDNS)).stdout.strip()
    for columns in ("80", "120"):
        env = {**os.environ, "COLUMNS": columns}
        status = subprocess.run([sys.executable, "-m", "trigger", "status", "-o", "table", "--endpoints",
                                 etcd_server.endpoint], capture_output=True, text=True, env=env, timeout=60)
        lines = status.stdout.splitlines()
        assert status.returncode == 0 and max(map(len, lines)) <= int(columns), status.stdout
        for host in FQDNS:
            assert sum(host in line for line in lines) == 1, status.stdout
        history = subprocess.run([sys.executable, "-m", "trigger", "history", "-o", "table", "--endpoints",
                                  etcd_server.endpoint], capture_output=True, text=True, env=env, timeout=60)
        assert sum(fired in line for line in history.stdout.splitlines()) == 1, history.stdout
        assert "s ago" in history.stdout  # a relative time, for people
    plain = trigger(etcd_server.endpoint, "history").stdout
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\tt\t", plain), plain  # ISO for scripts


@pytest.mark.etcd
def test_event_ids_by_a_unique_beginning_or_last_and_one_line_for_an_ambiguous_one(etcd_server):
    ids = [trigger(etcd_server.endpoint, "fire", "t", "--hosts", "a.example.com").stdout.strip()
           for _ in range(3)]
    for event_id in ids:
        short = event_id.split("-")[0]
        one = trigger(etcd_server.endpoint, "history", short, "-o", "json")
        assert one.returncode == 0 and json.loads(one.stdout)["event_id"] == event_id, one.stderr
    newest = json.loads(trigger(etcd_server.endpoint, "history", "last", "-o", "json").stdout)
    assert newest["event_id"] == ids[-1]
    waited = trigger(etcd_server.endpoint, "wait", "last", "--timeout", "1", "-o", "json")
    assert waited.returncode == 4 and json.loads(waited.stdout)["event_id"] == ids[-1]
    common = os.path.commonprefix(ids)
    ambiguous = trigger(etcd_server.endpoint, "history", common)
    assert ambiguous.returncode == 2 and ambiguous.stdout == "" and ambiguous.stderr.count("\n") == 1
    assert ambiguous.stderr.startswith(f"trigger: error: event id '{common}' is ambiguous, 3 kept fires")
    assert all(event_id in ambiguous.stderr for event_id in ids)
    unknown = trigger(etcd_server.endpoint, "wait", "zzz")
    assert unknown.returncode == 5 and unknown.stderr.count("\n") == 1 and ids[-1] in unknown.stderr


@pytest.mark.etcd
def test_history_shows_a_fire_the_ttl_refused_with_its_chain(etcd_server):
    env = {**os.environ, "TRIGGER_HOP": "1", "TRIGGER_CHAIN": "a.example.com", "TRIGGER_HOST": "b.example.com"}
    refused = trigger(etcd_server.endpoint, "fire", "loop", "--hosts", "a.example.com", "--ttl", "1", env=env)
    assert refused.returncode == 3 and refused.stderr.startswith("trigger: warning: loop refused")
    (row,) = json.loads(trigger(etcd_server.endpoint, "history", "-o", "json").stdout)
    assert (row["trigger"], row["refused"], row["chain"], row["origin"]) == \
        ("loop", 1, ["a.example.com", "b.example.com"], "b.example.com")
    plain = trigger(etcd_server.endpoint, "history").stdout.split("\t")
    assert plain[3] == "a.example.com > b.example.com" and plain[7] == "1"  # from: the chain; refused: 1
    one = trigger(etcd_server.endpoint, "history", "last")
    assert one.stdout.split("\t")[:2] == ["a.example.com", "refused"]
    assert "hop 2 > ttl 1" in one.stderr


@pytest.mark.etcd
@pytest.mark.tsp
def test_dry_run_resolves_roles_from_etcd_and_writes_nothing_a_fire_says_what_it_reached(node):
    node.start_watcher(extra=("--roles", "lb"))
    wait_member(node)
    before = keyspace(node.endpoint)
    for provider in ("etcd", "dummy"):
        dry = trigger(node.endpoint, "fire", "t", "--hosts", "role:lb,web1.example.com", "--dry-run",
                      "--provider", provider, "-o", "json")
        assert dry.returncode == 0, dry.stderr
        doc = json.loads(dry.stdout)
        assert (doc["hosts"], doc["targets"]) == (["node1.test", "web1.example.com"],
                                                  {"role:lb": ["node1.test"], "web1.example.com": ["web1.example.com"]})
        assert "would fire 't' at 2 host(s): node1.test (role:lb); web1.example.com" in dry.stderr
    refused = trigger(node.endpoint, "fire", "t", "--hosts", "role:lb", "--dry-run", "--ttl", "1",
                      env={**os.environ, "TRIGGER_HOP": "1"})
    assert refused.returncode == 3 and "loop refused" in refused.stderr
    assert keyspace(node.endpoint) == before  # nothing written, not even the refusal
    fired = trigger(node.endpoint, "fire", "t", "--hosts", "role:lb", "-o", "table")  # as on a terminal
    assert fired.returncode == 0 and "trigger: fired 't' at 1 host(s): node1.test (role:lb)" in fired.stderr
