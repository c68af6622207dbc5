"""A run's start: which inbox entries it acknowledges, and with what lineage."""

from trigger.fire import Lineage, fire
from trigger.layout import Layout
from trigger.records import parse_run
from trigger.runner import finish_run, pending_limits, start_run
from trigger.store.memory import MemoryStore

L = Layout()


def inbox(store, host="h"):
    items, _ = store.get_prefix(L.host_prefix(host))
    return [kv.key.rsplit("/", 1)[-1] for kv in items if L.classify(host, kv.key)[0] == "entry"]


def test_start_acknowledges_every_entry_and_carries_the_highest_hop():
    store = MemoryStore()
    a = fire(store, L, "t", ["h"], Lineage(), "x")
    b = fire(store, L, "t", ["h"], Lineage(2, ("p", "q")), "r")
    record = start_run(store, L, "h", "r1", 5.0)
    assert sorted(record.served) == sorted([a.id, b.id]) and inbox(store) == []
    assert (record.hop, record.chain) == (3, ("p", "q", "r"))
    assert parse_run(store.get(L.run_key("h", "r1")).value) == record


def test_a_large_inbox_is_acknowledged_in_several_transactions():
    store = MemoryStore()
    for i in range(300):
        fire(store, L, "t", ["h"], Lineage(), "x", event_id=f"e{i:04d}")
    record = start_run(store, L, "h", "r1", 1.0)
    assert len(record.served) == 300 and inbox(store) == []


def test_limited_entries_wait_unless_their_slot_is_held():
    store = MemoryStore()
    free = fire(store, L, "free", ["h"], Lineage(), "x")
    limited = fire(store, L, "rolling", ["h"], Lineage(), "x", max_concurrent=1)
    assert pending_limits(store, L, "h") == {"rolling": 1}
    first = start_run(store, L, "h", "r1", 1.0, held={})  # the slot was not taken
    assert first.served == (free.id,) and inbox(store) == [limited.id]
    second = start_run(store, L, "h", "r2", 2.0, held={"rolling": 1})
    assert second.served == (limited.id,) and second.limits == (("rolling", 1),)


def test_finish_moves_the_record_out_of_the_hosts_prefix_onto_the_retention_lease():
    store = MemoryStore()
    fire(store, L, "t", ["h"], Lineage(), "x")
    started = start_run(store, L, "h", "r1", 1.0)
    lease = store.lease_grant(60)
    seen = []
    store.watch_prefix(L.prefix + "/", store.revision + 1, seen.extend)
    done = finish_run(store, L, started, 2, 3.0, lease)
    kv = store.get(L.done_key("h", "r1"))
    assert kv.lease == lease and parse_run(kv.value) == done and done.exit_code == 2
    assert store.get(L.run_key("h", "r1")) is None
    assert store.get_prefix(L.host_prefix("h"))[0] == []
    # One transaction: the record is never in both places, nor in neither.
    assert {c.revision for c in seen} == {kv.mod_revision} and len(seen) == 2


def test_finishing_again_is_harmless():
    store = MemoryStore()
    started = start_run(store, L, "h", "r1", 1.0)
    finish_run(store, L, started, 0, 2.0)
    again = finish_run(store, L, started, 0, 2.0)  # a retry after a write that timed out
    assert parse_run(store.get(L.done_key("h", "r1")).value) == again


def test_a_run_start_reads_only_the_inbox_and_active_runs():
    """10,000 finished runs kept do not make the next run's reads longer."""
    store = MemoryStore()
    for i in range(10_000):
        store.put(L.done_key("h", f"old{i:05d}"), b"{}")
    fire(store, L, "t", ["h"], Lineage(), "x")
    reads = []
    get_prefix = store.get_prefix
    store.get_prefix = lambda prefix: reads.append(get_prefix(prefix)[0]) or get_prefix(prefix)
    pending_limits(store, L, "h")
    record = start_run(store, L, "h", "r1", 1.0)
    assert len(record.served) == 1 and [len(items) for items in reads] == [1, 1]
