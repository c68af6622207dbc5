"""The standby's run links (trigger/queue/standby.py, standby_runner.py): a job opens a hard link of the FIFO named
after its run, and inotify tells the standby which; the watcher sweeps links of runs gone."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.eventually import eventually
from trigger.queue import QueueError
from trigger.queue.standby import StandbyQueue, job_argv, link_for, run_id_of_link, run_links, status_for
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
