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


def test_an_endpoint_with_control_characters_is_a_store_error():
    """Found by tests/unit/security/test_fuzz_cli.py: http.client refused
    the host with its own exception, a traceback for the user."""
    for bad in ("http://\x08:2379", "\x08", "http://a b:1"):
        with pytest.raises(StoreError, match="bad etcd endpoint"):
            EtcdJsonStore([bad])


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


def test_the_json_and_grpc_adapters_write_and_read_byte_identical_records(etcd_server):
    """The same fire, run start and finish through each adapter, each under
    its own prefix: every key and value is the same bytes, and each adapter
    reads the other's keys as the other does."""
    from trigger.fire import Lineage, fire
    from trigger.layout import Layout
    from trigger.runner import finish_run, start_run
    from trigger.store.etcd import EtcdStore

    stores = {"json": EtcdJsonStore([etcd_server.endpoint]), "grpc": EtcdStore([etcd_server.endpoint])}
    try:
        for name, store in stores.items():
            layout = Layout(f"/same/{name}")
            fire(store, layout, "deploy", ["web1"], Lineage(1, ("ci",)), "ci", now=999.75, event_id="e-1",
                 retention=60)
            record = start_run(store, layout, "web1", "r-1", 1000.5)
            finish_run(store, layout, record, 2, 1001.25, store.lease_grant(60))
        written = {}
        for name, store in stores.items():
            items, _ = store.get_prefix(f"/same/{name}/")
            written[name] = [(kv.key.split("/", 3)[3], kv.value) for kv in items]
        assert written["json"] == written["grpc"] and len(written["json"]) == 2  # fire record, done run
        for reader in stores.values():
            for name in stores:
                assert reader.get_prefix(f"/same/{name}/")[0] == stores[name].get_prefix(f"/same/{name}/")[0]
    finally:
        for store in stores.values():
            store.close()
