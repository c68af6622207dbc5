"""The standby queue (trigger/queue/standby.py, standby_runner.py) and its decisions
(trigger/procedures.py): a job opens a hard link of the FIFO named after its run, and inotify
tells the standby which; the watcher sweeps links of runs gone."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import need
from tests.eventually import eventually
from tests.processes import kill_started_with
from trigger.procedures import COLD, REMAKE, STANDBY, LinkSweep, standby_linger_left, standby_route, \
    standby_run_id, sweep_links
from trigger.queue import QueueError
from trigger.queue.standby import StandbyQueue, fifo_for, job_argv, link_for, run_id_of_link, run_links, \
    status_for
from trigger.queue.tsp import parse_tsp_list
from trigger.queue.standby_runner import GONE, IN_CLOSE_NOWRITE, IN_OPEN, LinkWatch, parse_inotify

SERVER = Path(__file__).with_name("standby_server.py")
REPO = Path(__file__).resolve().parents[2]


def event(mask: int, name: bytes, padded_to: int = 0) -> bytes:
    """One `struct inotify_event` as the kernel writes it: name NUL-padded to `len`."""
    size = max(len(name) + 1, padded_to) if name else 0
    return struct.pack("iIII", 1, mask, 0, size) + name.ljust(size, b"\0")


def test_parse_inotify_reads_each_event_and_its_padded_name():
    data = event(IN_OPEN, b"k.r1.run", 16) + event(IN_OPEN, b"") + event(IN_CLOSE_NOWRITE, b"k.fifo", 32)
    assert parse_inotify(data) == [(IN_OPEN, "k.r1.run"), (IN_OPEN, ""), (IN_CLOSE_NOWRITE, "k.fifo")]
    assert parse_inotify(b"") == []
    assert parse_inotify(data[:10]) == []  # a torn header is not an event


def test_the_run_id_comes_only_from_a_run_link_of_this_fifo():
    fifo = Path("/t/0123abcd.fifo")
    assert link_for(fifo, "r-1.a") == Path("/t/0123abcd.r-1.a.run")
    assert run_id_of_link(fifo, "0123abcd.r-1.a.run") == "r-1.a"
    assert run_id_of_link(fifo, "0123abcd.x.run.run") == "x.run"
    for name in ("0123abcd.fifo", "0123abcd.lock", "ffff0000.r1.run", "0123abcd..run", "0123abcd.run",
                 "0123abcd.-x.run", "0123abcd.a b.run", "0123abcd." + "r" * 129 + ".run"):
        assert run_id_of_link(fifo, name) is None, name


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "0123abcd.fifo"
    os.mkfifo(path, 0o600)
    return path


def test_inotify_tells_which_link_a_job_opened_and_when_it_closed_it(fifo):
    links = LinkWatch.start(fifo)
    assert links is not None, "inotify: Linux has it"
    try:
        link = link_for(fifo, "r1")
        os.link(fifo, link)
        cat = subprocess.Popen(["cat", str(link)], stdout=subprocess.PIPE)
        try:
            fd = os.open(fifo, os.O_WRONLY)  # returns once cat has opened the other end
            assert links.opened(fd, 5.0) == link.name
            os.write(fd, b"out\n")
            os.close(fd)
            assert links.wait_closed(link.name, 5.0)
            assert cat.communicate(timeout=5)[0] == b"out\n"
        finally:
            cat.kill()
            cat.wait()
        # a reader that opened the FIFO itself (a job of an older watcher): nothing to tell
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        fd = os.open(fifo, os.O_WRONLY)
        assert links.opened(fd, 0.2) is None
        # and once it is gone, the open found a reader on its way out, not a job
        os.close(reader)
        assert links.opened(fd, 5.0) is GONE
        os.close(fd)
        assert not links.wait_closed(link.name, 0.1)
        # a job not told (no link, or told late): the close of any name of this FIFO is its end
        fifo.with_suffix(".lock").write_text("")
        for name, told in ((fifo.with_suffix(".lock"), False), (link, True), (fifo, True)):
            os.close(os.open(name, os.O_RDONLY | os.O_NONBLOCK))
            assert links.wait_closed(None, 0.5) is told, name
    finally:
        links.close()


class FakeQueue:
    def __init__(self):
        self.queued: list[tuple[str, list[str]]] = []
        self.live: frozenset[str] = frozenset()
        self.fail = False

    def enqueue(self, run_id: str, argv: list[str], env: dict | None = None) -> None:
        if self.fail:
            raise QueueError("tsp -L exited 1")
        self.queued.append((run_id, argv))
        self.env = env

    def live_run_ids(self) -> frozenset[str]:
        return self.live


def test_the_watcher_queues_a_link_and_sweeps_those_of_runs_no_longer_live(fifo):
    queue = FakeQueue()
    standby = StandbyQueue(queue, fifo, ["unused"])
    standby._alive = lambda: True  # a standby waits on the FIFO
    standby.enqueue("r1", ["trigger", "run"])
    standby.enqueue("r2", ["trigger", "run"])
    assert queue.queued == [("r1", job_argv(link_for(fifo, "r1"), status_for(fifo, "r1"))),
                            ("r2", job_argv(link_for(fifo, "r2"), status_for(fifo, "r2")))]
    assert os.path.samefile(link_for(fifo, "r1"), fifo)  # the same pipe
    assert queue.env == {"LC_ALL": "C"}  # sh's and cat's own locale, not the run's
    other = fifo.with_name("ffff0000.r9.run")  # another host's standby's
    os.link(fifo, other)
    queue.live = frozenset({"r2"})  # r1 removed from the queue (tsp -r), or done
    assert standby.live_run_ids() == {"r2"}
    assert set(run_links(fifo)) == {"r2"} and other.exists() and fifo.exists()
    queue.fail = True
    with pytest.raises(QueueError):
        standby.enqueue("r3", ["trigger", "run"])
    assert set(run_links(fifo)) == {"r2", "r3"}  # tsp may have queued it all the same (a timeout)
    queue.live = frozenset({"r2", "r3"})
    standby.live_run_ids()
    assert set(run_links(fifo)) == {"r2", "r3"}  # and kept while it is queued
    queue.fail, queue.live = False, frozenset({"r2"})  # it had not: its link goes at the next look
    standby.live_run_ids()
    assert set(run_links(fifo)) == {"r2"}
    queue.live = frozenset()
    standby.live_run_ids()
    assert run_links(fifo) == {}


def test_links_of_a_fifo_made_anew_are_made_links_of_the_new_one(fifo):
    """A cleaner took the FIFO away and a restarted watcher made a new one: a job still queued
    must open the new pipe, where a standby waits, not the old one, where none ever will."""
    queue = FakeQueue()
    standby = StandbyQueue(queue, fifo, ["unused"])
    standby._alive = lambda: True
    standby.enqueue("r1", ["trigger", "run"])
    os.unlink(fifo)
    os.mkfifo(fifo, 0o600)
    assert not os.path.samefile(link_for(fifo, "r1"), fifo)
    queue.live = frozenset({"r1"})
    assert standby.live_run_ids() == {"r1"}
    assert os.path.samefile(link_for(fifo, "r1"), fifo) and set(run_links(fifo)) == {"r1"}
    assert sorted(os.listdir(fifo.parent)) == sorted([fifo.name, link_for(fifo, "r1").name])


def test_a_job_waiting_on_an_old_fifo_is_let_go(fifo):
    """Its job had started (cat waits in its open of the old pipe) when the FIFO was made anew:
    cat must end, so that task-spooler moves on and the watcher queues the run again."""
    queue = FakeQueue()
    standby = StandbyQueue(queue, fifo, ["unused"])
    standby._alive = lambda: True
    standby.enqueue("r1", ["trigger", "run"])
    cat = subprocess.Popen(["cat", str(link_for(fifo, "r1"))], stdout=subprocess.PIPE)
    try:
        wchan = Path(f"/proc/{cat.pid}/wchan")
        eventually(lambda: wchan.read_text() == "wait_for_partner", 5, "cat to wait in its open")
        os.unlink(fifo)
        os.mkfifo(fifo, 0o600)
        queue.live = frozenset({"r1"})  # tsp lists it as running
        eventually(lambda: (standby.live_run_ids(), cat.poll() is not None)[1], 5, "cat to end")
        assert cat.returncode == 0 and cat.stdout.read() == b""
        assert os.path.samefile(link_for(fifo, "r1"), fifo)
    finally:
        cat.kill()
        cat.wait()


def test_without_a_standby_the_run_is_queued_cold_and_no_link_made(fifo):
    queue = FakeQueue()
    standby = StandbyQueue(queue, fifo, ["unused"])
    standby._alive = lambda: False
    standby._start = lambda: None
    standby.enqueue("r1", ["trigger", "run", "--run-id", "r1"])
    assert queue.queued == [("r1", ["trigger", "run", "--run-id", "r1"])] and run_links(fifo) == {}
    assert queue.env == {}  # the run, and its command, keep the watcher's locale


def test_the_standby_serves_a_link_without_asking_the_queue_and_an_old_job_by_asking(fifo, tmp_path):
    log = tmp_path / "standby.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, str(SERVER), str(fifo), str(log), "r-old"], env=env,
                              start_new_session=True)
    try:
        def notes() -> list[dict]:
            return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

        eventually(notes, 10, "the standby to start")
        for run_id in ("r1", "r2", "r3"):  # back to back: each found by its own link
            os.link(fifo, link_for(fifo, run_id))
            done = subprocess.run(["cat", str(link_for(fifo, run_id))], capture_output=True, timeout=10)
            assert done.stdout == f"ran {run_id}\n".encode()
            assert not link_for(fifo, run_id).exists()  # the standby took it away
        assert [n for n in notes()[1:]] == [{"ran": "r1"}, {"ran": "r2"}, {"ran": "r3"}]
        # a job of an older watcher opens the FIFO itself: the standby asks the queue
        done = subprocess.run(["cat", str(fifo)], capture_output=True, timeout=10)
        assert done.stdout == b"ran r-old\n"
        assert notes()[4:] == [{"asked": "running"}, {"ran": "r-old"}]
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_the_standby_never_takes_a_cold_job_running_beside_it_for_its_own(fifo, tmp_path, monkeypatch):
    """`tsp -S 2`: a cold `trigger run` job runs beside the standby's job. A job the standby was
    not told the link of is looked up in task-spooler's list: it is the standby's own job, not
    the older cold one (which the standby would then have run a second time, beside itself)."""
    need("tsp", "task-spooler")
    monkeypatch.setenv("TS_SOCKET", str(tmp_path / "tsp.sock"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where task-spooler writes its jobs' output
    log = tmp_path / "standby.jsonl"
    server = None
    try:
        subprocess.run(["tsp", "-S", "2"], check=True, capture_output=True)
        subprocess.run(["tsp", "-L", "trigger:r-cold", "sleep", "30"], check=True, capture_output=True)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        server = subprocess.Popen([sys.executable, str(SERVER), str(fifo), str(log), "tsp"], env=env,
                                  start_new_session=True)
        eventually(lambda: log.exists(), 10, "the standby to start")
        # the job opens the FIFO itself (no link): the standby must ask task-spooler
        subprocess.run(["tsp", "-L", "trigger:r-sb", *job_argv(fifo, status_for(fifo, "r-sb"))],
                       check=True, capture_output=True)

        def finished():
            jobs = parse_tsp_list(subprocess.run(["tsp", "-l"], capture_output=True, text=True).stdout)
            return next((j for j in jobs if j.run_id == "r-sb" and j.state == "finished"), None)

        job = eventually(finished, 10, "the standby's job to end")
        notes = [json.loads(line) for line in log.read_text().splitlines()]
        assert [n for n in notes if "ran" in n] == [{"ran": "r-sb"}]
        assert job.exit_code == 5  # the run's exit status, which the standby left for its job
    finally:
        subprocess.run(["tsp", "-K"], capture_output=True)
        kill_started_with("TS_SOCKET", str(tmp_path / "tsp.sock"))  # the jobs outlive the server
        if server is not None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_two_watchers_of_one_host_against_two_clusters_or_commands_get_two_standbys(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    one = fifo_for("h", "/p", "http://a:2379", "puppet agent --test")
    assert one == fifo_for("h", "/p", "http://a:2379", "puppet agent --test")  # across restarts
    assert one != fifo_for("h", "/p", "http://b:2379", "puppet agent --test")
    assert one != fifo_for("h", "/p", "http://a:2379", "puppet agent --test --noop")


@pytest.mark.parametrize("how", ["open", "not ours", "not a directory", "not a fifo"])
def test_a_fifo_folder_that_is_not_ours_is_one_line_naming_what(tmp_path, monkeypatch, how):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    folder = tmp_path / f"trigger-standby-{os.getuid()}"
    if how == "not a directory":
        folder.write_text("")
        expected = f"{folder} is not a directory"
    elif how == "not ours":
        monkeypatch.setattr(os, "getuid", lambda: 4242)  # then the folder is another user's
        folder = tmp_path / "trigger-standby-4242"
        folder.mkdir(mode=0o700)
        expected = f"{folder} belongs to uid {folder.stat().st_uid}, not to us (4242)"
    else:
        folder.mkdir(mode=0o700)
        if how == "open":
            folder.chmod(0o755)
            expected = f"{folder} is open to others (mode 755, not 700)"
        else:
            fifo = fifo_for("h", "/p")
            fifo.unlink()
            fifo.write_text("")
            expected = f"{fifo} is there and is not a FIFO"
    with pytest.raises(QueueError) as error:
        fifo_for("h", "/p")
    assert str(error.value) == expected and "\n" not in str(error.value)


def test_the_standbys_decisions():
    """trigger.procedures: the rules both the real adapter and simulator/standby.py follow."""
    asked = []

    def running():
        asked.append(1)
        return ["r1", "r2"]

    assert standby_run_id("r3", ["r9"], running) == "r3" and asked == []  # the link says: no tsp -l
    assert standby_run_id("r3", ["r3"], running) == "r1"  # served already: the oldest not served
    assert standby_run_id(None, ["r1"], running) == "r2"
    assert standby_run_id(None, ["r1", "r2"], running) is None  # no job of ours: nothing runs
    assert standby_route(True, True) == STANDBY
    assert standby_route(True, False) == REMAKE
    assert standby_route(False, True) == standby_route(False, False) == COLD
    sweep = sweep_links({"r1": True, "r2": False, "r3": True}, frozenset({"r2", "r3", "r4"}), True)
    assert sweep == LinkSweep(unlink=("r1",), relink=("r2",), start=False)
    assert sweep_links({}, frozenset({"r4"}), False).start  # a job of ours may wait for one
    assert not sweep_links({}, frozenset(), False).start
    foreign = {"r5": False, "r6": True, "r7": False}  # run id -> a standby serves its FIFO
    assert sweep_links({}, frozenset({"r5", "r6"}), True, foreign).let_go == ("r5",)
    never = lambda: pytest.fail("the queue asked before the linger was over")
    assert standby_linger_left(100.0, 50.0, 60.0, never) == 10.0
    assert standby_linger_left(110.0, 50.0, 60.0, lambda: True) == 60.0  # a run of ours is there
    assert standby_linger_left(110.0, 50.0, 60.0, lambda: False) is None  # let it go


def test_a_job_stranded_on_a_fifo_no_standby_serves_is_let_go(fifo):
    """A run queued before the FIFO's name changed (a watcher restarted with another run
    command, other endpoints, a new version) opens a link of the old FIFO, where no standby
    will ever be: its job must end, so that the run is judged lost and queued again. A job on
    a FIFO a standby serves (another watcher's, sharing this task-spooler) is left alone."""
    queue = FakeQueue()
    standby = StandbyQueue(queue, fifo, ["unused"])
    standby._alive = lambda: True
    old = fifo.with_name("00000000000000aa.fifo")
    os.mkfifo(old, 0o600)
    stranded, served, gone = (link_for(old, r) for r in ("r1", "r2", "r3"))
    for link in (stranded, served, gone):
        os.link(old, link)
    cat = subprocess.Popen(["cat", str(stranded)], stdout=subprocess.PIPE)
    try:
        wchan = Path(f"/proc/{cat.pid}/wchan")
        eventually(lambda: wchan.read_text() == "wait_for_partner", 5, "cat to wait in its open")
        queue.live = frozenset({"r1", "r2"})  # r3 is not our queue's: not ours to touch
        with open(old.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a standby serves the old FIFO: nothing is let go
            standby.live_run_ids()
            assert cat.poll() is None and stranded.exists()
        standby.live_run_ids()  # it left
        eventually(lambda: cat.poll() is not None, 5, "the stranded job's cat to end")
        assert cat.returncode == 0 and not stranded.exists()
        assert not served.exists()  # r2: live, on a FIFO no standby serves: its job would wait too
        assert gone.exists()  # r3: not a run of our queue
    finally:
        cat.kill()
        cat.wait()
