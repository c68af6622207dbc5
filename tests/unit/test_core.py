"""Every transition of the watcher core, on hand-made events."""

import itertools

import pytest

from trigger.core import (
    Changes,
    Coalesce,
    EnqueueFailed,
    EnqueueRun,
    MarkRunLost,
    ProtocolError,
    Quarantine,
    RunEnded,
    RunBegan,
    Snapshot,
    Tick,
    WatcherCore,
)
from trigger.layout import Layout
from trigger.records import Entry, RunRecord
from trigger.store.base import Delete, KeyValue, Put

L = Layout()
HOST = "lb1.example.com"


def make_core():
    ids = (f"r{i}" for i in itertools.count(1))
    return WatcherCore(HOST, L, lambda: next(ids))


def entry(eid, hop=1, trigger="refresh"):
    return Entry(eid, trigger, 1.0, hop=hop)


def put_entry(eid, rev, trigger="refresh"):
    return Put(L.entry_key(HOST, eid), entry(eid, trigger=trigger).encode(), rev)


def put_run(run_id, state, rev, served=(), **times):
    record = RunRecord(run_id, HOST, state, queued_at=1.0, served=tuple(served), **times)
    return Put(L.run_key(HOST, run_id), record.encode(), rev)


def put_lock(run_id, rev):
    return Put(L.run_lock_key(HOST), run_id.encode(), rev)


def kv(change):
    return KeyValue(change.key, change.value, change.revision, change.revision)


def synced(items=(), live=frozenset(), revision=10):
    core = make_core()
    actions = core.handle(Snapshot(tuple(kv(c) for c in items), revision, live), 0.0)
    return core, actions


def test_events_before_the_first_snapshot_are_refused():
    with pytest.raises(ProtocolError, match="Changes before the first Snapshot"):
        make_core().handle(Changes(()), 0.0)


def test_empty_inbox_does_nothing():
    core, actions = synced()
    assert actions == [] and not core.busy


def test_snapshot_with_entries_enqueues_one_run_for_all():
    core, actions = synced([put_entry("e1", 3), put_entry("e2", 4)])
    assert [type(a) for a in actions] == [EnqueueRun]
    assert actions[0].run_id == "r1" and actions[0].waiting == ("e1", "e2")
    assert actions[0].record.state == "queued" and core.queued_run == "r1"


def test_new_entry_when_idle_enqueues():
    core, _ = synced()
    actions = core.handle(Changes((put_entry("e1", 11),)), 5.0)
    assert [(type(a), a.run_id) for a in actions] == [(EnqueueRun, "r1")]
    assert actions[0].record.queued_at == 5.0


def test_entries_while_queued_coalesce():
    core, _ = synced()
    core.handle(Changes((put_entry("e1", 11),)), 1.0)
    core.handle(Changes((put_run("r1", "queued", 12),)), 1.0)  # our own record echoed back
    actions = core.handle(Changes((put_entry("e2", 13), put_entry("e3", 14))), 2.0)
    assert actions == [Coalesce("e2", "r1", "refresh"), Coalesce("e3", "r1", "refresh")]
    assert "'refresh'" in actions[0].describe()


def test_run_start_claims_and_later_entries_get_exactly_one_more_run():
    core, _ = synced()
    core.handle(Changes((put_entry("e1", 11),)), 1.0)
    start = (put_lock("r1", 12), put_run("r1", "started", 13, served=["e1"]))
    assert core.handle(Changes(start), 2.0) == [RunBegan("r1", 1)]
    assert core.queued_run is None and not core.pending
    actions = []
    for i in range(30):
        actions += core.handle(Changes((put_entry(f"s{i}", 14 + i),)), 3.0 + i)
    assert [type(a) for a in actions] == [EnqueueRun] + [Coalesce] * 29
    # fires in one batch wait for one run too
    core, _ = synced()
    batch = tuple(put_entry(f"b{i}", 11 + i) for i in range(30))
    actions = core.handle(Changes(batch), 1.0)
    assert [type(a) for a in actions] == [EnqueueRun] and len(actions[0].waiting) == 30


def test_claimed_entries_wait_for_their_run_and_go_when_it_finishes():
    core, _ = synced()
    core.handle(Changes((put_entry("e1", 11), put_entry("e2", 12))), 1.0)
    start = (put_lock("r1", 13), put_run("r1", "started", 14, served=["e1", "e2"]))
    assert core.handle(Changes(start), 2.0) == [RunBegan("r1", 2)] and not core.pending
    # The finish: its entries go and its record moves to P/done/, in one revision.
    finish = (Delete(L.entry_key(HOST, "e1"), 15), Delete(L.entry_key(HOST, "e2"), 15),
              Delete(L.run_key(HOST, "r1"), 15), Delete(L.run_lock_key(HOST), 16))
    assert core.handle(Changes(finish), 3.0) == [RunEnded("r1", None, None, None)] and not core.busy


def test_a_started_run_whose_lock_goes_died_and_its_entries_get_a_new_run():
    """OOM, reboot, a killed `trigger run`: the lease ends, the lock goes, the
    record still says started: the claimed entries are given back."""
    core, _ = synced()
    core.handle(Changes((put_entry("e1", 11),)), 1.0)
    core.handle(Changes((put_lock("r1", 12), put_run("r1", "started", 13, served=["e1"]))), 2.0)
    actions = core.handle(Changes((Delete(L.run_lock_key(HOST), 14),)), 3.0)
    assert [type(a) for a in actions] == [MarkRunLost, EnqueueRun]
    assert "died before its end" in actions[0].record.reason and actions[1].waiting == ("e1",)


def test_a_snapshot_keeps_a_started_runs_claims_whatever_the_key_order():
    """etcd lists keys in byte order: an entry id sorting after `runs/` comes
    after the record claiming it. The claim still holds: no second run."""
    items = [put_lock("r1", 4), put_run("r1", "started", 5, served=["zz1"]), put_entry("zz1", 6)]
    assert [c.key for c in items] == sorted(c.key for c in items)  # the order etcd gives them
    core, actions = synced(items)
    assert actions == [] and core.pending == {} and core.queued_run is None


def test_a_started_run_holding_the_lock_is_alive_whatever_the_queue_says():
    """task-spooler's server was killed: its running job goes on, unlisted."""
    items = [put_entry("e1", 4), put_lock("r9", 5), put_run("r9", "started", 6, served=["e1"])]
    core, actions = synced(items, live=frozenset())
    assert actions == [] and not core.pending and core.busy


def test_entry_arriving_between_run_read_and_start_gets_a_new_run():
    core, _ = synced()
    core.handle(Changes((put_entry("e1", 11),)), 1.0)
    assert core.handle(Changes((put_entry("e2", 12),)), 1.5) == [Coalesce("e2", "r1", "refresh")]
    # the run read the inbox before e2 landed, so it claimed only e1
    actions = core.handle(Changes((put_lock("r1", 13), put_run("r1", "started", 14, served=["e1"]))), 2.0)
    assert actions[0] == RunBegan("r1", 1)
    assert [(type(a), a.waiting) for a in actions[1:]] == [(EnqueueRun, ("e2",))]


def test_changes_older_than_the_snapshot_are_ignored():
    core, _ = synced(revision=20)
    assert core.handle(Changes((put_entry("old", 15),)), 1.0) == []
    assert not core.pending


def test_duplicate_put_of_a_pending_entry_is_not_a_new_fire():
    core, _ = synced()
    core.handle(Changes((put_entry("e1", 11),)), 1.0)
    assert core.handle(Changes((put_entry("e1", 12),)), 1.0) == []


def test_bad_inbox_value_is_quarantined_and_the_rest_still_served():
    core, _ = synced()
    bad = Put(L.entry_key(HOST, "bad"), b"{not json", 11)
    actions = core.handle(Changes((bad, put_entry("e1", 12))), 1.0)
    assert isinstance(actions[0], Quarantine) and actions[0].key.endswith("/bad")
    assert "not JSON" in actions[0].reason
    assert isinstance(actions[1], EnqueueRun) and actions[1].waiting == ("e1",)


def test_bad_run_record_is_quarantined():
    core, _ = synced()
    bad = Put(L.run_key(HOST, "rx"), b'{"state": "dancing"}', 11)
    actions = core.handle(Changes((bad,)), 1.0)
    assert isinstance(actions[0], Quarantine) and "state" in actions[0].reason


def test_a_run_record_naming_another_host_is_quarantined():
    """A record under this host's key must be this host's: one naming another
    host (a copy, a hostile write) is moved aside, never trusted as a run."""
    core, _ = synced()
    record = RunRecord("r1", "elsewhere.example.com", "started", queued_at=1.0, served=("e1",))
    actions = core.handle(Changes((Put(L.run_key(HOST, "r1"), record.encode(), 11),)), 1.0)
    assert [type(a) for a in actions] == [Quarantine]
    assert "under another key" in actions[0].reason and core.runs == {}


def test_keys_of_other_shapes_are_ignored():
    core, _ = synced()
    other = Put(L.host_prefix(HOST) + "something/deeper/x", b"zzz", 11)
    assert core.handle(Changes((other,)), 1.0) == []


def test_snapshot_marks_runs_missing_from_the_queue_lost_and_requeues():
    items = [put_run("r9", "queued", 5), put_entry("e1", 6)]
    core, actions = synced(items, live=frozenset())
    assert isinstance(actions[0], MarkRunLost) and actions[0].record.state == "lost"
    assert "not in the queue" in actions[0].record.reason
    assert isinstance(actions[1], EnqueueRun)


def test_snapshot_keeps_a_queued_run_the_queue_still_holds():
    core, actions = synced([put_run("r9", "queued", 5), put_entry("e1", 6)], live=frozenset({"r9"}))
    assert actions == [] and core.queued_run == "r9"


def test_snapshot_without_queue_knowledge_declares_no_queued_run_lost():
    core, actions = synced([put_run("r8", "queued", 4), put_lock("r9", 5), put_run("r9", "started", 6)],
                           live=None)
    assert actions == [] and core.queued_run == "r8"


def test_started_run_that_died_is_lost_but_finished_runs_are_history():
    items = [put_run("r8", "finished", 4), put_run("r9", "started", 5)]
    core, actions = synced(items, live=frozenset())
    assert [(type(a), a.run_id) for a in actions] == [(MarkRunLost, "r9")]


def test_the_retry_delay_is_on_the_monotonic_clock_not_the_wall_clock():
    """Issue 21: a wall clock stepped back 10 s delayed the retry by 10 s."""
    core, _ = synced()
    core.handle(Changes((put_entry("e1", 11),)), 10.0, 500.0)
    core.handle(EnqueueFailed("r1", "tsp not found"), 10.0, 500.0)
    assert core.wake_at == 501.0
    retry = core.handle(Tick(), 0.5, 501.0)  # the wall clock went back 10 s meanwhile
    assert [(type(a), a.run_id) for a in retry] == [(EnqueueRun, "r2")]
    assert retry[0].record.queued_at == 0.5  # records keep the wall clock


def test_enqueue_failure_loses_the_run_and_retries_after_a_growing_delay():
    core, _ = synced()
    core.handle(Changes((put_entry("e1", 11),)), 10.0)
    actions = core.handle(EnqueueFailed("r1", "tsp not found"), 10.0)
    assert [type(a) for a in actions] == [MarkRunLost]
    assert core.wake_at == 11.0
    assert core.handle(Tick(), 10.5) == []
    retry = core.handle(Tick(), 11.0)
    assert [(type(a), a.run_id) for a in retry] == [(EnqueueRun, "r2")]
    core.handle(EnqueueFailed("r2", "again"), 11.0)
    assert core.wake_at == 13.0  # 1 s, then 2 s, ...


def test_a_run_getting_through_resets_the_retry_delay():
    core, _ = synced()
    core.handle(Changes((put_entry("e1", 11),)), 0.0)
    core.handle(EnqueueFailed("r1", "x"), 0.0)
    core.handle(Tick(), 1.0)
    core.handle(Changes((put_lock("r2", 12), put_run("r2", "started", 13, served=["e1"]))), 2.0)
    assert core.failures == 0


def test_deleting_a_run_record_forgets_it():
    core, _ = synced([put_run("r8", "finished", 4)])
    core.handle(Changes((Delete(L.run_key(HOST, "r8"), 11),)), 1.0)
    assert "r8" not in core.runs


def test_busy_while_runs_are_active():
    core, _ = synced()
    core.handle(Changes((put_entry("e1", 11),)), 0.0)
    assert core.busy
    core.handle(Changes((put_lock("r1", 12), put_run("r1", "started", 13, served=["e1"]))), 1.0)
    assert core.busy  # still running
    core.handle(Changes((Delete(L.entry_key(HOST, "e1"), 14), put_run("r1", "finished", 14, served=["e1"]))),
                2.0)
    assert not core.busy


def test_our_own_lost_record_does_not_reset_the_retry_delay():
    core, _ = synced()
    core.handle(Changes((put_entry("e1", 11),)), 0.0)
    (lost,) = core.handle(EnqueueFailed("r1", "tsp down"), 0.0)
    core.handle(Changes((Put(L.run_key(HOST, "r1"), lost.record.encode(), 12),)), 0.0)
    (retry,) = core.handle(Tick(), 1.0)
    core.handle(EnqueueFailed(retry.run_id, "tsp down"), 1.0)
    assert core.retry_at == 3.0  # 1 s, then 2 s: the lost record is not a run getting through


def test_values_are_parsed_once_per_revision(monkeypatch):
    import trigger.core as core_module

    calls = []
    real = core_module.parse_entry
    monkeypatch.setattr(core_module, "parse_entry", lambda v: calls.append(v) or real(v))
    items = [put_entry("e1", 3)]
    core, _ = synced(items, live=frozenset({"r1"}))
    core.handle(Snapshot(tuple(kv(c) for c in items), 12, frozenset({"r1"})), 1.0)
    assert len(calls) == 1
    core.handle(Snapshot((kv(Put(L.entry_key(HOST, "e1"), entry("e1").encode(), 13)),), 13, None), 2.0)
    assert len(calls) == 2  # a new revision of the key is parsed again


# -- what the core reports for logs and metrics ------------------------------------


def test_enqueue_names_the_triggers_of_the_fires_it_serves():
    core, _ = synced()
    (run,) = core.handle(Changes((put_entry("e1", 11, "deploy web"), put_entry("e2", 12, "lb"),
                                  put_entry("e3", 13, "lb"))), 1.0)
    assert run.triggers == ("deploy web", "lb")
    assert "fire(s) of 'deploy web', 'lb'" in run.describe()


def test_a_run_start_and_finish_seen_by_the_watch_are_reported():
    core, _ = synced()
    core.handle(Changes((put_entry("e1", 11),)), 1.0)
    assert core.handle(Changes((put_run("r1", "queued", 12),)), 1.0) == []  # our own write
    started = put_run("r1", "started", 13, served=["e1"], started_at=2.0)
    assert core.handle(Changes((put_lock("r1", 13), started)), 2.0) == [RunBegan("r1", 1)]
    finished = put_run("r1", "finished", 14, served=["e1"], started_at=2.0, finished_at=5.5, exit_code=2)
    (report,) = core.handle(Changes((finished,)), 6.0)
    assert report == RunEnded("r1", 2, 3.5, 5.5)
    assert report.describe() == "run r1 finished: exit 2 in 3.5s"
    # the same record again (a re-put, a re-read) is not a second finish
    assert core.handle(Changes((put_run("r1", "finished", 15, served=["e1"], exit_code=2),)), 7.0) == []


def test_a_run_seen_only_finished_reports_its_start_too():
    core, _ = synced()
    finished = put_run("r7", "finished", 11, exit_code=1)
    assert core.handle(Changes((finished,)), 1.0) == [RunBegan("r7", 0), RunEnded("r7", 1, None, None)]


def test_snapshots_report_no_run_history():
    core, actions = synced([put_run("r8", "finished", 4, exit_code=0)], live=frozenset())
    assert actions == []


def test_fires_received_are_counted_once():
    core, _ = synced([put_entry("e1", 3)], live=frozenset({"r9"}))
    assert core.fires_received == 1
    core.handle(Changes((put_entry("e2", 11), put_entry("e2", 12))), 1.0)
    assert core.fires_received == 2
    core.handle(Snapshot((kv(put_entry("e1", 3)), kv(put_entry("e2", 11))), 20, None), 2.0)
    assert core.fires_received == 2  # a re-read sees the same fires, not new ones


# -- run classes: noop and tags ---------------------------------------------------


def put_entry_with(eid, rev, **options):
    return Put(L.entry_key(HOST, eid), Entry(eid, "refresh", 1.0, **options).encode(), rev)


def test_an_entry_joins_only_a_run_of_its_own_options():
    from trigger.core import can_join, run_class

    normal, noop = Entry("e1", "t", 1.0), Entry("e2", "t", 1.0, noop=True)
    tagged = Entry("e3", "t", 1.0, noop=True, tags=("a", "b"))
    assert run_class([noop, normal]) == (True, ()) and run_class([]) is None
    assert can_join(normal, (False, ())) and not can_join(normal, (True, ()))
    assert can_join(noop, (True, ())) and not can_join(noop, (False, ()))
    assert not can_join(tagged, (True, ())) and can_join(tagged, (True, ("a", "b")))
    # the limit rule lives in the same place: a limited entry needs its slot
    limited = Entry("e4", "t", 1.0, max_concurrent=2)
    assert can_join(limited, (False, ()), None) and can_join(limited, (False, ()), {"t": 2})
    assert not can_join(limited, (False, ()), {"other": 1})


def test_the_queued_run_serves_the_oldest_entry_s_class_and_the_others_wait_for_the_next():
    core, actions = synced([put_entry_with("e1", 3, noop=True), put_entry("e2", 4),
                            put_entry_with("e3", 5, noop=True)])
    assert [a.waiting for a in actions] == [("e1", "e3")]  # the noop run: the normal fire waits
    core.handle(Changes((put_run("r1", "queued", 11),)), 1.0)
    arriving = core.handle(Changes((put_entry("e4", 12), put_entry_with("e5", 13, noop=True))), 1.0)
    assert arriving == [Coalesce("e5", "r1", "refresh")]  # only the noop fire joins it
    start = (put_lock("r1", 14), put_run("r1", "started", 15, served=["e1", "e3", "e5"]))
    actions = core.handle(Changes(start), 2.0)
    assert [type(a) for a in actions] == [RunBegan, EnqueueRun]
    assert actions[1].waiting == ("e2", "e4")  # the normal fires get the next run, together
