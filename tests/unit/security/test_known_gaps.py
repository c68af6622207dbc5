"""What a node's credentials could once do beyond its own keys (found by
the security work): claim another host's membership or results, or split a
log line with the key of an inbox entry."""

from __future__ import annotations


from trigger.coordination import Member, resolve_targets
from trigger.core import Changes, Quarantine, Snapshot, WatcherCore
from trigger.store.base import Put
from trigger.records import RunRecord
from trigger.results import runs_in, runs_serving
from trigger.store.memory import MemoryStore

from .strategies import LAYOUT


def test_a_node_cannot_publish_membership_for_another_host():
    store = MemoryStore()
    store.put(LAYOUT.member_key("web1"), Member("db1", ("web",), 1.0).encode())  # written by web1
    hosts, _ = resolve_targets(store, LAYOUT, ["role:web"])
    assert "db1" not in hosts


def test_a_node_cannot_report_results_for_another_host():
    forged = RunRecord("r1", "db1", "finished", 1.0, 2.0, 3.0, 0, served=("e1",))
    items = [type("KV", (), {"key": LAYOUT.run_key("web1", "r1"), "value": forged.encode()})()]
    assert "db1" not in runs_serving(runs_in(items, LAYOUT)).get("e1", {})


def test_a_quarantined_key_is_logged_on_one_line():
    core = WatcherCore("web1", LAYOUT, lambda: "run-1")
    core.handle(Snapshot((), 1, frozenset()), 0.0)
    (action,) = core.handle(Changes((Put(LAYOUT.entry_key("web1", "x\nFAKE: run started"), b"{}", 2),)), 0.0)
    assert isinstance(action, Quarantine) and "\n" not in action.describe()
