"""The store interface: the part of etcd's v3 API that trigger uses.

Two implementations keep the same contract (tests/unit/store/contract.py
runs against both): `memory` (in-process, for the simulator and tests) and
`etcd` (a real server through the etcd3 client).

Revisions follow etcd: one counter for the whole store, raised by one for
every write request (a transaction counts once); a read returns the
revision it saw. A watch started at revision R first replays every change
with revision >= R, then follows new ones; if R was compacted away it fails
with `CompactedError` instead, and the caller must re-read and start again.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol, Union


class StoreError(Exception):
    """The store could not do what was asked; the message says why."""


class UnavailableError(StoreError):
    """No endpoint answered."""


class CompactedError(StoreError):
    """A watch asked for history that compaction removed."""

    def __init__(self, compact_revision: int):
        super().__init__(f"revision compacted; oldest kept is {compact_revision}")
        self.compact_revision = compact_revision


class KeyValue(NamedTuple):
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0


class Put(NamedTuple):
    """A key was written at `revision`."""

    key: str
    value: bytes
    revision: int


class Delete(NamedTuple):
    """A key was removed at `revision` (by delete, or by its lease ending)."""

    key: str
    revision: int


Change = Union[Put, Delete]

# A watch callback gets the changes of one or more revisions, in revision
# order, or a StoreError once, after which the watch is dead. It is called
# from the store's own thread (etcd) or from inside the write (memory); a
# callback that raises ends its watch with a StoreError.
WatchCallback = Callable[[Union[list[Change], StoreError]], None]


class PutOp(NamedTuple):
    key: str
    value: bytes
    lease: int = 0


class DeleteOp(NamedTuple):
    key: str


Op = Union[PutOp, DeleteOp]


class Watch(Protocol):
    def cancel(self) -> None: ...


class Store(Protocol):
    def get(self, key: str) -> KeyValue | None: ...

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """All keys under prefix, sorted by key, and the revision read."""

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Write one key; returns the new revision."""

    def delete(self, key: str) -> bool:
        """Remove one key; True if it existed."""

    def txn(self, ops: list[Op], expect_missing: tuple[str, ...] = (),
            expect_revisions: tuple[tuple[str, int], ...] = ()) -> int | None:
        """Apply all ops atomically as one revision, and return it.

        With `expect_missing`, apply them only if none of those keys exist;
        with `expect_revisions`, only if each (key, revision) is still the
        key's mod revision. Otherwise return None and change nothing.
        """

    def watch_prefix(self, prefix: str, start_revision: int, callback: WatchCallback) -> Watch: ...

    def lease_grant(self, ttl: int) -> int: ...

    def lease_refresh(self, lease: int) -> None: ...

    def lease_revoke(self, lease: int) -> None: ...

    def compact(self, revision: int) -> None: ...

    def close(self) -> None: ...
