"""Firing into the in-memory store: one entry per host, hop counting, refusals."""

import json

import pytest

from trigger.fire import TXN_OPS, Lineage, LoopRefused, fire
from trigger.layout import Layout
from trigger.records import BadRecord, parse_entry
from trigger.store.memory import MemoryStore

L = Layout()


def inbox(store, host):
    items, _ = store.get_prefix(L.host_prefix(host))
    return [parse_entry(kv.value) for kv in items]


def test_one_entry_per_host_with_the_same_event_id():
    store = MemoryStore()
    entry = fire(store, L, "refresh", ["lb1", "lb2"], Lineage(), "web1", now=5.0)
    for host in ("lb1", "lb2"):
        assert inbox(store, host) == [entry]
    assert entry.hop == 1 and entry.chain == ("web1",) and entry.fired_at == 5.0


def test_large_fan_out_is_batched_into_transactions():
    store = MemoryStore()
    hosts = [f"h{i}" for i in range(1000)]
    before = store.revision
    fire(store, L, "refresh", hosts, Lineage(), "o")
    assert store.revision - before == -(-1000 // TXN_OPS)  # one revision per transaction
    assert len(store.get_prefix(f"{L.prefix}/hosts/")[0]) == 1000


@pytest.mark.parametrize("count", [1, TXN_OPS - 1, TXN_OPS, 300])
def test_the_kept_fire_goes_in_with_the_first_entries(count):
    store = MemoryStore()
    hosts = [f"h{i}" for i in range(count)]
    before = store.revision
    entry = fire(store, L, "refresh", hosts, Lineage(), "o", retention=60)
    assert store.revision - before == -(-(count + 1) // TXN_OPS)  # one request fewer for a small fire
    record = store.get(L.fire_key(entry.id))
    assert record.lease and json.loads(record.value)["hosts"] == hosts
    assert store.get(L.entry_key("h0", entry.id)).mod_revision == record.mod_revision


def test_hop_count_grows_along_the_chain_and_stops_above_ttl():
    store = MemoryStore()
    lineage, hosts = Lineage(), ["a", "b"]
    for hop in range(1, 4):
        origin = hosts[hop % 2]
        entry = fire(store, L, "ping", [hosts[(hop + 1) % 2]], lineage, origin, ttl=3)
        assert entry.hop == hop
        lineage = Lineage(entry.hop, entry.chain)
    with pytest.raises(LoopRefused, match=r"hop 4 > ttl 3; chain b -> a -> b -> a"):
        fire(store, L, "ping", ["b"], lineage, "a", ttl=3)
    refused, _ = store.get_prefix(f"{L.prefix}/refused/")
    record = json.loads(refused[0].value)
    assert record["hosts"] == ["b"] and record["hop"] == 4 and record["chain"] == ["b", "a", "b", "a"]
    assert [e.hop for e in inbox(store, "b")] == [2]  # the refused fire wrote no entry


def test_lineage_from_env():
    assert Lineage.from_env({}) == Lineage()
    assert Lineage.from_env({"TRIGGER_HOP": "2", "TRIGGER_CHAIN": "a,b"}) == Lineage(2, ("a", "b"))
    with pytest.raises(BadRecord, match="TRIGGER_HOP must be a number"):
        Lineage.from_env({"TRIGGER_HOP": "2; rm"})
    with pytest.raises(BadRecord, match="bad host name"):
        Lineage.from_env({"TRIGGER_HOP": "1", "TRIGGER_CHAIN": "a,$(x)"})


def test_bad_hosts_write_nothing():
    store = MemoryStore()
    with pytest.raises(BadRecord):
        fire(store, L, "refresh", ["ok", "not ok"], Lineage(), "o")
    assert store.get_prefix("/")[0] == []


def test_layout_rejects_bad_prefixes_and_classifies_keys():
    with pytest.raises(ValueError, match="must start with '/'"):
        Layout("nope")
    assert L.classify("h", L.entry_key("h", "e1")) == ("entry", "e1")
    assert L.classify("h", L.run_key("h", "r1")) == ("run", "r1")
    assert L.classify("h", L.host_prefix("h") + "runs/x/y")[0] == "other"
