"""The watcher's protocol core: events and `now` in, actions out, no IO.

Theory of operation
-------------------
Each host has an inbox in the store. A fire writes one entry into the inbox
of every target host. The host's watcher feeds this core with what it reads
and sees in the store (`Snapshot`, `Changes`) and with what the run queue
tells (`EnqueueFailed`, the queue's live runs inside a `Snapshot`). The
core answers with actions for the adapter to carry out (`EnqueueRun`,
`Quarantine`, `MarkRunLost`) or only to report (`Coalesce`, `RunStarted`,
`RunFinished`: what a log or a metric needs to know, nothing to carry out).

The one rule: while the inbox holds entries, exactly one queued run must be
waiting for them. A run, when it starts, removes the entries present at
that moment and marks itself started in the same transaction; entries that
arrive later stay and get the next run. Hence:

* every fire is followed by a run that starts after it (an entry goes only
  when such a run starts);
* fires arriving while a run is queued join it (`Coalesce`);
* fires arriving during a running run cause exactly one more run.

The core keeps nothing that the store and the queue cannot tell it again:
after a crash, a reconnect or a compacted watch, a new `Snapshot` rebuilds
its state. Runs the store calls queued or started but the queue no longer
holds (a killed queue server, a watcher killed between writing the record
and queueing) are marked lost, and their entries get a new run.

Changes are applied only if they are newer than the last snapshot, so a
watch that lags behind a re-read cannot roll the state back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union

from .layout import Layout
from .records import BadRecord, Entry, RunRecord, check_id, parse_entry, parse_run
from .store.base import Change, KeyValue, Put

MAX_RETRY_DELAY = 60.0


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
class RunStarted:
    """A run of this host was recorded as started (report only)."""

    run_id: str
    served: int  # how many fires it acknowledged

    def describe(self) -> str:
        return f"run {self.run_id} started, serving {self.served} fire(s)"


@dataclass(frozen=True)
class RunFinished:
    """A run of this host was recorded as finished (report only)."""

    run_id: str
    exit_code: int | None
    duration: float | None  # seconds from its start to its end, if both are known
    finished_at: float | None

    def describe(self) -> str:
        took = "" if self.duration is None else f" in {self.duration:.1f}s"
        return f"run {self.run_id} finished: exit {self.exit_code}{took}"


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


Action = Union[EnqueueRun, Coalesce, Quarantine, MarkRunLost, RunStarted, RunFinished]
REPORT_ONLY = (Coalesce, RunStarted, RunFinished)


class ProtocolError(Exception):
    """An event the core cannot take in its current state."""


# -- the core ------------------------------------------------------------------


@dataclass
class WatcherCore:
    host: str
    layout: Layout
    new_run_id: Callable[[], str]
    pending: dict[str, Entry] = field(default_factory=dict)
    runs: dict[str, RunRecord] = field(default_factory=dict)
    queued_run: str | None = None
    revision: int = 0
    retry_at: float = 0.0
    failures: int = 0
    synced: bool = False
    fires_received: int = 0  # inbox entries seen arriving, for metrics (report only)
    _parsed: dict = field(default_factory=dict, repr=False)  # key -> (revision, record)

    def handle(self, event: Event, now: float) -> list[Action]:
        if isinstance(event, Snapshot):
            actions = self._snapshot(event, now)
        elif not self.synced:
            raise ProtocolError(f"{type(event).__name__} before the first Snapshot")
        elif isinstance(event, Changes):
            actions = self._changes(event)
        elif isinstance(event, EnqueueFailed):
            actions = self._enqueue_failed(event, now)
        elif isinstance(event, Tick):
            actions = []
        else:
            raise ProtocolError(f"unknown event {event!r}")
        return actions + self._decide(now)

    @property
    def wake_at(self) -> float | None:
        """When a `Tick` would queue a run that a failure delayed, if ever."""
        if self.pending and self.queued_run is None:
            return self.retry_at
        return None

    @property
    def busy(self) -> bool:
        """True while something is outstanding that the queue must finish."""
        return bool(self.pending) or any(r.active for r in self.runs.values())

    # -- transitions -----------------------------------------------------------

    def _snapshot(self, event: Snapshot, now: float) -> list[Action]:
        known = set(self.pending)
        self.pending.clear()
        self.runs.clear()
        self.queued_run = None
        self.revision = event.revision
        self.synced = True
        actions: list[Action] = []
        for kv in event.items:
            actions += self._apply(Put(kv.key, kv.value, kv.mod_revision), coalesce=False)
        present = {kv.key for kv in event.items}
        for key in [k for k in self._parsed if k not in present]:
            del self._parsed[key]
        live = event.live_runs
        for run in sorted(self.runs.values(), key=lambda r: r.run_id):
            if not run.active:
                continue
            if live is not None and run.run_id not in live:
                actions.append(self._lose(run, f"{run.state} in the store but not in the queue"))
            elif run.state == "queued":
                # With two queued runs (a race with an older watcher) entries
                # wait for the newest; the other still runs and serves them.
                self.queued_run = run.run_id
        self.fires_received += len(self.pending.keys() - known)
        return actions

    def _changes(self, event: Changes) -> list[Action]:
        actions: list[Action] = []
        for change in event.changes:
            if change.revision > self.revision:
                actions += self._apply(change, coalesce=True)
        if event.changes:
            self.revision = max(self.revision, event.changes[-1].revision)
        return actions

    def _apply(self, change: Change, coalesce: bool) -> list[Action]:
        kind, name = self.layout.classify(self.host, change.key)
        if kind == "entry":
            if not isinstance(change, Put):
                self.pending.pop(name, None)
                self._parsed.pop(change.key, None)
                return []
            try:
                # A key trigger never writes: a run serving it would list a
                # name its own record cannot hold (run records check ids).
                check_id(name, "event id in the key")
                entry = self._parse(change, parse_entry)
            except BadRecord as exc:
                return [Quarantine(change.key, change.value, str(exc), change.revision)]
            if name in self.pending:
                return []
            self.pending[name] = entry
            if not coalesce:
                return []
            self.fires_received += 1
            if self.queued_run is not None:
                return [Coalesce(name, self.queued_run, entry.trigger)]
            return []
        if kind == "run":
            if not isinstance(change, Put):
                self.runs.pop(name, None)
                self._parsed.pop(change.key, None)
                return []
            try:
                run = self._parse(change, parse_run)
            except BadRecord as exc:
                return [Quarantine(change.key, change.value, str(exc), change.revision)]
            before = self.runs.get(name)
            self.runs[name] = run
            reports = _reports(before, run) if coalesce else []
            if run.state != "queued":
                # Entries a started run served are acknowledged even before
                # their deletion arrives (a large inbox takes several txns).
                for event_id in run.served:
                    self.pending.pop(event_id, None)
                if run.state in ("started", "finished"):
                    self.failures = 0  # a run got through: the queue works
                if name == self.queued_run:
                    self.queued_run = None
            return reports
        return []

    def _parse(self, change: Put, parse):
        """Parse a value once per revision: re-reads see the same records again."""
        cached = self._parsed.get(change.key)
        if cached is not None and cached[0] == change.revision:
            return cached[1]
        record = parse(change.value)
        self._parsed[change.key] = (change.revision, record)
        return record

    def _enqueue_failed(self, event: EnqueueFailed, now: float) -> list[Action]:
        actions: list[Action] = []
        run = self.runs.get(event.run_id)
        if run is not None and run.state == "queued":
            actions.append(self._lose(run, f"could not queue: {event.reason}"))
        if self.queued_run == event.run_id:
            self.queued_run = None
        self.failures += 1
        self.retry_at = now + min(MAX_RETRY_DELAY, 2.0 ** (self.failures - 1))
        return actions

    def _lose(self, run: RunRecord, reason: str) -> MarkRunLost:
        lost = RunRecord(**{**run.__dict__, "state": "lost", "reason": reason})
        self.runs[run.run_id] = lost
        return MarkRunLost(run.run_id, lost)

    def _decide(self, now: float) -> list[Action]:
        if not self.pending or self.queued_run is not None or now < self.retry_at:
            return []
        run_id = self.new_run_id()
        record = RunRecord(run_id=run_id, host=self.host, state="queued", queued_at=now)
        self.runs[run_id] = record
        self.queued_run = run_id
        triggers = tuple(sorted({e.trigger for e in self.pending.values()}))
        return [EnqueueRun(run_id, record, tuple(sorted(self.pending)), triggers)]


def _reports(before: RunRecord | None, run: RunRecord) -> list[Action]:
    """What a watch showing `run` after `before` tells a log: a start, an end."""
    was = before.state if before else None
    if run.state == was:
        return []
    reports: list[Action] = []
    if run.state in ("started", "finished") and was in (None, "queued"):
        reports.append(RunStarted(run.run_id, len(run.served)))
    if run.state == "finished":
        took = (run.finished_at - run.started_at) if run.started_at and run.finished_at else None
        reports.append(RunFinished(run.run_id, run.exit_code, took, run.finished_at))
    return reports
