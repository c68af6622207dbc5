"""The store contract on a real etcd, and what only a real server can do:
fail over between endpoints, die under a watch, come back."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest

from trigger.store.base import Put, StoreError, UnavailableError
from trigger.store.etcd import EtcdStore, parse_endpoint, prefix_range_end
from trigger.store.memory import MIN_LEASE_TTL
from tests.etcd_server import EtcdServer, free_port

from .contract import Harness, Recorder, StoreContract

pytestmark = pytest.mark.etcd


def etcd_min_lease_ttl(server: EtcdServer) -> int:
    """The smallest lease TTL etcd grants, from its flags (etcd 3.4:
    ceil(3/2 * election ticks * heartbeat), ticks = election / heartbeat)."""
    flags, args = {}, list(server.extra_args)
    for i, arg in enumerate(args):
        if "=" in arg:
            name, value = arg.split("=", 1)
            flags[name] = value
        elif i + 1 < len(args):
            flags[arg] = args[i + 1]
    heartbeat = int(flags.get("--heartbeat-interval", 100))
    ticks = int(flags.get("--election-timeout", 1000)) // heartbeat
    return max(1, math.ceil(3 * ticks // 2 * heartbeat / 1000))


def test_memory_store_grants_leases_like_a_default_etcd():
    server = object.__new__(EtcdServer)
    server.extra_args = ()
    assert etcd_min_lease_ttl(server) == MIN_LEASE_TTL == 2


def dead_endpoint() -> str:
    """A loopback port nobody listens on: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


class TestEtcdStore(StoreContract):
    @pytest.fixture
    def harness(self, etcd_server):
        store = EtcdStore([etcd_server.endpoint])
        yield Harness(store, time.sleep, settle=0.2, min_lease_ttl=etcd_min_lease_ttl(etcd_server))
        store.close()


# -- endpoints and failover ----------------------------------------------------


def test_endpoints_parse_like_etcdctl():
    assert parse_endpoint("http://127.0.0.1:2379").target == "127.0.0.1:2379"
    assert parse_endpoint("10.0.0.5:4001").target == "10.0.0.5:4001"
    assert parse_endpoint("http://etcd.example").target == "etcd.example:2379"
    assert parse_endpoint("http://[::1]:2379").target == "[::1]:2379"
    assert parse_endpoint("https://127.0.0.1:2379").secure  # TLS: tests/integration/security
    assert not parse_endpoint("127.0.0.1:2379").secure
    for bad in ("ftp://x:1", "http://:2379", "http://h:notaport", "http://h:1/path"):
        with pytest.raises(StoreError, match="endpoint"):
            parse_endpoint(bad)
    with pytest.raises(StoreError, match="no etcd endpoints"):
        EtcdStore([])


def test_prefix_range_end():
    assert prefix_range_end(b"/a/") == b"/a0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"
    assert prefix_range_end(b"") == b"\0"


# Failing over "at once" is checked against the store's timeout, not a
# number of seconds: a store that waited the timeout out takes 60 s, one that
# did not a few milliseconds; half the timeout tells them apart on any load.
SLOW = 60.0


def test_a_dead_first_endpoint_fails_over_to_the_next(etcd_server):
    store = EtcdStore([dead_endpoint(), etcd_server.endpoint], timeout=SLOW)
    try:
        started = time.monotonic()
        r = store.put("/k", b"1")
        assert store.get("/k").value == b"1"
        rec = Recorder()
        store.watch_prefix("/", r, rec)
        assert rec.wait_changes(1) == [Put("/k", b"1", r)]
        assert time.monotonic() - started < SLOW / 2, "the refused endpoint's timeout was waited out"
    finally:
        store.close()


def test_no_endpoint_answering_is_one_quick_unavailable_error():
    dead = [dead_endpoint(), dead_endpoint()]
    store = EtcdStore(dead, timeout=SLOW)
    try:
        for call in (lambda: store.get("/k"), lambda: store.put("/k", b"1"),
                     lambda: store.lease_grant(5), lambda: store.watch_prefix("/", 0, Recorder())):
            started = time.monotonic()
            with pytest.raises(UnavailableError) as caught:
                call()
            assert time.monotonic() - started < SLOW / 2, "a refused connection must not wait for the timeout"
            message = str(caught.value)
            assert "\n" not in message
            assert dead[0] in message and dead[1] in message
    finally:
        store.close()


def test_a_silent_endpoint_fails_over_after_the_timeout(etcd_server, tmp_path):
    """etcd frozen (SIGSTOP) after we connected: calls time out. A read moves
    on to the next endpoint; a write might have been applied, so it is not
    repeated elsewhere: UnavailableError says so, and the next call starts
    at the next endpoint."""
    frozen = EtcdServer(tmp_path / "frozen", ("--heartbeat-interval", "10", "--election-timeout", "100")).start()
    reader = EtcdStore([frozen.endpoint, etcd_server.endpoint], timeout=0.5)
    writer = EtcdStore([frozen.endpoint, etcd_server.endpoint], timeout=0.5)
    try:
        frozen_revision = reader.put("/on-frozen", b"1")
        assert writer.get("/on-frozen") is not None  # both connected to the first
        os.kill(frozen.proc.pid, signal.SIGSTOP)

        started = time.monotonic()
        assert reader.get("/on-frozen") is None  # answered by the live server
        assert time.monotonic() - started >= 0.5  # after the frozen one's timeout, not before

        with pytest.raises(UnavailableError, match="may or may not have been applied") as caught:
            writer.put("/k", b"1")
        assert "\n" not in str(caught.value) and frozen.endpoint in str(caught.value)
        assert writer.get("/k") is None  # not repeated on the live server
        assert writer.put("/k", b"2") == 2  # the live server's second revision
        assert frozen_revision == 2
    finally:
        reader.close()
        writer.close()
        frozen.close()


# -- a server that dies and comes back ---------------------------------------------


def test_a_killed_server_ends_the_watch_once_and_a_new_watch_replays_after_restart(etcd_server):
    store = EtcdStore([etcd_server.endpoint], timeout=2)
    try:
        r1 = store.put("/w/a", b"1")
        rec = Recorder()
        store.watch_prefix("/w/", r1, rec)
        r2 = store.put("/w/b", b"2")
        assert rec.wait_changes(2) == [Put("/w/a", b"1", r1), Put("/w/b", b"2", r2)]

        etcd_server.stop()
        error = rec.wait_error(timeout=30)  # the event, not a stopwatch: a watch left hanging fails here
        assert isinstance(error, UnavailableError), error
        assert "\n" not in str(error) and f"after revision {r2}" in str(error)
        with pytest.raises(UnavailableError):
            store.get("/w/a")

        etcd_server.start()
        # The channel may still be backing off (at most 1 s): retry as a
        # watcher reconnecting would.
        replay = Recorder()
        deadline = time.monotonic() + 5
        while True:
            try:
                store.watch_prefix("/w/", r1, replay)
                break
            except UnavailableError:
                assert time.monotonic() < deadline, "could not watch again after the restart"
                time.sleep(0.1)
        r3 = store.put("/w/c", b"3")
        assert replay.wait_changes(3) == [
            Put("/w/a", b"1", r1), Put("/w/b", b"2", r2), Put("/w/c", b"3", r3)]
        time.sleep(0.2)
        assert len(rec.errors) == 1 and len(rec.changes) == 2, "the dead watch spoke again"
    finally:
        store.close()


def test_a_closed_store_refuses_calls_and_ends_its_watches(etcd_server):
    store = EtcdStore([etcd_server.endpoint])
    rec = Recorder()
    watch = store.watch_prefix("/", 0, rec)
    assert watch._thread.is_alive()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get("/k")
    with pytest.raises(StoreError, match="closed"):
        store.watch_prefix("/", 0, rec)
    watch._thread.join(2)
    assert not watch._thread.is_alive(), "the watch thread outlived close()"
    assert rec.errors == [] and rec.batches == []


def test_loads_with_protobufs_fast_backend():
    """The stubs load with protobuf's upb backend, whatever imported
    protobuf first: no process-wide switch to the slow pure-Python one."""
    env = {k: v for k, v in os.environ.items() if k != "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"}
    code = ("import google.protobuf.descriptor_pb2, trigger.store.etcd, google.protobuf as p, os; "
            "from google.protobuf.internal import api_implementation as a; "
            "print(p.__version__, a.Type(), os.environ.get('PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    version, backend, switch = out.stdout.split()
    assert int(version.split(".")[0]) >= 5 and backend == "upb" and switch == "None"
