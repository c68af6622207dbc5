"""An in-process store with etcd's semantics, on any clock.

Watches are called synchronously, in revision order, from the call that
made the change, so a simulation on simulated time sees changes at the
moment they happen. Leases end when the clock passes their deadline; the
check runs at every operation and at `expire_leases()`.
"""

from __future__ import annotations

import bisect
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


@dataclass
class _Watch:
    store: "MemoryStore"
    prefix: str
    callback: WatchCallback
    alive: bool = True

    def cancel(self) -> None:
        with self.store._lock:
            self.alive = False
            if self in self.store._watches:
                self.store._watches.remove(self)


@dataclass
class _Lease:
    ttl: int
    deadline: float
    keys: set[str] = field(default_factory=set)


class MemoryStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.RLock()
        self._data: dict[str, KeyValue] = {}
        self._keys: list[str] = []  # sorted, for prefix ranges
        self._revision = 1  # a new etcd cluster starts at revision 1
        self._compacted = 0
        self._history: list[tuple[int, Change]] = []
        self._watches: list[_Watch] = []
        self._leases: dict[int, _Lease] = {}
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
            start = bisect.bisect_left(self._keys, prefix)
            items = []
            for key in self._keys[start:]:
                if not key.startswith(prefix):
                    break
                items.append(self._data[key])
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

    def txn(self, ops: list[Op], expect_missing: tuple[str, ...] = ()) -> int | None:
        with self._lock:
            self._expire()
            if any(k in self._data for k in expect_missing):
                return None
            for op in ops:
                if isinstance(op, PutOp) and op.lease and op.lease not in self._leases:
                    raise StoreError(f"lease {op.lease:x} not found")
            return self._commit(ops)

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
            # etcd still raises the revision for a write that changed nothing.
            self._revision = revision
            return revision
        self._revision = revision
        self._history.extend((revision, c) for c in changes)
        for watch in list(self._watches):
            mine = [c for c in changes if c.key.startswith(watch.prefix)]
            if mine and watch.alive:
                watch.callback(mine)
        return revision

    # -- watches -----------------------------------------------------------

    def watch_prefix(self, prefix: str, start_revision: int, callback: WatchCallback) -> _Watch:
        with self._lock:
            self._expire()
            watch = _Watch(self, prefix, callback)
            if start_revision and start_revision <= self._compacted:
                watch.alive = False
                callback(CompactedError(self._compacted + 1))
                return watch
            start = start_revision or self._revision + 1
            i = bisect.bisect_left(self._history, start, key=lambda rc: rc[0])
            backlog = [c for _, c in self._history[i:] if c.key.startswith(prefix)]
            if backlog:
                callback(backlog)
            self._watches.append(watch)
            return watch

    def compact(self, revision: int) -> None:
        with self._lock:
            if revision > self._revision:
                raise StoreError(f"cannot compact revision {revision}: newest is {self._revision}")
            if revision <= self._compacted:
                raise CompactedError(self._compacted + 1)
            self._compacted = revision
            i = bisect.bisect_left(self._history, revision + 1, key=lambda rc: rc[0])
            del self._history[:i]

    # -- leases ------------------------------------------------------------

    def lease_grant(self, ttl: int) -> int:
        with self._lock:
            lease = self._next_lease
            self._next_lease += 1
            self._leases[lease] = _Lease(ttl, self._clock() + ttl)
            return lease

    def lease_refresh(self, lease: int) -> None:
        with self._lock:
            self._expire()
            if lease not in self._leases:
                raise StoreError(f"lease {lease:x} not found")
            self._leases[lease].deadline = self._clock() + self._leases[lease].ttl

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
        now = self._clock()
        for lease_id in [i for i, lease in self._leases.items() if lease.deadline <= now]:
            gone = self._leases.pop(lease_id)
            if gone.keys:
                self._commit([DeleteOp(k) for k in sorted(gone.keys)])

    def close(self) -> None:
        with self._lock:
            for watch in list(self._watches):
                watch.cancel()
