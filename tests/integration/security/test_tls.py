"""TLS with client certificates against a real etcd serving https only."""

from __future__ import annotations

import time

import pytest

from tests.eventually import eventually
from tests.conftest import need
from tests.integration.conftest import Node
from trigger.layout import Layout
from trigger.store import StoreError

from .conftest import assert_one_line_error, clean_env, open_test_store, tls_args, trigger

pytestmark = pytest.mark.etcd


def tls_store(server, pki, who, **options):
    return open_test_store(endpoints=[server.endpoint], cacert=str(pki.ca.cert),
                           cert=str(who.cert), key=str(who.key), **options)


def test_fire_and_watch_over_tls(tmp_path, tls_etcd, pki):
    """The watcher gets its TLS options on the command line and passes them
    on to `trigger run` (which acknowledges the entry over TLS); the fire
    gets them from etcdctl's environment names."""
    need("tsp", "task-spooler")
    node = Node(tmp_path, tls_etcd.endpoint, "node1.test")
    node.store.close()
    node.store = tls_store(tls_etcd, pki, pki.node1)
    try:
        node.start_watcher(extra=tuple(tls_args(pki, pki.node1)))
        env = clean_env(ETCDCTL_ENDPOINTS=tls_etcd.endpoint, ETCDCTL_CACERT=str(pki.ca.cert),
                        ETCDCTL_CERT=str(pki.node2.cert), ETCDCTL_KEY=str(pki.node2.key))
        fired_at = time.time()
        done = trigger("fire", "refresh", "--hosts", "node1.test", env=env)
        assert done.code == 0, done
        node.fires.append(fired_at)
        assert node.wait_served(timeout=20) == [], node.watch_log.read_text()
        # The run served the entry and, finished, moved its record to done/.
        def left():
            inbox, _ = node.store.get_prefix(Layout().host_prefix("node1.test"))
            done, _ = node.store.get_prefix(Layout().done_prefix("node1.test"))
            return inbox, done

        eventually(lambda: left()[0] == [] and len(left()[1]) == 1, 10,
                   lambda: f"an empty inbox and one finished run, not {left()}")
        status = trigger("status", "--json", "--endpoints", tls_etcd.endpoint, *tls_args(pki, pki.root))
        assert status.code == 0 and '"host": "node1.test"' in status.out, status
    finally:
        node.close()


def test_a_wrong_ca_is_a_one_line_error(tls_etcd, pki):
    done = trigger("status", "--endpoints", tls_etcd.endpoint, "--cacert", str(pki.other_ca.cert),
                   "--cert", str(pki.node1.cert), "--key", str(pki.node1.key))
    assert_one_line_error(done, "TLS handshake failed", "not signed by a CA in --cacert")
    assert done.code == 1


def test_no_client_certificate_is_a_one_line_error(tls_etcd, pki):
    done = trigger("fire", "x", "--hosts", "node1.test", "--endpoints", tls_etcd.endpoint,
                   "--cacert", str(pki.ca.cert))
    assert_one_line_error(done, "client certificate")
    assert done.code == 1


def test_a_certificate_from_another_ca_is_refused(tls_etcd, pki):
    done = trigger("status", "--endpoints", tls_etcd.endpoint, "--cacert", str(pki.ca.cert),
                   "--cert", str(pki.stranger.cert), "--key", str(pki.stranger.key))
    assert_one_line_error(done, "TLS handshake failed")


def test_a_watcher_with_bad_tls_exits_at_once(tls_etcd, pki):
    """Not a daemon retrying a handshake that cannot succeed."""
    done = trigger("watch", "--host", "node1.test", "--queue", "inline", "--endpoints",
                   tls_etcd.endpoint, "--cacert", str(pki.other_ca.cert),
                   "--cert", str(pki.node1.cert), "--key", str(pki.node1.key), timeout=20)
    assert_one_line_error(done, "not signed by a CA in --cacert")


def test_plain_http_to_a_tls_server_says_so(tls_etcd):
    done = trigger("status", "--endpoints", tls_etcd.endpoint.replace("https", "http"))
    assert_one_line_error(done, "https://")


def test_client_certificate_names_the_etcd_user(tmp_path, tls_etcd, pki):
    """With auth enabled and no --user, etcd takes the user from the
    certificate's common name: a node's certificate (Puppet's own, say)
    is its identity, no password needed."""
    setup = trigger("auth", "setup", "--hosts", "node1.test,node2.test", "--password-dir",
                    str(tmp_path / "pw"), "--endpoints", tls_etcd.endpoint, *tls_args(pki, pki.root))
    assert setup.code == 0, setup
    layout = Layout()
    node1 = tls_store(tls_etcd, pki, pki.node1)
    try:
        node1.put(layout.entry_key("node1.test", "e1"), b"{}")
        assert [kv.key for kv in node1.get_prefix(layout.host_prefix("node1.test"))[0]] == \
            [layout.entry_key("node1.test", "e1")]
        with pytest.raises(StoreError, match="permission denied"):
            node1.get_prefix(layout.host_prefix("node2.test"))
    finally:
        node1.close()
