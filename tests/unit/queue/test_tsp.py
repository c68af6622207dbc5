"""parse_tsp_list on captured `tsp -l` text, and TspQueue on a real task-spooler."""

import os
import subprocess

import pytest

from tests.eventually import eventually
from tests.conftest import need
from tests.processes import kill_started_with
from trigger.queue import QueueError
from trigger.queue.tsp import TspQueue, parse_tsp_list

CAPTURED = """\
ID   State      Output               E-Level  Times(r/u/s)   Command [run=1/1]
0    finished   /tmp/ts-out.QBnlb7   0        1.00/0.00/0.00 [trigger:r1]sleep 1
1    running    /tmp/ts-out.ljuABd                           [trigger:r2]true
2    queued     (file)                                       [x]false
3    finished   /tmp/ts-out.GVrA9k   -1       0.00/0.00/0.00 echo no label [a]
4    queued     (file)                                       [trigger:r-3.x]puppet agent --test
"""


def test_parse_captured_list():
    jobs = parse_tsp_list(CAPTURED)
    assert [(j.id, j.state, j.exit_code, j.label, j.run_id) for j in jobs] == [
        (0, "finished", 0, "trigger:r1", "r1"),
        (1, "running", None, "trigger:r2", "r2"),
        (2, "queued", None, "x", None),
        (3, "finished", -1, "", None),
        (4, "queued", None, "trigger:r-3.x", "r-3.x"),
    ]
    assert jobs[3].command == "echo no label [a]"
    assert jobs[4].command == "puppet agent --test"


def test_parse_only_the_states_asked_for():
    """The standby asks for the running job on every run: the finished ones are skipped unparsed."""
    assert [j.id for j in parse_tsp_list(CAPTURED, ("running",))] == [1]
    assert [j.id for j in parse_tsp_list(CAPTURED, ("queued", "running"))] == [1, 2, 4]
    assert parse_tsp_list(CAPTURED + "\n   \nx\n", ("finished",)) == parse_tsp_list(CAPTURED)[0::3]


def test_parse_empty_and_header_only():
    assert parse_tsp_list("") == []
    assert parse_tsp_list(CAPTURED.splitlines()[0]) == []


@pytest.fixture
def tsp_socket(tmp_path, monkeypatch):
    need("tsp", "task-spooler")
    socket = str(tmp_path / "tsp.sock")
    monkeypatch.setenv("TS_SOCKET", socket)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    yield socket
    subprocess.run(["tsp", "-K"], capture_output=True)
    kill_started_with("TS_SOCKET", socket)  # a running job outlives the server


def test_real_tsp_reports_live_runs_and_forgets_them_when_killed(tsp_socket, tmp_path):
    queue = TspQueue()
    marker = tmp_path / "ran"
    queue.enqueue("r1", ["sleep", "0.5"])
    queue.enqueue("r2", ["touch", str(marker)])
    assert queue.live_run_ids() == {"r1", "r2"}
    eventually(lambda: not queue.live_run_ids(), 10, "both runs to end")
    assert marker.exists()
    queue.enqueue("r3", ["sleep", "5"])
    queue.enqueue("r4", ["true"])
    subprocess.run(["tsp", "-K"], check=True)  # the server dies with its queue
    assert queue.live_run_ids() == frozenset()


def test_tsp_argv_never_reaches_a_shell(tsp_socket, tmp_path):
    queue = TspQueue()
    target = tmp_path / "x; touch pwned"
    queue.enqueue("r1", ["touch", str(target)])
    eventually(lambda: not queue.live_run_ids(), 10, "the run to end")
    assert target.exists() and not os.path.exists("pwned")


def test_a_job_gets_our_environment_and_what_is_added(tsp_socket, tmp_path, monkeypatch):
    monkeypatch.setenv("FROM_WATCHER", "w")
    queue = TspQueue()
    out = tmp_path / "env"
    queue.enqueue("r-env", ["sh", "-c", f"env > {out}"], {"LC_ALL": "C"})
    eventually(lambda: not queue.live_run_ids(), 10, "the run to end")
    seen = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert (seen["FROM_WATCHER"], seen["LC_ALL"]) == ("w", "C")


def test_missing_tsp_is_a_clear_error():
    with pytest.raises(QueueError, match="no-such-tsp not found: install the Debian package task-spooler"):
        TspQueue("no-such-tsp")


def test_jobs_not_ours_are_said_once_for_each_new_set(tsp_socket, caplog):
    queue = TspQueue()
    subprocess.run(["tsp", "sleep", "5"], check=True, capture_output=True)  # somebody else's
    queue.enqueue("r1", ["true"])  # queued behind it
    caplog.set_level("WARNING", "trigger.watch")
    assert queue.live_run_ids() == {"r1"}
    assert queue.live_run_ids() == {"r1"}  # the same jobs again: not said again
    said = [r.getMessage() for r in caplog.records if "not trigger's" in r.getMessage()]
    assert len(said) == 1 and "(sleep 5)" in said[0]
    subprocess.run(["tsp", "echo", "another"], check=True, capture_output=True)
    queue.live_run_ids()
    said = [r.getMessage() for r in caplog.records if "not trigger's" in r.getMessage()]
    assert len(said) == 2 and "(echo another)" in said[1]
