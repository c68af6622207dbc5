"""Hostile inbox keys and values, fed to the watcher's core, to the daemon
around it (a memory store, a queue that only records), to what a queued run
does first (`start_run`) and to `trigger status`.

What must hold for every input: nothing raises; a value the watcher cannot
use is moved under P/quarantine/<host>/ (same value), never dropped
silently, and counted by `trigger status`; what is queued is exactly the
configured argv with a run id trigger made, never a piece of event data.
"""

from __future__ import annotations

import itertools
import queue as queue_module
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trigger.core import Changes, Coalesce, EnqueueFailed, EnqueueRun, MarkRunLost, Quarantine, Snapshot, Tick, WatcherCore
from trigger.records import BadRecord, parse_entry, parse_run
from trigger.results import status
from trigger.runner import start_run
from trigger.store.base import Delete, KeyValue, Put
from trigger.store.memory import MemoryStore
from trigger.watch import WatchDaemon

from .conftest import fuzz_settings
from .strategies import HOST, LAYOUT, keys, values

pytestmark = pytest.mark.fuzz

RUN_ID = re.compile(r"run-[0-9]+")
RUN_CMD = ["puppet", "agent", "--test"]


def new_core() -> WatcherCore:
    counter = itertools.count(1)
    return WatcherCore(HOST, LAYOUT, lambda: f"run-{next(counter)}")


def check_actions(actions, known_keys) -> None:
    for action in actions:
        assert isinstance(action, (EnqueueRun, Coalesce, Quarantine, MarkRunLost)), action
        text = action.describe()
        assert isinstance(text, str)
        if isinstance(action, Quarantine):
            assert action.key in known_keys
            assert "\n" not in action.reason and "\r" not in action.reason
        if isinstance(action, EnqueueRun):
            assert RUN_ID.fullmatch(action.run_id) and action.record.host == HOST


changes = st.one_of(
    st.builds(Put, keys, values, st.integers(1, 60)),
    st.builds(Delete, keys, st.integers(1, 60)),
)
events = st.one_of(
    st.lists(changes, max_size=6).map(lambda cs: Changes(tuple(sorted(cs, key=lambda c: c.revision)))),
    st.just(Tick()),
    st.builds(EnqueueFailed, st.sampled_from(["run-1", "run-2", "nope"]), st.text(max_size=20)),
    st.builds(lambda items, rev, live: Snapshot(tuple(items), rev, live),
              st.lists(st.builds(KeyValue, keys, values, st.integers(1, 30), st.integers(1, 30)), max_size=6),
              st.integers(0, 60),
              st.none() | st.frozensets(st.sampled_from(["run-1", "run-2", "run-3"]))),
)


@fuzz_settings(quick=150)
@given(first=st.lists(st.builds(KeyValue, keys, values, st.integers(1, 30), st.integers(1, 30)), max_size=8),
       later=st.lists(events, max_size=12), now=st.floats(0, 1e10))
def test_the_core_takes_any_sequence_of_hostile_events(first, later, now):
    core = new_core()
    seen = {kv.key for kv in first}
    check_actions(core.handle(Snapshot(tuple(first), 1, frozenset()), now), seen)
    for event in later:
        if isinstance(event, Changes):
            seen |= {c.key for c in event.changes}
        if isinstance(event, Snapshot):
            seen |= {kv.key for kv in event.items}
        check_actions(core.handle(event, now), seen)
        # Bounded: the core holds at most what it was shown.
        assert len(core.pending) + len(core.runs) <= len(seen) + 3


@fuzz_settings(quick=150)
@given(key=keys, value=values)
def test_every_inbox_value_is_taken_or_quarantined(key, value):
    """Never dropped silently: an entry is pending or set aside; a run record
    is known or set aside."""
    core = new_core()
    core.handle(Snapshot((), 1, frozenset()), 0.0)
    actions = core.handle(Changes((Put(key, value, 2),)), 0.0)
    kind, name = LAYOUT.classify(HOST, key)
    quarantined = [a for a in actions if isinstance(a, Quarantine)]
    if kind == "entry":
        assert quarantined or name in core.pending
    elif kind == "run":
        assert quarantined or name in core.runs
    else:
        assert actions == []  # not an inbox key: left alone


class RecordingQueue:
    """A run queue that runs nothing: it keeps what it was asked to queue."""

    def __init__(self):
        self.queued: list[tuple[str, list[str]]] = []

    def enqueue(self, run_id, argv):
        self.queued.append((run_id, list(argv)))

    def live_run_ids(self):
        return frozenset(run_id for run_id, _ in self.queued)


def run_argv(run_id: str) -> list[str]:
    return ["trigger", "run", "--host", HOST, "--run-id", run_id, "--", *RUN_CMD]


@fuzz_settings(quick=150)
@given(before=st.lists(st.tuples(keys, values), max_size=8), after=st.lists(st.tuples(keys, values), max_size=8))
def test_the_daemon_path_quarantines_and_queues_only_its_own_argv(before, after):
    store = MemoryStore()
    recording = RecordingQueue()
    daemon = WatchDaemon(store, recording, new_core(), run_argv, clock=lambda: 1000.0)
    for key, value in before:
        store.put(key, value)
    revision = daemon._resync()  # the watcher starting on a hostile inbox
    seen: queue_module.Queue = queue_module.Queue()
    watch = store.watch_prefix(LAYOUT.host_prefix(HOST), revision + 1, seen.put)
    for key, value in after:  # and hostile fires while it watches
        store.put(key, value)
    while not seen.empty():
        item = seen.get()
        assert isinstance(item, list), item
        daemon._apply(daemon.core.handle(Changes(tuple(item)), 1000.0))
    watch.cancel()
    daemon._resync()

    # Queued: exactly the configured argv, with a run id trigger made.
    for run_id, argv in recording.queued:
        assert RUN_ID.fullmatch(run_id) and argv == run_argv(run_id)

    # Nothing unusable is left in the inbox: it sits under quarantine/, same value.
    written = dict(before + after)
    items, _ = store.get_prefix(LAYOUT.host_prefix(HOST))
    for kv in items:
        kind, _ = LAYOUT.classify(HOST, kv.key)
        parse = {"entry": parse_entry, "run": parse_run}.get(kind)
        if parse is not None:
            parse(kv.value)  # raises if an unusable value stayed
    quarantine, _ = store.get_prefix(f"{LAYOUT.prefix}/quarantine/{HOST}/")
    for kv in quarantine:
        assert kv.value in written.values()
    for key, value in written.items():
        if LAYOUT.classify(HOST, key)[0] in ("entry", "run") and store.get(key) is None \
                and not key.startswith(LAYOUT.runs_prefix(HOST)):
            assert store.get(LAYOUT.quarantine_key(HOST, key)) is not None, key

    # `trigger status` counts what was set aside.
    report = {h.host: h for h in status(store, LAYOUT)}
    if quarantine:
        assert report[HOST].quarantined >= len(quarantine)

    # What a queued run does first: acknowledge what it serves. Its record
    # must be one the watcher can read back.
    for run_id, _ in recording.queued:
        record = start_run(store, LAYOUT, HOST, run_id, 2000.0)
        assert parse_run(store.get(LAYOUT.run_key(HOST, run_id)).value) == record


@fuzz_settings(quick=100)
@given(items=st.lists(st.tuples(st.one_of(keys, st.text(max_size=60).map(lambda t: LAYOUT.prefix + "/" + t)),
                                values), max_size=12))
def test_status_reads_any_store_content(items):
    store = MemoryStore()
    for key, value in items:
        store.put(key, value)
    for host in status(store, LAYOUT):
        assert host.quarantined >= 0


@fuzz_settings(quick=100)
@given(items=st.lists(st.tuples(keys, values), max_size=10))
def test_a_run_starts_on_any_inbox(items):
    """`trigger run` may start before the watcher set a bad value aside: it
    serves only what it can read, and its own record stays readable."""
    store = MemoryStore()
    for key, value in items:
        store.put(key, value)
    record = start_run(store, LAYOUT, HOST, "run-1", 1.0)
    assert parse_run(store.get(LAYOUT.run_key(HOST, "run-1")).value) == record
    for event_id in record.served:  # acknowledged: gone from the inbox
        assert store.get(LAYOUT.entry_key(HOST, event_id)) is None
