"""etcd users and roles set up by `trigger auth setup`, on a real etcd with
auth enabled and auth tokens that expire after TOKEN_TTL seconds."""

from __future__ import annotations

import queue
import time

import grpc
import pytest

from tests.eventually import eventually
from tests.conftest import need
from tests.integration.conftest import Node
from trigger.fire import Lineage, fire
from trigger.layout import Layout
from trigger.store import Put, StoreError
from trigger.store.etcd import rpc

from .conftest import TOKEN_TTL, assert_one_line_error, open_test_store, trigger

pytestmark = pytest.mark.etcd

LAYOUT = Layout()


def store_as(server, user: str):
    return open_test_store(endpoints=[server.endpoint], user=user,
                           password=server.password(user).read_text().strip())


def token_of(store) -> str | None:
    endpoint = store._endpoints[0]
    return endpoint.client.token if hasattr(endpoint, "client") else endpoint.token


def refusal_with(store, token: str) -> str:
    """What etcd answers a read made with `token` (not renewing it)."""
    endpoint = store._endpoints[0]
    if hasattr(endpoint, "client"):  # gRPC
        with pytest.raises(grpc.RpcError) as refused:
            endpoint.client.kvstub.Range(rpc.RangeRequest(key=b"/x"), 5, metadata=(("token", token),))
        return refused.value.details()
    from trigger.store.etcd_json import _Refused

    with pytest.raises(_Refused) as refused:
        endpoint._post("/v3/kv/range", {"key": "L3g="}, 5, token)
    return refused.value.details


def test_setup_writes_private_password_files(auth_etcd):
    files = sorted(p.name for p in auth_etcd.passwords.iterdir())
    assert files == ["ci.password", "node1.test.password", "node2.test.password", "root.password"]
    assert auth_etcd.passwords.stat().st_mode & 0o077 == 0
    assert all(p.stat().st_mode & 0o077 == 0 for p in auth_etcd.passwords.iterdir())


def test_node_cannot_read_or_acknowledge_another_nodes_inbox(auth_etcd):
    ci, node1 = store_as(auth_etcd, "ci"), store_as(auth_etcd, "node1.test")
    try:
        entry = fire(ci, LAYOUT, "deploy", ["node1.test", "node2.test"], Lineage(), "ci")
        theirs = LAYOUT.entry_key("node2.test", entry.id)
        # Its own inbox: read and acknowledge.
        mine, _ = node1.get_prefix(LAYOUT.host_prefix("node1.test"))
        assert [kv.key for kv in mine] == [LAYOUT.entry_key("node1.test", entry.id)]
        # Another node's inbox: neither read, watched, nor acknowledged.
        for attempt in (lambda: node1.get_prefix(LAYOUT.host_prefix("node2.test")),
                        lambda: node1.get(theirs),
                        lambda: node1.delete(theirs),
                        lambda: node1.watch_prefix(LAYOUT.host_prefix("node2.test"), 0, print)):
            with pytest.raises(StoreError, match="permission denied for etcd user 'node1.test'"):
                attempt()
        assert ci.get(theirs) is not None
    finally:
        ci.close()
        node1.close()
    # Nor through the CLI: `trigger run` for node2 with node1's credentials
    # fails before running anything, and node2's entry stays.
    done = trigger("run", "--host", "node2.test", "--run-id", "r1", *auth_etcd.login("node1.test"),
                   "--", "touch", "/nonexistent/should-not-run")
    assert_one_line_error(done, "permission denied for etcd user 'node1.test'")
    done = trigger("watch", "--host", "node2.test", "--queue", "inline", *auth_etcd.login("node1.test"))
    assert_one_line_error(done, "permission denied for etcd user 'node1.test'")
    ci = store_as(auth_etcd, "ci")
    try:
        assert ci.get(theirs) is not None
    finally:
        ci.close()


def test_fire_without_permission_is_a_one_line_error(auth_etcd):
    done = trigger("fire", "deploy", "--hosts", "node2.test", *auth_etcd.login("node1.test"))
    assert_one_line_error(done, "permission denied for etcd user 'node1.test'")
    done = trigger("fire", "deploy", "--hosts", "node2.test", "--endpoints", auth_etcd.endpoint)
    assert_one_line_error(done, "authentication enabled", "--user")
    done = trigger("fire", "deploy", "--hosts", "node2.test", "--endpoints", auth_etcd.endpoint,
                   "--user", "ci:wrong")
    assert_one_line_error(done, "authentication as 'ci' failed")
    done = trigger("fire", "deploy", "--hosts", "node2.test", *auth_etcd.login("ci"))
    assert done.code == 0, done
    # A firer writes the inboxes of the hosts set up, nothing else there.
    done = trigger("fire", "deploy", "--hosts", "stranger.test", *auth_etcd.login("ci"))
    assert_one_line_error(done, "permission denied for etcd user 'ci'")
    done = trigger("status", "--json", *auth_etcd.login("ci"))
    assert done.code == 0 and '"pending": 1' in done.out, done


def test_a_firer_cannot_forge_run_records(auth_etcd):
    ci = store_as(auth_etcd, "ci")
    try:
        entry = fire(ci, LAYOUT, "deploy", ["node1.test"], Lineage(), "ci")
        ci.delete(LAYOUT.entry_key("node1.test", entry.id))  # writing an inbox includes deleting
        forged = LAYOUT.run_key("node1.test", "r-forged")
        with pytest.raises(StoreError, match="permission denied for etcd user 'ci'"):
            ci.put(forged, b'{"state": "finished"}')
        assert ci.get(forged) is None
        assert ci.get_prefix(LAYOUT.runs_prefix("node1.test"))[0] == []  # but may read them
    finally:
        ci.close()


def test_a_store_outlives_its_auth_token(auth_etcd):
    """An open watch keeps delivering after its token expired; reads, writes
    and new watches after the expiry, or after etcd restarted, authenticate
    again."""
    node1, ci = store_as(auth_etcd, "node1.test"), store_as(auth_etcd, "ci")
    seen: queue.Queue = queue.Queue()
    try:
        _, revision = node1.get_prefix(LAYOUT.host_prefix("node1.test"))
        watch = node1.watch_prefix(LAYOUT.host_prefix("node1.test"), revision + 1, seen.put)
        stale = token_of(node1)
        time.sleep(TOKEN_TTL + 1.5)
        assert "invalid auth token" in refusal_with(node1, stale)  # the token really is gone
        entry = fire(ci, LAYOUT, "later", ["node1.test"], Lineage(), "ci")
        changes = seen.get(timeout=5)
        assert isinstance(changes, list) and changes[0].key.endswith(entry.id)
        # Writes, reads and a new watch, all after the expiry:
        node1.put(LAYOUT.run_key("node1.test", "r1"), b"{}")
        assert node1.get(LAYOUT.run_key("node1.test", "r1")) is not None
        assert token_of(node1) != stale
        time.sleep(TOKEN_TTL + 1.5)
        again: queue.Queue = queue.Queue()
        second = node1.watch_prefix(LAYOUT.host_prefix("node1.test"), 1, again.put)
        replay = again.get(timeout=5)
        assert any(isinstance(c, Put) and c.key.endswith(entry.id) for c in replay)
        watch.cancel()
        second.cancel()
        # etcd forgets every simple token when it restarts.
        auth_etcd.restart()
        assert node1.get(LAYOUT.run_key("node1.test", "r1")) is not None
    finally:
        node1.close()
        ci.close()


def test_a_watcher_outlives_its_auth_token_and_loses_nothing(tmp_path, auth_etcd):
    """The daemon with node credentials: a fire before and a fire after its
    token expired while it sat idle on its watch are both served, by runs
    that authenticate themselves (the password reaches them through their
    environment, never their command line)."""
    need("tsp", "task-spooler")
    node = Node(tmp_path, auth_etcd.endpoint, "node1.test")
    node.store.close()
    node.store = store_as(auth_etcd, "ci")
    try:
        # The user and password in etcdctl's environment name: the runs
        # get `--user node1.test` and the password through the environment
        # task-spooler hands them. --member-ttl 60: no lease refresh inside
        # the test, so nothing but the watch stream uses the token, which
        # expires.
        password = auth_etcd.password("node1.test").read_text().strip()
        node.env["ETCDCTL_USER"] = f"node1.test:{password}"
        node.start_watcher(extra=("--member-ttl", "60"))
        eventually(lambda: node.store.get(LAYOUT.member_key("node1.test")), 10,
                   lambda: node.watch_log.read_text())
        node.fire("before")
        assert node.wait_served(timeout=15) == [], node.watch_log.read_text()
        time.sleep(TOKEN_TTL + 1.5)
        node.fire("after")
        assert node.wait_served(timeout=15) == [], node.watch_log.read_text()
        assert len(node.runs()) == 2
        assert node.proc.poll() is None
        assert "authenticating again" in node.watch_log.read_text()  # the token did expire
        assert password not in node.tsp("-l")
        # The runs, as node1.test, moved their finished records to done/.
        deadline = time.monotonic() + 10
        while len(node.store.get_prefix(LAYOUT.done_prefix("node1.test"))[0]) < 2:
            assert time.monotonic() < deadline, "the second run's finished record"
            time.sleep(0.05)
        entries = [kv for kv in node.store.get_prefix(LAYOUT.host_prefix("node1.test"))[0]
                   if LAYOUT.classify("node1.test", kv.key)[0] == "entry"]
        assert entries == []  # both acknowledged by their runs
    finally:
        node.close()


def test_setup_again_adds_hosts_and_keeps_passwords(auth_etcd, tmp_path):
    before = auth_etcd.password("node1.test").read_text()
    done = trigger("auth", "setup", "--hosts", "node1.test,node3.test", "--password-dir",
                   str(auth_etcd.passwords), *auth_etcd.login("root"))
    assert done.code == 0, done
    assert "user node1.test existed" in done.out
    assert auth_etcd.password("node1.test").read_text() == before
    node3 = store_as(auth_etcd, "node3.test")
    try:
        node3.put(LAYOUT.run_key("node3.test", "r1"), b"{}")
        with pytest.raises(StoreError, match="permission denied"):
            node3.put(LAYOUT.run_key("node1.test", "r1"), b"{}")
    finally:
        node3.close()
    # Only root may change users and roles once auth is on.
    done = trigger("auth", "setup", "--hosts", "node4.test", *auth_etcd.login("ci"))
    assert_one_line_error(done, "permission denied")
