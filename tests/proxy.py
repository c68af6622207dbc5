"""A TCP proxy on loopback that a test can cut and heal: a partition
between the processes that connect through it and the server behind it.

    with TcpProxy(target_port) as proxy:   # clients use proxy.endpoint
        proxy.cut()    # every connection dropped, new ones refused
        proxy.heal()   # connections pass again
        proxy.black_hole()  # connections kept and accepted, nothing answered (a frozen peer)

Threads and stdlib sockets only. A cut connection is closed with a reset
(SO_LINGER 0), as a peer that vanished looks to gRPC; while cut, a new
connection is accepted and reset at once, so a client sees a refusal, not
a silence it would wait out.
"""

from __future__ import annotations

import socket
import struct
import threading

from tests.etcd_server import free_port

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    except OSError:
        pass
    sock.close()


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)  # so close() is noticed
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._cut = False
        self._silent = False  # black-holed: bytes go nowhere, new connections are held unanswered
        self._held: list[socket.socket] = []
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True, name="tcp-proxy")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "TcpProxy":
        self._thread.start()
        return self

    def cut(self) -> None:
        """Drop every connection and refuse new ones until heal()."""
        with self._lock:
            self._cut = True
            pairs, self._pairs = self._pairs, set()
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)

    def black_hole(self) -> None:
        """Keep every connection and accept new ones, but pass nothing either way until heal():
        what a client sees of a server frozen with SIGSTOP, or a partition that drops packets."""
        with self._lock:
            self._silent = True

    def heal(self) -> None:
        with self._lock:
            self._cut = self._silent = False
            held, self._held = self._held, []
        for client in held:
            _reset(client)

    def close(self) -> None:
        self._closed = True
        self.heal()
        self.cut()
        self._thread.join(5)
        self._listener.close()

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                cut = self._cut
                if self._silent and not cut:
                    self._held.append(client)
                    continue
            if cut:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            pair = (client, upstream)
            with self._lock:
                if self._cut:  # cut while we connected
                    _reset(client)
                    _reset(upstream)
                    continue
                self._pairs.add(pair)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, pair), daemon=True,
                                 name="tcp-proxy-pump").start()

    def _pump(self, source: socket.socket, sink: socket.socket, pair) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if not self._silent:
                    sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._pairs.discard(pair)
        # One side ended: end the other, so neither waits on a half-open pipe.
        for sock in pair:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        source.close()  # each pump closes the socket it read from
