"""Finding each host's run that served a fire, in the in-memory store."""

import threading

from trigger.fire import Lineage, fire
from trigger.layout import Layout
from trigger.results import history, list_runs, result_of, status, wait_for_fire
from trigger.runner import finish_run, start_run
from trigger.store.memory import MemoryStore

L = Layout()


def test_result_of_each_state():
    store = MemoryStore()
    fire(store, L, "t", ["h"], Lineage(), "o")
    started = start_run(store, L, "h", "r1", 10.0)
    assert result_of("h", None).state == "waiting"
    assert result_of("h", started).state == "running"
    done = finish_run(store, L, started, 2, 12.5)
    r = result_of("h", done)
    assert (r.state, r.exit_code, r.duration) == ("ok", 2, 2.5)
    assert result_of("h", finish_run(store, L, started, 1, 13.0)).state == "failed"


def test_wait_for_fire_follows_runs_by_event_id():
    store = MemoryStore()
    _, before = store.get_prefix("/x")
    entry = fire(store, L, "t", ["a", "b"], Lineage(), "o")
    results = {}

    def waiter():
        results.update(wait_for_fire(store, L, entry.id, ["a", "b"], before, timeout=5))

    thread = threading.Thread(target=waiter)
    thread.start()
    other = fire(store, L, "u", ["a"], Lineage(), "o")  # noqa: F841  (served by the same run)
    finish_run(store, L, start_run(store, L, "a", "ra", 1.0), 0, 2.0)
    finish_run(store, L, start_run(store, L, "b", "rb", 1.0), 6, 3.0)
    thread.join(5)
    assert {h: (r.state, r.exit_code) for h, r in results.items()} == {"a": ("ok", 0), "b": ("failed", 6)}


def test_wait_for_fire_times_out_with_waiting_hosts():
    store = MemoryStore()
    entry = fire(store, L, "t", ["a"], Lineage(), "o")
    assert wait_for_fire(store, L, entry.id, ["a"], store.revision, timeout=0.1)["a"].state == "waiting"


def test_history_and_status():
    store = MemoryStore()
    entry = fire(store, L, "deploy", ["a", "b"], Lineage(), "o", retention=60)
    finish_run(store, L, start_run(store, L, "a", "ra", 1.0), 0, 2.0)
    (h,) = history(store, L)
    assert h.event_id == entry.id and h.trigger == "deploy"
    assert [(r.host, r.state) for r in h.results] == [("a", "ok"), ("b", "waiting")]
    store.put(L.entry_key("b", "junk"), b"nope")
    by_host = {s.host: s for s in status(store, L)}
    assert by_host["a"].last.exit_code == 0 and by_host["a"].pending == 0
    assert by_host["b"].pending == 1 and by_host["b"].quarantined == 1 and not by_host["b"].alive


def test_history_skips_records_that_are_not_fires():
    store = MemoryStore()
    fire(store, L, "deploy", ["a"], Lineage(), "o", retention=60)
    for junk in (b"[]", b'{"id": "x", "trigger": "t", "hosts": ["a"], "fired_at": "soon"}',
                 b'{"id": 1}', b'{"id": "y", "trigger": "t", "hosts": ["a b"], "fired_at": 1}', b"\xff"):
        store.put(L.fire_key(f"junk{len(junk)}"), junk)
    assert [h.trigger for h in history(store, L)] == ["deploy"]


def test_list_runs_finds_active_and_finished_runs_of_one_host_or_all():
    store = MemoryStore()
    fire(store, L, "t", ["a", "b"], Lineage(), "o")
    finish_run(store, L, start_run(store, L, "a", "ra", 1.0), 0, 2.0)
    start_run(store, L, "b", "rb", 1.0)
    store.put(L.done_key("a", "forged"), b'{"not": "a run"}')
    runs, revision = list_runs(store, L, "a")
    assert [(r.run_id, r.state) for r in runs] == [("ra", "finished")] and revision == store.revision
    assert sorted((r.run_id, r.state) for r in list_runs(store, L)[0]) == [("ra", "finished"), ("rb", "started")]
    assert {s.host: s.last.run_id if s.last else None for s in status(store, L)} == {"a": "ra", "b": None}


def test_history_judges_by_the_ok_codes_the_fire_was_made_with():
    store = MemoryStore()
    entry = fire(store, L, "deploy", ["a"], Lineage(), "o", retention=60, ok_codes=(0, 1))
    finish_run(store, L, start_run(store, L, "a", "ra", 1.0), 1, 2.0)
    (h,) = history(store, L)
    assert h.ok_codes == (0, 1) and [r.state for r in h.results] == ["ok"]
    (strict,) = history(store, L, ok_codes=(0,))  # an explicit --ok-codes still wins
    assert [r.state for r in strict.results] == ["failed"]
    (one,) = history(store, L, event_id=entry.id)
    assert one.event_id == entry.id and one.results[0].run_id == "ra"
    assert history(store, L, event_id="nosuch") == []


def test_a_fire_record_with_bad_ok_codes_is_not_a_fire():
    store = MemoryStore()
    for i, codes in enumerate(("[]", '"0,2"', "[true]", "[0.5]")):
        store.put(L.fire_key(f"bad{i}"), f'{{"id": "x{i}", "trigger": "t", "hosts": ["a"], "fired_at": 1,'
                  f' "ok_codes": {codes}}}'.encode())
    assert history(store, L) == []


def test_hosts_without_a_watcher_and_the_counts():
    from trigger.results import HostResult, counts, without_watcher

    results = {"a": HostResult("a", "waiting"), "b": HostResult("b", "waiting"), "c": HostResult("c", "ok", 0)}
    marked = without_watcher(results, {"b", "c"})
    assert [marked[h].state for h in "abc"] == ["waiting", "no watcher", "ok"]  # a result stays
    assert counts(marked.values()) == {"ok": 1, "failed": 0, "lost": 0, "running": 0, "waiting": 1,
                                       "no watcher": 1, "refused option": 0}


def test_wait_reattaching_reads_what_is_done_and_reports_each_change():
    store = MemoryStore()
    entry = fire(store, L, "t", ["a", "b"], Lineage(), "o")
    finish_run(store, L, start_run(store, L, "a", "ra", 1.0), 0, 2.0)  # before anyone waits
    seen = []

    def on_change(results):
        seen.append({h: r.state for h, r in results.items()})
        if len(seen) == 1:  # the run of b starts and ends while we wait
            threading.Thread(target=lambda: finish_run(
                store, L, start_run(store, L, "b", "rb", 3.0), 2, 4.0)).start()

    results = wait_for_fire(store, L, entry.id, ["a", "b"], None, timeout=5, on_change=on_change)
    assert seen[0] == {"a": "ok", "b": "waiting"}
    assert seen[-1] == {"a": "ok", "b": "ok"} and results["b"].exit_code == 2
    assert results["a"].run_id == "ra" and results["a"].started_at == 1.0 and results["a"].finished_at == 2.0
