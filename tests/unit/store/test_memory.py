"""The store contract on the in-memory store, on a fake clock."""

from __future__ import annotations

import pytest

from trigger.store.memory import MIN_LEASE_TTL, MemoryStore

from .contract import Harness, StoreContract


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def harness(self):
        clock = FakeClock()
        store = MemoryStore(clock=clock)

        def advance(seconds: float) -> None:
            clock.now += seconds
            store.expire_leases()

        yield Harness(store, advance, settle=0, min_lease_ttl=MIN_LEASE_TTL)
        store.close()


def test_leases_end_exactly_at_their_deadline_on_the_clock():
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    lease = store.lease_grant(10)
    store.put("/k", b"1", lease=lease)
    clock.now += 9.999
    assert store.get("/k") is not None
    clock.now += 0.001
    assert store.get("/k") is None


def test_limits_follow_the_constructor():
    store = MemoryStore(max_txn_ops=2, min_lease_ttl=0)
    from trigger.store.base import PutOp, StoreError

    with pytest.raises(StoreError, match="max-txn-ops"):
        store.txn([PutOp("/a", b""), PutOp("/b", b""), PutOp("/c", b"")])
    assert store.txn([PutOp("/a", b""), PutOp("/b", b"")]) == 2
    clock = FakeClock()
    store = MemoryStore(clock=clock, min_lease_ttl=0)
    lease = store.lease_grant(1)
    store.put("/k", b"", lease=lease)
    clock.now += 1
    assert store.get("/k") is None


def test_a_refreshed_lease_ends_at_its_new_deadline_and_due_leases_end_in_grant_order():
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    late, early = store.lease_grant(20), store.lease_grant(10)
    store.put("/late", b"", lease=late)
    store.put("/early", b"", lease=early)
    clock.now += 9
    store.lease_refresh(early)  # now due at +19, its first deadline (+10) is stale
    clock.now += 1.5
    assert store.get("/early") is not None
    clock.now += 8.5
    assert store.get("/early") is None and store.get("/late") is not None
    store.lease_refresh(late)
    clock.now += 20
    assert store.get("/late") is None

    # Both due in one check: deleted in the order granted, whatever the deadlines.
    first, second = store.lease_grant(30), store.lease_grant(10)
    store.put("/first", b"", lease=first)
    store.put("/second", b"", lease=second)
    seen = []
    store.watch_prefix("/", store.revision + 1, seen.extend)
    clock.now += 60
    store.expire_leases()
    assert [c.key for c in seen] == ["/first", "/second"]
    assert seen[0].revision < seen[1].revision
