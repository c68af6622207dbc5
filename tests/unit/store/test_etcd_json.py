"""The store contract on a real etcd through its JSON gateway, and what the
gateway adapter must do like the gRPC one."""

from __future__ import annotations

import time

import pytest

from trigger.store.base import StoreError, UnavailableError
from trigger.store.etcd_json import EtcdJsonStore

from .contract import Harness, Recorder, StoreContract
from .test_etcd import dead_endpoint, etcd_min_lease_ttl

pytestmark = pytest.mark.etcd


class TestEtcdJsonStore(StoreContract):
    @pytest.fixture
    def harness(self, etcd_server):
        store = EtcdJsonStore([etcd_server.endpoint])
        yield Harness(store, time.sleep, settle=0.2, min_lease_ttl=etcd_min_lease_ttl(etcd_server))
        store.close()


def test_a_dead_endpoint_is_skipped(etcd_server):
    store = EtcdJsonStore([dead_endpoint(), etcd_server.endpoint])
    try:
        store.put("/k", b"v")
        assert store.get("/k").value == b"v"
    finally:
        store.close()


def test_no_endpoint_answering_is_one_unavailable_error_naming_each():
    a, b = dead_endpoint(), dead_endpoint()
    store = EtcdJsonStore([a, b], timeout=1)
    with pytest.raises(UnavailableError) as e:
        store.get("/k")
    assert a in str(e.value) and b in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UnavailableError):
        store.watch_prefix("/", 0, Recorder())


def test_a_watch_reports_a_stopped_server_once(etcd_server):
    store = EtcdJsonStore([etcd_server.endpoint])
    rec = Recorder()
    try:
        store.watch_prefix("/w/", 0, rec)
        store.put("/w/a", b"1")
        assert len(rec.wait_changes(1)) == 1
        etcd_server.stop()
        assert isinstance(rec.wait_error(timeout=15), UnavailableError)
        time.sleep(0.2)
        assert len(rec.errors) == 1
    finally:
        store.close()


def test_closed_store_refuses_calls(etcd_server):
    store = EtcdJsonStore([etcd_server.endpoint])
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get("/k")
