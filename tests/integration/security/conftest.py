"""Fixtures for the security tests: a certificate authority made here, an
etcd serving TLS with client certificates, an etcd with auth enabled by
`trigger auth setup`, and a way to run the CLI as a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from tests.conftest import need
from tests.etcd_server import EtcdServer, ServerTls

from .pki import Pki

TOKEN_TTL = 1  # seconds: etcd's --auth-token-ttl for the auth tests (default 300)

ADAPTER = {"store": "etcd"}  # the etcd adapter of the test running now


@pytest.fixture(autouse=True, params=["etcd", "etcd-grpc"])
def etcd_adapter(request):
    """Every security test on each etcd adapter (JSON gateway, gRPC): the
    stores the tests open and the commands they run use it (the runs a
    watcher starts use the default, `etcd`)."""
    ADAPTER["store"] = request.param
    yield request.param
    ADAPTER["store"] = "etcd"


def open_test_store(**options):
    from trigger.store import open_store

    return open_store(ADAPTER["store"], **options)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without any etcdctl settings of the person running the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env.update(extra)
    return env


def trigger(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> Result:
    """`trigger ARGS` as its own process, as ops run it."""
    args = list(args)
    if ADAPTER["store"] != "etcd" and args and not args[0].startswith("-"):
        end = args.index("--") if "--" in args else len(args)
        args[end:end] = ["--store", ADAPTER["store"]]
    done = subprocess.run([sys.executable, "-m", "trigger", *args], capture_output=True, text=True,
                          env=env or clean_env(), timeout=timeout, stdin=subprocess.DEVNULL)
    return Result(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(result: Result, *words: str) -> None:
    """Failed with exit 1 or 2 and one line on stderr naming `words`, no traceback."""
    assert result.code in (1, 2), result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("trigger: error: "), result.err
    assert "Traceback" not in result.err
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA with a server certificate and client certificates named after
    etcd users (`root`, `node1.test`, `node2.test`), and a second CA that
    nobody trusts with a client certificate of its own."""
    need("openssl", "openssl")
    made = Pki(tmp_path_factory.mktemp("pki"))
    ca, other = made.ca("test-ca"), made.ca("other-ca")
    return SimpleNamespace(
        ca=ca, other_ca=other,
        server=made.issue(ca, "etcd", server=True),
        root=made.issue(ca, "root"),
        node1=made.issue(ca, "node1.test"),
        node2=made.issue(ca, "node2.test"),
        stranger=made.issue(other, "stranger"),
    )


def tls_args(pki, who) -> list[str]:
    return ["--cacert", str(pki.ca.cert), "--cert", str(who.cert), "--key", str(who.key)]


@pytest.fixture
def tls_etcd(tmp_path, pki):
    """etcd on https only, wanting client certificates signed by the test CA."""
    need("etcd", "etcd-server")
    server = EtcdServer(tmp_path / "etcd", tls=ServerTls(
        pki.ca.cert, pki.server.cert, pki.server.key, pki.root.cert, pki.root.key)).start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def auth_etcd(tmp_path):
    """etcd with users and roles set up by `trigger auth setup` for nodes
    node1.test and node2.test and firer `ci`, auth enabled, tokens that
    expire after TOKEN_TTL seconds; `.password(user)` is the file holding
    a user's password."""
    need("etcd", "etcd-server")
    server = EtcdServer(tmp_path / "etcd", ("--auth-token-ttl", str(TOKEN_TTL))).start()
    passwords = tmp_path / "passwords"
    try:
        done = trigger("auth", "setup", "--hosts", "node1.test,node2.test", "--firers", "ci",
                       "--password-dir", str(passwords), "--endpoints", server.endpoint)
        assert done.code == 0, done
        server.passwords = passwords
        server.password = lambda user: passwords / f"{user}.password"
        server.login = lambda user: ["--endpoints", server.endpoint, "--user", user,
                                     "--password-file", str(server.password(user))]
        yield server
    finally:
        server.close()
