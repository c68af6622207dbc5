"""What a procedure asks its driver to do: the only way trigger's rules touch the world.

The rules of the daemon, of `trigger run`, of the slot wait and of
membership live in `trigger.procedures` as generators without IO. A
generator yields one of these effects and gets back its result (or has the
effect's error raised at the `yield`). Two drivers carry them out:
`trigger.driver` on real time (etcd, task-spooler, subprocess, threads) and
`simulator.driver` on SimPy time (the in-memory store, the fake
task-spooler, fake Puppet runs). Neither holds a rule of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generator


@dataclass(frozen=True, slots=True)
class Call:
    """`fn(store, *args)` on the driver's store; its StoreError comes back raised.
    With `within`, an answer later than that many seconds (all endpoints
    together) is UnavailableError: a run's fencing cannot wait on a store
    that never answers."""

    fn: Callable
    args: tuple = ()
    within: float | None = None


@dataclass(frozen=True, slots=True)
class Now:
    """The driver's clock, in seconds: wall-clock time, for records."""


@dataclass(frozen=True, slots=True)
class Elapsed:
    """The driver's monotonic clock, in seconds: for deadlines, which a
    stepped wall clock must not move."""


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Watch:
    """Start watching `prefix` from `revision` (0: from now), replacing the
    procedure's previous watch. The driver cancels it when the procedure ends."""

    prefix: str
    revision: int


@dataclass(frozen=True, slots=True)
class NextChange:
    """The next delivery of the watch (a list of changes), or None after
    `timeout` seconds without one; a dead watch raises its StoreError."""

    timeout: float


@dataclass(frozen=True, slots=True)
class Unwatch:
    """Cancel the procedure's watch."""


@dataclass(frozen=True, slots=True)
class LiveRuns:
    """The run ids the queue holds, queued or running; QueueError if it cannot be asked."""


@dataclass(frozen=True, slots=True)
class Enqueue:
    """Queue `trigger run` for this run id; QueueError if the queue refuses it."""

    run_id: str


@dataclass(frozen=True, slots=True)
class Execute:
    """Run the configured command for a started run; returns its exit code, or
    (exit code, the tail of its output) where the driver kept that, or
    CommandStopped if something outside the run stopped it first."""

    record: Any  # RunRecord


@dataclass(frozen=True, slots=True)
class CommandStopped:
    """What `Execute` returns when the command was stopped before its end from
    outside the run (SIGTERM to `trigger run`, its queue job killed): its
    fires go back."""

    exit_code: int | None  # None: it never started
    reason: str


@dataclass(frozen=True, slots=True)
class StopCommand:
    """Stop the command of this run (from a procedure spawned beside it):
    SIGTERM, then SIGKILL after `grace` seconds. Nothing if none runs."""

    grace: float


@dataclass(frozen=True, slots=True)
class ProcessAlive:
    """Is the watcher process `process` ("PID@BOOT-ID") alive on this machine?
    True, False, or None when this machine cannot tell (another boot or host)."""

    process: str


@dataclass(frozen=True, slots=True)
class ReadConfig:
    """The roles and elections declared in a config directory (trigger::role)."""

    path: str | None


@dataclass(frozen=True, slots=True)
class Spawn:
    """Run another procedure beside this one; returns a handle for `Cancel`."""

    procedure: Generator


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop a spawned procedure (it is closed where it waits)."""

    handle: Any


@dataclass(frozen=True, slots=True)
class Note:
    """Something to tell: a core action carried out, or a message.

    `what` is a core action (it has `describe()`) or a str; `level` is a
    logging level name. The real driver logs it; the simulator counts and
    traces it.
    """

    what: Any
    level: str = "info"


Effect = Call | Now | Elapsed | Sleep | Watch | NextChange | Unwatch | LiveRuns | Enqueue | Execute | \
    StopCommand | ProcessAlive | ReadConfig | Spawn | Cancel | Note
NOW = Now()
ELAPSED = Elapsed()
UNWATCH = Unwatch()
LIVE_RUNS = LiveRuns()
