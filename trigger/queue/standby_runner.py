"""The standby `trigger run`'s side of the `standby` queue: its loop, inotify, the job's output.

`trigger run --standby FIFO` waits here for a task-spooler job to open
FIFO (one of its run links), learns which run the job is, carries it out
with the same `triggered_run` as a cold run, leaves the run's exit status
for the job and closes the FIFO. Which run a job is, is decided by
`procedures.standby_run_id`; the watcher's side is `trigger.queue.standby`.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from ..policy import STANDBY_CLOSE_WAIT, STANDBY_OPEN_WAIT
from ..policy import STANDBY_IDLE_CHECK as IDLE_CHECK
from ..procedures import standby_run_id
from .standby import _unlink, run_id_of_link, standby_mark, status_for


def jobs_running(fifo: Path) -> Callable[[], list[str]]:
    """How the standby asks task-spooler which of its jobs run (a job it was not told the link
    of): the run ids of running jobs of this FIFO, oldest first; never a cold run's job
    running beside them (`tsp -S 2`)."""
    from .tsp import TspQueue

    return lambda: TspQueue().running_run_ids(standby_mark(fifo))


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


def serve(fifo: Path, run: Callable[[str, int], int], running: Callable[[], list[str]], watcher: int) -> None:
    """The standby's loop: wait for a job to open `fifo`, take its run id
    (`procedures.standby_run_id`: the name of the run link it opened, told by inotify; else
    the oldest of the `running` jobs of this FIFO not served yet), `run(run_id, fd)` with
    output to the FIFO, leave its exit status for the job; until told to leave (SIGTERM) or
    the watcher (pid) is gone, whichever comes while idle."""
    state = {"idle": True, "leave": False}

    def wake(signum, _frame) -> None:
        if signum == signal.SIGTERM or os.getppid() != watcher:  # reparented: the watcher is gone
            state["leave"] = True
        if state["leave"] and state["idle"]:
            raise _Leave

    served: deque[str] = deque(maxlen=64)  # a job just served may still be listed as running
    check = 0.0 if _told_when_parent_dies() else IDLE_CHECK  # else look now and then
    links = None
    try:
        signal.signal(signal.SIGTERM, wake)
        signal.signal(signal.SIGALRM, wake)
        signal.setitimer(signal.ITIMER_REAL, check, check)
        with open(fifo.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # waits while an older standby serves this FIFO
            links = LinkWatch.start(fifo)  # before the first open: a job's open is told after it
            while not state["leave"] and os.getppid() == watcher:
                if links:
                    links.drain()  # what came before cannot be the next job: it opens after we do
                fd = os.open(fifo, os.O_WRONLY)  # blocks until task-spooler starts a job on it
                state["idle"] = False
                signal.setitimer(signal.ITIMER_REAL, 0)  # no alarm inside a run
                link = None
                try:
                    link = links.opened(fd, STANDBY_OPEN_WAIT) if links else None
                    if link is GONE:
                        continue  # the last job's cat, on its way out: not a job
                    link_run_id = None
                    if link is not None:
                        _unlink(fifo.parent / link)  # its job holds it open: nothing else needs it
                        link_run_id = run_id_of_link(fifo, link)
                    # a job with no link (an older watcher's, or not told in time): tsp is asked
                    run_id = standby_run_id(link_run_id, served, running)
                    if run_id is not None:
                        served.append(run_id)
                        exit_status = run(run_id, fd)
                        _leave_status(status_for(fifo, link_run_id or run_id), exit_status)
                finally:
                    os.close(fd)
                    # its cat reads to the end and leaves: the next open must not find it
                    # (without inotify it may, and is then not taken for a new job: `served`)
                    if links and link is not GONE:
                        links.wait_closed(link)  # ours close for writing: not told
                    state["idle"] = True
                    signal.setitimer(signal.ITIMER_REAL, check, check)
    except _Leave:
        pass
    finally:
        if links:
            links.close()


def _leave_status(path: Path, exit_status: int | None) -> None:
    """The run's exit status, for its job to exit with (as `sys.exit` would: None is 0)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError:
        return  # the job then exits 75: no status to show
    try:
        os.write(fd, b"%d\n" % ((exit_status or 0) & 0xFF))
    finally:
        os.close(fd)


IN_CLOSE_NOWRITE, IN_OPEN = 0x10, 0x20  # <sys/inotify.h>
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then name[len]
GONE = "gone"  # LinkWatch.opened: the FIFO's reader left; the open found the last job's


def parse_inotify(data: bytes) -> list[tuple[int, str]]:
    """(mask, name) of each `struct inotify_event` in what a read of an inotify fd gave."""
    events, at = [], 0
    while at + _EVENT.size <= len(data):
        _wd, mask, _cookie, size = _EVENT.unpack_from(data, at)
        at += _EVENT.size
        events.append((mask, os.fsdecode(data[at:at + size].split(b"\0", 1)[0])))
        at += size
    return events


class LinkWatch:
    """Which of a FIFO's run links jobs open and close, told by inotify (Linux): the run id of
    the job that opened the FIFO, without asking task-spooler."""

    def __init__(self, fifo: Path, fd: int):
        self.fifo, self.fd = fifo, fd

    @classmethod
    def start(cls, fifo: Path) -> LinkWatch | None:
        """A watch on the FIFO's folder; None where inotify cannot be had (then tsp is asked)."""
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)  # IN_NONBLOCK, IN_CLOEXEC
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None  # e.g. the user's inotify instances are all taken
        if libc.inotify_add_watch(fd, os.fsencode(fifo.parent), IN_OPEN | IN_CLOSE_NOWRITE) < 0:
            os.close(fd)
            return None
        return cls(fifo, fd)

    def close(self) -> None:
        os.close(self.fd)

    def _ours(self, name: str) -> bool:
        return name == self.fifo.name or run_id_of_link(self.fifo, name) is not None

    def _read(self) -> list[tuple[int, str]]:
        try:
            return parse_inotify(os.read(self.fd, 65536))
        except BlockingIOError:
            return []

    def drain(self) -> None:
        while self._read():
            pass

    def opened(self, pipe: int, timeout: float) -> str | None:
        """The name of the run link a job opened, now that our end of the FIFO (`pipe`) opened;
        GONE if the FIFO's reader left (a job's cat, about to go, held it); None if not told
        within `timeout`. Its open may be told just after ours returns: the two race."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        poller.register(pipe, 0)  # POLLERR alone: no reader any more
        deadline = time.monotonic() + timeout
        while True:
            for mask, name in self._read():
                if mask & IN_OPEN and run_id_of_link(self.fifo, name) is not None:
                    return name
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready = dict(poller.poll(left * 1000))
            if ready.get(pipe, 0) & select.POLLERR and self.fd not in ready:
                return GONE

    def wait_closed(self, name: str | None, timeout: float = STANDBY_CLOSE_WAIT) -> bool:
        """Wait until the job's cat closed link `name` (it read to the end), at most `timeout`;
        name None: a job not told (no link, or told late) closing the FIFO or any of its links."""
        deadline = time.monotonic() + timeout
        while True:
            if any(mask & IN_CLOSE_NOWRITE and (n == name or name is None and self._ours(n))
                   for mask, n in self._read()):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            select.select([self.fd], [], [], left)



JOB_GONE = "its task-spooler job ended before it (killed?); command stopped"


class JobOutput:
    """The output of a run carried out by the standby, on its way to the job's `cat`.

    No file descriptor of the FIFO reaches the command: it writes into a pipe
    that this copies into the FIFO, so a background child it leaves behind
    holds that pipe, never the job, and the job ends when the run has (the
    standby closes the FIFO). A job whose `cat` went (`tsp -k`, killed) is
    told by the FIFO itself (no reader: POLLERR, or EPIPE on a write), and
    `reader_gone()` is called once: the run stops its command and gives its
    fires back."""

    def __init__(self, fifo_fd: int, reader_gone: Callable[[], None]):
        self.fifo_fd, self._reader_gone = fifo_fd, reader_gone
        self.gone = False  # the job's cat went
        self._eof = False
        self._read_end, self.write_end = os.pipe()
        os.set_blocking(self._read_end, False)
        self._wake_read, self._wake_write = os.pipe()  # the run has ended
        self._copier = threading.Thread(target=self._copy, daemon=True, name="trigger-job-output")
        self._copier.start()

    def close_write_end(self) -> None:
        """Ours is not needed once the command holds it: its end is then the pipe's end."""
        os.close(self.write_end)
        self.write_end = -1

    def close(self) -> None:
        """The run has ended: copy what is waiting, then stop (a background child's later
        output is dropped; its writes fail once the pipe's read end is gone)."""
        os.write(self._wake_write, b"x")
        self._copier.join()
        for fd in (self._read_end, self.write_end, self._wake_read, self._wake_write):
            if fd >= 0:
                os.close(fd)

    def _copy(self) -> None:
        poller = select.poll()
        poller.register(self._read_end, select.POLLIN)
        poller.register(self.fifo_fd, 0)  # POLLERR alone: no reader any more
        poller.register(self._wake_read, select.POLLIN)
        while True:
            ready = dict(poller.poll())
            if ready.get(self.fifo_fd, 0) & select.POLLERR:
                self._gone()
                return
            ended = self._wake_read in ready
            while self._pass_on():  # what is waiting; all of it once the run has ended
                if not ended:
                    break
            if ended or self.gone:
                return
            if self._eof:  # every writer closed: only the FIFO and the run's end to watch now
                poller.unregister(self._read_end)
                self._eof = False

    def _pass_on(self) -> bool:
        """Copy one read's worth; False when nothing more is waiting (or the job went)."""
        try:
            data = os.read(self._read_end, 65536)
        except BlockingIOError:
            return False
        if not data:  # every writer closed
            self._eof = True
            return False
        try:
            os.write(self.fifo_fd, data)
        except BrokenPipeError:
            self._gone()
            return False
        return True

    def _gone(self) -> None:
        if not self.gone:
            self.gone = True
            self._reader_gone()
