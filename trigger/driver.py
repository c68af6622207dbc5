"""The real-time driver: carries out a procedure's effects with etcd, task-spooler and threads.

Below it, `Slot`: a slot on a lease of its own, for code outside a run.

It holds no rule of its own (those are in `trigger.procedures`); it only
does what an effect says, on the wall clock. `stop()` ends the procedure
where it waits next: a blocking wait (a delivery, a sleep) wakes at once.
"""

from __future__ import annotations

import logging
import os
import queue as queue_module
import signal
import subprocess
import threading
import time
from typing import Callable

from .coordination import read_config_dir
from .leftovers import stop_left_behind
from .layout import Layout
from .policy import MEMBER_TTL, RUN
from .procedures import HeldSlot, acquire_slot, keep_lease, release_slots, revoke_quietly
from .effects import Call, Cancel, CommandStopped, Elapsed, Enqueue, Execute, LiveRuns, NextChange, \
    Note, Now, ProcessAlive, ReadConfig, Sleep, Spawn, StopCommand, Unwatch, Watch
from .queue import QueueError
from .store.base import Store, StoreError, UnavailableError

_STOP = object()


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


BOOT_ID = _boot_id()


def _pid_namespace() -> str:
    """This process's PID namespace (its inode): containers share the boot id, not the pids."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


PID_NAMESPACE = _pid_namespace()


def this_process() -> str:
    """How a watcher names itself in its member record: PID@BOOT-ID/PID-NAMESPACE."""
    return f"{os.getpid()}@{BOOT_ID}/{PID_NAMESPACE}"


def process_alive(process: str) -> bool | None:
    """True/False for a process of this boot of this machine, in this PID namespace; None when
    we cannot tell (another boot or host, another namespace's pid, or an older watcher's name
    without one): then a newcomer stands by rather than take the host."""
    pid, _, where = process.partition("@")
    boot, _, namespace = where.partition("/")
    if not BOOT_ID or boot != BOOT_ID or not pid.isdigit():
        return None
    if not PID_NAMESPACE or namespace != PID_NAMESPACE:
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True


def note_text(note: Note) -> str:
    what = note.what
    return what.describe() if hasattr(what, "describe") else str(what)


def log_note(logger: logging.Logger) -> Callable[[Note], None]:
    def tell(note: Note) -> None:
        logger.log(logging.getLevelName(note.level.upper()), "%s", note_text(note))
    return tell


# The command dies with its run, also when the run dies by SIGKILL (an OOM kill, `kill -9`)
# and cannot stop it (`prctl(PR_SET_PDEATHSIG)` would reach the command's first process only,
# not Puppet's children). So a watchdog starts beside the command, in a session of its own (a
# signal to the run's group leaves it alone), reading a pipe whose write end the run holds:
# a run that ends its command itself writes `done` first; a pipe that closes without it means
# the run died, and the command's process group gets SIGTERM, then SIGKILL after the grace
# ($2). POSIX sh, not Python: 0.2 ms of CPU a run against 4 to 16 ms for `python -I -S`. Its
# words are the group's number and the grace, formatted here: nothing of an event's.
WATCHDOG = ('read -r told; [ "$told" = done ] && exit 0; [ "$1" -gt 1 ] || exit 0; '
            'kill -TERM "-$1" 2>/dev/null || exit 0; sleep "$2"; kill -KILL "-$1" 2>/dev/null; exit 0')


def signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone (a pid of another user's is not ours to signal)


class Command:
    """The command a run executes, shared with the procedures spawned beside it.

    It runs in a process group of its own (`runner.start_command`); stopping
    it ends the whole group, SIGTERM then SIGKILL after `grace`, so Puppet's
    children go too. If this process dies first (SIGKILL: it cannot say),
    the WATCHDOG started beside the command does the same."""

    def __init__(self, grace: float = RUN.stop_grace):
        self.process: subprocess.Popen | None = None
        self.grace = grace
        self.stopped_because: str | None = None  # stopped from outside the run, and why
        # A stop asked before the command started (the lease ended while the run's start
        # was being written): the command is stopped as it starts, never left to run.
        self._stop_asked = False
        self._lock = threading.Lock()

    def wait(self, process: subprocess.Popen) -> int | tuple[int, str, str] | CommandStopped:
        """Its exit code; with the tail of its output when `runner.start_command` kept one, and
        what it left behind (`trigger.leftovers`); CommandStopped when it was stopped from
        outside the run."""
        watchdog = _watch_over(process.pid, self.grace)
        with self._lock:
            self.process = process
            stop_now = self._stop_asked
        left = ""
        try:
            if stop_now:
                _end_group(process, self.grace)
            code = process.wait()
            run_id = getattr(process, "run_id", None)  # set by `runner.start_command`
            if run_id:
                left = stop_left_behind(run_id, self.grace, frozenset([watchdog.pid] if watchdog else []))
        finally:
            with self._lock:
                self.process = None
            _dismiss(watchdog)
        code = 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell says
        if self.stopped_because is not None:
            return CommandStopped(code, self.stopped_because)
        tail = getattr(process, "tail", None)
        return code if tail is None else (code, tail.text(), left)

    def stop(self, grace: float, reason: str | None = None) -> None:
        """End the command's process group; `reason`: stopped from outside the run (its fires go back)."""
        with self._lock:
            process = self.process
            if process is None:
                self._stop_asked = True
            if reason and self.stopped_because is None:
                self.stopped_because = reason
        if process is not None:
            _end_group(process, grace)


def _end_group(process: subprocess.Popen, grace: float) -> None:
    signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    signal_group(process.pid, signal.SIGKILL)  # whatever of its group is left


def _watch_over(pgid: int, grace: float) -> subprocess.Popen | None:
    """The watchdog of a command's group, in a session of its own (a signal to our group leaves
    it); None if it cannot be started (then a SIGKILL of this process leaves the command)."""
    try:
        return subprocess.Popen(["/bin/sh", "-c", WATCHDOG, "trigger-watchdog", str(int(pgid)), f"{grace:g}"],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        logging.getLogger("trigger").warning("no watchdog for the command (%s): if this process is "
                                             "killed, the command is not", exc)
        return None


def _dismiss(watchdog: subprocess.Popen | None) -> None:
    """The run ended its command itself: the watchdog leaves without a signal."""
    if watchdog is None:
        return
    try:
        watchdog.stdin.write(b"done\n")
        watchdog.stdin.close()
    except OSError:
        pass  # it died: nothing to tell
    watchdog.wait()


STOPPED_BY_SIGTERM = "trigger run got SIGTERM (tsp -k?); command stopped"


def stop_on_sigterm(driver: "RealDriver", reason: str = STOPPED_BY_SIGTERM) -> None:
    """SIGTERM (`tsp -k`, an operator) stops the running command's group and gives its fires
    back; with no command running, the process ends as it would have (its lease ends the rest)."""
    def stop(signum, _frame) -> None:
        if driver.command.process is None:
            raise SystemExit(128 + signum)
        threading.Thread(target=driver.command.stop, args=(driver.command.grace, reason),
                         daemon=True, name="trigger-stop").start()

    signal.signal(signal.SIGTERM, stop)


def call_within(call: Callable[[], object], seconds: float):
    """`call()` on a thread of its own, given `seconds`: UnavailableError if it has not
    answered by then (it goes on, and its answer is dropped)."""
    answer: list = []
    done = threading.Event()

    def run() -> None:
        try:
            answer.append((call(), None))
        except BaseException as exc:  # noqa: BLE001 (handed to the caller)
            answer.append((None, exc))
        done.set()

    threading.Thread(target=run, daemon=True, name="trigger-call").start()
    if not done.wait(max(seconds, 0.0)):
        raise UnavailableError(f"no answer within {seconds:.1f}s")
    value, error = answer[0]
    if error is not None:
        raise error
    return value


class RealDriver:
    """Runs one procedure at a time on this thread (`run`); spawned ones on threads of their own."""

    def __init__(self, store, queue=None, run_argv: Callable[[str], list[str]] | None = None,
                 execute: Callable | None = None, clock: Callable[[], float] = time.time,
                 tell: Callable[[Note], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic):
        self.store, self.queue, self.run_argv, self.execute = store, queue, run_argv, execute
        self.clock, self.monotonic = clock, monotonic
        self.tell = tell or log_note(logging.getLogger("trigger"))
        self.stopping = threading.Event()
        self.command = Command()
        self.children: list[RealDriver] = []
        self.failure: BaseException | None = None  # what ended a spawned procedure early
        self._watch = None
        self._deliveries: queue_module.Queue = queue_module.Queue()

    def stop(self) -> None:
        self.stopping.set()
        self._deliveries.put(_STOP)  # wakes a wait for a delivery at once
        for child in self.children:
            child.stop()

    def run(self, procedure):
        """Drive `procedure` to its end and return its value (None once stopped).

        A store or queue error is raised inside the procedure at its
        `yield`; anything else ends it and propagates.
        """
        value, error = None, None
        try:
            while True:
                if self.stopping.is_set():
                    procedure.close()
                    if self.failure is not None:
                        raise self.failure
                    return None
                try:
                    effect = procedure.send(value) if error is None else procedure.throw(error)
                except StopIteration as end:
                    return end.value
                value, error = None, None
                try:
                    value = self._handlers[type(effect)](self, effect)
                except (StoreError, QueueError) as exc:
                    error = exc
        finally:
            self._unwatch()

    # -- effects ---------------------------------------------------------------------

    def _call(self, effect: Call):
        if effect.within is None:
            return effect.fn(self.store, *effect.args)
        return call_within(lambda: effect.fn(self.store, *effect.args), effect.within)

    def _now(self, _effect: Now) -> float:
        return self.clock()

    def _elapsed(self, _effect: Elapsed) -> float:
        return self.monotonic()

    def _sleep(self, effect: Sleep) -> None:
        self.stopping.wait(effect.seconds)

    def _start_watch(self, effect: Watch) -> None:
        self._unwatch()
        deliveries = self._deliveries = queue_module.Queue()
        if self.stopping.is_set():
            return
        self._watch = self.store.watch_prefix(effect.prefix, effect.revision, deliveries.put)

    def _next_change(self, effect: NextChange):
        deliveries = self._deliveries
        if self.stopping.is_set():
            return None
        try:
            item = deliveries.get(timeout=max(effect.timeout, 0.0))
        except queue_module.Empty:
            return None
        if item is _STOP:
            return None
        if isinstance(item, BaseException):
            self._watch = None  # a watch reports its error once, then is dead
            raise item
        return item

    def _unwatch(self, _effect: Unwatch | None = None) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _live_runs(self, _effect: LiveRuns):
        return self.queue.live_run_ids()

    def _enqueue(self, effect: Enqueue) -> None:
        self.queue.enqueue(effect.run_id, self.run_argv(effect.run_id))

    def _execute(self, effect: Execute) -> int | tuple[int, str] | CommandStopped:
        """`execute(record)` starts the command (a Popen) or tells how it ended (an exit code,
        an exit code, its output and what it left behind, or CommandStopped)."""
        started = self.execute(effect.record)
        return self.command.wait(started) if isinstance(started, subprocess.Popen) else started

    def _stop_command(self, effect: StopCommand) -> None:
        self.command.stop(effect.grace)

    def _read_config(self, effect: ReadConfig):
        return read_config_dir(effect.path)

    def _process_alive(self, effect: ProcessAlive) -> bool | None:
        return process_alive(effect.process)

    def _spawn(self, effect: Spawn) -> "RealDriver":
        child = RealDriver(self.store, clock=self.clock, tell=self.tell, monotonic=self.monotonic)
        child.command = self.command  # a procedure beside a run may stop its command
        self.children.append(child)

        def run() -> None:
            try:
                child.run(effect.procedure)
            except Exception as exc:  # noqa: BLE001 (it ends the procedure that spawned it)
                self.failure = exc
                self.stop()

        threading.Thread(target=run, daemon=True, name="trigger-spawned").start()
        return child

    def _cancel(self, effect: Cancel) -> None:
        effect.handle.stop()

    def _note(self, effect: Note) -> None:
        self.tell(effect)

    _handlers = {
        Call: _call, Now: _now, Elapsed: _elapsed, Sleep: _sleep, Watch: _start_watch, NextChange: _next_change,
        Unwatch: _unwatch, LiveRuns: _live_runs, Enqueue: _enqueue, Execute: _execute,
        StopCommand: _stop_command, ProcessAlive: _process_alive,
        ReadConfig: _read_config, Spawn: _spawn, Cancel: _cancel, Note: _note,
    }


# -- real-time handles ------------------------------------------------------------


class Slot:
    """One of `limit` slots of a trigger on a lease of its own, kept alive from a
    thread: `procedures.acquire_slot` for code outside a triggered run."""

    def __init__(self, store: Store, layout: Layout, trigger: str, limit: int, holder: str,
                 ttl: int = MEMBER_TTL):
        self.held = HeldSlot.of(layout, trigger, limit, holder)
        self.key, self.ttl = self.held.key, ttl
        self._driver = RealDriver(store)
        self._keeper: RealDriver | None = None
        self._lease: int | None = None

    def acquire(self, timeout: float | None = None) -> float:
        """Wait for a slot; returns the seconds waited. Raises TimeoutError, SlotLost."""
        store = self._driver.store
        self._lease = store.lease_grant(self.ttl)
        self._keeper = RealDriver(store)
        threading.Thread(target=self._keeper.run, args=(keep_lease(self._lease, self.ttl),),
                         daemon=True).start()
        return self._driver.run(acquire_slot(self.held, self._lease, self.ttl, timeout))

    def release(self) -> None:
        self.abandon()
        if self._lease is not None:
            self._driver.run(release_slots([self.held]))
            self._driver.run(revoke_quietly(self._lease))
            self._lease = None

    def abandon(self) -> None:
        """The holder died: nobody refreshes its lease any more."""
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
