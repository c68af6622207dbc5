"""What both etcd adapters share, without grpc: endpoints as etcdctl takes
them, the TLS files and credentials, key encoding, and etcd's refusals
turned into one-line StoreErrors (the same words on either wire)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, NamedTuple
from urllib.parse import urlsplit

from .base import Change, CompactedError, StoreError, UnavailableError

if TYPE_CHECKING:
    import ssl


def split_endpoint(url: str) -> tuple[str, int, bool]:
    """(host, port, https) of `http://host:port`, `https://host:port` or a
    bare `host:port`, as etcdctl takes it; an IPv6 host keeps its brackets."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port or 2379
    except ValueError as e:
        raise StoreError(f"bad etcd endpoint {url!r}: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or not all(ch.isprintable() and not ch.isspace() for ch in parts.hostname):
        raise StoreError(f"bad etcd endpoint {url!r}: expected http://HOST:PORT or https://HOST:PORT")
    if not parts.hostname.isascii():
        try:
            parts.hostname.encode("idna")  # as the Host header and DNS will carry it
        except UnicodeError as e:
            raise StoreError(f"bad etcd endpoint {url!r}: {e}") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return host, port, parts.scheme == "https"


class TlsConfig(NamedTuple):
    """What an https endpoint is checked against (`cacert`, PEM; None: the
    system's CAs) and the client certificate it is shown (`cert`, `key`)."""

    cacert: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None

    # The same checks as an ssl context, for the JSON gateway's https.
    context: ssl.SSLContext | None = None

    def __repr__(self) -> str:  # never the key, in a log or a traceback
        return f"TlsConfig(cacert={self.cacert!r}, cert={self.cert!r})"

    def channel_credentials(self):
        """grpc's credentials for a secure channel (imports grpc)."""
        import grpc

        return grpc.ssl_channel_credentials(self.cacert, self.key, self.cert)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context checking the server against `cacert` (else the
        system's CAs) and showing the client certificate, if any."""
        if self.context is not None:
            return self.context
        import ssl  # here, not above: plain http never needs it (13 ms, 4 MB)

        return ssl.create_default_context()


def load_tls(cacert: str | None = None, cert: str | None = None, key: str | None = None) -> TlsConfig | None:
    """Read and check the PEM files etcdctl's --cacert/--cert/--key name.

    None when none is given. Raises ValueError with a one-line reason for a
    file that cannot be read, is not PEM, or a key that does not match its
    certificate: better now than as a failed handshake later.
    """
    if not (cacert or cert or key):
        return None
    if bool(cert) != bool(key):
        raise ValueError("--cert and --key go together: give both (the client certificate and its key)")

    def read(path: str, option: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read(1 << 20)
        except OSError as e:
            raise ValueError(f"cannot read {option} {path}: {e.strerror}") from None

    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca_pem = read(cacert, "--cacert") if cacert else None
    if cacert:
        try:
            context.load_verify_locations(cadata=ca_pem.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"--cacert {cacert}: not a PEM CA certificate ({_ssl_reason(e)})") from None
    cert_pem = key_pem = None
    if cert:
        cert_pem, key_pem = read(cert, "--cert"), read(key, "--key")
        try:
            context.load_cert_chain(cert, key, password=lambda: b"")
        except (ssl.SSLError, ValueError) as e:
            raise ValueError(f"--cert {cert} / --key {key}: not a PEM certificate and its unencrypted "
                             f"key ({_ssl_reason(e)})") from None
        except OSError as e:
            raise ValueError(f"cannot read --cert {cert} or --key {key}: {e.strerror}") from None
    if not cacert:
        context.load_default_certs()
    return TlsConfig(ca_pem, cert_pem, key_pem, context)


def _ssl_reason(error: Exception) -> str:
    """`KEY_VALUES_MISMATCH` -> `key values mismatch`, without `(_ssl.c:NNN)`."""
    reason = getattr(error, "reason", None)
    text = reason.lower().replace("_", " ") if reason else re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(error))
    return " ".join(text.split())


class Credentials(NamedTuple):
    """An etcd user and password (etcd's password authentication)."""

    user: str
    password: str

    def __repr__(self) -> str:  # never the password, in a log or a traceback
        return f"Credentials(user={self.user!r})"


# What etcd says when a call's token is gone (expired, or etcd restarted) or
# was issued before a change of users and roles: the call was refused before
# being applied, so authenticating again and repeating it is safe.
TOKEN_REFUSED = ("invalid auth token", "auth revision is old", "user name is empty")

# Handshake failures that are configuration, not an outage, and what to check.
TLS_PROBLEMS = (
    ("CERTIFICATE_VERIFY_FAILED", "the server's certificate is not signed by a CA in --cacert"),
    ("Hostname Verification", "the server's certificate does not name this host"),
    ("Peer name", "the server's certificate does not name this host"),
    ("TSI_DATA_CORRUPTED", "the server refused the TLS handshake: it wants a client certificate "
                           "signed by a CA it trusts (--cert, --key)"),
    ("BAD_CERTIFICATE", "the server refused our client certificate (--cert, --key)"),
    ("CERTIFICATE_REQUIRED", "the server wants a client certificate (--cert, --key)"),
    # Python's ssl (the JSON gateway adapter) words the same failures so:
    ("Hostname mismatch", "the server's certificate does not name this host"),
    ("IP address mismatch", "the server's certificate does not name this host"),
    ("EOF occurred in violation of protocol", "the server refused the TLS handshake: it wants a client "
                                              "certificate signed by a CA it trusts (--cert, --key)"),
)


def tls_problem(details: str) -> str | None:
    for text, problem in TLS_PROBLEMS:
        if text in details:
            return problem
    return None


class EndpointDown(Exception):
    """An endpoint that did not answer, as an adapter tells `failover`: `details` for the
    message, `tls` the handshake problem if that was it, `timed_out` when a write may have landed."""

    def __init__(self, details: str, tls: str | None = None, timed_out: bool = False):
        super().__init__(details)
        self.details, self.tls, self.timed_out = details, tls, timed_out


def failover(store, what: str, attempt: Callable, safe_to_retry: bool):
    """attempt(endpoint) on the first of the store's endpoints that answers, from
    the one that answered last. An endpoint down (EndpointDown) moves on to the
    next; one that timed out moves on only when `safe_to_retry` (reads, and
    writes whose repetition is harmless), else the outcome is unknown and we
    say so. A failed TLS handshake on every endpoint is a configuration
    error, not an outage. Anything else `attempt` raises is the answer."""
    if store._closed:
        raise StoreError(f"etcd {what}: the store is closed")
    n = len(store._endpoints)
    failures, tls_problems = [], []
    for i in range(n):
        index = (store._current + i) % n
        endpoint = store._endpoints[index]
        try:
            result = attempt(endpoint)
        except EndpointDown as e:
            if e.timed_out and not safe_to_retry:
                store._current = (index + 1) % n  # the caller's re-read starts elsewhere
                raise UnavailableError(
                    f"etcd {what}: no answer from {endpoint.url} within {store.timeout:g}s; "
                    "the write may or may not have been applied") from None
            if e.tls:
                tls_problems.append(f"{endpoint.url}: {e.tls}")
            failures.append(f"{endpoint.url} ({e.tls or e.details})")
            continue
        store._current = index
        return result
    if tls_problems and len(tls_problems) == len(failures):
        raise StoreError(f"etcd {what}: TLS handshake failed: {'; '.join(tls_problems)}")
    raise UnavailableError(f"etcd {what}: no endpoint answered: {'; '.join(failures)}")


class EtcdError(StoreError):
    """A refusal etcd explained that has no message of our own: keeps etcd's
    status code and words so callers (trigger.auth) can tell them apart."""

    def __init__(self, message: str, code: str, details: str):
        super().__init__(message)
        self.code, self.details = code, details


def encode_key(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def decode_key(key: bytes) -> str:
    return key.decode("utf-8", "surrogateescape")


def check_value(value: bytes) -> bytes:
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


def hint(secure: bool, details: str) -> str:
    """etcd's words, and what a handshake cut short usually means."""
    if "Socket closed" in details:
        if secure:
            return f"{details}; is it a plain http:// endpoint?"
        return f"{details}; does it want https://?"
    return details


def connection_options(endpoints, cacert: str | None, cert: str | None, key: str | None,
                       user: str | None, password: str | None, tls: TlsConfig | None
                       ) -> tuple[list[str], TlsConfig | None, Credentials | None]:
    """(endpoint URLs, TLS, credentials) from what a store was given, checked
    as both adapters check them. Raises ValueError for unusable TLS files or
    options, StoreError for no endpoint."""
    if isinstance(endpoints, str):
        endpoints = [e for e in endpoints.split(",") if e.strip()]
    if not endpoints:
        raise StoreError("no etcd endpoints given")
    tls = tls or load_tls(cacert, cert, key)
    if tls is not None:
        plain = [e.strip() for e in endpoints if not split_endpoint(e)[2]]
        if plain:
            raise ValueError(f"TLS options given but {', '.join(plain)} is plain http: "
                             "use https:// endpoints (refusing to send the connection unencrypted)")
    if (user is None) != (password is None):
        raise ValueError("etcd user and password go together")
    if user is not None and (not user or ":" in user):
        raise ValueError(f"bad etcd user name {user!r}")
    return list(endpoints), tls, Credentials(user, password) if user is not None else None


def who(user: str | None) -> str:
    if user is not None:
        return f"etcd user {user!r}"
    return "this client (no --user: etcd takes the user from the client certificate's name, if any)"


def translate(details: str, code: str, what: str, url: str, user: str | None,
              compact_revision) -> StoreError:
    """etcd's refusal (its words, its gRPC status name) as a StoreError with
    one line saying what to do; `compact_revision()` is asked only for a
    compacted revision."""
    if "required revision has been compacted" in details:
        return CompactedError(compact_revision())
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
    if "permission denied" in details:
        return StoreError(f"etcd {what}: permission denied for {who(user)}")
    if "authentication failed" in details:
        return StoreError(f"etcd at {url}: authentication as {user!r} failed: "
                          "wrong user name or password")
    if "user name is empty" in details:
        return StoreError(f"etcd {what}: etcd has authentication enabled: give --user NAME "
                          "(or ETCDCTL_USER), or a client certificate named after an etcd user")
    if "invalid auth token" in details:
        return StoreError(f"etcd {what}: etcd refused the auth token of {who(user)}")
    return EtcdError(f"etcd {what} failed at {url}: {code}: {details}", code, details)


def first_watch(prefix: str, endpoints: list, start: int, user: str | None, open_on):
    """(index, watch) of the first endpoint, from `start` on, where
    `open_on(endpoint)` opened a watch; it returns a watch, or why not in
    etcd's words. Refusals that another endpoint would repeat (permission,
    token) raise at once; else one UnavailableError names every endpoint."""
    n = len(endpoints)
    failures, tls_problems = [], []
    for i in range(n):
        index = (start + i) % n
        endpoint = endpoints[index]
        watch = open_on(endpoint)
        if not isinstance(watch, str):
            return index, watch
        if "permission denied" in watch:
            raise StoreError(f"etcd watch {prefix}: permission denied for {who(user)}")
        if any(text in watch for text in TOKEN_REFUSED):
            raise StoreError(f"etcd watch {prefix}: etcd refused the auth token of {who(user)}")
        problem = tls_problem(watch)
        if problem:
            tls_problems.append(f"{endpoint.url}: {problem}")
        failures.append(f"{endpoint.url} ({problem or hint(endpoint.secure, watch)})")
    if tls_problems and len(tls_problems) == len(failures):
        raise StoreError(f"etcd watch {prefix}: TLS handshake failed: {'; '.join(tls_problems)}")
    raise UnavailableError(f"etcd watch {prefix}: no endpoint answered: {'; '.join(failures)}")


class StreamWatch:
    """What a watch of either adapter is: one stream and the thread that
    reads it, the cursor, and ending once.

    The callback is called from that thread. After `cancel()` returns it is
    not called again (except for a call already in progress). If the
    callback raises, the error is logged and the watch ends with a
    StoreError, so the caller re-reads rather than silently missing a batch.
    Subclasses open and read the stream and say how to close it.
    """

    def __init__(self, store, endpoint, prefix: str, start_revision: int, callback):
        self._store = store
        self.endpoint = endpoint
        self.prefix = prefix
        self.callback = callback
        self.start_revision = start_revision
        self.last_revision = start_revision - 1 if start_revision > 0 else 0
        self._alive = True
        self._stream = None
        self._open_error: str | None = None
        self._thread = None
        self.token: str | None = None  # the auth token the stream was opened with

    def _close_stream(self) -> None:
        raise NotImplementedError

    def _deliver(self, changes: list[Change]) -> None:
        self.last_revision = changes[-1].revision
        try:
            self.callback(changes)
        except Exception as e:
            adapter_log().exception("watch callback for %s failed", self.prefix)
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
            adapter_log().exception("watch callback for %s failed on %s", self.prefix, error)

    def cancel(self) -> None:
        self._alive = False
        self._close_stream()
        self._store._forget(self)


def adapter_log():
    """The adapters' logger, imported when first needed (not on a run's path)."""
    import logging

    return logging.getLogger("trigger.store.etcd")

