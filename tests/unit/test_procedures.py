"""The procedures without IO, run by both drivers: the same steps, the same records.

Each test runs one procedure of `trigger.procedures` on the real-time
driver (memory store, wall clock) and on the simulated one (the simulator's
etcd, SimPy time), and checks that both did the same thing. This is what
"one implementation" means: no driver adds or drops a step.
"""

from __future__ import annotations

import threading
import time

import pytest
import simpy

from simulator.driver import SimDriver
from simulator.network import Etcd
from tests.eventually import eventually
from trigger.coordination import Member, member_at, register
from trigger.driver import BOOT_ID, PID_NAMESPACE, RealDriver, process_alive, this_process
from simulator.scenario import Duration
from trigger.effects import Sleep, StopCommand
from trigger.fire import Lineage, fire
from trigger.layout import Layout
from trigger.core import WatcherCore
from trigger.policy import BEATS_PER_TTL, RUN, RunPolicy
from trigger.queue import QueueError
from trigger.procedures import EXIT_TEMPFAIL, HostTaken, Registration, RunFinished, RunLease, RunStarted, \
    SlotWaited, beat, claim_host, follow_inbox, keep_run_lease, triggered_run
from trigger.records import RunRecord, parse_run
from trigger.store.memory import MemoryStore

L = Layout()
HOST = "lb1.example.com"


def _fire_two(store):
    fire(store, L, "refresh", [HOST], Lineage(2, ("web1",)), "web1", now=1.0, event_id="e1")
    fire(store, L, "restart", [HOST], Lineage(), "web2", now=2.0, event_id="e2", max_concurrent=1)


def _on_real(procedure_of, store, exit_code=2):
    notes = []
    driver = RealDriver(store, execute=lambda record: exit_code, tell=notes.append)
    return driver.run(procedure_of()), notes


def _on_sim(procedure_of, prepare, exit_code=2, seconds=5.0):
    env = simpy.Environment()
    etcd = Etcd(env, L.prefix + "/hosts/", latency=0.002)
    conn = etcd.connect(HOST)
    prepare(conn)
    notes = []

    def execute(record):
        yield env.timeout(seconds)
        return exit_code

    driver = SimDriver(env, conn, notes.append, execute=execute)
    result = env.process(driver.run(procedure_of()))
    env.run(until=100)
    return result.value, notes, conn


def _kinds(notes):
    return [type(n.what).__name__ if not isinstance(n.what, str) else n.level for n in notes]


def test_a_triggered_run_takes_the_same_steps_and_writes_the_same_record_on_both_drivers():
    real_store = MemoryStore()
    _fire_two(real_store)
    procedure = lambda: triggered_run(L, HOST, "r1", retention=3600)  # noqa: E731
    real_code, real_notes = _on_real(procedure, real_store)
    sim_code, sim_notes, sim_store = _on_sim(procedure, _fire_two)

    assert real_code == sim_code == 2
    assert _kinds(real_notes) == _kinds(sim_notes) == ["SlotWaited", "RunStarted", "RunFinished"]
    records = [parse_run(s.get(L.done_key(HOST, "r1")).value) for s in (real_store, sim_store)]
    for record in records:
        assert record.state == "finished" and record.exit_code == 2
        assert record.served == ("e1", "e2") and record.hop == 3 and record.chain == ("web1", "web1")
        assert record.limits == (("restart", 1),)
    for store in (real_store, sim_store):
        assert store.get_prefix(L.host_prefix(HOST))[0] == []  # entries served, the record moved out
        assert store.get_prefix(L.slots_prefix("restart"))[0] == []  # the slot went back
        assert store.get(L.done_key(HOST, "r1")).lease != 0  # kept for the retention only


def test_a_run_that_cannot_record_its_start_runs_nothing_on_both_drivers():
    class Unreachable(MemoryStore):
        def get_prefix(self, prefix):
            from trigger.store.base import UnavailableError

            raise UnavailableError("no endpoint answered")

    ran = []
    notes = []
    real = RealDriver(Unreachable(), execute=ran.append, tell=notes.append)
    real._handlers = {**RealDriver._handlers, Sleep: lambda driver, effect: None}  # no real waits
    assert real.run(triggered_run(L, HOST, "r1")) == EXIT_TEMPFAIL
    assert ran == []
    assert [n.level for n in notes] == ["warning"] * 5 + ["error"]

    env = simpy.Environment()
    etcd = Etcd(env, L.prefix + "/hosts/", latency=0.002)
    conn = etcd.connect(HOST)
    conn.cut_off()
    sim_notes = []
    driver = SimDriver(env, conn, sim_notes.append, execute=lambda record: ran.append(record))
    result = env.process(driver.run(triggered_run(L, HOST, "r1")))
    env.run(until=result)
    assert result.value == EXIT_TEMPFAIL and ran == []
    assert [n.level for n in sim_notes] == [n.level for n in notes]
    assert env.now == 1 + 2 + 4 + 8 + 8  # the policy's waits between the five tries


def _lock_held_by_r0(revoke_later):
    """A fire waiting, the host's run lock held by run r0; `revoke_later(store, lease)` ends r0."""
    def prepare(store):
        fire(store, L, "refresh", [HOST], Lineage(), "web1", now=1.0, event_id="e1")
        lease = store.lease_grant(60)
        store.put(L.run_lock_key(HOST), b"r0", lease=lease)
        revoke_later(store, lease)
    return prepare


def test_a_run_waits_for_another_runs_lock_and_starts_once_it_goes_on_both_drivers():
    procedure = lambda: triggered_run(L, HOST, "r1")  # noqa: E731
    real_store = MemoryStore()
    _lock_held_by_r0(lambda store, lease: threading.Timer(0.3, store.lease_revoke, (lease,)).start())(real_store)
    t0 = time.monotonic()
    real_code, real_notes = _on_real(procedure, real_store)
    assert time.monotonic() - t0 >= 0.3  # it waited for r0's lock to go, not a poll's timeout

    def revoke_at_3(conn, lease):
        def later():
            yield conn.etcd.env.timeout(3.0)
            conn.lease_revoke(lease)
        conn.etcd.env.process(later())

    sim_code, sim_notes, sim_store = _on_sim(procedure, _lock_held_by_r0(revoke_at_3))
    assert real_code == sim_code == 2
    assert [n.what for n in real_notes][0] == [n.what for n in sim_notes][0] \
        == "r1 waits for run r0 to end (one run at a time)"
    assert _kinds(real_notes)[1:] == _kinds(sim_notes)[1:] == ["RunStarted", "RunFinished"]
    records = [parse_run(s.get(L.done_key(HOST, "r1")).value) for s in (real_store, sim_store)]
    # simulated: not before r0's lease went, and woken by its going (not by a 30 s timeout)
    assert 3.0 <= records[1].started_at < 4.0
    assert [r.served for r in records] == [("e1",), ("e1",)]


def _run_with_fault(fault, command_seconds=120.0):
    """A run on simulated time serving one fire, its command `command_seconds`
    long, `fault(env, conn)` running beside it. Returns (command's end, notes, store)."""
    env = simpy.Environment()
    conn = Etcd(env, L.prefix + "/hosts/", latency=0.002).connect(HOST)
    fire(conn, L, "refresh", [HOST], Lineage(), "web1", now=0.0, event_id="e1")
    command_ended = []

    def execute(record):
        try:
            yield env.timeout(command_seconds)
        except simpy.Interrupt:  # StopCommand: the command is killed
            pass
        command_ended.append(env.now)
        return 0

    notes = []
    driver = SimDriver(env, conn, notes.append, execute=execute)
    result = env.process(driver.run(triggered_run(L, HOST, "r1")))
    env.process(fault(env, conn))
    env.run(until=result)
    return command_ended[0], notes, conn


def _run_whose_lease_etcd_ends(at=5.0):
    """etcd ends the run's lease `at` s in, answering throughout (an operator's
    `etcdctl lease revoke`, a lease expired while the keeper was starved)."""
    def end_the_lease(env, conn):
        yield env.timeout(at)
        conn.lease_revoke(conn.get(L.run_lock_key(HOST)).lease)
    return _run_with_fault(end_the_lease)


def test_a_run_cut_off_from_etcd_stops_its_command_before_etcd_can_end_its_lease():
    """Renewals failing: etcd will end the lease (and give the lock to the
    next run) after its ttl, so the command stops before that."""
    def cut_off(env, conn):
        yield env.timeout(5)
        conn.cut_off()

    ended, _, _ = _run_with_fault(cut_off)
    assert RUN.stop_after() <= ended < RUN.lease_ttl  # renewed last at 0 s: stopped at 27 s


def test_a_run_whose_lease_etcd_ends_stops_its_command_at_the_next_renewal():
    """The lock went with the lease: the next run may start, so this one's
    command must not go on beside it, even though etcd still answers."""
    ended, _, _ = _run_whose_lease_etcd_ends(at=5.0)
    renewal = RUN.lease_ttl / BEATS_PER_TTL
    assert 5.0 < ended <= 5.0 + renewal + 1  # stopped at the first renewal that fails, not at its 120 s end


def test_a_run_whose_command_was_stopped_is_recorded_lost_and_its_fires_stay():
    """Stopped before its end, the run did not serve its fires: recorded
    lost (not finished), the entry stays in the inbox for the next run."""
    _, notes, store = _run_whose_lease_etcd_ends(at=5.0)
    record = parse_run(store.get(L.run_key(HOST, "r1")).value)
    assert record.state == "lost" and "command stopped" in record.reason
    assert store.get(L.done_key(HOST, "r1")) is None
    assert store.get(L.entry_key(HOST, "e1")) is not None
    assert _kinds(notes)[-2:] == ["warning", "RunGaveBack"]  # the keeper's warning, then the give-back


def test_a_membership_beat_registers_the_same_member_on_both_drivers():
    real_store = MemoryStore(clock=lambda: 50.0)
    reg = Registration(L, HOST, roles=("lb",), elections=("primary",), ttl=10)
    RealDriver(real_store, clock=lambda: 50.0).run(beat(reg))

    env = simpy.Environment(initial_time=50.0)
    etcd = Etcd(env, L.prefix + "/hosts/", latency=0.002)
    conn = etcd.connect(HOST)
    sim_reg = Registration(L, HOST, roles=("lb",), elections=("primary",), ttl=10)
    env.process(SimDriver(env, conn, lambda note: None).run(beat(sim_reg)))
    env.run(until=51)

    assert reg.registered == sim_reg.registered
    for store in (real_store, conn):
        keys = [kv.key for kv in store.get_prefix(L.prefix + "/")[0]]
        assert keys == [L.candidate_key("primary", HOST), L.member_key(HOST)]


def test_the_notes_of_a_run_tell_what_happened():
    record = parse_run(b'{"run_id":"r1","host":"h","state":"started","served":["e1","e2","e3","e4"],'
                       b'"hop":2,"started_at":1.0}')
    assert RunStarted(record).describe() == "r1 starts: serves e1, e2, e3 +1 (hop 2)"
    assert RunFinished(record, 1, False).describe() == "r1 finished (1) but could not be recorded"
    assert SlotWaited("r1", "lb", 2, 3.5).describe() == "r1 waited 3.5 s for a slot of 'lb' (2 at once)"


# -- one watcher per host ---------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_second_watcher_stands_by_until_the_first_ones_key_goes():
    clock = Clock()
    store = MemoryStore(clock=clock)
    first = Registration(L, HOST, ttl=10, process="4194999@elsewhere")  # no such pid here
    RealDriver(store, clock=clock).run(claim_host(first))
    second = Registration(L, HOST, ttl=10, process="2@elsewhere")
    told = []
    driver = RealDriver(store, clock=clock, tell=told.append)
    driver._handlers = {**RealDriver._handlers, Sleep: lambda d, e: time.sleep(0.01)}  # fast standby
    claimer = threading.Thread(target=driver.run, args=(claim_host(second),))
    claimer.start()
    eventually(lambda: told, 5, "the standby note")
    assert "standby" in told[0].what and second.lease is None
    clock.now += 11  # the first watcher died on another machine: its lease ends
    claimer.join(5)
    assert second.lease is not None and store.get(L.member_key(HOST)).lease == second.lease


def test_a_restarted_watcher_takes_over_its_dead_predecessors_key_at_once():
    store = MemoryStore()
    dead = Member(HOST, (), 1.0, (), f"4194999@{BOOT_ID}/{PID_NAMESPACE}")  # no such pid on this machine
    register(store, L, dead, store.lease_grant(10))
    reg = Registration(L, HOST, ttl=10, process="5@" + BOOT_ID)
    RealDriver(store).run(claim_host(reg))
    held = store.get(L.member_key(HOST))
    assert held.lease == reg.lease and b"5@" in held.value


def test_a_beat_finds_another_watcher_on_its_host_and_says_so():
    store = MemoryStore()
    reg = Registration(L, HOST, ttl=10, process="1@x")
    driver = RealDriver(store)
    driver.run(claim_host(reg))
    store.delete(L.member_key(HOST))  # someone removed our key: we register again within a TTL
    for _ in range(BEATS_PER_TTL - 1):
        driver.run(beat(reg))  # a refresh; the key is read once a TTL
    assert store.get(L.member_key(HOST)) is None
    driver.run(beat(reg))
    assert store.get(L.member_key(HOST)).lease == reg.lease
    store.lease_revoke(reg.lease)
    register(store, L, Member(HOST, (), 1.0, (), "2@y"), store.lease_grant(10))
    reg.lease = store.lease_grant(10)  # we still think we hold a live lease
    with pytest.raises(HostTaken):
        for _ in range(BEATS_PER_TTL):
            driver.run(beat(reg))


def test_a_run_asking_for_an_option_not_allowed_runs_nothing_and_says_why_on_both_drivers():
    """Bad input: `--tags` where the watcher allows only `--noop`. The fires
    are served (they would be refused again), the record says why."""
    from trigger.procedures import EXIT_OPTION_REFUSED

    def prepare(store):
        fire(store, L, "refresh", [HOST], Lineage(), "web1", now=1.0, event_id="e1", tags=("nginx",))

    real_store = MemoryStore()
    prepare(real_store)
    ran = []
    procedure = lambda: triggered_run(L, HOST, "r1", allowed=("noop",))  # noqa: E731
    driver = RealDriver(real_store, execute=lambda record: ran.append(record) or 0, tell=[].append)
    assert driver.run(procedure()) == EXIT_OPTION_REFUSED and ran == []
    sim_code, _, sim_store = _on_sim(procedure, prepare)
    assert sim_code == EXIT_OPTION_REFUSED
    for store in (real_store, sim_store):
        record = parse_run(store.get(L.done_key(HOST, "r1")).value)
        assert record.state == "finished" and record.exit_code is None and record.served == ("e1",)
        assert record.reason.startswith("refused option: this watcher does not allow --tags")
        assert store.get_prefix(L.host_prefix(HOST))[0] == []  # served: not refused again and again


def test_a_run_keeps_the_output_tail_its_driver_gives_back():
    store = MemoryStore()
    _fire_two(store)
    driver = RealDriver(store, execute=lambda record: (1, "Error: no such package\n"), tell=[].append)
    assert driver.run(triggered_run(L, HOST, "r1")) == 1
    record = parse_run(store.get(L.done_key(HOST, "r1")).value)
    assert (record.exit_code, record.output) == (1, "Error: no such package\n")


def test_a_second_execution_of_a_started_run_runs_nothing_on_both_drivers():
    """The run's first execution died with its command still going (or was
    only cut off): a new execution of the same run id waits for the lock,
    then finds the run started by another execution and runs nothing."""
    def started_elsewhere(store):
        fire(store, L, "refresh", [HOST], Lineage(), "web1", now=1.0, event_id="e1")
        store.put(L.run_key(HOST, "r1"), RunRecord("r1", HOST, "started", started_at=1.5, served=("e1",),
                                                   execution="dead1").encode())
    real_store = MemoryStore()
    started_elsewhere(real_store)
    ran = []
    notes = []
    real = RealDriver(real_store, execute=ran.append, tell=notes.append)
    assert real.run(triggered_run(L, HOST, "r1")) == EXIT_TEMPFAIL
    sim_code, sim_notes, sim_store = _on_sim(lambda: triggered_run(L, HOST, "r1"), started_elsewhere)
    assert sim_code == EXIT_TEMPFAIL and ran == []
    assert _kinds(notes) == _kinds(sim_notes) == ["RunRefused"]
    for store in (real_store, sim_store):
        assert parse_run(store.get(L.run_key(HOST, "r1")).value).execution == "dead1"  # untouched
        assert store.get(L.run_lock_key(HOST)) is None  # its lock went with its lease


SHORT_LEASE = RunPolicy(lease_ttl=4, stop_grace=0.2, stop_margin=0.4)  # stop_after(): 3.4 s


def test_a_lease_renewal_that_never_answers_stops_the_command_in_time_on_the_real_driver():
    """Every endpoint black-holed: a renewal blocks for good. The keeper
    gives each renewal only the time left, so it stops the command; a
    frozen wall clock (stepped back and held) changes nothing."""
    class BlackHole(MemoryStore):
        def lease_refresh(self, lease):
            threading.Event().wait()  # never answers

    store = BlackHole()
    lease = RunLease(store.lease_grant(SHORT_LEASE.lease_ttl), SHORT_LEASE.lease_ttl)
    notes, stops = [], []
    driver = RealDriver(store, clock=lambda: 0.0, tell=notes.append)
    driver._handlers = {**RealDriver._handlers, StopCommand: lambda d, effect: stops.append(d.monotonic())}
    began = time.monotonic()
    keeper = threading.Thread(target=driver.run, args=(keep_run_lease(lease, "r1", SHORT_LEASE),), daemon=True)
    keeper.start()
    keeper.join(60)  # a guard against a hang, not a bound on speed
    assert not keeper.is_alive(), "the keeper waited on a renewal that never answers"
    assert lease.expired and len(stops) == 1
    assert stops[0] - began >= SHORT_LEASE.stop_after()  # not before its time either


def test_a_lease_renewal_slower_than_the_time_left_stops_the_command_in_time_on_the_simulated_driver():
    env = simpy.Environment()
    etcd = Etcd(env, L.prefix + "/hosts/", latency=0.002)
    conn = etcd.connect(HOST)
    lease = RunLease(conn.lease_grant(SHORT_LEASE.lease_ttl), SHORT_LEASE.lease_ttl)
    conn.delay = (Duration("fixed", 1000.0), None)  # every call answered after 1000 s
    stops = []

    class Recording(SimDriver):
        __slots__ = ()
        _instant = {**SimDriver._instant, StopCommand: lambda d, effect: stops.append(env.now)}

    driver = Recording(env, conn, lambda note: None)
    env.process(driver.run(keep_run_lease(lease, "r1", SHORT_LEASE)))
    env.run(until=100)
    assert lease.expired and stops == [pytest.approx(SHORT_LEASE.stop_after())]


def test_a_watcher_of_another_pid_namespace_is_never_judged_dead_and_the_newcomer_stands_by():
    """Issue 21, failure 7: a watcher under `unshare -p` saw pid 1 of its own namespace
    where the first watcher's pid was, called it dead and took the host."""
    store = MemoryStore()
    other = Member(HOST, (), 1.0, (), f"4194999@{BOOT_ID}/1")  # a pid we cannot look up from here
    register(store, L, other, store.lease_grant(10))
    assert process_alive(other.process) is None and process_alive(this_process()) is True
    assert process_alive(f"4194999@{BOOT_ID}") is None  # an older watcher's name: no namespace
    told = []
    reg = Registration(L, HOST, ttl=10, process=this_process())
    driver = RealDriver(store, tell=told.append)
    driver._handlers = {**RealDriver._handlers, Sleep: lambda d, effect: d.stop()}  # one look, then stop
    driver.run(claim_host(reg))
    assert reg.lease is None and "standby" in told[0].what
    assert member_at(L, L.member_key(HOST), store.get(L.member_key(HOST)).value).process == other.process


class RefusingOnce:
    """A queue that refuses its first job (a task-spooler that cannot start its
    server) and notes when each job came, on the monotonic clock."""

    def __init__(self):
        self.asked: list[float] = []

    def live_run_ids(self) -> frozenset[str]:
        return frozenset()

    def enqueue(self, run_id: str, argv: list[str]) -> None:
        self.asked.append(time.monotonic())
        if len(self.asked) == 1:
            raise QueueError("task-spooler server is not running")


def test_a_wall_clock_stepped_back_does_not_delay_the_retry_on_the_real_driver():
    """Issue 21: the retry after a refused queue came 10 s late when the wall
    clock stepped back 10 s in between; it is timed on the monotonic clock."""
    store = MemoryStore()
    fire(store, L, "refresh", [HOST], Lineage(), "web1", now=1.0, event_id="e1")
    queue = RefusingOnce()

    def wall() -> float:  # steps back 10 s while the retry waits
        stepped = queue.asked and time.monotonic() - queue.asked[0] > 0.3
        return time.time() - (10.0 if stepped else 0.0)

    driver = RealDriver(store, queue, run_argv=lambda run_id: ["true"], clock=wall, tell=lambda note: None)
    core = WatcherCore(HOST, L, iter(f"r{i}" for i in range(1, 100)).__next__)
    thread = threading.Thread(target=driver.run, args=(follow_inbox(core),), daemon=True)
    thread.start()
    try:
        eventually(lambda: len(queue.asked) >= 2, timeout=15)
    finally:
        driver.stop()
        thread.join(10)
    assert 0.9 <= queue.asked[1] - queue.asked[0] < 3  # the core's 1 s, not 11 s


def test_a_run_that_cannot_take_the_run_lock_while_etcd_stays_away_runs_nothing_and_does_not_crash():
    """Found by `trigger-sim explore rolling` (seed 141): the lock's take failed
    five times, then reading who holds it failed too, and `trigger run` ended
    in a traceback. It ends as a run that could not start: EXIT_TEMPFAIL."""
    def cut_during_the_lock(conn):
        conn.delay = (Duration("fixed", 1.0), None)  # each call 1 s: the lease at 1 s, the lock at 2 s
        conn.etcd.env.timeout(1.5).callbacks.append(lambda _e: conn.cut_off())

    code, notes, conn = _on_sim(lambda: triggered_run(L, HOST, "r1"), cut_during_the_lock)
    assert code == EXIT_TEMPFAIL
    assert _kinds(notes)[-1] == "RunAborted"
    assert sum("cannot take the run lock" in str(n.what) for n in notes) == RUN.attempts
