"""A real etcd server on loopback, on free ports, in a directory of its own.

Used by the test fixtures and the benchmarks. Needs the `etcd` binary
(Debian package etcd-server). With `tls=ServerTls(...)` it serves clients
over https only and, by default, asks them for a certificate signed by the
given CA (`--client-cert-auth`); the peer URL stays plain (one member).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import ssl
import urllib.request
from dataclasses import dataclass
from pathlib import Path


# A single member on loopback: it elects itself in milliseconds, not a second.
FAST_ELECTION = ("--heartbeat-interval", "10", "--election-timeout", "100")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class ServerTls:
    """PEM files for an etcd serving https: its certificate and key, the CA
    its clients' certificates must be signed by, and a client certificate
    for the health check when `client_cert_auth` is on."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path | None = None
    client_key: Path | None = None
    client_cert_auth: bool = True

    def args(self) -> tuple[str, ...]:
        args = ("--cert-file", str(self.cert), "--key-file", str(self.key),
                "--trusted-ca-file", str(self.ca))
        return args + (("--client-cert-auth",) if self.client_cert_auth else ())

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if self.client_cert is not None:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


class EtcdServer:
    """`start()`, `stop()`, `restart()` keep the data dir and the ports;
    `close()` stops and removes the data (etcd.log stays)."""

    def __init__(self, data_dir: Path, extra_args: tuple[str, ...] = (), tls: ServerTls | None = None):
        self.binary = shutil.which("etcd")
        if self.binary is None:
            raise RuntimeError("etcd not found: install the Debian package etcd-server")
        self.data_dir = Path(data_dir)
        self.client_port = free_port()
        self.peer_port = free_port()
        self.extra_args = FAST_ELECTION + tuple(extra_args)
        self.tls = tls
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 20.0) -> "EtcdServer":
        client, peer = self.endpoint, f"http://127.0.0.1:{self.peer_port}"
        args = [
            self.binary,
            "--name", "test",
            "--data-dir", str(self.data_dir / "data"),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"test={peer}",
            "--log-level", "error",
            *(self.tls.args() if self.tls is not None else ()),
            *self.extra_args,
        ]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "etcd.log", "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        context = self.tls.context() if self.tls is not None else None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}; see {self.data_dir}/etcd.log")
            try:
                with urllib.request.urlopen(self.endpoint + "/health", timeout=1, context=context) as r:
                    if b'"true"' in r.read():
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd did not become healthy in {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop for good. etcd preallocates 125 MB of WAL per data dir: a
        suite of a few hundred servers that kept theirs filled the disk."""
        self.stop()
        shutil.rmtree(self.data_dir / "data", ignore_errors=True)

    def __enter__(self) -> "EtcdServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
