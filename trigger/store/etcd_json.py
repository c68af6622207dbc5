"""The store on a real etcd through its JSON gateway (`/v3/...` over HTTP),
with the standard library only.

Why a second adapter: grpc is most of what a `trigger` process costs.
Importing it takes about 40 ms and 20 MB, and its threads wake an idle
watcher 40 times a second (docs/benchmarks.md). etcd serves the same v3 API
as JSON on its client port (grpc-gateway), and `trigger.store.http11` speaks it with
one blocking socket per watch: an idle watcher sleeps in `recv`.

Theory of operation (the same rules as trigger.store.etcd, on another wire)
---------------------------------------------------------------------------
* **Endpoints.** A few kept-alive HTTP(S) connections per endpoint for
  unary calls, one per call in flight. A call starts at the endpoint that answered last;
  a refused or reset connection, or etcd saying UNAVAILABLE, moves it to
  the next endpoint, each tried once per call. A read that times out also
  moves on; a write that times out raises `UnavailableError` saying it may
  have been applied. A kept-alive connection the server closed while idle
  is opened again once, silently.
* **Errors.** etcd's refusals come back as an HTTP error with etcd's words
  and gRPC status; both become the one-line StoreErrors the gRPC adapter
  raises (trigger.store.etcd_common.translate).
* **Watches.** Each watch is one streaming POST /v3/watch on a connection
  of its own, read line by line (one JSON message a line) by a daemon
  thread blocked in `recv`. TCP keep-alive (idle 10 s, 2 probes 5 s apart)
  notices a silently dead peer without waking the process. As in the gRPC
  adapter it reports `CompactedError` or `UnavailableError` once and is then
  dead; the caller re-reads and watches again.
* **TLS.** An https endpoint is checked against `cacert` (else the
  system's CAs) and shown the client certificate, from the ssl context
  `load_tls` built when it checked the files.
* **Authentication.** A token from /v3/auth/authenticate, sent as the
  `Authorization` header; a call refused for its token (expired, etcd
  restarted) authenticates again and is repeated once.
* **Transactions** are etcd Txns with the same compares as the gRPC adapter.
"""

from __future__ import annotations

import binascii  # base64's functions without base64's imports (1.3 ms of a cold start)
import json
import socket
import sys
import threading

from ..policy import STORE_TIMEOUT
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
    UnavailableError,
    WatchCallback,
)
from .http11 import Closed, Connection
from .etcd_common import (
    TOKEN_REFUSED,
    Credentials,
    EndpointDown,
    StreamWatch,
    TlsConfig,
    check_value,
    connection_options,
    decode_key,
    encode_key,
    adapter_log,
    failover,
    first_watch,
    prefix_range_end,
    split_endpoint,
    tls_problem,
    translate,
)



# gRPC status codes by number, as the gateway reports them.
_STATUS = {1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
           6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
           10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
           15: "DATA_LOSS", 16: "UNAUTHENTICATED"}

# etcd's Auth service by its gRPC method name (trigger.auth calls it so).
_AUTH_PATHS = {
    "AuthEnable": "/v3/auth/enable", "AuthDisable": "/v3/auth/disable",
    "UserAdd": "/v3/auth/user/add", "UserGet": "/v3/auth/user/get", "UserList": "/v3/auth/user/list",
    "UserDelete": "/v3/auth/user/delete", "UserChangePassword": "/v3/auth/user/changepw",
    "UserGrantRole": "/v3/auth/user/grant", "UserRevokeRole": "/v3/auth/user/revoke",
    "RoleAdd": "/v3/auth/role/add", "RoleGet": "/v3/auth/role/get", "RoleList": "/v3/auth/role/list",
    "RoleDelete": "/v3/auth/role/delete", "RoleGrantPermission": "/v3/auth/role/grant",
    "RoleRevokePermission": "/v3/auth/role/revoke",
}

KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES = 10, 5, 2  # s, s, probes (as the gRPC adapter)


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _bytes(text: str | None) -> bytes:
    return binascii.a2b_base64(text) if text else b""


def _kv(kv: dict) -> KeyValue:
    return KeyValue(decode_key(_bytes(kv.get("key"))), _bytes(kv.get("value")),
                    int(kv.get("create_revision", 0)), int(kv.get("mod_revision", 0)), int(kv.get("lease", 0)))


class _Refused(Exception):
    """etcd answered, and said no: its gRPC status name and words."""

    def __init__(self, code: str, details: str):
        super().__init__(details)
        self.code, self.details = code, " ".join(details.split())


class _Unreachable(Exception):
    """No answer: refused, reset, a failed handshake, or a timeout."""

    def __init__(self, details: str, timed_out: bool = False):
        super().__init__(details)
        self.details, self.timed_out = details, timed_out


def _refusal(status: int, body: bytes) -> _Refused:
    try:
        data = json.loads(body)
        error = data.get("error", data)
        if isinstance(error, dict):  # inside a stream: {"error": {"grpc_code", "message", ...}}
            return _Refused(_STATUS.get(error.get("grpc_code"), "UNKNOWN"), str(error.get("message", "")))
        return _Refused(_STATUS.get(data.get("code"), "UNKNOWN"), str(data.get("message") or error))
    except (ValueError, AttributeError):
        text = body.decode("utf-8", "replace").strip()
        if "HTTPS server" in text:  # plain http to a TLS-only etcd
            raise _Unreachable("the server speaks https; does it want https://?") from None
        return _Refused("UNKNOWN", f"HTTP {status}: {text[:200]}")


def _ssl_error(error: OSError) -> bool:
    ssl = sys.modules.get("ssl")  # loaded for https endpoints only
    return ssl is not None and isinstance(error, ssl.SSLError)


def _ssl_details(error: OSError) -> str:
    verify = getattr(error, "verify_message", None)
    reason = getattr(error, "reason", None) or str(error)
    if reason == "WRONG_VERSION_NUMBER":
        return f"{reason}; is it a plain http:// endpoint?"
    return f"{reason}: {verify}" if verify else str(reason)


class _Endpoint:
    """One etcd endpoint: its kept-alive connections for unary calls (a few,
    so that threads sharing the store do not wait for each other) and its
    auth token."""

    MAX_IDLE = 8  # kept-alive connections kept per endpoint

    def __init__(self, url: str, tls: TlsConfig | None, credentials: Credentials | None):
        self.url = url.strip()
        self.host, self.port, self.secure = split_endpoint(url)
        self.tls, self.credentials = tls, credentials
        self.lock = threading.Lock()  # the token (authenticating)
        self._pool_lock = threading.Lock()
        self._idle: list[Connection] = []
        self.token: str | None = None
        self.authenticated = False

    def connection(self, timeout: float) -> Connection:
        """A new connection (not yet connected) to this endpoint."""
        context = (self.tls or TlsConfig()).ssl_context() if self.secure else None
        return Connection(self.host, self.port, timeout, context)

    def call(self, path: str, body: dict, timeout: float) -> dict:
        """One unary call, authenticated if there are credentials; once more
        with a new token if etcd refused the one we had."""
        if self.credentials is not None and not self.authenticated:
            self.authenticated_token(timeout)
        token = self.token
        try:
            return self._post(path, body, timeout, token)
        except _Refused as e:
            if self.credentials is None or not any(t in e.details for t in TOKEN_REFUSED):
                raise
            adapter_log().info("etcd at %s refused the auth token (%s); authenticating again",
                               self.url, e.details)
        return self._post(path, body, timeout, self.authenticated_token(timeout, stale=token))

    def authenticated_token(self, timeout: float, stale: str | None = None) -> str | None:
        """The token to call with; a new one if `stale` was refused (unless
        another thread got one since)."""
        with self.lock:
            if self.credentials is not None and (not self.authenticated or (stale and self.token == stale)):
                self._authenticate(timeout)
            return self.token

    def _authenticate(self, timeout: float) -> None:
        try:
            data = self._post("/v3/auth/authenticate", {"name": self.credentials.user,
                                                         "password": self.credentials.password}, timeout, None)
        except _Refused as e:
            if "authentication is not enabled" not in e.details:
                raise
            data = {}  # etcd takes every call without a token
        self.token = data.get("token")
        self.authenticated = True

    def headers(self, token: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = token
        return headers

    def _post(self, path: str, body: dict, timeout: float, token: str | None) -> dict:
        payload = json.dumps(body).encode()
        for attempt in (1, 2):
            with self._pool_lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = self.connection(timeout)
            elif conn.sock is not None:
                conn.sock.settimeout(timeout)
            try:
                response = conn.post(path, payload, self.headers(token))
                data = response.read()
            except TimeoutError:
                conn.close()
                raise _Unreachable(f"no answer within {timeout:g}s", timed_out=True) from None
            except OSError as e:
                conn.close()
                if _ssl_error(e):
                    raise _Unreachable(_ssl_details(e)) from None
                if reused and attempt == 1:
                    continue  # the server closed a kept-alive connection: open one again
                raise _Unreachable(self._closed_hint(e)) from None
            with self._pool_lock:
                if len(self._idle) < self.MAX_IDLE and not response.will_close:
                    self._idle.append(conn)
                else:
                    conn.close()
            if response.status != 200:
                refusal = _refusal(response.status, data)
                if refusal.code == "UNAVAILABLE":
                    raise _Unreachable(refusal.details)
                raise refusal
            return json.loads(data) if data else {}
        raise AssertionError("unreachable")

    def _closed_hint(self, error: Exception) -> str:
        """The error in words, and what a connection closed unanswered usually means."""
        details = getattr(error, "strerror", None) or str(error) or type(error).__name__
        if isinstance(error, Closed) and not self.secure:
            return f"{details}; does it want https://?"
        return details

    def close_connections(self) -> None:
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class EtcdJsonStore:
    """The Store protocol (trigger.store.base) on etcd's v3 JSON gateway."""

    def __init__(self, endpoints: list[str], timeout: float = STORE_TIMEOUT, *,
                 cacert: str | None = None, cert: str | None = None, key: str | None = None,
                 user: str | None = None, password: str | None = None,
                 tls: TlsConfig | None = None):
        """`cacert`/`cert`/`key` are PEM file paths (or give `tls` already
        loaded); `user` and `password` turn on password authentication.
        Raises ValueError for unusable TLS files or options."""
        endpoints, tls, credentials = connection_options(endpoints, cacert, cert, key, user, password, tls)
        self._endpoints = [_Endpoint(e, tls, credentials) for e in endpoints]
        self.user = user
        self.timeout = timeout
        self._current = 0
        self._lock = threading.Lock()
        self._watches: set[EtcdJsonWatch] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"EtcdJsonStore({[e.url for e in self._endpoints]!r})"

    # -- calling with failover ----------------------------------------------

    def _call(self, what: str, path: str, body: dict, *, safe_to_retry: bool) -> dict:
        def attempt(endpoint: _Endpoint) -> dict:
            try:
                return endpoint.call(path, body, self.timeout)
            except _Unreachable as e:
                raise EndpointDown(e.details, tls_problem(e.details), e.timed_out) from None
            except _Refused as e:
                raise translate(e.details, e.code, what, endpoint.url, self.user,
                                lambda: self._compact_revision(endpoint)) from None

        return failover(self, what, attempt, safe_to_retry)

    def _compact_revision(self, endpoint: _Endpoint) -> int:
        """The oldest revision a watch may start from: etcd tells a watch
        that asks for revision 1 (there is no other way to ask)."""
        try:
            stream = _Stream(endpoint, {"create_request": {"key": _b64(b"\0"), "range_end": _b64(b"\0"),
                                                           "start_revision": "1"}}, self.timeout)
            try:
                for message in stream.messages():
                    if message.get("compact_revision"):
                        return int(message["compact_revision"])
                    if message.get("canceled") or message.get("events"):
                        break
            finally:
                stream.close()
        except (_Refused, _Unreachable, OSError, ValueError):
            pass
        return 0

    # -- reads ---------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        data = self._call(f"get {key}", "/v3/kv/range", {"key": _b64(encode_key(key))}, safe_to_retry=True)
        kvs = data.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        key = encode_key(prefix)
        data = self._call(f"get prefix {prefix}", "/v3/kv/range",
                          {"key": _b64(key or b"\0"), "range_end": _b64(prefix_range_end(key))},
                          safe_to_retry=True)
        return [_kv(kv) for kv in data.get("kvs") or []], int(data["header"]["revision"])

    # -- writes --------------------------------------------------------------

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        data = self._call(f"put {key}", "/v3/kv/put", {
            "key": _b64(encode_key(key)), "value": _b64(check_value(value)), "lease": str(lease)},
            safe_to_retry=False)
        return int(data["header"]["revision"])

    def delete(self, key: str) -> bool:
        data = self._call(f"delete {key}", "/v3/kv/deleterange", {"key": _b64(encode_key(key))},
                          safe_to_retry=False)
        return int(data.get("deleted", 0)) > 0

    def txn(self, ops: list[Op], expect_missing: tuple[str, ...] = (),
            expect_revisions: tuple[tuple[str, int], ...] = ()) -> int | None:
        """One etcd transaction. At most 128 ops (etcd's default
        --max-txn-ops) and each key once; callers batch."""
        success = []
        for op in ops:
            if isinstance(op, PutOp):
                success.append({"request_put": {"key": _b64(encode_key(op.key)),
                                                "value": _b64(check_value(op.value)), "lease": str(op.lease)}})
            elif isinstance(op, DeleteOp):
                success.append({"request_delete_range": {"key": _b64(encode_key(op.key))}})
            else:
                raise TypeError(f"not a store op: {op!r}")
        compare = [{"key": _b64(encode_key(k)), "result": "EQUAL", "target": "CREATE", "create_revision": "0"}
                   for k in expect_missing]
        compare += [{"key": _b64(encode_key(k)), "result": "EQUAL", "target": "MOD", "mod_revision": str(r)}
                    for k, r in expect_revisions]
        data = self._call(f"txn of {len(ops)} ops", "/v3/kv/txn", {"compare": compare, "success": success},
                          safe_to_retry=False)
        return int(data["header"]["revision"]) if data.get("succeeded") else None

    def compact(self, revision: int) -> None:
        # physical: return once the history is really gone (see trigger.store.etcd).
        self._call(f"compact {revision}", "/v3/kv/compaction", {"revision": str(revision), "physical": True},
                   safe_to_retry=True)

    # -- users and roles ----------------------------------------------------

    def auth_call(self, method: str, request):
        """One call of etcd's Auth service by its gRPC name (`UserAdd`,
        `RoleGrantPermission`, `AuthEnable`, ...) with a request message of
        trigger.store.etcd's stubs; returns etcd's answer as a dict."""
        from google.protobuf import json_format

        body = json_format.MessageToDict(request, preserving_proto_field_name=True)
        return self._call(f"auth {method}", _AUTH_PATHS[method], body, safe_to_retry=True)

    # -- leases --------------------------------------------------------------

    def lease_grant(self, ttl: int) -> int:
        """A new lease; etcd raises a ttl below its minimum to that minimum."""
        data = self._call(f"lease grant {ttl}s", "/v3/lease/grant", {"TTL": str(ttl), "ID": "0"},
                          safe_to_retry=False)
        if data.get("error"):
            raise StoreError(f"etcd lease grant {ttl}s: {data['error']}")
        return int(data["ID"])

    def lease_refresh(self, lease: int) -> None:
        # A keep-alive stream of one request: the gateway ends it after the answer.
        data = self._call(f"lease refresh {lease:x}", "/v3/lease/keepalive", {"ID": str(lease)},
                          safe_to_retry=True)
        if int((data.get("result") or {}).get("TTL", 0)) <= 0:
            raise StoreError(f"etcd lease refresh {lease:x}: lease not found")

    def lease_revoke(self, lease: int) -> None:
        self._call(f"lease revoke {lease:x}", "/v3/lease/revoke", {"ID": str(lease)}, safe_to_retry=False)

    # -- watches -------------------------------------------------------------

    def watch_prefix(self, prefix: str, start_revision: int, callback: WatchCallback) -> "EtcdJsonWatch":
        """Watch keys under prefix from start_revision (0: from now on).

        Raises UnavailableError if no endpoint accepts the watch. Later
        failures reach `callback` once, from the watch's thread.
        """
        if self._closed:
            raise StoreError("etcd watch: the store is closed")

        def open_on(endpoint: _Endpoint) -> "EtcdJsonWatch | str":
            try:
                return self._open_watch(endpoint, prefix, start_revision, callback)
            except _Refused as e:  # from authenticating
                raise translate(e.details, e.code, f"watch {prefix}", endpoint.url, self.user,
                                lambda: 0) from None
            except _Unreachable as e:
                return e.details

        self._current, watch = first_watch(prefix, self._endpoints, self._current, self.user, open_on)
        with self._lock:
            self._watches.add(watch)
        return watch

    def _open_watch(self, endpoint: _Endpoint, prefix: str, start_revision: int,
                    callback: WatchCallback) -> "EtcdJsonWatch | str":
        """A watch etcd created on this endpoint, or why not; a watch refused
        for its token is opened once more with a new one."""
        watch = EtcdJsonWatch(self, endpoint, prefix, start_revision, callback)
        error = watch._open(self.timeout)
        if error is None:
            return watch
        if endpoint.credentials is None or not any(text in error for text in TOKEN_REFUSED):
            return error
        adapter_log().info("etcd at %s refused the watch's auth token (%s); authenticating again",
                           endpoint.url, error)
        endpoint.authenticated_token(self.timeout, stale=watch.token)
        watch = EtcdJsonWatch(self, endpoint, prefix, start_revision, callback)
        return watch._open(self.timeout) or watch

    def _forget(self, watch: "EtcdJsonWatch") -> None:
        with self._lock:
            self._watches.discard(watch)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            watches = list(self._watches)
        for watch in watches:
            watch.cancel()
        for endpoint in self._endpoints:
            endpoint.close_connections()


class _Stream:
    """One streaming POST /v3/watch on a connection of its own."""

    def __init__(self, endpoint: _Endpoint, request: dict, timeout: float, token: str | None = None):
        self.conn = endpoint.connection(timeout)
        try:
            self.response = self.conn.post("/v3/watch", json.dumps(request).encode(), endpoint.headers(token))
        except TimeoutError:
            self.conn.close()
            raise _Unreachable(f"no answer within {timeout:g}s", timed_out=True) from None
        except OSError as e:
            self.conn.close()
            if _ssl_error(e):
                raise _Unreachable(_ssl_details(e)) from None
            raise _Unreachable(getattr(e, "strerror", None) or str(e) or type(e).__name__) from None
        if self.response.status != 200:
            body = self.response.read()
            self.conn.close()
            raise _refusal(self.response.status, body)
        sock = self.conn.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                              ("TCP_KEEPCNT", KEEPALIVE_PROBES)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
        self.sock = sock

    def wait_forever(self) -> None:
        """No timeout once the watch exists: it waits in recv for changes."""
        self.sock.settimeout(None)

    def messages(self):
        """Each JSON message of the stream; raises _Refused for an error in it."""
        while True:
            line = self.response.readline()
            if not line:
                return
            if not line.strip():
                continue
            message = json.loads(line)
            if "error" in message:
                raise _refusal(200, line)
            yield message.get("result", {})

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading it
        except OSError:
            pass
        self.conn.close()


class EtcdJsonWatch(StreamWatch):
    """One streaming POST /v3/watch and the thread that reads it (see StreamWatch)."""

    def __init__(self, store: EtcdJsonStore, endpoint: _Endpoint, prefix: str,
                 start_revision: int, callback: WatchCallback):
        super().__init__(store, endpoint, prefix, start_revision, callback)
        self._created = threading.Event()

    def _open(self, timeout: float) -> str | None:
        """Start the stream; None once etcd created the watch, else why not."""
        self.token = self.endpoint.authenticated_token(timeout)
        key = encode_key(self.prefix)
        create = {"key": _b64(key or b"\0"), "range_end": _b64(prefix_range_end(key)),
                  "start_revision": str(max(self.start_revision, 0))}
        try:
            self._stream = _Stream(self.endpoint, {"create_request": create}, timeout, self.token)
        except _Refused as e:
            return e.details
        self._thread = threading.Thread(target=self._run, name=f"etcd-watch {self.prefix}", daemon=True)
        self._thread.start()
        if not self._created.wait(timeout):
            self._open_error = f"watch not created within {timeout:g}s"
        if self._open_error is not None:
            self._alive = False
            self._stream.close()
            return self._open_error
        return None

    def _run(self) -> None:
        try:
            for message in self._stream.messages():
                if not self._alive:
                    return
                if message.get("created") and message.get("canceled") and not message.get("compact_revision") \
                        and not self._created.is_set():
                    reason = " ".join(str(message.get("cancel_reason", "")).split()) or "no reason given"
                    self._open_error = f"etcd refused the watch: {reason}"
                    self._created.set()
                    return
                if message.get("created"):
                    self._stream.wait_forever()
                    self._created.set()
                if message.get("compact_revision"):
                    self._finish(CompactedError(int(message["compact_revision"])))
                    return
                if message.get("canceled"):
                    reason = " ".join(str(message.get("cancel_reason", "")).split()) or "no reason given"
                    self._finish(StoreError(f"etcd cancelled the watch on {self.prefix}: {reason}"))
                    return
                changes: list[Change] = []
                for event in message.get("events") or []:
                    kv = event.get("kv", {})
                    revision = int(kv.get("mod_revision", 0))
                    if revision <= self.last_revision:
                        continue  # already delivered
                    key = decode_key(_bytes(kv.get("key")))
                    if event.get("type", "PUT") == "PUT":
                        changes.append(Put(key, _bytes(kv.get("value")), revision))
                    else:
                        changes.append(Delete(key, revision))
                if changes:
                    self._deliver(changes)
            if self._alive:
                self._lost("ended")
        except _Refused as e:
            if not self._created.is_set():
                self._open_error = e.details
                self._created.set()
            elif self._alive:
                self._lost(f"ended: {e.details}")
        except (OSError, ValueError) as e:
            if not self._created.is_set():
                self._open_error = str(e) or type(e).__name__
                self._created.set()
            elif self._alive:
                self._lost(f"lost the connection: {e}")
        except Exception as e:  # a bug here must still end the watch loudly
            if not self._alive:
                return  # cancelled: reading trips over the stream closed under it
            adapter_log().exception("etcd watch on %s failed", self.prefix)
            if self._alive:
                self._finish(StoreError(f"etcd watch on {self.prefix} failed: {e!r}"))

    def _lost(self, how: str) -> None:
        self._finish(UnavailableError(f"etcd watch on {self.prefix} at {self.endpoint.url} {how} "
                                      f"after revision {self.last_revision}"))

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
