"""The store on a real etcd (v3 API), through the gRPC stubs of `etcd-sdk-python`.

Theory of operation
-------------------
`etcd-sdk-python` (module `pyetcd`, the maintained fork of `etcd3`) gives us
the generated gRPC stubs; we make the channels (plain or
TLS) and every call ourselves, so that we decide what happens on failure:

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
* **TLS.** An `https://` endpoint gets a gRPC secure channel: the server is
  checked against `cacert` (else the system's CAs), and `cert`/`key` are
  the client certificate etcd's `--client-cert-auth` asks for. The files
  are read and checked once, up front (`load_tls`), so a wrong path or a
  key that does not match its certificate is a one-line error, not a
  failed handshake later. TLS options with a plain `http://` endpoint are
  refused rather than silently ignored. A handshake that fails because of
  a certificate (unknown CA, wrong host name, client certificate refused)
  is a configuration error (`StoreError`), not an outage
  (`UnavailableError`), so callers that retry outages do not retry it.
* **Authentication.** With `user`/`password`, each endpoint's connection
  asks etcd for a token (Authenticate) on first use and sends it as the
  `token` metadata of every call. etcd's tokens expire (simple tokens after
  `--auth-token-ttl`, 300 s, without use; all tokens when etcd restarts): a
  call refused with "invalid auth token" or "auth revision is old" is
  refused before it is applied, so it re-authenticates once and calls
  again, writes included. An open watch stream keeps working after its
  token expired (etcd checks the token when the watch is created); a new
  watch refused for an expired token re-authenticates and is opened again.
  That is how a watcher outlives its token, where the etcd3 client's own
  watcher hangs. Without `user`, a client certificate's common name is the
  etcd user (etcd's `--client-cert-auth`).
* **Transactions.** `txn` is one etcd Txn: compares `create_revision == 0`
  for `expect_missing`, the ops as the success branch, an empty failure
  branch. etcd refuses a txn with more than `--max-txn-ops` (default 128)
  ops, or one naming a key twice; callers batch (see trigger.fire).

The stubs were generated for protobuf >= 5, so protobuf loads with its fast
backend (upb): etcd3 0.12.0's stubs loaded only with the pure-Python one,
which made importing this module cost about 270 ms and every message built
or parsed several times slower (docs/benchmarks.md).
`GRPC_VERBOSITY=NONE` (unless set) keeps grpc's C core from printing its
own log lines (a failed TLS handshake logs several) next to our one-line
errors.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import logging  # noqa: E402
import queue  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Callable, TypeVar  # noqa: E402

import grpc  # noqa: E402

import pyetcd.etcdrpc as rpc  # noqa: E402

from ..policy import STORE_TIMEOUT  # noqa: E402
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
from .etcd_common import (  # noqa: E402,F401  (load_tls, EtcdError, prefix_range_end: used by callers)
    TOKEN_REFUSED,
    Credentials,
    EndpointDown,
    EtcdError,
    TlsConfig,
    check_value as _value,
    connection_options,
    decode_key as _str,
    encode_key as _key,
    hint,
    load_tls,
    prefix_range_end,
    split_endpoint,
    StreamWatch,
    failover,
    first_watch,
    tls_problem as _tls_problem,
    translate,
    who,
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


class _Connection:
    """A gRPC channel to one endpoint, the stubs over it, and its auth token."""

    call_credentials = None  # the token travels as metadata, as etcd expects

    def __init__(self, endpoint: "_Endpoint"):
        if endpoint.secure:
            credentials = (endpoint.tls or TlsConfig()).channel_credentials()
            self.channel = grpc.secure_channel(endpoint.target, credentials, options=_GRPC_OPTIONS)
        else:
            self.channel = grpc.insecure_channel(endpoint.target, options=_GRPC_OPTIONS)
        self.kvstub = rpc.KVStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.authstub = rpc.AuthStub(self.channel)
        self.token: str | None = None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        token = self.token
        return (("token", token),) if token else None

    def close(self) -> None:
        self.channel.close()


@dataclass
class _Endpoint:
    url: str
    target: str  # host:port for grpc
    secure: bool = False  # https: a TLS channel
    tls: TlsConfig | None = None
    credentials: Credentials | None = None
    client: _Connection | None = None
    authenticated: bool = False  # a token was asked for (or etcd has auth disabled)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def connect(self, timeout: float) -> _Connection:
        """The endpoint's connection, authenticated if there are credentials.
        Raises grpc.RpcError when etcd does not answer or refuses the user."""
        with self.lock:
            if self.client is None:
                self.client = _Connection(self)
                self.authenticated = False
            if self.credentials is not None and not self.authenticated:
                self._authenticate(timeout)
            return self.client

    def reauthenticate(self, stale_token: str | None, timeout: float) -> _Connection:
        """A new token, unless another thread got one since `stale_token` was refused."""
        with self.lock:
            if self.client is None:
                self.client = _Connection(self)
                self._authenticate(timeout)
            elif self.client.token == stale_token:
                self._authenticate(timeout)
            return self.client

    def _authenticate(self, timeout: float) -> None:
        request = rpc.AuthenticateRequest(name=self.credentials.user, password=self.credentials.password)
        try:
            response = self.client.authstub.Authenticate(request, timeout)
        except grpc.RpcError as e:
            if "authentication is not enabled" not in _details(e):
                raise
            self.client.token = None  # etcd takes every call without a token
        else:
            self.client.token = response.token
        self.authenticated = True

    def close(self) -> None:
        with self.lock:
            if self.client is not None:
                self.client.close()
                self.client = None


def parse_endpoint(url: str) -> _Endpoint:
    """`http://host:port`, `https://host:port` (or bare `host:port`) as etcdctl takes it."""
    host, port, secure = split_endpoint(url)
    return _Endpoint(url=url.strip(), target=f"{host}:{port}", secure=secure)


def _token_refused(error: grpc.RpcError) -> bool:
    details = _details(error)
    return any(text in details for text in TOKEN_REFUSED)


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

    def __init__(self, endpoints: list[str], timeout: float = STORE_TIMEOUT, *,
                 cacert: str | None = None, cert: str | None = None, key: str | None = None,
                 user: str | None = None, password: str | None = None,
                 tls: TlsConfig | None = None):
        """`cacert`/`cert`/`key` are PEM file paths (or give `tls` already
        loaded); `user` and `password` turn on password authentication.
        Raises ValueError for unusable TLS files or options."""
        endpoints, tls, credentials = connection_options(endpoints, cacert, cert, key, user, password, tls)
        self._endpoints = [parse_endpoint(e) for e in endpoints]
        self.user = user
        for endpoint in self._endpoints:
            endpoint.tls, endpoint.credentials = tls, credentials
        self.timeout = timeout
        self._current = 0  # index of the endpoint that answered last
        self._lock = threading.Lock()
        self._watches: set[EtcdWatch] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"EtcdStore({[e.url for e in self._endpoints]!r})"

    # -- calling with failover ----------------------------------------------

    def _call(self, what: str, fn: Callable[[_Connection], T], *, safe_to_retry: bool) -> T:
        """fn(connection) on the first endpoint that answers (etcd_common.failover).
        UNAVAILABLE is an endpoint down, DEADLINE_EXCEEDED one that timed out; a
        refused auth token is renewed and the call made once more (see the
        module docstring)."""
        def attempt(endpoint: _Endpoint) -> T:
            try:
                return self._on(endpoint, fn)
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else None
                details = _details(e)
                if code == grpc.StatusCode.UNAVAILABLE:
                    raise EndpointDown(hint(endpoint.secure, details), _tls_problem(details)) from None
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise EndpointDown(hint(endpoint.secure, details), timed_out=True) from None
                raise self._translate(e, what, endpoint) from None
            except ValueError as e:  # grpc raises this on a closed channel
                raise EndpointDown(str(e)) from None

        return failover(self, what, attempt, safe_to_retry)

    def _on(self, endpoint: _Endpoint, fn: Callable[[_Connection], T]) -> T:
        """fn(connection) on one endpoint; once more with a new token if etcd
        refused the one we had."""
        client = endpoint.connect(self.timeout)
        token = client.token
        try:
            return fn(client)
        except grpc.RpcError as e:
            if endpoint.credentials is None or not _token_refused(e):
                raise
            log.info("etcd at %s refused the auth token (%s); authenticating again",
                     endpoint.url, _details(e))
        return fn(endpoint.reauthenticate(token, self.timeout))

    def _who(self) -> str:
        return who(self.user)

    def _translate(self, error: grpc.RpcError, what: str, endpoint: _Endpoint) -> StoreError:
        code = error.code().name if hasattr(error, "code") else "ERROR"
        return translate(_details(error), code, what, endpoint.url, self.user,
                         lambda: self._compact_revision(endpoint))

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
        except (grpc.RpcError, ValueError):
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

    def txn(self, ops: list[Op], expect_missing: tuple[str, ...] = (),
            expect_revisions: tuple[tuple[str, int], ...] = ()) -> int | None:
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
        ] + [
            rpc.Compare(key=_key(k), result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, mod_revision=r)
            for k, r in expect_revisions
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

    # -- users and roles ----------------------------------------------------

    def auth_call(self, method: str, request):
        """One call of etcd's Auth service by its gRPC name (`UserAdd`,
        `RoleGrantPermission`, `AuthEnable`, ...), with failover and our
        errors. Every one of them may be repeated harmlessly."""
        return self._call(f"auth {method}", lambda c: getattr(c.authstub, method)(
            request, self.timeout, metadata=c.metadata), safe_to_retry=True)

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

        def open_on(endpoint: _Endpoint) -> "EtcdWatch | str":
            try:
                return self._open_watch(endpoint, prefix, start_revision, callback)
            except grpc.RpcError as e:  # from authenticating
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise self._translate(e, f"watch {prefix}", endpoint) from None
                return _details(e)

        self._current, watch = first_watch(prefix, self._endpoints, self._current, self.user, open_on)
        with self._lock:
            self._watches.add(watch)
        return watch

    def _open_watch(self, endpoint: _Endpoint, prefix: str, start_revision: int,
                    callback: WatchCallback) -> "EtcdWatch | str":
        """A watch etcd created on this endpoint, or why not. A watch refused
        for its token (expired while only a watch used it, or etcd
        restarted) is opened once more with a new one."""
        watch = EtcdWatch(self, endpoint, prefix, start_revision, callback)
        error = watch._open(self.timeout)
        if error is None:
            return watch
        if endpoint.credentials is None or not any(text in error for text in TOKEN_REFUSED):
            return error
        log.info("etcd at %s refused the watch's auth token (%s); authenticating again",
                 endpoint.url, error)
        endpoint.reauthenticate(watch.token, self.timeout)
        watch = EtcdWatch(self, endpoint, prefix, start_revision, callback)
        return watch._open(self.timeout) or watch

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


class EtcdWatch(StreamWatch):
    """One gRPC Watch stream and the thread that reads it (see StreamWatch)."""

    def __init__(self, store: EtcdStore, endpoint: _Endpoint, prefix: str,
                 start_revision: int, callback: WatchCallback):
        super().__init__(store, endpoint, prefix, start_revision, callback)
        self._requests: queue.Queue = queue.Queue()
        self._created = threading.Event()

    def _open(self, timeout: float) -> str | None:
        """Start the stream; None once etcd created the watch, else why not.
        Raises grpc.RpcError if authenticating fails."""
        try:
            client = self.endpoint.connect(timeout)
            self.token = token = client.token
            key = _key(self.prefix)
            create = rpc.WatchCreateRequest(
                key=key or b"\0", range_end=prefix_range_end(key),
                start_revision=max(self.start_revision, 0))
            self._requests.put(rpc.WatchRequest(create_request=create))
            self._stream = rpc.WatchStub(client.channel).Watch(
                iter(self._requests.get, None),
                metadata=(("token", token),) if token else None)
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
                if response.created and response.canceled and not response.compact_revision \
                        and not self._created.is_set():
                    # Refused at creation (permission denied, expired token).
                    reason = " ".join(response.cancel_reason.split()) or "no reason given"
                    self._open_error = f"etcd refused the watch: {reason}"
                    self._created.set()
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

    def _close_stream(self) -> None:
        self._requests.put(None)
        if self._stream is not None:
            self._stream.cancel()
