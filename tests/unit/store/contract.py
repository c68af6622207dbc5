"""The store contract: what every store does, checked the same way on each.

A test module subclasses `StoreContract` and provides a `harness` fixture
(a `Harness`): the store, and how time passes for it. The memory store runs
on a fake clock, so time passes instantly; the etcd store runs on a real
server and real time, which is why lease tests use etcd's smallest TTL
(2 s) and watch tests wait on a `Recorder` instead of assuming delivery is
synchronous.

The expectations here were measured on etcd 3.4.23 with its default
configuration; when the memory store disagreed, the memory store was fixed.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import pytest

from trigger.store.base import (
    CompactedError,
    Delete,
    DeleteOp,
    Put,
    PutOp,
    StoreError,
    UnavailableError,
)


class Recorder:
    """A watch callback that keeps what it gets and lets a test wait for it."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.errors: list[StoreError] = []
        self._cond = threading.Condition()

    def __call__(self, item) -> None:
        with self._cond:
            if isinstance(item, StoreError):
                self.errors.append(item)
            else:
                assert isinstance(item, list) and item, f"callback got {item!r}"
                self.batches.append(list(item))
            self._cond.notify_all()

    @property
    def changes(self) -> list:
        with self._cond:
            return [c for batch in self.batches for c in batch]

    def wait_changes(self, count: int, timeout: float = 5.0) -> list:
        with self._cond:
            self._cond.wait_for(lambda: len(self.changes_unlocked()) >= count or self.errors, timeout)
            return self.changes_unlocked()

    def changes_unlocked(self) -> list:
        return [c for batch in self.batches for c in batch]

    def wait_error(self, timeout: float = 5.0) -> StoreError | None:
        with self._cond:
            self._cond.wait_for(lambda: self.errors, timeout)
            return self.errors[0] if self.errors else None


class Harness:
    """A store plus the way time passes for it."""

    def __init__(self, store, advance: Callable[[float], None], settle: float, min_lease_ttl: int):
        self.store = store
        self._advance = advance
        # The smallest lease TTL the store grants (etcd: 2 s by default).
        self.min_lease_ttl = min_lease_ttl
        # How long to wait before concluding that something did NOT happen
        # (no watch event): 0 when delivery is synchronous.
        self.settle = settle

    def advance(self, seconds: float) -> None:
        self._advance(seconds)

    def eventually(self, predicate: Callable[[], bool], within: float, step: float = 0.05) -> bool:
        """Let time pass in steps until predicate holds; False after `within`."""
        waited = 0.0
        while not predicate():
            if waited >= within:
                return False
            self.advance(step)
            waited += step
        return True

    def quiet(self) -> None:
        """Give asynchronous deliveries the time to arrive."""
        if self.settle:
            time.sleep(self.settle)

    def revision(self) -> int:
        return self.store.get_prefix("/nothing-here/")[1]


def kv_summary(kvs):
    return [(kv.key, kv.value) for kv in kvs]


class StoreContract:
    """Subclasses provide the `harness` fixture."""

    # -- revisions -----------------------------------------------------------

    def test_a_new_store_starts_at_revision_1(self, harness):
        assert harness.store.get_prefix("") == ([], 1)

    def test_every_write_raises_the_revision_by_one_and_a_txn_counts_once(self, harness):
        s = harness.store
        assert s.put("/a", b"1") == 2
        assert s.put("/b", b"1") == 3
        assert s.delete("/a") is True
        assert harness.revision() == 4
        assert s.txn([PutOp("/c", b"1"), PutOp("/d", b"1"), DeleteOp("/b")]) == 5
        assert harness.revision() == 5
        assert s.get_prefix("/") == (s.get_prefix("/")[0], 5)

    def test_create_and_mod_revisions(self, harness):
        s = harness.store
        r1 = s.put("/k", b"1")
        r2 = s.put("/k", b"2")
        kv = s.get("/k")
        assert (kv.value, kv.create_revision, kv.mod_revision) == (b"2", r1, r2)
        s.delete("/k")
        r4 = s.put("/k", b"3")
        kv = s.get("/k")
        assert (kv.create_revision, kv.mod_revision) == (r4, r4)

    def test_a_write_that_changes_nothing_keeps_the_revision(self, harness):
        s = harness.store
        r = s.put("/k", b"1")
        assert s.delete("/missing") is False
        assert s.txn([DeleteOp("/missing")]) == r
        assert s.txn([]) == r
        assert harness.revision() == r

    # -- reads ---------------------------------------------------------------

    def test_get(self, harness):
        s = harness.store
        assert s.get("/missing") is None
        r = s.put("/k", b"\x00\xffbinary")
        kv = s.get("/k")
        assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.lease) == (
            "/k", b"\x00\xffbinary", r, r, 0)

    def test_get_prefix_is_sorted_and_stops_at_the_prefix(self, harness):
        s = harness.store
        keys = ["/a/z", "/a/\u00e9", "/a0", "/a/b", "/a", "/b/x", "/a/", "/a/a/deep", "/a/a", "/"]
        for k in keys:
            s.put(k, k.encode())
        items, revision = s.get_prefix("/a/")
        assert [kv.key for kv in items] == ["/a/", "/a/a", "/a/a/deep", "/a/b", "/a/z", "/a/\u00e9"]
        assert revision == len(keys) + 1
        assert [kv.key for kv in s.get_prefix("/a/a")[0]] == ["/a/a", "/a/a/deep"]
        assert s.get_prefix("/c")[0] == []
        assert [kv.key for kv in s.get_prefix("")[0]] == sorted(keys)

    def test_delete_says_whether_the_key_existed(self, harness):
        s = harness.store
        s.put("/k", b"1")
        s.put("/k2", b"1")
        assert s.delete("/k") is True
        assert s.delete("/k") is False
        assert s.get("/k") is None
        assert s.get("/k2") is not None  # a delete is of one key, not a prefix

    # -- transactions --------------------------------------------------------

    def test_txn_applies_when_expected_keys_are_missing(self, harness):
        s = harness.store
        s.put("/gone", b"x")
        s.delete("/gone")  # deleted keys count as missing
        r = s.txn([PutOp("/a", b"1"), PutOp("/b", b"2")], expect_missing=("/a", "/gone"))
        assert r == harness.revision()
        assert kv_summary(s.get_prefix("/")[0]) == [("/a", b"1"), ("/b", b"2")]

    def test_txn_does_nothing_when_an_expected_key_exists(self, harness):
        s = harness.store
        r = s.put("/a", b"old")
        assert s.txn([PutOp("/a", b"new"), PutOp("/b", b"2")], expect_missing=("/x", "/a")) is None
        assert harness.revision() == r
        assert kv_summary(s.get_prefix("/")[0]) == [("/a", b"old")]

    def test_txn_applies_only_while_keys_keep_their_revision(self, harness):
        s = harness.store
        r = s.put("/a", b"bad")
        moved = s.txn([PutOp("/aside", b"bad"), DeleteOp("/a")], expect_revisions=(("/a", r),))
        assert moved == harness.revision() and s.get("/a") is None
        r2 = s.put("/b", b"bad")
        s.put("/b", b"good")  # a newer write: the move must not take it
        assert s.txn([DeleteOp("/b")], expect_revisions=(("/b", r2),)) is None
        assert s.get("/b").value == b"good"
        assert s.txn([PutOp("/c", b"")], expect_revisions=(("/never", 1),)) is None

    def test_txn_may_name_a_key_only_once(self, harness):
        s = harness.store
        s.put("/k", b"1")
        r = harness.revision()
        for ops in ([PutOp("/k", b"2"), PutOp("/k", b"3")],
                    [PutOp("/k", b"2"), DeleteOp("/k")],
                    [DeleteOp("/k"), PutOp("/k", b"2")]):
            with pytest.raises(StoreError, match="only once"):
                s.txn([PutOp("/other", b"x"), *ops])
        assert harness.revision() == r
        assert s.get("/other") is None
        # Deleting a key twice is allowed (etcd checks puts, not deletes).
        assert s.txn([DeleteOp("/k"), DeleteOp("/k")]) == r + 1

    def test_txn_of_more_than_128_ops_is_refused_with_advice(self, harness):
        s = harness.store
        with pytest.raises(StoreError, match="max-txn-ops.*batch"):
            s.txn([PutOp(f"/k/{i:03}", b"") for i in range(129)])
        with pytest.raises(StoreError, match="max-txn-ops"):
            s.txn([PutOp("/k", b"")], expect_missing=tuple(f"/m/{i:03}" for i in range(129)))
        assert harness.revision() == 1
        r = s.txn([PutOp(f"/k/{i:03}", b"") for i in range(128)],
                  expect_missing=tuple(f"/m/{i:03}" for i in range(128)))
        assert r == 2
        assert len(s.get_prefix("/k/")[0]) == 128

    def test_a_request_over_1_5_mib_is_refused(self, harness):
        s = harness.store
        with pytest.raises(StoreError, match="max-request-bytes"):
            s.put("/big", b"x" * (2 * 1024 * 1024))
        with pytest.raises(StoreError, match="max-request-bytes"):
            s.txn([PutOp(f"/big/{i}", b"x" * (512 * 1024)) for i in range(4)])
        assert s.get_prefix("/big")[0] == []
        s.put("/big", b"x" * (1024 * 1024))
        assert len(s.get("/big").value) == 1024 * 1024

    def test_values_are_bytes(self, harness):
        with pytest.raises(TypeError):
            harness.store.put("/k", "text")
        with pytest.raises(TypeError):
            harness.store.txn([PutOp("/k", "text")])
        assert harness.store.get("/k") is None

    # -- watches -------------------------------------------------------------

    def test_watch_from_a_past_revision_replays_history_then_follows(self, harness):
        s = harness.store
        r1 = s.put("/w/a", b"1")
        r2 = s.put("/w/b", b"2")
        s.put("/other", b"x")
        r4 = s.delete("/w/a") and harness.revision()
        rec = Recorder()
        s.watch_prefix("/w/", r2, rec)
        assert rec.wait_changes(2) == [Put("/w/b", b"2", r2), Delete("/w/a", r4)]
        r5 = s.put("/w/c", b"3")
        assert rec.wait_changes(3)[2:] == [Put("/w/c", b"3", r5)]
        rec_all = Recorder()
        s.watch_prefix("/w/", r1, rec_all)
        assert rec_all.wait_changes(4)[0] == Put("/w/a", b"1", r1)
        harness.quiet()
        assert len(rec.changes) == 3 and not rec.errors

    def test_watch_from_now_sees_only_new_changes_under_its_prefix(self, harness):
        s = harness.store
        s.put("/w/old", b"1")
        rec = Recorder()
        s.watch_prefix("/w/", 0, rec)
        s.put("/w", b"not under /w/")
        s.put("/w0", b"not under /w/")
        r = s.put("/w/new", b"2")
        assert rec.wait_changes(1) == [Put("/w/new", b"2", r)]
        harness.quiet()
        assert rec.changes == [Put("/w/new", b"2", r)]

    def test_watch_from_a_future_revision_starts_there(self, harness):
        s = harness.store
        r = harness.revision()
        rec = Recorder()
        s.watch_prefix("/w/", r + 2, rec)
        s.put("/w/a", b"1")
        s.put("/w/b", b"2")
        assert rec.wait_changes(1) == [Put("/w/b", b"2", r + 2)]
        harness.quiet()
        assert len(rec.changes) == 1

    def test_watch_delivers_each_txn_in_one_callback(self, harness):
        s = harness.store
        for i in range(3):
            s.put(f"/w/x{i}", b"old")
        start = harness.revision() + 1
        rec = Recorder()
        s.watch_prefix("/w/", start, rec)
        ops = [PutOp(f"/w/{i:03}", b"v") for i in range(100)] + [DeleteOp("/w/x1")]
        r1 = s.txn(ops)
        r2 = s.txn([PutOp(f"/w/{i:03}", b"w") for i in range(100)] + [PutOp("/elsewhere", b"")])
        changes = rec.wait_changes(201)
        assert [c.revision for c in changes] == [r1] * 101 + [r2] * 100
        assert changes[:101] == [Put(f"/w/{i:03}", b"v", r1) for i in range(100)] + [Delete("/w/x1", r1)]
        # Replaying the same history keeps each revision in one callback too.
        replay = Recorder()
        s.watch_prefix("/w/", start, replay)
        assert replay.wait_changes(201) == changes
        harness.quiet()
        for recorder in (rec, replay):
            assert len(recorder.changes) == 201
            revisions = [r for batch in recorder.batches for r in {c.revision for c in batch}]
            assert len(revisions) == len(set(revisions)), "a revision was split across callbacks"

    def test_cancelled_watch_gets_nothing_more(self, harness):
        s = harness.store
        rec = Recorder()
        watch = s.watch_prefix("/w/", 0, rec)
        r = s.put("/w/a", b"1")
        rec.wait_changes(1)
        watch.cancel()
        s.put("/w/b", b"2")
        harness.quiet()
        assert rec.changes == [Put("/w/a", b"1", r)] and not rec.errors

    def test_a_callback_that_raises_ends_its_watch_with_a_store_error(self, harness):
        s = harness.store
        calls = []

        def callback(item):
            calls.append(item)
            if not isinstance(item, StoreError):
                raise RuntimeError("bug in the watcher")

        s.watch_prefix("/w/", 0, callback)
        s.put("/w/a", b"1")  # the writer is not hurt by the watcher's bug
        harness.eventually(lambda: len(calls) >= 2, within=5)
        s.put("/w/b", b"2")
        harness.quiet()
        assert len(calls) == 2
        assert isinstance(calls[1], StoreError) and "bug in the watcher" in str(calls[1])

    # -- compaction ----------------------------------------------------------

    def test_watch_from_a_compacted_revision_fails_once(self, harness):
        s = harness.store
        r1 = s.put("/w/a", b"1")
        r2 = s.put("/w/a", b"2")
        r3 = s.put("/w/b", b"3")
        s.compact(r2)
        rec = Recorder()
        s.watch_prefix("/w/", r1, rec)
        error = rec.wait_error()
        assert isinstance(error, CompactedError) and error.compact_revision == r2
        s.put("/w/c", b"4")
        harness.quiet()
        assert rec.batches == [] and len(rec.errors) == 1
        # Data survives compaction; only history goes.
        assert kv_summary(s.get_prefix("/w/")[0]) == [("/w/a", b"2"), ("/w/b", b"3"), ("/w/c", b"4")]
        assert s.get("/w/b").mod_revision == r3

    def test_watch_from_the_compaction_revision_replays_its_puts_but_not_its_deletes(self, harness):
        s = harness.store
        s.put("/w/a", b"1")
        r = s.txn([DeleteOp("/w/a"), PutOp("/w/b", b"2")])
        r_next = s.put("/w/c", b"3")
        s.compact(r)
        rec = Recorder()
        s.watch_prefix("/w/", r, rec)
        assert rec.wait_changes(2) == [Put("/w/b", b"2", r), Put("/w/c", b"3", r_next)]
        harness.quiet()
        assert len(rec.changes) == 2 and not rec.errors

    def test_compacting_a_future_revision_is_refused(self, harness):
        s = harness.store
        r = s.put("/k", b"1")
        with pytest.raises(StoreError) as caught:
            s.compact(r + 1)
        assert not isinstance(caught.value, (CompactedError, UnavailableError))
        s.compact(r)  # the newest revision itself may be compacted

    def test_compacting_again_raises_compacted(self, harness):
        s = harness.store
        r = s.put("/k", b"1")
        s.put("/k", b"2")
        s.compact(r)
        for again in (r, r - 1):
            with pytest.raises(CompactedError) as caught:
                s.compact(again)
            assert caught.value.compact_revision == r

    # -- leases --------------------------------------------------------------

    def test_lease_keys_vanish_after_the_ttl_as_delete_events(self, harness):
        s = harness.store
        ttl = harness.min_lease_ttl
        lease = s.lease_grant(1)  # raised to the minimum
        r_a = s.put("/l/a", b"1", lease=lease)
        s.txn([PutOp("/l/b", b"2", lease=lease), PutOp("/l/keep", b"3")])
        assert s.get("/l/a").lease == lease and s.get("/l/keep").lease == 0
        rec = Recorder()
        s.watch_prefix("/l/", r_a + 2, rec)
        harness.advance(ttl - 0.5)
        assert s.get("/l/a") is not None, f"a ttl of 1 must be raised to {ttl} s"
        # etcd looks for expired leases every 500 ms.
        assert harness.eventually(lambda: s.get("/l/a") is None, within=1.5)
        assert s.get("/l/b") is None and s.get("/l/keep") is not None
        changes = rec.wait_changes(2)
        assert [(type(c), c.key) for c in changes] == [(Delete, "/l/a"), (Delete, "/l/b")]
        assert changes[0].revision == changes[1].revision == r_a + 2
        assert len(rec.batches) == 1
        with pytest.raises(StoreError, match="not found"):
            s.lease_refresh(lease)

    def test_lease_refresh_keeps_keys_past_the_ttl(self, harness):
        s = harness.store
        ttl = harness.min_lease_ttl
        lease = s.lease_grant(ttl)
        s.put("/l/a", b"1", lease=lease)
        harness.advance(ttl * 0.75)
        s.lease_refresh(lease)
        harness.advance(ttl * 0.75)
        assert s.get("/l/a") is not None, "refresh did not extend the lease"
        s.lease_revoke(lease)

    def test_lease_revoke_removes_its_keys_in_one_revision(self, harness):
        s = harness.store
        lease = s.lease_grant(60)
        other = s.lease_grant(60)
        s.put("/l/b", b"1", lease=lease)
        s.put("/l/a", b"1", lease=lease)
        s.put("/l/moved", b"1", lease=lease)
        s.put("/l/moved", b"2")  # a put without the lease takes the key off it
        s.put("/l/other", b"1", lease=other)
        r = harness.revision()
        rec = Recorder()
        s.watch_prefix("/l/", 0, rec)
        s.lease_revoke(lease)
        assert rec.wait_changes(2) == [Delete("/l/a", r + 1), Delete("/l/b", r + 1)]
        assert harness.revision() == r + 1
        assert kv_summary(s.get_prefix("/l/")[0]) == [("/l/moved", b"2"), ("/l/other", b"1")]
        with pytest.raises(StoreError, match="not found"):
            s.lease_revoke(lease)
        s.lease_revoke(other)

    def test_unknown_leases_are_refused(self, harness):
        s = harness.store
        with pytest.raises(StoreError, match="not found"):
            s.put("/k", b"1", lease=987654321)
        with pytest.raises(StoreError, match="not found"):
            s.lease_refresh(987654321)
        with pytest.raises(StoreError, match="not found"):
            s.lease_revoke(987654321)
        assert s.get("/k") is None
