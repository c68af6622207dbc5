"""A standby `trigger run`: started ahead of time, so a queued run does not wait for an interpreter.

A run queued through task-spooler as `python -m trigger run` spends about
85 ms in Python's start-up and imports before it touches etcd, on every
run. So the watcher keeps one `trigger run --standby FIFO` waiting, already
started and connected, blocked in opening FIFO for writing, and queues each
run as `cat FIFO`. When task-spooler starts that job, cat opens
FIFO, the standby wakes, asks task-spooler which of our runs is running (the
job's label) and carries it out with the same procedure as a cold `trigger
run`. The command's output goes through FIFO to cat, so it lands in
task-spooler's output as before; the standby closes FIFO when the run has
finished, cat exits, and task-spooler moves on: the queue still holds one
job for as long as the run lasts.

A job waits for a standby as long as it takes: a dead one is started again
when the watcher next looks at its queue, and the FIFO's name stays the
same across watcher restarts, so a run queued before a restart is carried
out after it. (A bound on that wait would bound the run too: cat lasts as
long as the run.) One standby serves a FIFO at a time (a lock beside it); a
standby whose watcher is gone leaves once it is idle: the kernel tells it
(SIGTERM on its parent's death), so an idle standby never wakes up on its
own; where that cannot be asked for, it looks every STANDBY_IDLE_CHECK.

A standby costs a second Python process's memory. The watcher lets it go
once no run went through it for STANDBY_LINGER (and none of ours is queued
or running: a job may still come to it), so an idle host keeps one process;
the next run starts cold and a new standby with it. The watcher decides
this under the lock it queues runs under: a run is never queued for a
standby that is leaving.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import signal
import stat
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from .policy import STANDBY_IDLE_CHECK as IDLE_CHECK
from .policy import STANDBY_LINGER
from .queue import QueueError


def fifo_for(host: str, prefix: str) -> Path | None:
    """The FIFO of this host's standby, the same across watcher restarts (queued jobs name
    it), in a directory only this user can use; None where that cannot be had."""
    import tempfile  # here: the standby, a process of its own, has no use for it (2 MB of RSS)

    key = _sha256(f"{os.environ.get('TS_SOCKET', '')}\0{host}\0{prefix}".encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"trigger-standby-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(folder)  # not a symlink, ours, private: nobody else can swap the FIFO
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None
        fifo = folder / f"{key}.fifo"
        try:
            os.mkfifo(fifo, 0o600)
        except FileExistsError:
            pass
        return fifo if stat.S_ISFIFO(os.lstat(fifo).st_mode) else None
    except OSError:
        return None


def job_argv(fifo: Path) -> list[str]:
    """The task-spooler job of a run the standby carries out."""
    return ["cat", str(fifo)]


def _sha256(data: bytes):
    """hashlib's sha256 without hashlib: it loads OpenSSL's libcrypto, 4 MB of a watcher's RSS,
    for one hash at start. CPython's own implementation, which hashlib falls back to."""
    try:
        from _sha256 import sha256  # Python 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # Python 3.12 and later
        except ImportError:
            from hashlib import sha256
    return sha256(data)


class StandbyQueue:
    """The watcher's queue with a standby: runs go through it while it lives; a dead one is
    started again when the next run is queued, or when the watcher looks at its queue and a
    run of ours is there (its job may wait for it); meanwhile runs start cold. One that no
    run went through for `linger` seconds is let go."""

    def __init__(self, queue, fifo: Path, argv: list[str], linger: float = STANDBY_LINGER):
        self.queue, self.fifo, self.argv, self.linger = queue, fifo, argv, linger
        self.process: subprocess.Popen | None = None
        self._lock = threading.Lock()  # queueing a run, and letting the standby go
        self._used = 0.0  # when a run last went through it (monotonic)
        self._timer: threading.Timer | None = None

    def enqueue(self, run_id: str, argv: list[str]) -> None:
        with self._lock:
            if self._alive():
                argv = job_argv(self.fifo)
                self._used = time.monotonic()
            else:
                self._start()
            self.queue.enqueue(run_id, argv)

    def live_run_ids(self) -> frozenset[str]:
        live = self.queue.live_run_ids()
        if live:
            with self._lock:
                if not self._alive():
                    self._start()  # a job may be waiting for it
        return live

    def start(self) -> None:
        with self._lock:
            self._start()

    def stop(self) -> None:
        """Ask it to leave: at once when idle, after its run otherwise."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            if self._alive():
                self.process.terminate()

    def _alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _start(self) -> None:
        try:  # its own session: a signal to the watcher's group leaves a run going
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError:
            self.process = None
            return
        self._used = time.monotonic()
        self._wake_in(self.linger)

    def _wake_in(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(seconds, self._linger_over)
        self._timer.daemon = True
        self._timer.start()

    def _linger_over(self) -> None:
        """Let the standby go if no run went through it for `linger` and none of ours is in
        the queue; else look again later. (One wake-up per `linger`, and only while it lives.)"""
        with self._lock:
            if not self._alive():
                return
            left = self._used + self.linger - time.monotonic()
            if left > 0:
                self._wake_in(left)
                return
            try:
                busy = bool(self.queue.live_run_ids())
            except QueueError:
                busy = True  # cannot tell: keep it
            if busy:
                self._wake_in(self.linger)
                return
            self.process.terminate()  # idle: it leaves at once
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                pass  # in a run after all: it leaves after it
            self.process = None
        logging.getLogger("trigger.watch").info(
            "standby let go: no run went through it for %g s; the next run starts cold", self.linger,
            extra={"fields": {"event": "standby_let_go", "linger": self.linger}})


class _Leave(Exception):
    pass


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _told_when_parent_dies() -> bool:
    """Ask the kernel for SIGTERM when the process that started this one dies (Linux)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def serve(fifo: Path, run: Callable[[str, int], int], running: Callable[[], list[str]], watcher: int,
          started: Callable[[], tuple[int, str] | None] = lambda: None) -> None:
    """The standby's loop: wait for a job to open `fifo`, take its run id (`started`: the job
    just started, its pid and run id, if it can tell; else the oldest of the `running` run ids)
    not served yet, `run(run_id, fd)` with output to the FIFO; until told to leave (SIGTERM) or
    the watcher (pid) is gone, whichever comes while idle."""
    state = {"idle": True, "leave": False}

    def wake(signum, _frame) -> None:
        if signum == signal.SIGTERM or os.getppid() != watcher:  # reparented: the watcher is gone
            state["leave"] = True
        if state["leave"] and state["idle"]:
            raise _Leave

    served: deque[str] = deque(maxlen=64)  # a job just served may still be listed as running
    check = 0.0 if _told_when_parent_dies() else IDLE_CHECK  # else look now and then
    try:
        signal.signal(signal.SIGTERM, wake)
        signal.signal(signal.SIGALRM, wake)
        signal.setitimer(signal.ITIMER_REAL, check, check)
        with open(fifo.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # waits while an older standby serves this FIFO
            while not state["leave"] and os.getppid() == watcher:
                fd = os.open(fifo, os.O_WRONLY)  # blocks until task-spooler starts a job on it
                state["idle"] = False
                signal.setitimer(signal.ITIMER_REAL, 0)  # no alarm inside a run
                job = None
                try:
                    job = started()
                    if job is None or job[1] in served:
                        job = None
                        run_id = next((r for r in running() if r not in served), None)
                    else:
                        run_id = job[1]
                    if run_id is not None:
                        served.append(run_id)
                        run(run_id, fd)
                finally:
                    os.close(fd)
                    if job is not None:  # its cat reads to the end and leaves: the next open must not find it
                        _wait_gone(job[0])
                    state["idle"] = True
                    signal.setitimer(signal.ITIMER_REAL, check, check)
    except _Leave:
        pass


def _wait_gone(pid: int, timeout: float = 2.0) -> None:
    """Wait for a process that is not our child to end, at most `timeout`, without polling."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):  # gone already, or no pidfd here
        return
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
