"""The part of HTTP/1.1 that etcd's JSON gateway speaks, on a socket.

Why not `http.client`: importing it imports `email` and `ssl`, 13 ms of the
40 a cold `trigger fire` may take, and it parses every answer's headers
through `email`, a third of a standby run's CPU (docs/benchmarks.md). The
gateway needs little: a POST with a JSON body, and an answer with either a
Content-Length or chunked (a watch: one JSON message a line). Connections
are kept alive; plain http never loads `ssl`.

Errors are OSErrors: a socket's own, `TimeoutError`, ssl's for https,
`Closed` (no answer on a connection), `BadAnswer` (not HTTP as expected).
"""

from __future__ import annotations

import socket

MAX_LINE = 65536  # bytes of a status, header or chunk-size line
MAX_HEADERS = 100


class Closed(ConnectionError):
    """The server closed the connection without answering."""


class BadAnswer(OSError):
    """The server's answer is not the HTTP/1.1 this module reads."""


class Connection:
    """One connection to host:port (https with an ssl `context`), opened
    by the first request and kept while the server keeps it."""

    def __init__(self, host: str, port: int, timeout: float, context=None):
        self.host, self.port, self.timeout, self.context = host, port, timeout, context
        self.sock: socket.socket | None = None
        self._file = None
        self._name = host.strip("[]")  # what TLS checks the certificate against
        encoded = host.encode("ascii" if host.isascii() else "idna")
        # as bytes: a str makes getaddrinfo import the idna codec (0.7 ms of a cold start)
        self._address = (encoded.strip(b"[]"), port)
        self._host_header = b"Host: %s:%d\r\n" % (encoded, port)

    def connect(self) -> None:
        sock = socket.create_connection(self._address, self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request is one write
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_hostname=self._name)
        except BaseException:
            sock.close()
            raise
        self.sock, self._file = sock, sock.makefile("rb")

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> Response:
        """Send one request and read the answer's status and headers."""
        if self.sock is None:
            self.connect()
        head = [f"POST {path} HTTP/1.1\r\n".encode("ascii"), self._host_header,
                f"Content-Length: {len(body)}\r\n".encode("ascii")]
        head += [f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items()]
        self.sock.sendall(b"".join(head) + b"\r\n" + body)
        return Response(self._file)

    def close(self) -> None:
        sock, file, self.sock, self._file = self.sock, self._file, None, None
        if file is not None:
            file.close()
        if sock is not None:
            sock.close()


class Response:
    """An answer: `status`, `will_close`, and its body by `read()` (whole)
    or `readline()` (line by line, for a stream)."""

    def __init__(self, file):
        self._file = file
        line = file.readline(MAX_LINE + 1)
        if not line:
            raise Closed("the server closed the connection without an answer")
        version, _, rest = line.partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or not code.isdigit():
            raise BadAnswer(f"not an HTTP/1.1 answer: {line[:80]!r}")
        self.status = int(code)
        headers: dict[bytes, bytes] = {}
        for _ in range(MAX_HEADERS + 1):
            line = file.readline(MAX_LINE + 1)
            if line in (b"\r\n", b"\n"):
                break
            if not line or len(line) > MAX_LINE:
                raise BadAnswer("the answer's headers end too early or are too long")
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise BadAnswer(f"more than {MAX_HEADERS} headers in an answer")
        self._chunked = headers.get(b"transfer-encoding", b"").lower() == b"chunked"
        length = headers.get(b"content-length")
        if length is not None and not length.isdigit():
            raise BadAnswer(f"bad Content-Length {length[:20]!r}")
        self._left = None if self._chunked or length is None else int(length)
        self.will_close = (version == b"HTTP/1.0" or headers.get(b"connection", b"").lower() == b"close"
                           or (self._left is None and not self._chunked))
        self._buffer = b""
        self._done = False  # the last chunk was read

    def read(self) -> bytes:
        """The whole body."""
        if self._chunked:
            parts = [self._buffer]
            while chunk := self._chunk():
                parts.append(chunk)
            self._buffer = b""
            return b"".join(parts)
        if self._left is None:  # the body lasts until the server closes
            return self._file.read()
        data = self._file.read(self._left)
        if len(data) < self._left:
            raise Closed("the server closed the connection inside an answer")
        self._left = 0
        return data

    def readline(self) -> bytes:
        """The body's next line (b"" at its end); a stream's next message."""
        if not self._chunked:
            return self._file.readline() if self._left is None else self._read_line_of_length()
        while b"\n" not in self._buffer:
            chunk = self._chunk()
            if not chunk:
                line, self._buffer = self._buffer, b""
                return line
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def _read_line_of_length(self) -> bytes:
        line = self._file.readline(self._left) if self._left else b""
        self._left -= len(line)
        return line

    def _chunk(self) -> bytes:
        """The next chunk of a chunked body; b"" after the last."""
        if self._done:
            return b""
        line = self._file.readline(MAX_LINE + 1)
        if not line:
            raise Closed("the server closed the connection inside an answer")
        try:
            n = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadAnswer(f"bad chunk size {line[:20]!r}") from None
        if n == 0:
            while self._file.readline(MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            self._done = True
            return b""
        data = self._file.read(n + 2)  # and its CRLF
        if len(data) < n + 2:
            raise Closed("the server closed the connection inside an answer")
        return data[:n]
