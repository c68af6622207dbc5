"""The store on a real etcd (v3 API), through the `etcd3` 0.12.0 package.

Theory of operation
-------------------
`etcd3` gives us the generated gRPC stubs and the channel setup
(`etcd3.Etcd3Client`); we make every call ourselves so that we decide what
happens on failure:

* **Endpoints.** One client (one gRPC channel) per endpoint, made lazily.
  A call starts at the endpoint that answered last; if it fails with
  UNAVAILABLE (refused, reset, no leader) it moves to the next, each endpoint
  tried once per call. A read that times out also moves on. A write that
  times out does not: it may have been applied, so we raise
  `UnavailableError` and the caller re-reads. When nobody answers, one
  `UnavailableError` names every endpoint and why.
* **Errors.** Every `grpc.RpcError` becomes a `StoreError` subclass with a
  one-line message; nothing from grpc reaches the caller.
* **Watches.** Not the client's watcher: on a lost connection it hands the
  callback a raw grpc error and then spins at 100 % CPU re-opening its stream
  against the dead server. Each watch here owns one gRPC Watch stream and one
  daemon thread. It reports, once, `CompactedError(compact_revision)` or
  `UnavailableError` (connection lost) and is then dead; the caller re-reads
  and watches again from the revision it read, which is how it reconciles.
  The watch keeps its own cursor (`last_revision`, the newest revision
  delivered) and drops anything at or below it.
  etcd never splits the events of one revision across watch responses (we do
  not ask for fragments), so each callback gets whole revisions.
* **Transactions.** `txn` is one etcd Txn: compares `create_revision == 0`
  for `expect_missing`, the ops as the success branch, an empty failure
  branch. etcd refuses a txn with more than `--max-txn-ops` (default 128)
  ops, or one naming a key twice; callers batch (see trigger.fire).

`PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python` must be set before protobuf is
first imported: the stubs in etcd3 0.12.0 were generated for protobuf 3 and
the C++/upb implementations of protobuf >= 4 refuse them ("Descriptors cannot
be created directly"). If protobuf was already imported with another
implementation, importing this module fails with a message saying so.
"""

from __future__ import annotations

import os

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import logging  # noqa: E402
import queue  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Callable, TypeVar  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import grpc  # noqa: E402

try:
    import etcd3  # noqa: E402
    import etcd3.etcdrpc as rpc  # noqa: E402
except TypeError as e:  # protobuf was imported earlier with the upb/C++ backend
    raise ImportError(
        "etcd3 cannot load its protobuf stubs: set PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python "
        f"before anything imports protobuf ({e})".replace("\n", " ")
    ) from e

from .base import (  # noqa: E402
    Change,
    CompactedError,
    Delete,
    DeleteOp,
    KeyValue,
    Op,
    Put,
    PutOp,
    StoreError,
    UnavailableError,
    WatchCallback,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Channel options: reconnect quickly after an etcd restart (grpc's default
# backoff grows to 120 s), notice a silently dead peer under a watch, and
# accept large range responses (a big inbox is more than grpc's 4 MiB).
# etcd refuses pings more often than --grpc-keepalive-min-time (5 s).
_GRPC_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", -1),
]

_EVENT_PUT = rpc.kv_pb2.Event.PUT


@dataclass
class _Endpoint:
    url: str
    target: str  # host:port for grpc
    client: "etcd3.Etcd3Client | None" = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def connect(self, timeout: float) -> "etcd3.Etcd3Client":
        with self.lock:
            if self.client is None:
                host, _, port = self.target.rpartition(":")
                self.client = etcd3.Etcd3Client(host=host, port=int(port), timeout=timeout,
                                                grpc_options=_GRPC_OPTIONS)
            return self.client

    def close(self) -> None:
        with self.lock:
            if self.client is not None:
                self.client.close()
                self.client = None


def parse_endpoint(url: str) -> _Endpoint:
    """`http://host:port` (or bare `host:port`) as etcdctl takes it."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port or 2379
    except ValueError as e:
        raise StoreError(f"bad etcd endpoint {url!r}: {e}") from None
    if parts.scheme == "https":
        raise StoreError(f"etcd endpoint {url!r}: https is not supported yet; use http://")
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise StoreError(f"bad etcd endpoint {url!r}: expected http://HOST:PORT")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return _Endpoint(url=url.strip(), target=f"{host}:{port}")


def _key(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def _str(key: bytes) -> str:
    return key.decode("utf-8", "surrogateescape")


def _value(value: bytes) -> bytes:
    if not isinstance(value, bytes):  # as the memory store: bytes, nothing else
        raise TypeError(f"store values are bytes, not {type(value).__name__}")
    return value


def prefix_range_end(prefix: bytes) -> bytes:
    """The end of etcd's range for all keys starting with `prefix`."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key (empty prefix, or all 0xff)


def _kv(kv) -> KeyValue:
    return KeyValue(_str(kv.key), bytes(kv.value), kv.create_revision, kv.mod_revision, kv.lease)


def _details(error: grpc.RpcError) -> str:
    try:
        text = error.details() or error.code().name
    except Exception:  # not a call object; still one line
        text = str(error)
    return " ".join(str(text).split())


class EtcdStore:
    """The Store protocol (trigger.store.base) on etcd's v3 gRPC API."""

    def __init__(self, endpoints: list[str], timeout: float = 5.0):
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise StoreError("no etcd endpoints given")
        self._endpoints = [parse_endpoint(e) for e in endpoints]
        self.timeout = timeout
        self._current = 0  # index of the endpoint that answered last
        self._lock = threading.Lock()
        self._watches: set[EtcdWatch] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"EtcdStore({[e.url for e in self._endpoints]!r})"

    # -- calling with failover ----------------------------------------------

    def _call(self, what: str, fn: Callable[["etcd3.Etcd3Client"], T], *, safe_to_retry: bool) -> T:
        """fn(client) on the first endpoint that answers.

        UNAVAILABLE moves on to the next endpoint. DEADLINE_EXCEEDED moves on
        only when `safe_to_retry` (reads, and writes whose repetition is
        harmless); otherwise the outcome is unknown and we say so.
        """
        if self._closed:
            raise StoreError(f"etcd {what}: the store is closed")
        n = len(self._endpoints)
        failures = []
        for i in range(n):
            index = (self._current + i) % n
            endpoint = self._endpoints[index]
            try:
                result = fn(endpoint.connect(self.timeout))
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else None
                if code == grpc.StatusCode.UNAVAILABLE or (
                    code == grpc.StatusCode.DEADLINE_EXCEEDED and safe_to_retry
                ):
                    failures.append(f"{endpoint.url} ({_details(e)})")
                    continue
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    # Start the next call (the caller's re-read) elsewhere.
                    self._current = (index + 1) % n
                    raise UnavailableError(
                        f"etcd {what}: no answer from {endpoint.url} within {self.timeout:g}s; "
                        "the write may or may not have been applied"
                    ) from None
                raise self._translate(e, what, endpoint) from None
            except ValueError as e:  # grpc raises this on a closed channel
                failures.append(f"{endpoint.url} ({e})")
                continue
            self._current = index
            return result
        raise UnavailableError(f"etcd {what}: no endpoint answered: {'; '.join(failures)}")

    def _translate(self, error: grpc.RpcError, what: str, endpoint: _Endpoint) -> StoreError:
        details = _details(error)
        if "required revision has been compacted" in details:
            return CompactedError(self._compact_revision(endpoint))
        if "required revision is a future revision" in details:
            return StoreError(f"etcd {what}: revision is newer than the store's newest")
        if "requested lease not found" in details:
            return StoreError(f"etcd {what}: lease not found")
        if "too many operations in txn request" in details:
            return StoreError(
                f"etcd {what}: more operations than etcd's --max-txn-ops allows "
                "(default 128); split the transaction into batches"
            )
        if "request is too large" in details or "received message larger than max" in details:
            return StoreError(f"etcd {what}: request is larger than etcd's --max-request-bytes allows (default 1.5 MiB)")
        if "duplicate key given in txn request" in details:
            return StoreError(f"etcd {what}: a transaction may name each key only once")
        code = error.code().name if hasattr(error, "code") else "ERROR"
        return StoreError(f"etcd {what} failed at {endpoint.url}: {code}: {details}")

    def _compact_revision(self, endpoint: _Endpoint) -> int:
        """The oldest revision a watch may start from: etcd tells a watch
        that asks for revision 1 (there is no other way to ask)."""
        try:
            client = endpoint.connect(self.timeout)
            # Keep our side of the stream open until etcd has answered: on a
            # half-close etcd ends the stream, maybe before its answer.
            requests: queue.Queue = queue.Queue()
            requests.put(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                key=b"\0", range_end=b"\0", start_revision=1)))
            stream = rpc.WatchStub(client.channel).Watch(
                iter(requests.get, None), timeout=self.timeout,
                credentials=client.call_credentials, metadata=client.metadata)
            try:
                for response in stream:
                    if response.compact_revision:
                        return response.compact_revision
                    if response.canceled or response.events:
                        break
            finally:
                requests.put(None)
                stream.cancel()
        except grpc.RpcError:
            pass
        return 0  # unknown: nothing compacted, or the server went away

    # -- reads ---------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        request = rpc.RangeRequest(key=_key(key))
        response = self._call(f"get {key}", lambda c: c.kvstub.Range(
            request, self.timeout, credentials=c.call_credentials, metadata=c.metadata),
            safe_to_retry=True)
        return _kv(response.kvs[0]) if response.kvs else None

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        start = _key(prefix) or b"\0"
        request = rpc.RangeRequest(key=start, range_end=prefix_range_end(_key(prefix)))
        response = self._call(f"get prefix {prefix}", lambda c: c.kvstub.Range(
            request, self.timeout, credentials=c.call_credentials, metadata=c.metadata),
            safe_to_retry=True)
        # etcd returns a range in key (byte) order.
        return [_kv(kv) for kv in response.kvs], response.header.revision

    # -- writes --------------------------------------------------------------

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        request = rpc.PutRequest(key=_key(key), value=_value(value), lease=lease)
        response = self._call(f"put {key}", lambda c: c.kvstub.Put(
            request, self.timeout, credentials=c.call_credentials, metadata=c.metadata),
            safe_to_retry=False)
        return response.header.revision

    def delete(self, key: str) -> bool:
        request = rpc.DeleteRangeRequest(key=_key(key))
        response = self._call(f"delete {key}", lambda c: c.kvstub.DeleteRange(
            request, self.timeout, credentials=c.call_credentials, metadata=c.metadata),
            safe_to_retry=False)
        return response.deleted > 0

    def txn(self, ops: list[Op], expect_missing: tuple[str, ...] = ()) -> int | None:
        """One etcd transaction. At most 128 ops (etcd's default
        --max-txn-ops) and each key once; callers batch."""
        success = []
        for op in ops:
            if isinstance(op, PutOp):
                success.append(rpc.RequestOp(request_put=rpc.PutRequest(
                    key=_key(op.key), value=_value(op.value), lease=op.lease)))
            elif isinstance(op, DeleteOp):
                success.append(rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=_key(op.key))))
            else:
                raise TypeError(f"not a store op: {op!r}")
        compare = [
            rpc.Compare(key=_key(k), result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, create_revision=0)
            for k in expect_missing
        ]
        request = rpc.TxnRequest(compare=compare, success=success, failure=[])
        response = self._call(f"txn of {len(ops)} ops", lambda c: c.kvstub.Txn(
            request, self.timeout, credentials=c.call_credentials, metadata=c.metadata),
            safe_to_retry=False)
        return response.header.revision if response.succeeded else None

    def compact(self, revision: int) -> None:
        # physical=True: return once the history is really gone, so what a
        # later watch from the compacted revision replays does not depend on
        # the timing of etcd's background compaction.
        request = rpc.CompactionRequest(revision=revision, physical=True)
        self._call(f"compact {revision}", lambda c: c.kvstub.Compact(
            request, self.timeout, credentials=c.call_credentials, metadata=c.metadata),
            safe_to_retry=True)

    # -- leases --------------------------------------------------------------

    def lease_grant(self, ttl: int) -> int:
        """A new lease; etcd raises a ttl below its minimum (2 s with the
        default heartbeat and election timeout) to that minimum."""
        request = rpc.LeaseGrantRequest(TTL=ttl, ID=0)
        response = self._call(f"lease grant {ttl}s", lambda c: c.leasestub.LeaseGrant(
            request, self.timeout, credentials=c.call_credentials, metadata=c.metadata),
            safe_to_retry=False)
        if response.error:
            raise StoreError(f"etcd lease grant {ttl}s: {response.error}")
        return response.ID

    def lease_refresh(self, lease: int) -> None:
        def keepalive(c):
            stream = c.leasestub.LeaseKeepAlive(
                iter([rpc.LeaseKeepAliveRequest(ID=lease)]), self.timeout,
                credentials=c.call_credentials, metadata=c.metadata)
            try:
                for response in stream:
                    return response
                return None
            finally:
                stream.cancel()

        response = self._call(f"lease refresh {lease:x}", keepalive, safe_to_retry=True)
        if response is None or response.TTL <= 0:
            raise StoreError(f"etcd lease refresh {lease:x}: lease not found")

    def lease_revoke(self, lease: int) -> None:
        request = rpc.LeaseRevokeRequest(ID=lease)
        self._call(f"lease revoke {lease:x}", lambda c: c.leasestub.LeaseRevoke(
            request, self.timeout, credentials=c.call_credentials, metadata=c.metadata),
            safe_to_retry=False)

    # -- watches -------------------------------------------------------------

    def watch_prefix(self, prefix: str, start_revision: int, callback: WatchCallback) -> "EtcdWatch":
        """Watch keys under prefix from start_revision (0: from now on).

        Raises UnavailableError if no endpoint accepts the watch. Later
        failures reach `callback` once, from the watch's thread.
        """
        if self._closed:
            raise StoreError("etcd watch: the store is closed")
        n = len(self._endpoints)
        failures = []
        for i in range(n):
            index = (self._current + i) % n
            endpoint = self._endpoints[index]
            watch = EtcdWatch(self, endpoint, prefix, start_revision, callback)
            error = watch._open(self.timeout)
            if error is None:
                self._current = index
                with self._lock:
                    self._watches.add(watch)
                return watch
            failures.append(f"{endpoint.url} ({error})")
        raise UnavailableError(f"etcd watch {prefix}: no endpoint answered: {'; '.join(failures)}")

    def _forget(self, watch: "EtcdWatch") -> None:
        with self._lock:
            self._watches.discard(watch)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            watches = list(self._watches)
        for watch in watches:
            watch.cancel()
        for endpoint in self._endpoints:
            endpoint.close()


class EtcdWatch:
    """One gRPC Watch stream and the thread that reads it.

    The callback is called from that thread. After `cancel()` returns it is
    not called again (except for a call already in progress). If the
    callback raises, the error is logged and the watch ends with a
    StoreError, so the caller re-reads rather than silently missing a batch.
    """

    def __init__(self, store: EtcdStore, endpoint: _Endpoint, prefix: str,
                 start_revision: int, callback: WatchCallback):
        self._store = store
        self.endpoint = endpoint
        self.prefix = prefix
        self.callback = callback
        self.start_revision = start_revision
        self.last_revision = start_revision - 1 if start_revision > 0 else 0
        self._alive = True
        self._requests: queue.Queue = queue.Queue()
        self._stream = None
        self._created = threading.Event()
        self._open_error: str | None = None
        self._thread: threading.Thread | None = None

    def _open(self, timeout: float) -> str | None:
        """Start the stream; None once etcd created the watch, else why not."""
        try:
            client = self.endpoint.connect(timeout)
            key = _key(self.prefix)
            create = rpc.WatchCreateRequest(
                key=key or b"\0", range_end=prefix_range_end(key),
                start_revision=max(self.start_revision, 0))
            self._requests.put(rpc.WatchRequest(create_request=create))
            self._stream = rpc.WatchStub(client.channel).Watch(
                iter(self._requests.get, None),
                credentials=client.call_credentials, metadata=client.metadata)
        except ValueError as e:  # closed channel
            return str(e)
        self._thread = threading.Thread(target=self._run, name=f"etcd-watch {self.prefix}", daemon=True)
        self._thread.start()
        if not self._created.wait(timeout):
            self._open_error = f"watch not created within {timeout:g}s"
        if self._open_error is not None:
            self._alive = False
            self._close_stream()
            return self._open_error
        return None

    def _run(self) -> None:
        try:
            for response in self._stream:
                if not self._alive:
                    return
                if response.created:
                    self._created.set()
                if response.compact_revision:
                    self._finish(CompactedError(response.compact_revision))
                    return
                if response.canceled:
                    reason = " ".join(response.cancel_reason.split()) or "no reason given"
                    self._finish(StoreError(f"etcd cancelled the watch on {self.prefix}: {reason}"))
                    return
                changes: list[Change] = []
                for event in response.events:
                    revision = event.kv.mod_revision
                    if revision <= self.last_revision:
                        continue  # already delivered
                    key = _str(event.kv.key)
                    if event.type == _EVENT_PUT:
                        changes.append(Put(key, bytes(event.kv.value), revision))
                    else:
                        changes.append(Delete(key, revision))
                if changes:
                    self._deliver(changes)
            if self._alive:  # the server ended the stream
                self._finish(UnavailableError(
                    f"etcd watch on {self.prefix} at {self.endpoint.url} ended "
                    f"after revision {self.last_revision}"))
        except grpc.RpcError as e:
            if not self._created.is_set():
                self._open_error = _details(e)
                self._created.set()
                return
            if self._alive:
                self._finish(UnavailableError(
                    f"etcd watch on {self.prefix} lost {self.endpoint.url} after revision "
                    f"{self.last_revision}: {_details(e)}"))
        except Exception as e:  # a bug here must still end the watch loudly
            log.exception("etcd watch on %s failed", self.prefix)
            if self._alive:
                self._finish(StoreError(f"etcd watch on {self.prefix} failed: {e!r}"))

    def _deliver(self, changes: list[Change]) -> None:
        self.last_revision = changes[-1].revision
        try:
            self.callback(changes)
        except Exception as e:
            log.exception("watch callback for %s failed", self.prefix)
            if self._alive:
                self._finish(StoreError(f"watch callback for {self.prefix} failed: {e!r}"))

    def _finish(self, error: StoreError) -> None:
        """Report `error` once and end the watch."""
        if not self._alive:
            return
        self._alive = False
        self._close_stream()
        self._store._forget(self)
        try:
            self.callback(error)
        except Exception:
            log.exception("watch callback for %s failed on %s", self.prefix, error)

    def _close_stream(self) -> None:
        self._requests.put(None)
        if self._stream is not None:
            self._stream.cancel()

    def cancel(self) -> None:
        self._alive = False
        self._close_stream()
        self._store._forget(self)
