"""Stores, chosen by name: `memory`, `etcd` (etcd's JSON gateway, standard
library only) or `etcd-grpc` (etcd's gRPC API through grpc and protobuf).

`etcd` is the default of every command: it starts and idles at about the
cost of the interpreter, where importing grpc alone costs more than the
interpreter's start and its threads wake an idle watcher tens of times a
second (docs/benchmarks.md). Both pass the same contract suite.

With a client certificate, `etcd` is the gRPC adapter: etcd's gateway
refuses a request whose client certificate carries a common name when
authentication is on ("CommonName ... will be ignored"), so it cannot take
the etcd user from the certificate as the gRPC API does."""

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
    """The store called `name`, importing only its own client."""
    if name == "memory":
        from .memory import MemoryStore

        return MemoryStore(**options)
    tls = options.get("tls")
    if name == "etcd" and (options.get("cert") or (tls is not None and tls.cert)):
        name = "etcd-grpc"
    if name == "etcd":
        from .etcd_json import EtcdJsonStore

        return EtcdJsonStore(endpoints or [DEFAULT_ENDPOINTS], **options)
    if name == "etcd-grpc":
        from .etcd import EtcdStore

        return EtcdStore(endpoints or [DEFAULT_ENDPOINTS], **options)
    raise ValueError(f"unknown store {name!r}: use etcd, etcd-grpc or memory")
