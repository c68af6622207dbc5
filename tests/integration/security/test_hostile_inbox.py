"""Corrupt and hostile inbox entries against a real watcher on a real etcd:
set aside under quarantine/, counted by `trigger status`, never run."""

from __future__ import annotations

import json
import time

import pytest

from tests.eventually import eventually
from trigger.fire import new_event_id
from trigger.layout import Layout
from trigger.records import Entry

from .conftest import clean_env, trigger

pytestmark = [pytest.mark.etcd, pytest.mark.tsp]

LAYOUT = Layout()


def test_corrupt_entries_are_quarantined_and_shown_by_status(tmp_path, node):
    node.start_watcher()
    pwned = tmp_path / "pwned"
    corrupt = {
        "deep-json": b"[" * 5000,  # deeper than Python's JSON parser recurses
        "not-json": b"\xff\xfe$(touch " + str(pwned).encode() + b")",
        "huge-time": b'{"id":"a","trigger":"t","fired_at":1' + b"0" * 400 + b"}",
        "too-big": b'{"pad":"' + b"x" * 9000 + b'"}',
        "bad name; $(id)": Entry("e1", "t", 1.0).encode(),  # a key trigger never writes
    }
    for name, value in corrupt.items():
        node.store.put(LAYOUT.entry_key(node.host, name), value)
    # A well-formed fire whose data is shell syntax: it is served, never run.
    hostile = Entry(new_event_id(), f"$(touch {pwned}); `touch {pwned}`", time.time(),
                    origin="ci")
    node.store.put(LAYOUT.entry_key(node.host, hostile.id), hostile.encode())
    node.fires.append(hostile.fired_at)

    def quarantined():
        moved, _ = node.store.get_prefix(f"{LAYOUT.prefix}/quarantine/{node.host}/")
        return moved if len(moved) == len(corrupt) and not node.unserved() else None

    moved = eventually(quarantined, 20, lambda: node.watch_log.read_text())
    assert sorted(kv.key.rsplit("/", 1)[-1] for kv in moved) == sorted(corrupt), node.watch_log.read_text()
    assert {kv.key.rsplit("/", 1)[-1]: kv.value for kv in moved} == corrupt  # the same bytes, kept
    assert node.unserved() == []
    assert not pwned.exists()
    assert node.proc.poll() is None  # the watcher kept running
    node.wait_idle()  # served entries go when their run has finished
    inbox, _ = node.store.get_prefix(LAYOUT.host_prefix(node.host))
    assert all(LAYOUT.classify(node.host, kv.key)[0] == "run" for kv in inbox)

    done = trigger("status", "--json", "--endpoints", node.endpoint, env=clean_env())
    assert done.code == 0, done
    (row,) = [h for h in json.loads(done.out) if h["host"] == node.host]
    assert row["quarantined"] == len(corrupt) and row["pending"] == 0
    table = trigger("status", "-o", "table", "--endpoints", node.endpoint, env=clean_env(COLUMNS="200"))
    line = next(line for line in table.out.splitlines() if node.host in line)
    assert f"({len(corrupt)} quarantined)" in line  # the table's inbox column: "0 (5 quarantined)"
    log = node.watch_log.read_text()
    assert log.count("quarantine") >= len(corrupt)
