"""Stores, chosen by name: `memory` or `etcd`."""

from __future__ import annotations

from .base import (  # noqa: F401  (the interface, re-exported)
    Change,
    CompactedError,
    Delete,
    DeleteOp,
    KeyValue,
    Op,
    Put,
    PutOp,
    Store,
    StoreError,
    UnavailableError,
)

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"


def open_store(name: str, endpoints: list[str] | None = None, **options) -> Store:
    """The store called `name`; `etcd` imports its client only when asked."""
    if name == "memory":
        from .memory import MemoryStore

        return MemoryStore(**options)
    if name == "etcd":
        from .etcd import EtcdStore

        return EtcdStore(endpoints or [DEFAULT_ENDPOINTS], **options)
    raise ValueError(f"unknown store {name!r}: use etcd or memory")
