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
    assert counts(marked.values()) == {"ok": 1, "failed": 0, "refused": 0, "lost": 0, "running": 0,
                                       "waiting": 1, "no watcher": 1}


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


# -- hosts without a watcher, refused fires, event ids -------------------------------------------


def register_watcher(store, host: str) -> None:
    from trigger.coordination import Member, register

    register(store, L, Member(host, (), 1.0), store.lease_grant(10))


def test_a_host_without_a_watcher_ends_the_wait_after_the_grace_not_the_timeout():
    import time

    store = MemoryStore()
    register_watcher(store, "a")
    entry = fire(store, L, "t", ["a", "ghost"], Lineage(), "o")
    finish_run(store, L, start_run(store, L, "a", "ra", 1.0), 0, 2.0)
    began = time.monotonic()
    results = wait_for_fire(store, L, entry.id, ["a", "ghost"], None, timeout=60, absent_grace=0.3,
                            unwatched=["ghost"])
    assert {h: r.state for h, r in results.items()} == {"a": "ok", "ghost": "no watcher"}
    assert 0.3 <= time.monotonic() - began < 5


def test_a_watcher_that_comes_back_within_the_grace_is_waited_for():
    store = MemoryStore()
    entry = fire(store, L, "t", ["b"], Lineage(), "o")

    def restart_and_run(results):
        if results["b"].state == "waiting" and not store.get(L.member_key("b")):
            def later():
                register_watcher(store, "b")  # back before the grace ends
                time.sleep(0.6)  # its run ends after the grace would have
                finish_run(store, L, start_run(store, L, "b", "rb", 1.0), 0, 2.0)
            threading.Thread(target=later).start()

    import time

    results = wait_for_fire(store, L, entry.id, ["b"], None, timeout=10, absent_grace=0.4,
                            unwatched=["b"], on_change=restart_and_run)
    assert results["b"].state == "ok"
    # without the grace (--wait-for-absent) the same host is waited for until the timeout
    other = fire(store, L, "t", ["c"], Lineage(), "o")
    assert wait_for_fire(store, L, other.id, ["c"], None, timeout=0.3, unwatched=["c"])["c"].state == "waiting"


def test_history_shows_a_refused_fire_with_its_chain_and_the_run_it_stopped_as_refused():
    from trigger.fire import LoopRefused

    store = MemoryStore()
    first = fire(store, L, "loop", ["b"], Lineage(), "a", retention=60, now=100.0)
    run = start_run(store, L, "b", "rb", 101.0)
    try:  # what the run on b fires, above its ttl
        fire(store, L, "loop", ["a"], Lineage(hop=1, chain=("a",)), "b", ttl=1, now=102.0, event_id="e-refused")
    except LoopRefused:
        pass
    finish_run(store, L, run, 3, 103.0)  # the run exits with the refusal's code
    refused, fired = history(store, L)
    assert (refused.event_id, refused.chain, [r.state for r in refused.results]) == \
        ("e-refused", ("a", "b"), ["refused"])
    assert "hop 2 > ttl 1" in refused.refused and refused.origin == "b"
    assert fired.event_id == first.id and [r.state for r in fired.results] == ["refused"]
    (one,) = history(store, L, event_id="e-refused")
    assert one.refused and one.chain == ("a", "b")


def test_a_failed_run_without_a_refusal_in_it_stays_failed():
    from trigger.fire import LoopRefused

    store = MemoryStore()
    fire(store, L, "t", ["b"], Lineage(), "a", retention=60, now=100.0)
    finish_run(store, L, start_run(store, L, "b", "rb", 101.0), 1, 102.0)
    try:  # b refused a fire after its run ended
        fire(store, L, "t", ["a"], Lineage(hop=1), "b", ttl=1, now=110.0)
    except LoopRefused:
        pass
    assert [r.state for r in history(store, L)[1].results] == ["failed"]


def test_kept_event_ids_newest_first_refused_on_request():
    from trigger.fire import LoopRefused
    from trigger.results import kept_event_ids

    store = MemoryStore()
    old = fire(store, L, "t", ["a"], Lineage(), "o", retention=60, now=100.0)
    new = fire(store, L, "t", ["a"], Lineage(), "o", retention=60, now=200.0)
    fire(store, L, "t", ["a"], Lineage(), "o", retention=0, now=300.0)  # not kept
    try:
        fire(store, L, "t", ["a"], Lineage(hop=5), "o", ttl=1, now=150.0, event_id="r1")
    except LoopRefused:
        pass
    assert kept_event_ids(store, L) == [new.id, old.id]
    assert kept_event_ids(store, L, with_refused=True) == [new.id, "r1", old.id]
