"""The inputs the fuzzing found, kept as plain regression tests."""

from __future__ import annotations

import pytest

from trigger.cli import one_line
from trigger.core import Changes, Quarantine, Snapshot, WatcherCore
from trigger.records import BadRecord, Entry, parse_entry, parse_run
from trigger.runner import start_run
from trigger.store.base import Put
from trigger.store.memory import MemoryStore

from .strategies import HOST, LAYOUT


@pytest.mark.parametrize("value, reason", [
    (b"[" * 5000, "maximum recursion depth"),  # was RecursionError: crashed the watcher, at every restart
    (b'{"id":"a","trigger":"t","fired_at":1' + b"0" * 400 + b"}", "'fired_at' is out of range"),  # OverflowError
])
def test_values_that_crashed_the_watcher_are_bad_records(value, reason):
    with pytest.raises(BadRecord, match=reason):
        parse_entry(value)
    core = WatcherCore(HOST, LAYOUT, lambda: "run-1")
    actions = core.handle(Snapshot((), 1, frozenset()), 0.0)
    actions = core.handle(Changes((Put(LAYOUT.entry_key(HOST, "e1"), value, 2),)), 0.0)
    assert [type(a) for a in actions] == [Quarantine]


def test_a_run_record_with_a_huge_time_is_a_bad_record():
    with pytest.raises(BadRecord, match="out of range"):
        parse_run(b'{"run_id":"r","host":"h","state":"queued","queued_at":' + b"9" * 400 + b"}")


@pytest.mark.parametrize("name", ["bad name", "a\nb", "$(id)", "-rf", "é"])
def test_an_inbox_key_trigger_never_writes_is_quarantined_not_served(name):
    """Its value may be a perfect entry: a run serving it would list a name
    its own run record cannot hold, and that record would be set aside."""
    key = LAYOUT.entry_key(HOST, name)
    core = WatcherCore(HOST, LAYOUT, lambda: "run-1")
    core.handle(Snapshot((), 1, frozenset()), 0.0)
    actions = core.handle(Changes((Put(key, Entry("e1", "t", 1.0).encode(), 2),)), 0.0)
    assert [type(a) for a in actions] == [Quarantine] and "\n" not in actions[0].reason
    store = MemoryStore()
    store.put(key, Entry("e1", "t", 1.0).encode())
    record = start_run(store, LAYOUT, HOST, "run-1", 1.0)
    assert record.served == () and store.get(key) is not None  # left for the watcher to set aside
    assert parse_run(store.get(LAYOUT.run_key(HOST, "run-1")).value) == record


def test_errors_quoting_input_stay_one_line():
    assert one_line("cannot read --cacert a\nb\r\x1b[31m\u2028x") == "cannot read --cacert a\\nb\\r\\x1b[31m\\u2028x"
    assert one_line("plain é text") == "plain é text"
