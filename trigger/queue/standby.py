"""The `standby` queue: task-spooler, with a `trigger run` started ahead of its runs.

Chosen by name like `tsp` and `inline` (`open_queue("standby", ...)`, what
`trigger watch --standby` asks for). This module is the watcher's side (the
FIFO, its run links, starting and letting go of the standby);
`trigger.queue.standby_runner` is the standby process's (its loop, inotify,
the job's output). What either decides is in `trigger.procedures` (the
standby's decisions), without IO, so the simulator (simulator/standby.py)
runs the same rules.

A run queued through task-spooler as `python -m trigger run` spends about
85 ms in Python's start-up and imports before it touches etcd, on every
run. So the watcher keeps one `trigger run --standby FIFO` waiting, already
started and connected, blocked in opening FIFO for writing, and queues each
run as `sh -c 'cat < "$1"; ...' sh LINK STATUS` (the paths are positional
parameters, never code), LINK a hard link of FIFO named after the run
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
as the run lasts. Before closing, the standby writes the run's exit status
to STATUS (`<stem>.<run id>.status`), and the job exits with it: `tsp -l`'s
E-Level is the run's, as it is for a cold run. A link or status whose run
is neither queued nor running any more (its job removed, a watcher killed
with its task-spooler) is taken away when the watcher next looks at its
queue.

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

import logging
import os
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..policy import STANDBY_LINGER
from ..procedures import COLD, REMAKE, STANDBY, standby_linger_left, standby_route, sweep_links
from ..records import BadRecord, check_id
from . import QueueError

LINK_SUFFIX = ".run"
STATUS_SUFFIX = ".status"
# The job: cat copies the run's output from the FIFO (through LINK) until the standby closes
# it, then the job exits with the status the standby wrote (75, EX_TEMPFAIL, where there is
# none: the standby died in the run). `read` and `exit` are dash builtins: one fork, cat's.
# LINK is opened in that fork before cat's exec, so the standby wakes as soon as with a bare
# `cat LINK` (0.98 ms from the job's start, `cat -- "$1"` 1.66); only cat holds it, so a
# killed cat is a job gone for the standby (JobOutput), whatever becomes of sh.
JOB_SCRIPT = 'cat < "$1" || exit; read -r status < "$2"; exit "${status:-75}"'


class NoStandby(QueueError):
    """The standby's FIFO cannot be had (its folder is not ours); the message says what."""


def fifo_for(host: str, prefix: str, endpoints: str = "", run_cmd: str = "", socket: str | None = None) -> Path:
    """The FIFO of this host's standby, the same across watcher restarts (queued jobs name
    it), in a directory only this user can use. Its name is a hash of everything that makes
    a standby another's: task-spooler's socket, the host, the prefix, the endpoints and the
    run command (two watchers of one host against two clusters get two). NoStandby, saying
    what, where it cannot be had (a directory that is not ours)."""
    import tempfile  # here: the standby, a process of its own, has no use for it (2 MB of RSS)

    socket = os.environ.get("TS_SOCKET", "") if socket is None else socket
    key = "\0".join((socket, host, prefix, endpoints, run_cmd))
    fifo = Path(tempfile.gettempdir()) / f"trigger-standby-{os.getuid()}" / \
        f"{_sha256(key.encode()).hexdigest()[:16]}.fifo"
    problem = make_fifo(fifo)
    if problem:
        raise NoStandby(problem)
    return fifo


def make_fifo(fifo: Path) -> str | None:
    """Make `fifo` (and its private folder) unless it is there; what is wrong where that
    cannot be had (None: it is there)."""
    folder = fifo.parent
    try:
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass  # ours from before, or what is checked next
        st = os.lstat(folder)  # not a symlink, ours, private: nobody else can swap the FIFO
        if not stat.S_ISDIR(st.st_mode):
            return f"{folder} is not a directory"
        if st.st_uid != os.getuid():
            return f"{folder} belongs to uid {st.st_uid}, not to us ({os.getuid()})"
        if st.st_mode & 0o077:
            return f"{folder} is open to others (mode {stat.S_IMODE(st.st_mode):o}, not 700)"
        try:
            os.mkfifo(fifo, 0o600)
        except FileExistsError:
            pass
        if not stat.S_ISFIFO(os.lstat(fifo).st_mode):
            return f"{fifo} is there and is not a FIFO"
        return None
    except OSError as exc:
        return f"{exc.filename or folder}: {exc.strerror or exc}"


def job_argv(path: Path, status: Path) -> list[str]:
    """The task-spooler job of a run the standby carries out: `path` is the run's link (or
    the FIFO itself), `status` where the standby leaves the run's exit status."""
    return ["/bin/sh", "-c", JOB_SCRIPT, "sh", str(path), str(status)]


def link_for(fifo: Path, run_id: str) -> Path:
    """The hard link of `fifo` a run's job opens: the same pipe, and its name tells the run."""
    return fifo.with_name(f"{fifo.stem}.{run_id}{LINK_SUFFIX}")


def status_for(fifo: Path, run_id: str) -> Path:
    """Where the standby leaves a run's exit status for its job (then `tsp -l` shows it)."""
    return fifo.with_name(f"{fifo.stem}.{run_id}{STATUS_SUFFIX}")


def standby_mark(fifo: Path) -> str:
    """What the command of every job of this FIFO contains (its folder and stem), and no
    other job's: a cold `trigger run` beside it (`tsp -S 2`) is never taken for one."""
    return f"{fifo.parent}/{fifo.stem}."


def run_id_of_link(fifo: Path, name: str, suffix: str = LINK_SUFFIX) -> str | None:
    """The run id in the name of one of `fifo`'s run links (or status files, by `suffix`);
    None for any other name."""
    head = fifo.stem + "."
    if not (name.startswith(head) and name.endswith(suffix)):
        return None
    try:
        return check_id(name[len(head):-len(suffix)], "run id")
    except BadRecord:
        return None


def _names(fifo: Path) -> list[str]:
    try:
        return os.listdir(fifo.parent)
    except OSError:
        return []


def run_links(fifo: Path, suffix: str = LINK_SUFFIX, names: list[str] | None = None) -> dict[str, Path]:
    """The run links (or status files) of `fifo` there are now (among `names`, the folder's
    names if given), by run id."""
    found = {}
    for name in _names(fifo) if names is None else names:
        run_id = run_id_of_link(fifo, name, suffix)
        if run_id is not None:
            found[run_id] = fifo.parent / name
    return found


def foreign_links(fifo: Path, names: list[str] | None = None) -> dict[str, tuple[Path, bool]]:
    """Run links of other FIFOs in `fifo`'s folder (among `names` if given), by run id: the
    link, and whether a standby serves its FIFO (holds the lock beside it)."""
    found = {}
    for name in _names(fifo) if names is None else names:
        stem, _, rest = name.partition(".")
        if stem == fifo.stem or len(stem) != 16 or not rest.endswith(LINK_SUFFIX):
            continue
        other = fifo.with_name(stem + ".fifo")
        run_id = run_id_of_link(other, name)
        if run_id is not None:
            found[run_id] = (fifo.parent / name, _served(other.with_suffix(".lock")))
    return found


def _served(lock: Path) -> bool:
    """Whether a standby holds this FIFO's lock (it does while it lives)."""
    import fcntl  # here: only a folder with another FIFO's links needs it

    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False  # never served, or its folder was cleaned
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # and the lock with it


def _let_go(link: Path) -> None:
    """A job waiting in its open of `link` ends (an open and a close: cat reads nothing); a job
    not started yet finds no link and ends too."""
    try:
        os.close(os.open(link, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no job waits on it (ENXIO): nothing to let go
    _unlink(link)


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
    run went through for `linger` seconds is let go. (The rules: `trigger.procedures`.)"""

    def __init__(self, queue, fifo: Path, argv: list[str], linger: float = STANDBY_LINGER):
        self.queue, self.fifo, self.argv, self.linger = queue, fifo, argv, linger
        self.process: subprocess.Popen | None = None
        self._lock = threading.Lock()  # queueing a run, and letting the standby go
        self._used = 0.0  # when a run last went through it (monotonic)
        self._timer: threading.Timer | None = None

    def enqueue(self, run_id: str, argv: list[str]) -> None:
        with self._lock:
            env = {}
            route = standby_route(self._alive(), os.path.exists(self.fifo))
            if route == REMAKE:
                self._remake()
                route = standby_route(self._alive(), os.path.exists(self.fifo))
            if route == STANDBY:
                link = link_for(self.fifo, run_id)
                try:
                    os.link(self.fifo, link)
                except FileExistsError:
                    pass
                except OSError:
                    link = self.fifo  # the standby asks tsp which run this job is
                argv = job_argv(link, status_for(self.fifo, run_id))
                env = {"LC_ALL": "C"}  # sh and cat copy bytes: no locale to load (0.14 ms of a run)
                self._used = time.monotonic()
            elif route == COLD:
                self._start()  # for the next run
            # A failed enqueue keeps its link: tsp may have queued the job all the same (a
            # timeout); if not, the next look at the queue takes the link away.
            self.queue.enqueue(run_id, argv, env)

    def live_run_ids(self) -> frozenset[str]:
        """The queue's live runs; and the run links (and status files) of runs no longer live
        go, links to a FIFO made anew are mended, jobs of ours stranded on a FIFO no standby
        serves are let go, and a standby starts if a job of ours may wait for one
        (`procedures.sweep_links`)."""
        with self._lock:  # links listed here were queued (enqueue links and queues under it)
            names = _names(self.fifo)  # one look at the folder
            links = run_links(self.fifo, names=names)
            statuses = run_links(self.fifo, STATUS_SUFFIX, names)
            foreign = foreign_links(self.fifo, names)
        live = self.queue.live_run_ids()
        with self._lock:
            sweep = sweep_links({r: _same_file(link, self.fifo) for r, link in links.items()},
                                live, self._alive(), {r: served for r, (_, served) in foreign.items()})
            for run_id in sweep.unlink:
                _unlink(links[run_id])
            for run_id in sweep.relink:
                _relink(self.fifo, links[run_id])
            for run_id in sweep.let_go:
                _let_go(foreign[run_id][0])
                logging.getLogger("trigger.watch").warning(
                    "standby: %s waited on %s, which no standby serves (queued under another FIFO "
                    "name: another run command, endpoints or version); let go, it runs again",
                    run_id, foreign[run_id][0], extra={"fields": {"event": "standby_job_let_go"}})
            for run_id, status in statuses.items():
                if run_id not in live:  # its job read it and ended
                    _unlink(status)
            if sweep.start:
                self._start()
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
        self._start()
        logging.getLogger("trigger.watch").warning(
            "standby: its FIFO %s was removed; %s", self.fifo,
            "made it again, with a new standby" if self.process else "runs start cold",
            extra={"fields": {"event": "standby_fifo_remade"}})

    def _alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _start(self) -> None:
        if make_fifo(self.fifo):
            return  # no FIFO to serve (its folder went wrong): runs start cold
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

    def _busy(self) -> bool:
        try:
            return bool(self.queue.live_run_ids())
        except QueueError:
            return True  # cannot tell: keep it

    def _linger_over(self) -> None:
        """Let the standby go once `procedures.standby_linger_left` says so; else look again
        then. (One wake-up per `linger`, and only while it lives.)"""
        with self._lock:
            if not self._alive():
                return
            left = standby_linger_left(time.monotonic(), self._used, self.linger, self._busy)
            if left is not None:
                self._wake_in(left)
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


@dataclass(frozen=True)
class StandbySettings:
    """What `open_queue("standby")` needs: what keys the FIFO (fifo_for), the standby's
    argv given its own options (`trigger_run("--standby", FIFO, ...)`), and how long an
    unused one stays."""

    host: str
    prefix: str
    endpoints: str
    run_cmd: str
    trigger_run: Callable[..., list[str]]
    linger: float = STANDBY_LINGER


def open_standby(queue, settings: StandbySettings) -> StandbyQueue:
    """The standby queue over `queue` (task-spooler); NoStandby where its FIFO cannot be had."""
    socket = getattr(queue, "env", os.environ).get("TS_SOCKET", "")  # the one it uses (own_socket)
    fifo = fifo_for(settings.host, settings.prefix, settings.endpoints, settings.run_cmd, socket)
    argv = settings.trigger_run("--standby", str(fifo), "--watcher", str(os.getpid()))
    return StandbyQueue(queue, fifo, argv, settings.linger)
