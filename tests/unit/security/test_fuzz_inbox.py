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

from trigger.core import (Changes, Coalesce, EnqueueFailed, EnqueueRun, MarkRunLost, Quarantine, RunEnded,
                          RunBegan, Snapshot, Tick, WatcherCore)
from trigger.records import BadRecord, Entry, check_id, parse_entry, parse_run
from trigger.results import status
from trigger.runner import finish_run, start_run
from trigger.store.base import Delete, KeyValue, Put
from trigger.store.memory import MemoryStore
from trigger.watch import WatchDaemon

from .conftest import bounded_memory, fuzz_settings
from .strategies import HOST, LAYOUT, keys, values

pytestmark = pytest.mark.fuzz

RUN_ID = re.compile(r"run-[0-9]+")
RUN_CMD = ["puppet", "agent", "--test"]
MAX_DELIVERIES = 1000  # at most 16 keys written: each comes back a few times at most


def new_core() -> WatcherCore:
    counter = itertools.count(1)
    return WatcherCore(HOST, LAYOUT, lambda: f"run-{next(counter)}")


def check_actions(actions, known_keys) -> None:
    for action in actions:
        assert isinstance(action, (EnqueueRun, Coalesce, Quarantine, MarkRunLost, RunBegan, RunEnded)), action
        text = action.describe()
        assert isinstance(text, str) and "\n" not in text
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
    with bounded_memory("core"):
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
    with bounded_memory("core, one value"):
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
    with bounded_memory("daemon"):
        store, recording = _daemon_on(before, after)

    # Queued: exactly the configured argv, with a run id trigger made.
    for run_id, argv in recording.queued:
        assert RUN_ID.fullmatch(run_id) and argv == run_argv(run_id)

    # Every key's last value is where it should be: a usable entry in the
    # inbox, anything else under quarantine/ with the same bytes. None is gone.
    quarantine = f"{LAYOUT.prefix}/quarantine/{HOST}/"
    for key, value in dict(before + after).items():
        kind, name = LAYOUT.classify(HOST, key)
        if kind != "entry":
            continue
        kept, moved = store.get(key), store.get(LAYOUT.quarantine_key(HOST, key))
        try:
            check_id(name)
            parse_entry(value)
        except BadRecord:
            assert kept is None and moved is not None and moved.value == value, key
        else:
            assert kept is not None and kept.value == value, key
    items, _ = store.get_prefix(LAYOUT.host_prefix(HOST))
    for kv in items:  # nothing unusable stayed, run records included
        parse = {"entry": parse_entry, "run": parse_run}.get(LAYOUT.classify(HOST, kv.key)[0])
        if parse is not None:
            parse(kv.value)
    moved, _ = store.get_prefix(quarantine)
    assert {kv.value for kv in moved} <= {v for _, v in before + after}

    # `trigger status` counts what was set aside.
    report = {h.host: h for h in status(store, LAYOUT)}
    if moved:
        assert report[HOST].quarantined >= len(moved)

    # What a queued run does first: acknowledge what it serves. Its record
    # must be one the watcher can read back.
    for run_id, _ in recording.queued:
        record = start_run(store, LAYOUT, HOST, run_id, 2000.0)
        if isinstance(record, dict):  # limited triggers wait: the claim once their slots are held
            record = start_run(store, LAYOUT, HOST, run_id, 2000.0, held=record)
        assert parse_run(store.get(LAYOUT.run_key(HOST, run_id)).value) == record


def _daemon_on(before, after):
    """A daemon (memory store, recording queue) starting on the `before`
    inbox and seeing `after` arrive while it watches."""
    store = MemoryStore()
    recording = RecordingQueue()
    daemon = WatchDaemon(store, recording, new_core(), run_argv, clock=lambda: 1000.0)
    for key, value in before:
        store.put(key, value)
    revision = daemon.resync()
    seen: queue_module.Queue = queue_module.Queue()
    watch = store.watch_prefix(LAYOUT.host_prefix(HOST), revision + 1, seen.put)
    for key, value in after:
        store.put(key, value)
    # The daemon's own writes (quarantine moves, run records) come back on the
    # watch. A bug that answers each with another write would feed it forever.
    for delivery in itertools.count():
        if seen.empty():
            break
        assert delivery < MAX_DELIVERIES, "the daemon keeps answering its own writes"
        item = seen.get()
        assert isinstance(item, list), item
        daemon.carry_out(daemon.core.handle(Changes(tuple(item)), 1000.0))
    watch.cancel()
    daemon.resync()
    return store, recording


def test_a_corrupt_entry_and_a_corrupt_run_record_of_one_name_are_both_kept():
    """Entry `P/hosts/h/x` and run record `P/hosts/h/runs/x` once both went
    to `P/quarantine/h/x`, the second overwriting the first."""
    entry, run = LAYOUT.entry_key(HOST, "x"), LAYOUT.run_key(HOST, "x")
    store, _ = _daemon_on([(entry, b"bad entry"), (run, b"bad run")], [])
    kept = {kv.value for kv in store.get_prefix(f"{LAYOUT.prefix}/quarantine/{HOST}/")[0]}
    assert kept == {b"bad entry", b"bad run"}


def test_a_fire_written_over_a_corrupt_value_is_not_lost():
    """A corrupt value at K, then a good entry at K before the watcher got to
    the first: moving the corrupt value aside must not delete the good one
    (the move compares the key's revision)."""
    key = LAYOUT.entry_key(HOST, "e1")
    good = Entry("e1", "t", 1.0).encode()
    store, recording = _daemon_on([], [(key, b"corrupt"), (key, good)])
    assert store.get(key) is not None or any(
        "e1" in parse_run(kv.value).served for kv in store.get_prefix(LAYOUT.runs_prefix(HOST))[0])


@fuzz_settings(quick=100)
@given(items=st.lists(st.tuples(st.one_of(keys, st.text(max_size=60).map(lambda t: LAYOUT.prefix + "/" + t)),
                                values), max_size=12))
def test_status_reads_any_store_content(items):
    store = MemoryStore()
    for key, value in items:
        store.put(key, value)
    with bounded_memory("status"):
        hosts = status(store, LAYOUT)
    for host in hosts:
        assert host.quarantined >= 0


@fuzz_settings(quick=100)
@given(items=st.lists(st.tuples(keys, values), max_size=10))
def test_a_run_starts_on_any_inbox(items):
    """`trigger run` may start before the watcher set a bad value aside: it
    serves only what it can read, and its own record stays readable."""
    store = MemoryStore()
    for key, value in items:
        store.put(key, value)
    with bounded_memory("start_run"):
        record = start_run(store, LAYOUT, HOST, "run-1", 1.0)
        if isinstance(record, dict):  # limited triggers wait: the claim once their slots are held
            record = start_run(store, LAYOUT, HOST, "run-1", 1.0, held=record)
    assert parse_run(store.get(LAYOUT.run_key(HOST, "run-1")).value) == record
    finish_run(store, LAYOUT, record, 0, 2.0)
    for event_id in record.served:  # served to the end: gone from the inbox
        assert store.get(LAYOUT.entry_key(HOST, event_id)) is None
