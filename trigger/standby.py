"""A standby `trigger run`: started ahead of time, so a queued run does not wait for an interpreter.

A run queued through task-spooler as `python -m trigger run` spends about
85 ms in Python's start-up and imports before it touches etcd, on every
run. So the watcher keeps one `trigger run --standby FIFO` waiting, already
started and connected, blocked in opening FIFO for writing, and queues each
run as `cat LINK`, LINK a hard link of FIFO named after the run
(`<FIFO's stem>.<run id>.run`, made by the watcher as it queues the run).
When task-spooler starts that job, cat opens LINK, which is FIFO: the
standby wakes, and inotify tells it which name was opened, so it knows the
run without asking task-spooler (`tsp -l` lists every finished job too: 2 ms
of CPU a call); it takes LINK away and carries the run out with the same
procedure as a cold `trigger run`. A job with no link (queued by an older
watcher as `cat FIFO`, or where no link could be made), or one inotify did
not tell of in time, is the oldest running run `tsp -l` lists. The
command's output goes through FIFO to cat, so it lands in task-spooler's
output as before; the standby closes FIFO when the run has finished, cat
exits, and task-spooler moves on: the queue still holds one job for as long
as the run lasts. A link whose run is neither queued nor running any more
(its job removed, a watcher killed with its task-spooler) is taken away
when the watcher next looks at its queue.

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
import struct
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from .policy import STANDBY_IDLE_CHECK as IDLE_CHECK
from .policy import STANDBY_CLOSE_WAIT, STANDBY_LINGER, STANDBY_OPEN_WAIT
from .queue import QueueError
from .records import BadRecord, check_id

LINK_SUFFIX = ".run"


def fifo_for(host: str, prefix: str) -> Path | None:
    """The FIFO of this host's standby, the same across watcher restarts (queued jobs name
    it), in a directory only this user can use; None where that cannot be had."""
    import tempfile  # here: the standby, a process of its own, has no use for it (2 MB of RSS)

    key = _sha256(f"{os.environ.get('TS_SOCKET', '')}\0{host}\0{prefix}".encode()).hexdigest()[:16]
    fifo = Path(tempfile.gettempdir()) / f"trigger-standby-{os.getuid()}" / f"{key}.fifo"
    return fifo if make_fifo(fifo) else None


def make_fifo(fifo: Path) -> bool:
    """Make `fifo` (and its private folder) unless it is there; False where that cannot be had."""
    folder = fifo.parent
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(folder)  # not a symlink, ours, private: nobody else can swap the FIFO
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            return False
        try:
            os.mkfifo(fifo, 0o600)
        except FileExistsError:
            pass
        return stat.S_ISFIFO(os.lstat(fifo).st_mode)
    except OSError:
        return False


def job_argv(fifo: Path) -> list[str]:
    """The task-spooler job of a run the standby carries out: `fifo` or one of its links."""
    return ["cat", str(fifo)]


def link_for(fifo: Path, run_id: str) -> Path:
    """The hard link of `fifo` a run's job opens: the same pipe, and its name tells the run."""
    return fifo.with_name(f"{fifo.stem}.{run_id}{LINK_SUFFIX}")


def run_id_of_link(fifo: Path, name: str) -> str | None:
    """The run id in the name of one of `fifo`'s run links; None for any other name."""
    head = fifo.stem + "."
    if not (name.startswith(head) and name.endswith(LINK_SUFFIX)):
        return None
    try:
        return check_id(name[len(head):-len(LINK_SUFFIX)], "run id")
    except BadRecord:
        return None


def run_links(fifo: Path) -> dict[str, Path]:
    """The run links of `fifo` there are now, by run id."""
    try:
        names = os.listdir(fifo.parent)
    except OSError:
        return {}
    found = {}
    for name in names:
        run_id = run_id_of_link(fifo, name)
        if run_id is not None:
            found[run_id] = fifo.parent / name
    return found


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return True  # one is gone: nothing to mend here


def _relink(fifo: Path, link: Path) -> None:
    """Make `link` a link of `fifo` again, in one step: a job opening it finds one or the other.
    A job already waiting on the old pipe is let go (an open and a close: cat reads nothing and
    ends); its run, then neither queued nor running, is judged lost and queued again."""
    try:
        os.close(os.open(link, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no job waits on it (ENXIO): nothing to let go
    spare = link.with_name(link.name + ".new")  # not a run link's name
    try:
        os.link(fifo, spare)
        os.replace(spare, link)
    except OSError:
        _unlink(spare)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass  # gone already; else left to the next sweep


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
            link, env = None, {}
            if self._alive() and not os.path.exists(self.fifo):
                self._remake()
            if self._alive():
                link = link_for(self.fifo, run_id)
                try:
                    os.link(self.fifo, link)
                except FileExistsError:
                    pass
                except OSError:
                    link = None  # the job opens the FIFO itself: the standby asks tsp which run it is
                argv = job_argv(link or self.fifo)
                env = {"LC_ALL": "C"}  # cat copies bytes: no locale to load (0.14 ms of a run)
                self._used = time.monotonic()
            else:
                self._start()
            # A failed enqueue keeps its link: tsp may have queued the job all the same (a
            # timeout); if not, the next look at the queue takes the link away.
            self.queue.enqueue(run_id, argv, env)

    def live_run_ids(self) -> frozenset[str]:
        """The queue's live runs; and the run links of runs no longer live go (a job removed, a
        run queued before a crash): each is kept while its run is queued or running, and made a
        link of the FIFO there is now if it is not (the FIFO made anew: a watcher restarted after
        a cleaner took it away; a job on the old one would wait for ever)."""
        with self._lock:  # links listed here were queued (enqueue links and queues under it)
            links = run_links(self.fifo)
        live = self.queue.live_run_ids()
        with self._lock:
            for run_id, link in links.items():
                if run_id not in live:
                    _unlink(link)
                elif not _same_file(link, self.fifo):
                    _relink(self.fifo, link)
            if live and not self._alive():
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

    def _remake(self) -> None:
        """The FIFO went (a /tmp cleaner, an operator): its standby waits on a pipe nobody can
        open any more. Make it again, with a new standby; meanwhile and where that fails, runs
        start cold."""
        self.process.terminate()  # idle: it leaves at once (in a run, after it: its job has it open)
        self.process = None
        if make_fifo(self.fifo):
            self._start()
        logging.getLogger("trigger.watch").warning(
            "standby: its FIFO %s was removed; %s", self.fifo,
            "made it again, with a new standby" if self.process else "runs start cold",
            extra={"fields": {"event": "standby_fifo_remade"}})

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


def serve(fifo: Path, run: Callable[[str, int], int], running: Callable[[], list[str]], watcher: int) -> None:
    """The standby's loop: wait for a job to open `fifo`, take its run id (the name of the run
    link it opened, told by inotify; else the oldest of the `running` run ids not served yet),
    `run(run_id, fd)` with output to the FIFO; until told to leave (SIGTERM) or the watcher
    (pid) is gone, whichever comes while idle."""
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
                    run_id = None
                    if link is not None:
                        _unlink(fifo.parent / link)  # its job holds it open: nothing else needs it
                        run_id = run_id_of_link(fifo, link)
                        if run_id in served:  # not to be run twice: ask, as for a job with no link
                            run_id = None
                    if run_id is None:  # a job of an older watcher's (no link), or not told in time
                        run_id = next((r for r in running() if r not in served), None)
                    if run_id is not None:
                        served.append(run_id)
                        run(run_id, fd)
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
