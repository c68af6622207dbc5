"""trigger.store.http11 against a loopback server that answers with the bytes a test scripts
(etcd's gateway itself is in test_etcd_json.py's contract suite)."""

from __future__ import annotations

import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trigger.store.http11 import BadAnswer, Closed, Connection


class ScriptedServer:
    """Accepts connections on loopback; answers the n-th request with answers[n] (None: closes
    the connection instead), closes after the last, and keeps each request's bytes."""

    def __init__(self, answers: list[bytes | None], host: str = "127.0.0.1"):
        self.answers, self.requests, self.connections = list(answers), [], 0
        self.listener = socket.create_server((host, 0), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn, conn.makefile("rb") as file:  # both: the socket closes with its last user
                while self.answers:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = file.readline()
                        if not line:
                            break
                        head += line
                    if not head:
                        break
                    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    self.requests.append(head + file.read(length))
                    answer = self.answers.pop(0)
                    if answer is None:
                        break
                    conn.sendall(answer)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def serve():
    servers = []

    def start(*answers, host="127.0.0.1"):
        servers.append(ScriptedServer(list(answers), host))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def sized(body: bytes, *headers: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + b"".join(h + b"\r\n" for h in headers) + \
        b"Content-Length: %d\r\n\r\n" % len(body) + body


def chunked(*chunks: bytes, trailer: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + \
        b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n" + trailer + b"\r\n"


def test_a_request_is_a_post_with_its_host_length_headers_and_body(serve):
    server = serve(sized(b"{}"))
    conn = Connection("localhost", server.port, 5)
    assert conn.post("/v3/kv/range", b'{"k":1}', {"Authorization": "tok"}).read() == b"{}"
    conn.close()
    assert server.requests == [b"POST /v3/kv/range HTTP/1.1\r\nHost: localhost:%d\r\nContent-Length: 7\r\n"
                               b"Authorization: tok\r\n\r\n{\"k\":1}" % server.port]


def test_answers_with_a_length_keep_the_connection(serve):
    server = serve(sized(b'{"a":1}', b"Content-Type: application/json"), sized(b""), sized(b"x" * 100_000))
    conn = Connection("127.0.0.1", server.port, 5)
    first = conn.post("/a", b"", {})
    assert (first.status, first.will_close, first.read()) == (200, False, b'{"a":1}')
    assert conn.post("/b", b"", {}).read() == b""
    assert conn.post("/c", b"", {}).read() == b"x" * 100_000
    conn.close()
    assert server.connections == 1


def test_a_chunked_answer_reads_whole_and_the_next_answer_follows_it(serve):
    server = serve(chunked(b"ab", b"c\nd", trailer=b"X-Trailer: 1\r\n"), sized(b"next"))
    conn = Connection("127.0.0.1", server.port, 5)
    assert conn.post("/", b"", {}).read() == b"abc\nd"
    assert conn.post("/", b"", {}).read() == b"next"
    conn.close()


@settings(max_examples=50, deadline=None)
@given(lines=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"") + b"\n"), max_size=6),
       cuts=st.lists(st.integers(1, 20), max_size=20))
def test_a_stream_reads_line_by_line_however_it_is_chunked(lines, cuts):
    """A watch's messages are lines; the gateway's chunks need not end with them."""
    body, chunks = b"".join(lines), []
    rest = body
    for cut in cuts:
        if rest:
            chunks.append(rest[:cut])
            rest = rest[cut:]
    if rest:
        chunks.append(rest)
    server = ScriptedServer([chunked(*chunks)])
    try:
        conn = Connection("127.0.0.1", server.port, 5)
        response = conn.post("/v3/watch", b"{}", {})
        got = iter(response.readline, b"")
        assert list(got) == lines
        conn.close()
    finally:
        server.close()


def test_a_stream_with_a_length_reads_line_by_line_and_stops_at_its_end(serve):
    server = serve(sized(b"one\ntwo"), sized(b"after"))
    conn = Connection("127.0.0.1", server.port, 5)
    response = conn.post("/", b"", {})
    assert [response.readline(), response.readline(), response.readline()] == [b"one\n", b"two", b""]
    assert conn.post("/", b"", {}).read() == b"after"
    conn.close()


@pytest.mark.parametrize("answer, will_close", [
    (sized(b"", b"Connection: close"), True),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", True),
    (sized(b""), False),
])
def test_will_close_says_whether_the_server_keeps_the_connection(serve, answer, will_close):
    server = serve(answer)
    conn = Connection("127.0.0.1", server.port, 5)
    assert conn.post("/", b"", {}).will_close is will_close
    conn.close()


def test_a_body_without_length_lasts_until_the_server_closes(serve):
    server = serve(b"HTTP/1.1 404 Not Found\r\n\r\nnot found")
    conn = Connection("127.0.0.1", server.port, 5)
    response = conn.post("/", b"", {})
    assert (response.status, response.will_close) == (404, True)
    assert response.read() == b"not found"
    conn.close()


@pytest.mark.parametrize("answer, error, words", [
    (None, Closed, "without an answer"),
    (b"SSH-2.0-OpenSSH\r\n", BadAnswer, "not an HTTP/1.1 answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", BadAnswer, "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n", BadAnswer, "headers end too early"),
    (b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * 101 + b"\r\n", BadAnswer, "more than 100 headers"),
])
def test_an_answer_that_is_not_http_is_an_oserror_naming_why(serve, answer, error, words):
    server = serve(answer)
    conn = Connection("127.0.0.1", server.port, 5)
    with pytest.raises(error, match=words) as e:
        conn.post("/", b"", {})
    assert isinstance(e.value, OSError)  # callers catch connection trouble as OSError
    conn.close()


@pytest.mark.parametrize("answer, words", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "inside an answer"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "inside an answer"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
])
def test_a_body_cut_short_or_garbled_is_an_oserror(serve, answer, words):
    server = serve(answer)
    conn = Connection("127.0.0.1", server.port, 5)
    response = conn.post("/", b"", {})
    with pytest.raises(OSError, match=words):
        response.read()
    conn.close()


def test_no_answer_within_the_timeout_is_a_timeout_error(serve):
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never answers
    try:
        conn = Connection("127.0.0.1", listener.getsockname()[1], 0.2)
        with pytest.raises(TimeoutError):
            conn.post("/", b"", {})
        conn.close()
    finally:
        listener.close()


def test_a_refused_connection_is_a_connection_error():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(ConnectionRefusedError):
        Connection("127.0.0.1", port, 1).post("/", b"", {})


def test_a_name_outside_ascii_is_sent_as_idna():
    conn = Connection("bücher.example", 2379, 1)
    assert conn._host_header == b"Host: xn--bcher-kva.example:2379\r\n"


def test_an_ipv6_address_in_brackets_is_reached_and_named_as_given(serve):
    server = serve(sized(b"{}"), host="::1")
    answer = Connection("[::1]", server.port, 5).post("/v3/kv/range", b"{}", {})
    assert answer.status == 200
    assert b"Host: [::1]:%d\r\n" % server.port in server.requests[0]
