"""The watcher's protocol core: events and `now` in, actions out, no IO.

Theory of operation
-------------------
Each host has an inbox in the store. A fire writes one entry into the inbox
of every target host. The host's watcher feeds this core with what it reads
and sees in the store (`Snapshot`, `Changes`) and with what the run queue
tells (`EnqueueFailed`, the queue's live runs inside a `Snapshot`). The
core answers with actions for the adapter to carry out (`EnqueueRun`,
`Quarantine`, `MarkRunLost`) or only to report (`Coalesce`, `RunBegan`,
`RunEnded`: what a log or a metric needs to know, nothing to carry out).

The one rule: while the inbox holds entries no live run has claimed,
exactly one queued run must be waiting for them. A run, when it starts,
claims the entries present (its started record lists them); they are
removed only when its command has run to its end. Entries that arrive later
stay unclaimed and get the next run. Hence:

* every fire is followed by a run that starts after it and runs to its end
  (an entry goes only when such a run finishes);
* fires arriving while a run is queued join it (`Coalesce`);
* fires arriving during a running run cause exactly one more run.

One run at a time per host: a run holds the host's run lock (on its lease)
from before it claims until after it finished. A started run whose lock is
gone died before its end (OOM, reboot, kill): it is marked lost and its
claimed entries get a new run. Its process may outlive task-spooler, so the
queue's word counts only for queued runs.

The core keeps nothing that the store and the queue cannot tell it again:
after a crash, a reconnect or a compacted watch, a new `Snapshot` rebuilds
its state. Queued runs the queue no longer holds (a killed queue server, a
watcher killed between writing the record and queueing) are marked lost too.
Each loss without a run getting through in between doubles the wait before
the next run is queued (up to MAX_ENQUEUE_DELAY), so a host whose runs keep
failing is not flooded.

Changes are applied only if they are newer than the last snapshot, so a
watch that lags behind a re-read cannot roll the state back.

Run options (noop, tags) split the entries into classes: a run serves the
class of the oldest entry waiting (`run_class`), and only entries of that
class join it (`can_join`); the others wait for the next run. So a noop
run never serves a normal fire, nor a normal run a noop one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union

from .layout import Layout
from .policy import MAX_ENQUEUE_DELAY
from .records import BadRecord, Entry, RunRecord, check_id, parse_entry, parse_lock, parse_run
from .store.base import Change, KeyValue, Put


# -- run classes ----------------------------------------------------------------


def options_of(record: Entry | RunRecord) -> tuple[bool, tuple[str, ...]]:
    """The run options of an entry or a run: what makes its class."""
    return record.noop, record.tags


def run_class(entries) -> tuple[bool, tuple[str, ...]] | None:
    """The options of the run that serves `entries` (oldest first): the oldest one's."""
    for entry in entries:
        return options_of(entry)
    return None


def can_join(entry: Entry, options: tuple[bool, tuple[str, ...]] | None,
             held: dict[str, int] | None = None) -> bool:
    """Can a run of `options`, holding the slots `held` ({trigger: limit}; None:
    not taken yet), serve this entry? Only one of its own class, and of a
    limited trigger only with a slot of that trigger under the very limit the
    entry asks for: a slot ranked under a limit of 2 is no slot of a serial
    fire of the same trigger."""
    if options is not None and options_of(entry) != options:
        return False
    return held is None or not entry.max_concurrent or held.get(entry.trigger) == entry.max_concurrent


# -- events (what happened) ----------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """The host's whole prefix read at `revision`, and the queue's live run ids.

    `live_runs` is None when the queue could not be asked; then no run is
    declared lost on its account.
    """

    items: tuple[KeyValue, ...]
    revision: int
    live_runs: frozenset[str] | None


@dataclass(frozen=True)
class Changes:
    """Changes seen by the watch under the host's prefix, in revision order."""

    changes: tuple[Change, ...]


@dataclass(frozen=True)
class EnqueueFailed:
    """The adapter could not queue a run the core asked for."""

    run_id: str
    reason: str


@dataclass(frozen=True)
class Tick:
    """Time passed; lets a delayed retry happen."""


Event = Union[Snapshot, Changes, EnqueueFailed, Tick]


# -- actions (what to do) ------------------------------------------------------


@dataclass(frozen=True)
class EnqueueRun:
    """Write a queued run record, then queue `trigger run` for it."""

    run_id: str
    record: RunRecord
    waiting: tuple[str, ...]  # the entries now waiting for it
    triggers: tuple[str, ...] = ()  # their trigger names, sorted (report only)

    def describe(self) -> str:
        return (f"enqueue run {self.run_id} for {len(self.waiting)} fire(s) of {_names(self.triggers)}: "
                f"{', '.join(self.waiting[:5])}")


@dataclass(frozen=True)
class Coalesce:
    """An entry joined the run already queued (report only)."""

    event_id: str
    run_id: str
    trigger: str = ""

    def describe(self) -> str:
        return f"coalesce fire {self.event_id} of {self.trigger!r} into queued run {self.run_id}"


@dataclass(frozen=True)
class RunBegan:
    """A run of this host was recorded as started (report only)."""

    run_id: str
    served: int  # how many fires it acknowledged

    def describe(self) -> str:
        return f"run {self.run_id} started, serving {self.served} fire(s)"


@dataclass(frozen=True)
class RunEnded:
    """A run of this host was recorded as finished (report only)."""

    run_id: str
    exit_code: int | None
    duration: float | None  # seconds from its start to its end, if both are known
    finished_at: float | None
    note: str = ""  # its record's reason: an option refused, processes it left behind

    def describe(self) -> str:
        took = "" if self.duration is None else f" in {self.duration:.1f}s"
        return f"run {self.run_id} finished: exit {self.exit_code}{took}" + (f"; {self.note}" if self.note else "")


def _names(triggers: tuple[str, ...]) -> str:
    """Trigger names for a log line: quoted (names may hold spaces), at most five."""
    shown = ", ".join(repr(t) for t in triggers[:5])
    return shown + (f" and {len(triggers) - 5} more" if len(triggers) > 5 else "") or "(unknown)"


@dataclass(frozen=True)
class Quarantine:
    """Move an unusable inbox value aside: put it under quarantine, delete it."""

    key: str
    value: bytes
    reason: str
    revision: int  # move it only if it is still this write: a newer one may be good

    def describe(self) -> str:
        return f"quarantine {self.key!r}: {self.reason}"  # the key is untrusted: one line


@dataclass(frozen=True)
class MarkRunLost:
    """Record that a run will never start or finish; its entries get a new run."""

    run_id: str
    record: RunRecord

    def describe(self) -> str:
        return f"run {self.run_id} lost: {self.record.reason}"


Action = Union[EnqueueRun, Coalesce, Quarantine, MarkRunLost, RunBegan, RunEnded]
REPORT_ONLY = (Coalesce, RunBegan, RunEnded)


class ProtocolError(Exception):
    """An event the core cannot take in its current state."""


# -- the core ------------------------------------------------------------------


@dataclass(slots=True)  # ten thousand of them in a simulated fleet: compact, quick to reach
class WatcherCore:
    host: str
    layout: Layout
    new_run_id: Callable[[], str]
    pending: dict[str, Entry] = field(default_factory=dict)
    runs: dict[str, RunRecord] = field(default_factory=dict)
    queued_run: str | None = None
    queued_class: tuple[bool, tuple[str, ...]] | None = None  # the options it will serve (report only)
    lock_holder: tuple[str, str] | None = None  # (run id, execution) holding the host's run lock
    revision: int = 0
    retry_at: float = 0.0  # on the monotonic clock (`elapsed`): a stepped wall clock must not move it
    failures: int = 0
    synced: bool = False
    _entries: dict[str, Entry] = field(default_factory=dict, repr=False)  # every usable entry
    fires_received: int = 0  # inbox entries seen arriving, for metrics (report only)
    _parsed: dict = field(default_factory=dict, repr=False)  # key -> (revision, record)

    def handle(self, event: Event, now: float, elapsed: float | None = None) -> list[Action]:
        """`now` is the wall clock (for records people read); `elapsed` the
        monotonic one (for the retry delay), `now` if not given."""
        clock = now if elapsed is None else elapsed
        if isinstance(event, Snapshot):
            actions = self._snapshot(event, clock)
        elif not self.synced:
            raise ProtocolError(f"{type(event).__name__} before the first Snapshot")
        elif isinstance(event, Changes):
            actions = self._changes(event, clock)
        elif isinstance(event, EnqueueFailed):
            actions = self._enqueue_failed(event, clock)
        elif isinstance(event, Tick):
            actions = []
        else:
            raise ProtocolError(f"unknown event {event!r}")
        return actions + self._decide(now, clock)

    @property
    def wake_at(self) -> float | None:
        """When a `Tick` would queue a run that a failure delayed, if ever
        (on the clock given to `handle` as `elapsed`)."""
        if self.pending and self.queued_run is None:
            return self.retry_at
        return None

    @property
    def busy(self) -> bool:
        """True while something is outstanding that the queue must finish."""
        if self.pending:
            return True
        for run in self.runs.values():
            if run.active:
                return True
        return False

    # -- transitions -----------------------------------------------------------

    def _snapshot(self, event: Snapshot, clock: float) -> list[Action]:
        known = set(self.pending)
        self.pending.clear()
        self._entries.clear()
        self.runs.clear()
        self.queued_run = None
        self.lock_holder = None
        self.revision = event.revision
        self.synced = True
        actions: list[Action] = []
        for kv in event.items:
            actions += self._apply(Put(kv.key, kv.value, kv.mod_revision), coalesce=False)
        if self._parsed:
            present = {kv.key for kv in event.items}
            for key in [k for k in self._parsed if k not in present]:
                del self._parsed[key]
        if not self.runs:  # an idle host's re-read (most of them) stops here
            self.fires_received += len(self.pending.keys() - known)
            return actions
        # Only started runs can claim entries still there: a finish removes
        # the last of its entries with its record. Finished records (days of
        # them) are not walked.
        active = [r for r in self.runs.values() if r.active]
        for run in active:
            if run.state == "started":
                for event_id in run.served:
                    self.pending.pop(event_id, None)
        live = event.live_runs
        for run in sorted((r for r in active if r.state == "queued"), key=lambda r: r.run_id):
            if live is not None and run.run_id not in live:
                actions.append(self._lose(run, "queued in the store but not in the queue", clock))
            else:
                # With two queued runs (a race with an older watcher) entries
                # wait for the newest; the other still runs and serves them.
                self.queued_run = run.run_id
        if self.queued_run is not None:
            self.queued_class = run_class(self.pending[name] for name in sorted(self.pending))
        self.fires_received += len(self.pending.keys() - known)
        return actions + self._judge_started(clock)

    def _judge_started(self, clock: float) -> list[Action]:
        """A started run not holding the run lock died before its end."""
        dead = [run for run in self.runs.values()
                if run.state == "started" and (run.run_id, run.execution) != self.lock_holder]
        if not dead:
            return dead
        return [self._lose(run, "its run lock went while it ran: it died before its end", clock)
                for run in sorted(dead, key=lambda r: r.run_id)]

    def _changes(self, event: Changes, clock: float) -> list[Action]:
        actions: list[Action] = []
        for change in event.changes:
            if change.revision > self.revision:
                actions += self._apply(change, coalesce=True)
        if event.changes:
            self.revision = max(self.revision, event.changes[-1].revision)
        return actions + self._judge_started(clock)

    def _apply(self, change: Change, coalesce: bool) -> list[Action]:
        kind, name = self.layout.classify(self.host, change.key)
        if kind == "entry":
            if not isinstance(change, Put):
                self.pending.pop(name, None)
                self._entries.pop(name, None)
                self._parsed.pop(change.key, None)
                return []
            try:
                # A key trigger never writes: a run serving it would list a
                # name its own record cannot hold (run records check ids).
                check_id(name, "event id in the key")
                entry = self._parse(change, parse_entry)
            except BadRecord as exc:
                return [Quarantine(change.key, change.value, str(exc), change.revision)]
            if name in self._entries:
                return []
            self._entries[name] = entry
            self.pending[name] = entry
            if not coalesce:
                return []
            self.fires_received += 1
            if self.queued_run is not None and can_join(entry, self.queued_class):
                return [Coalesce(name, self.queued_run, entry.trigger)]
            return []
        if kind == "lock":
            if isinstance(change, Put):
                self.lock_holder = parse_lock(change.value)
            else:
                self.lock_holder = None
            return []
        if kind == "run":
            if not isinstance(change, Put):
                gone = self.runs.pop(name, None)
                self._parsed.pop(change.key, None)
                if coalesce and gone is not None and gone.state == "started":
                    # Finished: its record moved to P/done/ (how it ended is read there).
                    return [RunEnded(name, None, None, None)]
                return []
            try:
                run = self._parse(change, parse_run)
                if run.run_id != name or run.host != self.host:
                    raise BadRecord(f"run record for {run.host}/{run.run_id} under another key")
            except BadRecord as exc:
                return [Quarantine(change.key, change.value, str(exc), change.revision)]
            before = self.runs.get(name)
            self.runs[name] = run
            reports = _reports(before, run) if coalesce else []
            if run.state in ("started", "finished"):
                # Claimed: they wait for this run's end, not for another run.
                for event_id in run.served:
                    self.pending.pop(event_id, None)
                self.failures = 0  # a run got through: the queue works
            elif run.state == "lost":
                self._give_back(run)
            if run.state != "queued" and name == self.queued_run:
                self.queued_run = None
            return reports
        return []

    def _give_back(self, run: RunRecord) -> None:
        """A lost run's claimed entries that are still there wait for a new run."""
        for event_id in run.served:
            entry = self._entries.get(event_id)
            if entry is not None:
                self.pending[event_id] = entry

    def _parse(self, change: Put, parse):
        """Parse a value once per revision: re-reads see the same records again."""
        cached = self._parsed.get(change.key)
        if cached is not None and cached[0] == change.revision:
            return cached[1]
        record = parse(change.value)
        self._parsed[change.key] = (change.revision, record)
        return record

    def _enqueue_failed(self, event: EnqueueFailed, clock: float) -> list[Action]:
        actions: list[Action] = []
        run = self.runs.get(event.run_id)
        if run is not None and run.state == "queued":
            actions.append(self._lose(run, f"could not queue: {event.reason}", clock, first_delay=1.0))
        else:
            self._back_off(clock, first_delay=1.0)
        if self.queued_run == event.run_id:
            self.queued_run = None
        return actions

    def _lose(self, run: RunRecord, reason: str, clock: float, first_delay: float = 0.0) -> MarkRunLost:
        lost = run._replace(state="lost", reason=reason)
        self.runs[run.run_id] = lost
        self._give_back(lost)
        if self.queued_run == run.run_id:
            self.queued_run = None
        self._back_off(clock, first_delay)
        return MarkRunLost(run.run_id, lost)

    def _back_off(self, clock: float, first_delay: float) -> None:
        """A lost run is replaced at once the first time (a refused queue after
        `first_delay`); each further failure before a run gets through doubles it."""
        self.failures += 1
        delay = first_delay if self.failures == 1 else 2.0 ** min(self.failures - 1, 16)
        self.retry_at = clock + min(MAX_ENQUEUE_DELAY, delay)

    def _decide(self, now: float, clock: float) -> list[Action]:
        if not self.pending or self.queued_run is not None or clock < self.retry_at:
            return []
        run_id = self.new_run_id()
        record = RunRecord(run_id=run_id, host=self.host, state="queued", queued_at=now)
        self.runs[run_id] = record
        self.queued_run = run_id
        names = sorted(self.pending)  # oldest first: the class runner.start_run will claim
        options = self.queued_class = run_class(self.pending[name] for name in names)
        waiting = tuple(name for name in names if can_join(self.pending[name], options))
        triggers = tuple(sorted({self.pending[name].trigger for name in waiting}))
        return [EnqueueRun(run_id, record, waiting, triggers)]


def _reports(before: RunRecord | None, run: RunRecord) -> list[Action]:
    """What a watch showing `run` after `before` tells a log: a start, an end."""
    was = before.state if before else None
    if run.state == was:
        return []
    reports: list[Action] = []
    if run.state in ("started", "finished") and was in (None, "queued"):
        reports.append(RunBegan(run.run_id, len(run.served)))
    if run.state == "finished":
        took = (run.finished_at - run.started_at) if run.started_at and run.finished_at else None
        reports.append(RunEnded(run.run_id, run.exit_code, took, run.finished_at, run.reason))
    return reports
