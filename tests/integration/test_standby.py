"""The standby `trigger run` (trigger/queue/standby.py) with a real etcd and task-spooler:
a queued run is carried out by the process the watcher keeps started, its
output lands in task-spooler's, and when the standby is gone runs still run."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.eventually import eventually
from tests.processes import started_with
from trigger.queue.tsp import parse_tsp_list
from trigger.queue import QueueError
from trigger.queue.standby import fifo_for

pytestmark = [pytest.mark.etcd, pytest.mark.tsp]


@pytest.fixture
def node(node):
    """The node, its watchers started with --standby (off by default)."""
    node.standby = True
    return node


def standbys(node) -> list[int]:
    """Pids of this node's standby processes (its TS_SOCKET in their environment)."""
    pids = []
    for pid in started_with("TS_SOCKET", node.env["TS_SOCKET"]):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--standby" in argv and b"run" in argv:
            pids.append(pid)
    return pids


def exited(pid: int) -> bool:
    """Whether process `pid` has ended: reaped, or a zombie its parent will find ended."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def job_link(job) -> Path:
    """The run link a standby's job opens: its command is `/bin/sh -c SCRIPT sh LINK STATUS`."""
    assert job.command.startswith("/bin/sh -c "), job
    return Path(job.command.split()[-2])


def fire_behind_a_job(node, seconds: float, **options):
    """A watcher in sync with its standby (both returned: the process, the standby's pids) and a
    fire whose run queues behind a `sleep` job of `seconds` (task-spooler runs one job at a time)."""
    watcher = node.start_watcher(run_seconds=0.1, **options)
    node.wait_in_sync()
    found = eventually(lambda: standbys(node) if len(standbys(node)) == 1 else None,
                       what="the watcher's standby")
    node.tsp("-S", "1")
    blocker = subprocess.run(["tsp", "sleep", str(seconds)], env=node.env, capture_output=True, text=True)
    assert blocker.returncode == 0
    node.fire()
    return watcher, found


def test_a_queued_run_is_carried_out_by_the_standby_and_its_output_kept_by_tsp(node):
    node.start_watcher(run_seconds=0.1)
    node.wait_in_sync()
    eventually(lambda: len(standbys(node)) == 1, what="the watcher's standby")
    (standby,) = standbys(node)
    node.fire()
    assert node.wait_served() == []
    node.wait_idle()
    (started,) = node.started()
    assert started["ppid"] == standby  # not a `trigger run` task-spooler started
    (job,) = parse_tsp_list(node.tsp("-l"))
    assert job.command.startswith("/bin/sh -c cat < ")  # the job of a standby's run
    assert job.run_id == started["run_id"] == node.run_records()[0].run_id
    assert node.run_records()[0].state == "finished"
    # the run's notes went through the FIFO to cat, into task-spooler's output
    assert f"trigger: {job.run_id} finished, exit 0" in node.tsp("-c", str(job.id))
    assert standbys(node) == [standby]  # and it waits for the next one


def test_the_job_lasts_as_long_as_its_run_and_the_next_waits_behind_it(node):
    """task-spooler still holds one run at a time: cat ends only when the standby has finished."""
    node.start_watcher(run_seconds=3.0)
    node.wait_in_sync()
    eventually(lambda: len(standbys(node)) == 1, what="the watcher's standby")
    node.fire()
    eventually(lambda: node.started(), what="the first run's command to start")
    node.fire()  # lands while the first runs: a second run, queued behind the first job
    eventually(lambda: len(parse_tsp_list(node.tsp("-l"))) == 2, what="the second run queued")
    first, second = parse_tsp_list(node.tsp("-l"))
    assert (first.state, second.state) == ("running", "queued") and not node.runs()
    assert node.wait_served() == []
    node.wait_idle()
    (a_start, a_end, _), (b_start, _, _) = node.intervals()
    assert a_end <= b_start
    # each job ended with its run, none cut short and its run queued again
    assert [job.exit_code for job in parse_tsp_list(node.tsp("-l"))] == [0, 0] and len(node.runs()) == 2


def test_with_the_standby_killed_the_next_run_starts_cold_and_a_new_standby_follows(node):
    node.start_watcher(run_seconds=0.1)
    node.wait_in_sync()
    eventually(lambda: len(standbys(node)) == 1, what="the watcher's standby")
    (old,) = standbys(node)
    os.kill(old, signal.SIGKILL)
    # dead, not just signalled: else the watcher may still find it alive and queue the run for it.
    # (Its command line is gone as soon as it starts to exit; it is dead once a zombie, or reaped.)
    eventually(lambda: exited(old), what="the killed standby to be dead")
    node.fire()
    assert node.wait_served() == []
    node.wait_idle()
    (job,) = parse_tsp_list(node.tsp("-l"))
    assert " run --host " in job.command  # the cold `trigger run`
    eventually(lambda: len(standbys(node)) == 1 and old not in standbys(node), what="a new standby")
    node.fire()
    assert node.wait_served() == []
    assert node.started()[-1]["ppid"] in standbys(node)


def test_a_job_whose_standby_was_killed_waits_for_the_next_one(node):
    """SIGKILL between queueing and the job's start: cat waits until the
    watcher, looking at its queue, has started a new standby."""
    fire_behind_a_job(node, 2, extra=("--run-lease-ttl", "8"))
    eventually(lambda: any(j.run_id for j in parse_tsp_list(node.tsp("-l"))), what="the run queued")
    for pid in standbys(node):
        os.kill(pid, signal.SIGKILL)
    assert node.wait_served() == []
    assert node.started()[-1]["ppid"] in standbys(node)


def test_an_unused_standby_is_let_go_and_the_next_run_brings_one_back(node):
    """An idle host keeps one process: the watcher lets the standby go once no run went through
    it for --standby-linger, never while a run of its is on; the next run starts cold."""
    watcher, (first,) = fire_behind_a_job(node, 3, extra=("--standby-linger", "1"))  # the job waits past the linger
    assert node.wait_served() == []
    assert node.started()[0]["ppid"] == first  # kept while its job was queued
    eventually(lambda: standbys(node) == [], timeout=10, what="the unused standby to be let go")
    assert watcher.poll() is None
    eventually(lambda: "standby let go: no run went through it for 1 s" in node.watch_log.read_text(),
               what="the watcher to say so")
    node.fire()
    assert node.wait_served() == []
    node.wait_idle()
    *_, cold = parse_tsp_list(node.tsp("-l"))
    assert " run --host " in cold.command and cold.exit_code == 0  # the cold `trigger run`
    eventually(lambda: len(standbys(node)) == 1, what="a new standby with that run")
    (second,) = standbys(node)
    node.fire()
    assert node.wait_served() == []
    assert second != first and node.started()[-1]["ppid"] == second


def test_an_idle_standby_leaves_when_its_watcher_is_killed(node):
    node.start_watcher()
    node.wait_in_sync()
    eventually(lambda: len(standbys(node)) == 1, what="the watcher's standby")
    (pid,) = standbys(node)
    # idle: blocked opening its FIFO until a job opens the other end
    eventually(lambda: Path(f"/proc/{pid}/wchan").read_text() == "wait_for_partner",
               what="the standby to wait for a job")
    node.kill_watcher()  # the kernel tells the standby at once (PR_SET_PDEATHSIG): no polling
    eventually(lambda: standbys(node) == [], timeout=3, what="the orphaned standby to leave")


def test_the_watcher_stops_its_standby(node):
    proc = node.start_watcher()
    node.wait_in_sync()
    eventually(lambda: len(standbys(node)) == 1, what="the watcher's standby")
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=20)
    eventually(lambda: standbys(node) == [], timeout=5, what="the standby to leave with its watcher")


def test_no_standby_where_its_directory_is_not_private(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    folder = tmp_path / f"trigger-standby-{os.getuid()}"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    with pytest.raises(QueueError, match="is open to others"):
        fifo_for("h", "/p")
    folder.chmod(0o700)
    fifo = fifo_for("h", "/p")
    assert fifo is not None and fifo.parent == folder and fifo == fifo_for("h", "/p")
    assert fifo != fifo_for("h2", "/p")


def test_a_fifo_folder_that_is_not_ours_is_one_line_in_the_log_and_every_fire_is_served_cold(node):
    folder = node.tmp / f"trigger-standby-{os.getuid()}"
    folder.mkdir(mode=0o700)
    folder.chmod(0o755)  # open to others: whoever can write there could swap the FIFO
    node.start_watcher(run_seconds=0.1)
    node.wait_in_sync()
    for _ in range(2):
        node.fire()
        assert node.wait_served() == []
    node.wait_idle()
    complaints = [line for line in node.watch_log.read_text().splitlines() if "standby" in line]
    assert len(complaints) == 1, complaints
    assert f"no standby: {folder} is open to others (mode 755, not 700)" in complaints[0]
    assert standbys(node) == [] and list(folder.iterdir()) == []
    assert all(" run --host " in job.command for job in parse_tsp_list(node.tsp("-l")))  # cold


def tsp_calls_noted(node) -> Path:
    """Put a `tsp` first in the node's PATH that notes each call (its caller's pid, its
    arguments) and runs the real one; returns the file of notes."""
    real = shutil.which("tsp")
    folder = node.tmp / "bin"
    folder.mkdir()
    calls = node.tmp / "tsp-calls"
    (folder / "tsp").write_text(f'#!/bin/sh\necho "$PPID $*" >> {shlex.quote(str(calls))}\n'
                                f'exec {shlex.quote(real)} "$@"\n')
    (folder / "tsp").chmod(0o755)
    node.env["PATH"] = f"{folder}:{node.env['PATH']}"
    return calls


def test_a_run_queued_as_a_link_is_told_by_inotify_without_asking_tsp(node):
    """The job opens a hard link of the FIFO named after its run: the standby learns the run
    id from inotify, with no `tsp -p` (nor `tsp -l`) of its own, and takes the link away."""
    calls = tsp_calls_noted(node)
    node.start_watcher(run_seconds=0.1)
    node.wait_in_sync()
    eventually(lambda: len(standbys(node)) == 1, what="the watcher's standby")
    (standby,) = standbys(node)
    for _ in range(3):
        node.fire()
        assert node.wait_served() == []
        node.wait_idle()
    jobs = parse_tsp_list(node.tsp("-l"))
    assert [j.run_id for j in jobs] == [r["run_id"] for r in node.started()] and len(jobs) == 3
    assert all(r["ppid"] == standby for r in node.started())
    for job in jobs:
        link = job_link(job)
        assert Path(link).name.endswith(f".{job.run_id}.run") and job.exit_code == 0
        assert not Path(link).exists()  # the standby took it away once the job had opened it
    noted = calls.read_text().splitlines()
    assert any(" -L trigger:" in line for line in noted)  # the watcher's go through the stand-in
    assert [line for line in noted if line.split()[0] == str(standby)] == []


def test_links_of_runs_gone_from_the_queue_are_swept_and_nothing_is_lost(node):
    """A run's job removed from the queue (tsp -r), a link left by a watcher that crashed: the
    watcher takes their links away when it looks at its queue; the removed run's fires get a
    new run all the same."""
    fire_behind_a_job(node, 3)
    (job,) = eventually(lambda: [j for j in parse_tsp_list(node.tsp("-l")) if j.run_id], what="the run queued")
    link = job_link(job)
    assert link.exists() and job.state == "queued"
    stale = link.with_name(link.name.replace(job.run_id, "0000000000000000-dead"))
    os.link(link, stale)  # as if queued by a watcher killed with its tsp server
    node.tsp("-r", str(job.id))
    eventually(lambda: not link.exists() and not stale.exists(), timeout=10, what="the links swept")
    assert link.with_name(f"{link.name.split('.')[0]}.fifo").exists()
    assert node.wait_served() == []  # a new run, through a link of its own
    node.wait_idle()
    assert node.started()[-1]["run_id"] != job.run_id
