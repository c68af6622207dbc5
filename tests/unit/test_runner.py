"""A run's store steps: the run lock, the claim, the finish, the give-back."""

import os

import pytest

from trigger.core import can_join
from trigger.fire import Lineage, fire
from trigger.layout import Layout
from trigger.records import MAX_CLAIM_BYTES, parse_lock, parse_run
from trigger import runner
from trigger.runner import RunRefused, execution_of, finish_run, give_back, start_run, take_run_lock
from trigger.store.memory import MemoryStore

L = Layout()


def inbox(store, host="h"):
    items, _ = store.get_prefix(L.host_prefix(host))
    return [kv.key.rsplit("/", 1)[-1] for kv in items if L.classify(host, kv.key)[0] == "entry"]


def test_start_claims_every_entry_and_carries_the_highest_hop_but_removes_none():
    store = MemoryStore()
    a = fire(store, L, "t", ["h"], Lineage(), "x")
    b = fire(store, L, "t", ["h"], Lineage(2, ("p", "q")), "r")
    record = start_run(store, L, "h", "r1", 5.0)
    assert sorted(record.served) == sorted([a.id, b.id])
    assert sorted(inbox(store)) == sorted([a.id, b.id])  # they go when the command ran to its end
    assert (record.hop, record.chain) == (3, ("p", "q", "r"))
    assert parse_run(store.get(L.run_key("h", "r1")).value) == record


def test_a_retried_start_returns_the_claim_an_earlier_try_wrote():
    """The first try was applied but its answer lost: the retry must not
    write a record with another claim (or with hop 0)."""
    store = MemoryStore()
    fire(store, L, "t", ["h"], Lineage(4, ("a",)), "b", event_id="e1")
    first = start_run(store, L, "h", "r1", 1.0)
    fire(store, L, "t", ["h"], Lineage(), "c", event_id="e2")
    again = start_run(store, L, "h", "r1", 2.0)
    assert again == first and again.served == ("e1",) and again.hop == 5


def test_finish_removes_the_claimed_entries_in_batches_and_the_record_comes_with_the_last():
    store = MemoryStore()
    for i in range(300):
        fire(store, L, "t", ["h"], Lineage(), "x", event_id=f"e{i:04d}")
    record = start_run(store, L, "h", "r1", 1.0)
    fire(store, L, "t", ["h"], Lineage(), "x", event_id="late")  # came during the run
    before = store.get_prefix("/")[1]
    lease = store.lease_grant(60)
    done = finish_run(store, L, record, 2, 3.0, lease)
    assert inbox(store) == ["late"]
    assert store.get_prefix("/")[1] - before == 3  # 300 deletions: 128 + 128 + (44 + the record's move)
    kv = store.get(L.done_key("h", "r1"))
    assert kv.lease == lease and parse_run(kv.value) == done and done.exit_code == 2
    assert kv.mod_revision == store.get_prefix("/")[1]  # the record is the last write


def test_a_huge_inbox_is_claimed_in_batches_that_fit_a_request():
    store = MemoryStore()
    for i in range(14_000):
        fire(store, L, "t", ["h"], Lineage(), "x", event_id=f"{i:06d}-" + "x" * 110)
    record = start_run(store, L, "h", "r1", 1.0)
    assert 0 < len(record.served) < 14_000
    assert len(record.encode()) <= MAX_CLAIM_BYTES + 1024
    assert list(record.served) == sorted(record.served)  # the oldest first


def test_a_run_claims_at_most_max_served_entries_and_the_rest_wait(monkeypatch):
    """The count limit alone (short ids stay far below the size limit): 3 here, 20,000 for real."""
    monkeypatch.setattr(runner, "MAX_SERVED", 3)
    store = MemoryStore()
    for i in range(5):
        fire(store, L, "t", ["h"], Lineage(), "x", event_id=f"e{i}")
    record = start_run(store, L, "h", "r1", 1.0)
    assert record.served == ("e0", "e1", "e2")  # the oldest first
    finish_run(store, L, record, 0, 2.0)
    assert inbox(store) == ["e3", "e4"]  # for the next run


def test_a_run_that_gives_its_fires_back_leaves_them_in_the_inbox():
    store = MemoryStore()
    fire(store, L, "t", ["h"], Lineage(), "x", event_id="e1")
    record = start_run(store, L, "h", "r1", 1.0)
    lost = give_back(store, L, record, "lease not renewed", 2.0, 143)
    assert inbox(store) == ["e1"] and lost.state == "lost" and lost.exit_code == 143
    assert parse_run(store.get(L.run_key("h", "r1")).value) == lost


def test_the_run_lock_admits_one_run_and_knows_its_own_holder():
    store = MemoryStore()
    lease = store.lease_grant(10)
    assert take_run_lock(store, L, "h", "r1", lease) is None
    assert take_run_lock(store, L, "h", "r1", lease) is None  # a retried try: still ours
    holder, since = take_run_lock(store, L, "h", "r2", store.lease_grant(10))
    assert holder == "r1" and since == store.get(L.run_lock_key("h")).mod_revision + 1
    store.lease_revoke(lease)
    assert take_run_lock(store, L, "h", "r2", store.lease_grant(10)) is None


def test_limited_entries_wait_unless_their_slot_is_held():
    store = MemoryStore()
    free = fire(store, L, "free", ["h"], Lineage(), "x")
    limited = fire(store, L, "rolling", ["h"], Lineage(), "x", max_concurrent=1)
    before = store.revision
    assert start_run(store, L, "h", "r1", 1.0) == {"rolling": 1}  # the slots first: nothing claimed
    assert store.revision == before
    first = start_run(store, L, "h", "r1", 1.0, held={})  # the slot was not taken
    assert first.served == (free.id,)
    finish_run(store, L, first, 0, 1.5)
    assert inbox(store) == [limited.id]
    second = start_run(store, L, "h", "r2", 2.0, held={"rolling": 1})
    assert second.served == (limited.id,) and second.limits == (("rolling", 1),)


def test_a_lock_left_by_a_finished_run_is_taken_over():
    """Its run finished but could not revoke its lease (etcd was away): the
    next run need not wait out the lease."""
    store = MemoryStore()
    fire(store, L, "t", ["h"], Lineage(), "x", event_id="e1")
    assert take_run_lock(store, L, "h", "r1", store.lease_grant(30)) is None
    finish_run(store, L, start_run(store, L, "h", "r1", 1.0), 0, 2.0)
    assert take_run_lock(store, L, "h", "r2", store.lease_grant(30)) == ("", 0)  # stale: removed
    assert take_run_lock(store, L, "h", "r2", store.lease_grant(30)) is None


def test_finish_moves_the_record_out_of_the_hosts_prefix_onto_the_retention_lease():
    store = MemoryStore()
    fire(store, L, "t", ["h"], Lineage(), "x")
    started = start_run(store, L, "h", "r1", 1.0)
    lease = store.lease_grant(60)
    seen = []
    store.watch_prefix(L.prefix + "/", store.revision + 1, seen.extend)
    done = finish_run(store, L, started, 2, 3.0, lease)
    kv = store.get(L.done_key("h", "r1"))
    assert kv.lease == lease and parse_run(kv.value) == done and done.exit_code == 2
    assert store.get(L.run_key("h", "r1")) is None
    assert store.get_prefix(L.host_prefix("h"))[0] == []
    # One transaction with the served entry's removal: the record is never in
    # both places, nor in neither.
    assert {c.revision for c in seen} == {kv.mod_revision} and len(seen) == 3


def test_finishing_again_is_harmless():
    store = MemoryStore()
    started = start_run(store, L, "h", "r1", 1.0)
    finish_run(store, L, started, 0, 2.0)
    again = finish_run(store, L, started, 0, 2.0)  # a retry after a write that timed out
    assert parse_run(store.get(L.done_key("h", "r1")).value) == again


def test_a_run_start_reads_only_the_inbox_and_active_runs():
    """10,000 finished runs kept do not make the next run's reads longer."""
    store = MemoryStore()
    for i in range(10_000):
        store.put(L.done_key("h", f"old{i:05d}"), b"{}")
    fire(store, L, "t", ["h"], Lineage(), "x")
    reads = []
    get_prefix = store.get_prefix
    store.get_prefix = lambda prefix: reads.append(get_prefix(prefix)[0]) or get_prefix(prefix)
    record = start_run(store, L, "h", "r1", 1.0)
    assert len(record.served) == 1 and [len(items) for items in reads] == [1]  # one read, one entry


def test_a_run_claims_only_the_class_of_the_oldest_entry():
    """A noop run never serves a normal fire; fires coalesce only with fires of
    the same options; the others stay for the next run."""
    store = MemoryStore()
    fire(store, L, "t", ["h"], Lineage(), "x", event_id="e1", noop=True, tags=("b", "a"))
    fire(store, L, "t", ["h"], Lineage(), "x", event_id="e2")
    fire(store, L, "t", ["h"], Lineage(), "x", event_id="e3", noop=True)
    fire(store, L, "t", ["h"], Lineage(), "x", event_id="e4", noop=True, tags=("a", "b"))
    first = start_run(store, L, "h", "r1", 1.0)
    assert first.served == ("e1", "e4") and (first.noop, first.tags) == (True, ("a", "b"))
    finish_run(store, L, first, 0, 2.0)
    second = start_run(store, L, "h", "r2", 3.0)
    assert second.served == ("e2",) and (second.noop, second.tags) == (False, ())
    finish_run(store, L, second, 0, 4.0)
    assert start_run(store, L, "h", "r3", 5.0).served == ("e3",)


def test_the_finished_record_keeps_the_output_s_tail_and_fits_a_request():
    from trigger.records import OUTPUT_TAIL_BYTES

    store = MemoryStore()
    fire(store, L, "t", ["h"], Lineage(), "x", event_id="e1")
    record = start_run(store, L, "h", "r1", 1.0)
    done = finish_run(store, L, record, 1, 2.0, output="x" * 10000 + "the end\n")
    assert len(done.output) == OUTPUT_TAIL_BYTES and done.output.endswith("the end\n")
    assert parse_run(store.get(L.done_key("h", "r1")).value) == done
    # the worst case: the largest claim, and a tail of control characters JSON escapes six-fold
    ids = tuple(f"{i:016x}-{i:08x}" for i in range(MAX_CLAIM_BYTES // 28))
    worst = done._replace(served=ids, output="\x01" * OUTPUT_TAIL_BYTES).encode()
    assert len(worst) < 1024 * 1024 < 1.5 * 1024 * 1024  # MAX_RUN_BYTES, etcd's request limit
    assert parse_run(worst).output == "\x01" * OUTPUT_TAIL_BYTES


def test_the_command_s_output_is_passed_on_whole_and_its_tail_kept(tmp_path):
    """Teed: everything still reaches `out` (task-spooler's file), stderr too;
    the last 4 KiB stay for the record."""
    import sys

    from trigger.driver import Command
    from trigger.records import OUTPUT_TAIL_BYTES, RunRecord
    from trigger.runner import start_command

    script = ("import sys\nfor i in range(1000): print(f'line {i}')\n"
              "print('oops', file=sys.stderr)\nsys.exit(3)\n")
    out_path = tmp_path / "out"
    with open(out_path, "wb") as out:
        process = start_command([sys.executable, "-c", script], RunRecord("r1", "h", "started"), out.fileno())
        code, tail, left = Command().wait(process)
    assert left == "" and code == 3 and tail.endswith("line 999\noops\n") and len(tail) == OUTPUT_TAIL_BYTES
    whole = out_path.read_text()
    assert whole.startswith("line 0\n") and whole.endswith("oops\n") and whole.count("\n") == 1001


LINGERING = "import subprocess, sys\nprint(subprocess.Popen(['sleep', '30']).pid)\nprint('bye')\n"
DAEMON = ("import os, sys, time\nif os.fork(): print(os.getpid() + 1); sys.exit(0)\n"  # a classic daemon:
          "os.setsid()\nif os.fork(): os._exit(0)\nos.close(1); os.close(2); time.sleep(30)\n")  # out of the group


@pytest.mark.parametrize("script, name", [(LINGERING, "sleep"), (DAEMON, "python")],
                         ids=["background child", "daemon"])
def test_what_the_command_leaves_behind_is_stopped_with_its_run_and_named(tmp_path, script, name):
    """A run is one execution: a child left running, even one that left the command's
    process group and session (a daemon), ends with the run, and the run says what it was."""
    import sys

    from trigger.driver import Command
    from trigger.records import RunRecord
    from trigger.runner import start_command

    with open(tmp_path / "out", "wb") as out:
        process = start_command([sys.executable, "-c", script], RunRecord("r2", "h", "started"), out.fileno())
        code, tail, left = Command(grace=1.0).wait(process)
    # 1 process; 2 when the daemon was caught between its forks
    assert code == 0 and "behind (pid " in left and f"({name}" in left, left
    assert [pid for pid in _alive() if b"TRIGGER_RUN_ID=r2" in _environ(pid)] == []


def _alive() -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
                pids.append(int(pid))
        except (OSError, IndexError):
            pass  # gone meanwhile
    return pids


def _environ(pid: int) -> list[bytes]:
    try:
        return open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return []


def test_an_orphan_of_another_run_or_of_nobody_s_run_is_left_alone(tmp_path):
    """Only processes carrying the run's id are its: this process reaps others too."""
    import subprocess
    import sys

    from trigger.driver import Command
    from trigger.records import RunRecord
    from trigger.runner import start_command

    other = subprocess.Popen(["sleep", "30"])
    try:
        with open(tmp_path / "out", "wb") as out:
            process = start_command([sys.executable, "-c", "print('hi')"], RunRecord("r3", "h", "started"),
                                    out.fileno())
            assert Command().wait(process)[2] == ""
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def _queued(store, run_id="r1", host="h"):
    from trigger.records import RunRecord

    store.put(L.run_key(host, run_id), RunRecord(run_id, host, "queued", queued_at=0.5).encode())


def test_a_second_execution_of_a_started_run_is_refused_and_the_first_may_retry():
    store = MemoryStore()
    fire(store, L, "t", ["h"], Lineage(), "x", event_id="e1")
    _queued(store)
    first = start_run(store, L, "h", "r1", 1.0, execution="a1")
    assert first.execution == "a1" and first.served == ("e1",)
    assert start_run(store, L, "h", "r1", 1.5, execution="a1") == first  # a retried try of the same one
    refused = start_run(store, L, "h", "r1", 2.0, execution="b2")
    assert isinstance(refused, RunRefused) and "a1 started it" in refused.describe()
    assert parse_run(store.get(L.run_key("h", "r1")).value) == first  # untouched


def test_a_finished_or_lost_run_is_never_started_again():
    store = MemoryStore()
    fire(store, L, "t", ["h"], Lineage(), "x", event_id="e1")
    _queued(store)
    finish_run(store, L, start_run(store, L, "h", "r1", 1.0, execution="a1"), 0, 2.0)
    fire(store, L, "t", ["h"], Lineage(), "x", event_id="e2")
    again = start_run(store, L, "h", "r1", 3.0, execution="b2")
    assert isinstance(again, RunRefused) and "finished already" in again.reason
    assert inbox(store) == ["e2"]  # left for a run of its own
    _queued(store, "r2")
    give_back(store, L, start_run(store, L, "h", "r2", 4.0, execution="c3"), "stopped", 5.0, 143)
    lost = start_run(store, L, "h", "r2", 6.0, execution="d4")
    assert isinstance(lost, RunRefused) and lost.reason.startswith("it is lost")


def test_the_run_lock_names_the_execution_and_another_execution_of_the_run_waits():
    store = MemoryStore()
    first, second = store.lease_grant(10), store.lease_grant(10)
    assert take_run_lock(store, L, "h", "r1", first) is None
    assert parse_lock(store.get(L.run_lock_key("h")).value) == ("r1", execution_of(first))
    holder, _ = take_run_lock(store, L, "h", "r1", second)  # the same run id, killed and started anew
    assert holder == f"r1 (another execution of it, {execution_of(first)})"


def test_a_slot_serves_only_entries_of_its_own_limit():
    """A slot ranked under a limit of 2 must not serve a serial fire of the same trigger."""
    store = MemoryStore()
    pair = fire(store, L, "deploy", ["h"], Lineage(), "x", max_concurrent=2, event_id="e1")
    serial = fire(store, L, "deploy", ["h"], Lineage(), "x", max_concurrent=1, event_id="e2")
    free = fire(store, L, "other", ["h"], Lineage(), "x", event_id="e3")
    record = start_run(store, L, "h", "r1", 1.0, held={"deploy": 2})
    assert record.served == (pair.id, free.id)
    assert can_join(serial, None, {"deploy": 1}) and not can_join(serial, None, {"deploy": 2})
    assert can_join(free, None, {}) and not can_join(pair, None, {})
