"""The simulated-time driver: effects carried out on SimPy time, and killed at once."""

from __future__ import annotations

import simpy

from simulator.driver import SimDriver
from simulator.network import NO_ANSWER, Etcd
from trigger.effects import ELAPSED, NOW, Call, NextChange, Note, Sleep, Watch
from trigger.store.base import UnavailableError
from trigger.layout import Layout

L = Layout()


def _connection(latency=0.5):
    env = simpy.Environment()
    etcd = Etcd(env, L.prefix + "/hosts/", latency)
    return env, etcd.connect("h1")


def test_sleeps_and_waits_take_exactly_their_simulated_time():
    env, conn = _connection()
    seen = []

    def procedure():
        yield Sleep(3)
        seen.append((yield NOW))
        yield Watch("/p/", 0)
        seen.append((yield NextChange(7)))
        seen.append((yield NOW))

    env.process(SimDriver(env, conn, lambda n: None).run(procedure()))
    env.run()
    assert seen == [3, None, 10]


def test_a_delivery_ends_the_wait_after_the_network_latency():
    env, conn = _connection(latency=0.5)
    seen = []

    def procedure():
        yield Watch("/p/", 0)
        changes = yield NextChange(60)
        seen.append(((yield NOW), [c.key for c in changes]))

    env.process(SimDriver(env, conn, lambda n: None).run(procedure()))
    env.timeout(2).callbacks.append(lambda _e: conn.put("/p/a", b"1"))
    env.run()
    assert seen == [(2.5, ["/p/a"])]


def test_a_renewed_wait_keeps_one_timer():
    """Thousands of nodes wait on their watches: a renewed wait must not add timers."""
    env, conn = _connection()

    def procedure():
        yield Watch("/p/", 0)
        for _ in range(50):
            yield NextChange(100)

    driver = SimDriver(env, conn, lambda n: None).start(procedure())
    for i in range(49):
        env.timeout(i + 1).callbacks.append(lambda _e, i=i: conn.put(f"/p/{i}", b""))
    env.run(until=60)
    timers = [event for *_, event in env._queue if isinstance(event, simpy.events.Timeout)]
    assert len(timers) == 1 and driver._timer_at == 100  # the first wait's timer, re-armed later


def test_kill_ends_the_procedure_where_it_waits_and_cancels_its_watch():
    env, conn = _connection()
    told = []

    def procedure():
        yield Watch("/p/", 0)
        yield NextChange(5)
        yield Note("after the wait")

    driver = SimDriver(env, conn, told.append).start(procedure())
    env.timeout(1).callbacks.append(lambda _e: driver.kill())
    env.run(until=20)
    assert told == [] and not driver.watching and conn.watches == {}


def test_a_black_holed_call_waits_for_its_bound_the_client_s_timeout_or_the_hole_s_end():
    """Not refused: the call gives up at its `within`, else after the client's
    timeouts (NO_ANSWER), and is answered if the hole closes first."""
    env, conn = _connection(latency=0.0)
    seen = []

    def put(store, key):
        return store.put(key, b"")

    def call(key, within=None):
        try:
            yield Call(put, (key,), within)
            seen.append((key, "answered", env.now))
        except UnavailableError as exc:
            seen.append((key, str(exc), env.now))

    def procedure():
        yield from call("/p/bounded", within=4)
        yield from call("/p/unbounded")
        yield from call("/p/in-time")  # at 19 s: the hole closes at 30 s, within its timeout

    conn.black_hole(30)
    env.process(SimDriver(env, conn, lambda n: None).run(procedure()))
    env.run()
    assert seen == [("/p/bounded", "no answer within 4.0s", 4),
                    ("/p/unbounded", f"no answer within {NO_ANSWER:.1f}s", 4 + NO_ANSWER),
                    ("/p/in-time", "answered", 30)]
    assert [kv.key for kv in conn.get_prefix("/p/")[0]] == ["/p/in-time"]


def test_clock_step_moves_the_wall_clock_not_the_monotonic_one():
    env, conn = _connection()
    seen = []

    def procedure():
        yield Sleep(5)
        conn.wall_offset = -10.0
        seen.append(((yield NOW), (yield ELAPSED)))

    env.process(SimDriver(env, conn, lambda n: None).run(procedure()))
    env.run()
    assert seen == [(-5.0, 5)]


def test_an_exception_in_a_simulated_command_is_raised_not_taken_for_its_exit_code(monkeypatch):
    """Ctrl-C lands inside a fake Puppet run: SimPy fails its process with it, and the
    simulation raises it (the CLI then says `interrupted`); it once became the run's exit
    code, and the record's JSON failed on it."""
    import pytest

    from simulator import SCENARIOS
    from simulator.node import Node
    from simulator.scenario import load_scenario
    from simulator.simulation import Simulation

    real = Node.puppet_run

    def interrupted(self, kind, *args, **kwargs):
        if kind == "triggered":
            raise KeyboardInterrupt
        return (yield from real(self, kind, *args, **kwargs))

    monkeypatch.setattr(Node, "puppet_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Simulation(load_scenario(SCENARIOS / "seed.yaml")).run()
