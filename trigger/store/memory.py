"""An in-process store with etcd's semantics, on any clock.

Watches are called synchronously, in revision order, from the call that
made the change, so a simulation on simulated time sees changes at the
moment they happen. Leases end when the clock passes their deadline; the
check runs at every operation and at `expire_leases()`.

Where etcd 3.4 (default configuration) behaves in a particular way, this
store does the same, and tests/unit/store/contract.py checks both:

- a write that changes nothing (a txn of deletes of missing keys, an empty
  txn) does not raise the revision;
- a txn may put a key only once and may not both put and delete it;
  more than `max_txn_ops` (128) ops or compares is refused, and so is a
  request larger than `max_request_bytes` (1.5 MiB);
- a lease ttl below `min_lease_ttl` (2 s) is raised to it;
- after `compact(R)` a watch may still start at R: it replays the puts made
  at R and later, but not deletes made at R (etcd drops those tombstones);
  a watch from below R fails with `CompactedError(R)`;
- a watch from a future revision sees nothing before that revision;
- if a watch callback raises, the error is logged and the watch ends with a
  `StoreError` given to the callback, so the watcher re-reads instead of
  silently missing a batch (the etcd store does the same).
"""

from __future__ import annotations

import bisect
import heapq
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .base import (
    Change,
    CompactedError,
    Delete,
    DeleteOp,
    KeyValue,
    Op,
    Put,
    PutOp,
    StoreError,
    WatchCallback,
)

log = logging.getLogger(__name__)

# etcd's defaults: --max-txn-ops, --max-request-bytes, and the minimum lease
# TTL that follows from --heartbeat-interval 100ms, --election-timeout 1000ms.
MAX_TXN_OPS = 128
MAX_REQUEST_BYTES = 1536 * 1024
MIN_LEASE_TTL = 2


@dataclass(eq=False)
class _Watch:
    store: "MemoryStore"
    prefix: str
    callback: WatchCallback
    start_revision: int = 0
    alive: bool = True

    def cancel(self) -> None:
        with self.store._lock:
            self.alive = False
            if self in self.store._watches:
                self.store._watches.remove(self)

    def deliver(self, changes: list[Change]) -> None:
        mine = [c for c in changes if c.key.startswith(self.prefix) and c.revision >= self.start_revision]
        if not mine or not self.alive:
            return
        try:
            self.callback(mine)
        except Exception as e:
            log.exception("watch callback for %s failed", self.prefix)
            self.fail(StoreError(f"watch callback for {self.prefix} failed: {e!r}"))

    def fail(self, error: StoreError) -> None:
        """Give `error` to the callback once; the watch is dead after it."""
        if not self.alive:
            return
        self.cancel()
        try:
            self.callback(error)
        except Exception:
            log.exception("watch callback for %s failed on %s", self.prefix, error)


@dataclass
class _Lease:
    ttl: int
    deadline: float
    keys: set[str] = field(default_factory=set)


class MemoryStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic, *,
                 max_txn_ops: int = MAX_TXN_OPS, max_request_bytes: int = MAX_REQUEST_BYTES,
                 min_lease_ttl: int = MIN_LEASE_TTL):
        self._clock = clock
        self.max_txn_ops = max_txn_ops
        self.max_request_bytes = max_request_bytes
        self.min_lease_ttl = min_lease_ttl
        self._lock = threading.RLock()
        self._data: dict[str, KeyValue] = {}
        self._keys: list[str] = []  # sorted, for prefix ranges
        self._revision = 1  # a new etcd cluster starts at revision 1
        self._compacted = 0  # watches may start at this revision, not below
        self._history: list[tuple[int, Change]] = []
        self._watches: list[_Watch] = []
        self._leases: dict[int, _Lease] = {}
        # (deadline, lease) for every grant and refresh, so an operation finds
        # the leases due without scanning all of them; an entry whose lease was
        # refreshed or revoked since is skipped when it comes up.
        self._deadlines: list[tuple[float, int]] = []
        self._next_lease = 1

    # -- reads -------------------------------------------------------------

    @property
    def revision(self) -> int:
        return self._revision

    def get(self, key: str) -> KeyValue | None:
        with self._lock:
            self._expire()
            return self._data.get(key)

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        with self._lock:
            self._expire()
            keys, items = self._keys, []
            # An index walk: a slice would copy the rest of the key space.
            for i in range(bisect.bisect_left(keys, prefix), len(keys)):
                if not keys[i].startswith(prefix):
                    break
                items.append(self._data[keys[i]])
            return items, self._revision

    # -- writes ------------------------------------------------------------

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        return self.txn([PutOp(key, value, lease)])

    def delete(self, key: str) -> bool:
        with self._lock:
            self._expire()
            if key not in self._data:
                return False
            self._commit([DeleteOp(key)])
            return True

    def txn(self, ops: list[Op], expect_missing: tuple[str, ...] = (),
            expect_revisions: tuple[tuple[str, int], ...] = ()) -> int | None:
        self._check_request(ops, expect_missing + tuple(k for k, _ in expect_revisions))
        with self._lock:
            self._expire()
            if any(k in self._data for k in expect_missing):
                return None
            if any(k not in self._data or self._data[k].mod_revision != r for k, r in expect_revisions):
                return None
            for op in ops:
                if isinstance(op, PutOp) and op.lease and op.lease not in self._leases:
                    raise StoreError(f"lease {op.lease:x} not found")
            return self._commit(ops)

    def _check_request(self, ops: list[Op], expect_missing: tuple[str, ...]) -> None:
        """Refuse what etcd refuses before it looks at the data."""
        if len(ops) > self.max_txn_ops or len(expect_missing) > self.max_txn_ops:
            raise StoreError(
                f"txn of {len(ops)} ops: more operations than etcd's --max-txn-ops allows "
                f"({self.max_txn_ops}); split the transaction into batches"
            )
        puts: set[str] = set()
        deletes: set[str] = set()
        size = 0
        for op in ops:
            if isinstance(op, PutOp):
                if not isinstance(op.value, bytes):
                    raise TypeError(f"store values are bytes, not {type(op.value).__name__}")
                if op.key in puts:
                    raise StoreError(f"txn of {len(ops)} ops: a transaction may name each key only once")
                puts.add(op.key)
                size += len(op.key) + len(op.value)
            elif isinstance(op, DeleteOp):
                deletes.add(op.key)
                size += len(op.key)
            else:
                raise TypeError(f"not a store op: {op!r}")
        if puts & deletes:
            raise StoreError(f"txn of {len(ops)} ops: a transaction may name each key only once")
        if size > self.max_request_bytes:
            raise StoreError(f"request of {size} bytes is larger than etcd's --max-request-bytes allows")

    def _commit(self, ops: list[Op]) -> int:
        revision = self._revision + 1
        changes: list[Change] = []
        for op in ops:
            if isinstance(op, PutOp):
                old = self._data.get(op.key)
                if old is None:
                    bisect.insort(self._keys, op.key)
                elif old.lease:
                    self._leases[old.lease].keys.discard(op.key)
                created = old.create_revision if old else revision
                self._data[op.key] = KeyValue(op.key, op.value, created, revision, op.lease)
                if op.lease:
                    self._leases[op.lease].keys.add(op.key)
                changes.append(Put(op.key, op.value, revision))
            elif op.key in self._data:
                old = self._data.pop(op.key)
                self._keys.pop(bisect.bisect_left(self._keys, op.key))
                if old.lease and old.lease in self._leases:
                    self._leases[old.lease].keys.discard(op.key)
                changes.append(Delete(op.key, revision))
        if not changes:
            # Like etcd: a write that changed nothing keeps the revision.
            return self._revision
        self._revision = revision
        self._history.extend((revision, c) for c in changes)
        for watch in list(self._watches):
            watch.deliver(changes)
        return revision

    # -- watches -----------------------------------------------------------

    def watch_prefix(self, prefix: str, start_revision: int, callback: WatchCallback) -> _Watch:
        """Changes under prefix from start_revision on (0: from now on).

        The callback is called before this returns with the history since
        start_revision (or with CompactedError), then from every write.
        """
        with self._lock:
            self._expire()
            start = start_revision if start_revision > 0 else self._revision + 1
            watch = _Watch(self, prefix, callback, start)
            self._watches.append(watch)
            if start < self._compacted:
                watch.fail(CompactedError(self._compacted))
                return watch
            i = bisect.bisect_left(self._history, start, key=lambda rc: rc[0])
            backlog = [c for _, c in self._history[i:]]
            if backlog:
                watch.deliver(backlog)
            return watch

    def compact(self, revision: int) -> None:
        with self._lock:
            if revision > self._revision:
                raise StoreError(f"cannot compact revision {revision}: newest is {self._revision}")
            if revision <= self._compacted:
                raise CompactedError(self._compacted)
            self._compacted = revision
            # etcd keeps the newest version of each key at or below the
            # compacted revision unless it is a tombstone: a watch from
            # `revision` still sees the puts made at `revision`, not its deletes.
            i = bisect.bisect_left(self._history, revision, key=lambda rc: rc[0])
            j = bisect.bisect_left(self._history, revision + 1, key=lambda rc: rc[0])
            kept = [(r, c) for r, c in self._history[i:j] if isinstance(c, Put)]
            self._history[:j] = kept

    # -- leases ------------------------------------------------------------

    def lease_grant(self, ttl: int) -> int:
        """A new lease; like etcd, a ttl below the minimum becomes the minimum."""
        with self._lock:
            ttl = max(ttl, self.min_lease_ttl)
            lease = self._next_lease
            self._next_lease += 1
            self._leases[lease] = _Lease(ttl, self._clock() + ttl)
            heapq.heappush(self._deadlines, (self._leases[lease].deadline, lease))
            return lease

    def lease_refresh(self, lease: int) -> None:
        with self._lock:
            self._expire()
            if lease not in self._leases:
                raise StoreError(f"lease {lease:x} not found")
            self._leases[lease].deadline = self._clock() + self._leases[lease].ttl
            heapq.heappush(self._deadlines, (self._leases[lease].deadline, lease))

    def lease_revoke(self, lease: int) -> None:
        with self._lock:
            self._expire()
            gone = self._leases.pop(lease, None)
            if gone is None:
                raise StoreError(f"lease {lease:x} not found")
            if gone.keys:
                self._commit([DeleteOp(k) for k in sorted(gone.keys)])

    def expire_leases(self) -> None:
        with self._lock:
            self._expire()

    def _expire(self) -> None:
        deadlines = self._deadlines
        if not deadlines:
            return
        now = self._clock()
        if deadlines[0][0] > now:
            return  # nothing due: what nearly every call finds
        due = set()
        while self._deadlines and self._deadlines[0][0] <= now:
            lease_id = heapq.heappop(self._deadlines)[1]
            if lease_id in self._leases and self._leases[lease_id].deadline <= now:
                due.add(lease_id)
        for lease_id in sorted(due):  # in grant order, as before
            gone = self._leases.pop(lease_id)
            if gone.keys:
                self._commit([DeleteOp(k) for k in sorted(gone.keys)])

    def close(self) -> None:
        with self._lock:
            for watch in list(self._watches):
                watch.cancel()
