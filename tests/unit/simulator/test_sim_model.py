"""The simulator's parts: etcd connections and faults, the fake task-spooler,
Puppet's lock and schedule, manifests, and the watcher around the real core."""

from __future__ import annotations

import pytest

from simulator import SCENARIOS, run_scenario
from simulator.report import build_report
from simulator.scenario import load_scenario
from simulator.simulation import Simulation
from trigger.store.base import UnavailableError

WEB, LB = "web1.example.com", "lb1.example.com"


def spec(**overrides) -> dict:
    """One web node notifying one LB; fixed durations, no splay, so times are exact."""
    base = {
        "name": "unit",
        "until": 100,
        "agent": {"interval": 1000, "splay": 0, "duration": 10},
        "nodes": {WEB: "web", LB: "lb"},
        "roles": {
            "web": {"resources": {"vhost": {"changes": "once", "notify": ["refresh"]}}},
            "lb": {"resources": {"haproxy": {"changes": "until_converged", "collects": ["vhost"]}}},
        },
        "triggers": {"refresh": {"hosts": [LB], "ttl": 5}},
    }
    base.update(overrides)
    return base


def simulate(data: dict, seed: int = 1) -> Simulation:
    return Simulation(load_scenario(data), seed=seed, trace=True).run()


def lines(sim: Simulation, host: str) -> list[tuple[float, str]]:
    return [(t, what) for t, h, what in sim.ledger.trace_lines if h == host]


# -- etcd connections ---------------------------------------------------------------


def test_a_cut_off_node_cannot_reach_etcd_and_its_watch_dies_once():
    sim = Simulation(load_scenario(spec()), seed=1)
    conn = sim.nodes[WEB].store
    got = []
    conn.watch_prefix(sim.layout.host_prefix(WEB), 0, got.append)
    sim.env.run(until=0.01)  # the watch request reaches the server
    conn.cut_off()
    with pytest.raises(UnavailableError):
        conn.get_prefix("/")
    sim.env.run(until=0.02)
    assert len(got) == 1 and isinstance(got[0], UnavailableError)
    conn.reconnect()
    assert conn.get_prefix("/puppet_trigger/nothing/")[0] == []


def test_watch_delivers_after_the_latency_in_revision_order():
    sim = Simulation(load_scenario(spec(watcher={"watch_latency": 0.5})), seed=1)
    conn = sim.nodes[LB].store
    got = []
    conn.watch_prefix(sim.layout.host_prefix(LB), 0, lambda changes: got.append((sim.env.now, changes)))
    sim.env.run(until=1)
    conn.put(sim.layout.entry_key(LB, "a"), b"1")
    conn.put(sim.layout.entry_key(LB, "b"), b"2")
    assert got == []  # nothing arrives inside the write
    sim.env.run(until=2)
    assert len(got) == 1 and got[0][0] == 1.5
    assert [c.key.rsplit("/", 1)[1] for c in got[0][1]] == ["a", "b"]


def test_etcd_restart_kills_every_watch_and_keeps_the_data():
    sim = Simulation(load_scenario(spec()), seed=1)
    web, lb = sim.nodes[WEB].store, sim.nodes[LB].store
    web.put("/puppet_trigger/events/hosts/web1.example.com/x", b"kept")
    errors = []
    for conn, host in ((web, WEB), (lb, LB)):
        conn.watch_prefix(sim.layout.host_prefix(host), 0,
                          lambda p: errors.append(p) if isinstance(p, Exception) else None)
    sim.env.run(until=0.01)
    sim.etcd.go_down()
    with pytest.raises(UnavailableError):
        lb.get("/x")
    sim.env.run(until=0.02)
    assert len(errors) == 2
    sim.etcd.come_up()
    assert web.get("/puppet_trigger/events/hosts/web1.example.com/x").value == b"kept"


# -- the fake task-spooler --------------------------------------------------------------


def test_task_spooler_runs_one_job_at_a_time_and_a_killed_server_forgets_the_running_one():
    sim = Simulation(load_scenario(spec()), seed=1)
    node = sim.nodes[LB]
    started = []

    def fake_run(run_id):
        started.append((sim.env.now, run_id))
        yield sim.env.timeout(10)

    node.triggered_run = fake_run
    tsp = node.tsp
    for run_id in ("r1", "r2", "r3"):
        assert tsp.push(run_id) is None
    sim.env.run(until=1)
    assert tsp.live_run_ids() == frozenset({"r1", "r2", "r3"})
    assert node.stats.max_queue_depth == 3
    assert tsp.kill() == ["r2", "r3"]  # queued jobs vanish; the running one goes on, unlisted
    assert tsp.live_run_ids() == frozenset()  # the next call started an empty server
    tsp.push("r4")
    sim.env.run(until=30)
    assert started == [(0, "r1"), (1, "r4")]  # it does not wait for the orphan: tsp's own way


def test_task_spooler_down_refuses_jobs_and_cannot_be_asked():
    sim = Simulation(load_scenario(spec()), seed=1)
    tsp = sim.nodes[LB].tsp
    tsp.kill(down_for=5)
    assert tsp.push("r1") == "task-spooler server is not running"
    assert tsp.live_run_ids() is None
    sim.env.run(until=6)
    assert tsp.up and tsp.live_run_ids() == frozenset()


# -- Puppet: schedule, lock, manifests ----------------------------------------------------


def test_a_fire_is_served_by_a_run_that_starts_after_it():
    sim = simulate(spec())
    assert lines(sim, WEB)[:3] == [
        (0.0, "scheduled run: Puppet applies 1 change(s)"),
        (10.0, "fire 'refresh' ev0000001 hop 1 to 1 host(s)"),
        (10.0, "scheduled run ends, exit 2"),
    ]
    assert lines(sim, LB) == [
        (0.0, "scheduled run: Puppet applies 0 change(s)"),
        (10.0, "scheduled run ends, exit 0"),
        (10.002, "queue r000001 for 1 fire(s)"),
        (10.002, "r000001 starts: serves ev0000001 (hop 1)"),
        (10.002, "r000001: Puppet applies 1 change(s)"),  # collects the new vhost
        (20.002, "r000001 ends, exit 2"),
    ]


def test_a_triggered_run_waits_for_the_scheduled_run_in_progress():
    # The LB's scheduled run (0..30 s) is in progress when the web fires at 10 s.
    data = spec()
    data["roles"]["lb"]["agent"] = {"duration": 30}
    sim = simulate(data)
    assert lines(sim, LB)[:6] == [
        (0.0, "scheduled run: Puppet applies 0 change(s)"),
        (10.002, "queue r000001 for 1 fire(s)"),
        (10.002, "r000001 starts: serves ev0000001 (hop 1)"),  # acknowledged now...
        (10.002, "r000001 waits for the Puppet lock"),
        (30.0, "scheduled run ends, exit 0"),
        (30.0, "r000001: Puppet applies 1 change(s)"),  # ...and applied after the lock
    ]


def test_a_scheduled_run_is_skipped_while_a_run_is_in_progress():
    # The LB's triggered run (10.002..60.002) covers its next scheduled turn at 50 s.
    data = spec(until=120)
    data["roles"]["lb"]["agent"] = {"interval": 50, "duration": 50}
    data["agent"]["duration"] = 10
    sim = simulate(data)
    assert (50.0, "scheduled run skipped: a run is in progress") in lines(sim, LB)
    assert sim.nodes[LB].stats.scheduled_skipped >= 1


def test_once_from_and_until_converged():
    data = spec(until=250)
    data["agent"]["interval"] = 100
    data["roles"]["web"]["resources"]["vhost"]["from"] = 150
    sim = simulate(data)
    web = [what for _, what in lines(sim, WEB) if "applies" in what]
    assert web == ["scheduled run: Puppet applies 0 change(s)",   # t=0: not before `from`
                   "scheduled run: Puppet applies 0 change(s)",   # t=100: still before
                   "scheduled run: Puppet applies 1 change(s)"]   # t=200: the first run after
    lb = [what for _, what in lines(sim, LB) if "applies" in what]
    assert lb == ["scheduled run: Puppet applies 0 change(s)",
                  "scheduled run: Puppet applies 0 change(s)",
                  "scheduled run: Puppet applies 0 change(s)",    # t=200: the vhost lands at 210
                  "r000001: Puppet applies 1 change(s)"]          # converges on the new vhost


def test_a_loop_is_refused_at_the_ttl_with_its_chain():
    report = run_scenario(SCENARIOS / "loop.yaml")
    refused = report.data["refused"]
    assert refused and report.ok
    for group in refused:
        assert group["hop"] == 6 and group["ttl"] == 5
        assert len(group["chain"]) == 6
        assert set(group["chain"]) == {"a.example.com", "b.example.com"}
        assert all(x != y for x, y in zip(group["chain"], group["chain"][1:]))  # A, B, A, ...


# -- the watcher and faults -------------------------------------------------------------


def test_faults_scenario_serves_every_fire_but_those_a_fault_made_impossible():
    report = run_scenario(SCENARIOS / "faults.yaml")
    totals = report.data["totals"]
    assert report.ok
    assert totals["watch_errors"]["compacted"] == 1  # web03's watch request met the compaction
    assert totals["watch_errors"]["unavailable"] >= 12  # etcd restart: every watch died
    assert totals["runs_lost"] >= 1  # lb2's queued run vanished with its task-spooler
    assert totals["fires_failed"] == 1  # web07 fired while cut off
    assert report.data["unserved"] == [{
        "host": "web10.example.com", "count": 1, "first_fired_at": 3100.0, "triggers": ["deploy"],
        "event_ids": ["ev0000083"],  # the deploy at 3100 s (web07's re-run fired once more)
        "reason": "watcher of web10.example.com killed at 3000 s and not restarted",
    }]


def test_a_killed_task_spooler_loses_the_queued_run_and_the_watcher_replaces_it():
    # The LB's first triggered run is busy 10..60; a second fire at 20 queues r000002;
    # task-spooler dies at 30; the watcher's re-read (5 s without deliveries) marks
    # r000002 lost and queues r000003, which serves the second fire.
    data = spec(until=200, faults=[{"at": 30, "kind": "kill_tsp", "hosts": LB}],
                fires=[{"at": 20, "trigger": "refresh"}])
    data["roles"]["lb"]["agent"] = {"duration": 50}
    data["agent"]["splay"] = 0
    data["nodes"] = {WEB: "web", LB: "lb"}
    data["roles"]["lb"]["agent"]["interval"] = 1000
    sim = simulate(data)
    trace = lines(sim, LB)
    assert (30.0, "task-spooler killed: queued r000002 vanished") in trace
    lost = [t for t, what in trace if what.startswith("mark r000002 lost")]
    assert lost and 30 < lost[0] <= 36
    assert any(what.startswith("r000003 starts: serves ev0000002") for _, what in trace)
    assert build_report(sim).ok


def test_a_permanent_cut_off_is_named_as_the_reason():
    data = spec(until=100, faults=[{"at": 5, "kind": "cut_off", "hosts": LB}], drain=60)
    report = build_report(simulate(data))
    assert report.ok  # explained, so the check passes
    assert report.data["unserved"][0]["reason"] == "lb1.example.com cut off from etcd since 5 s"


def test_a_refusing_queue_is_retried_with_a_growing_delay():
    # Task-spooler refuses jobs for 60 s; the core's delay should go 1, 2, 4, 8, 16, 32 s.
    data = spec(until=200, faults=[{"at": 5, "kind": "kill_tsp", "hosts": LB, "for": 60}])
    sim = simulate(data)
    queued = [t for t, what in lines(sim, LB) if what.startswith("queue r")]
    # The fire lands at 10.002; each refusal doubles the wait; the queue is back at 65.
    assert queued == [10.002, 11.002, 13.002, 17.002, 25.002, 41.002, 73.002]
    assert sim.nodes[LB].stats.runs_lost == 6


def test_a_corrupt_inbox_value_is_quarantined_and_the_watcher_goes_on():
    """The daemon's quarantine (a txn that compares the value's revision)
    runs on the simulated etcd as on the real one; a good fire after it is served."""
    data = spec(until=60, fires=[{"at": 20, "trigger": "refresh"}])
    sim = Simulation(load_scenario(data), seed=1, trace=True)
    bad_key = sim.layout.entry_key(LB, "garbage")
    sim.operator.put(bad_key, b"not json")
    sim.run()
    assert sim.nodes[LB].stats.quarantined == 1
    assert sim.operator.get(bad_key) is None
    assert sim.operator.get(sim.layout.quarantine_key(LB, bad_key)).value == b"not json"
    assert any(what.startswith("r000001 starts: serves ev0000001") for _, what in lines(sim, LB))


def test_a_node_connection_takes_every_store_call_as_the_store_does():
    """NodeStore stands for the real store: same calls, same parameters, so
    code written for the store cannot meet a narrower signature here."""
    import inspect

    from simulator.network import NodeStore
    from trigger.store.base import Store

    for name, call in inspect.getmembers(Store, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours = inspect.signature(getattr(NodeStore, name)).parameters
        assert list(ours) == list(inspect.signature(call).parameters), name


# -- wait => true ------------------------------------------------------------------------


def test_a_waiting_fire_holds_its_run_until_every_target_has_run():
    """`wait => true`: the web's run ends when the LB's triggered run has, not when it fired."""
    data = spec()
    data["triggers"]["refresh"]["wait"] = True
    sim = simulate(data)
    assert [line for line in lines(sim, WEB) if "ends" in line[1]][0] == (20.002, "scheduled run ends, exit 2")
    assert sim.nodes[WEB].stats.waits_failed == 0


def test_a_waiting_fire_on_a_loop_deadlocks_until_its_timeout_and_the_run_fails():
    """A waits for B's run, whose fire back to A waits for A's run, which waits for the
    Puppet lock A's first run holds: nothing moves until wait_timeout, as on real Puppet."""
    data = spec(until=1000)
    data["roles"] = {
        "web": {"resources": {"vhost": {"changes": "once", "notify": ["refresh"]}}},
        "lb": {"resources": {"haproxy": {"changes": "always", "notify": ["back"]}}},
    }
    data["triggers"] = {"refresh": {"hosts": [LB], "ttl": 3, "wait": True, "wait_timeout": 300},
                        "back": {"hosts": [WEB], "ttl": 3, "wait": True, "wait_timeout": 300}}
    sim = simulate(data)
    web_ends = [line for line in lines(sim, WEB) if line[1] == "scheduled run ends, exit 6"]
    assert web_ends and web_ends[0][0] == pytest.approx(310.0, abs=0.1), lines(sim, WEB)
    assert sim.nodes[WEB].stats.waits_failed == 1 and sim.nodes[LB].stats.waits_failed >= 1
    assert build_report(sim).data["totals"]["waits_failed"] >= 2


def test_wait_must_be_a_boolean_and_its_timeout_positive():
    from simulator.scenario import ScenarioError

    for field, value, said in (("wait", "yes", "expected true or false"),
                               ("wait_timeout", 0, "must be more than 0")):
        data = spec()
        data["triggers"]["refresh"][field] = value
        with pytest.raises(ScenarioError, match=f"triggers.refresh.{field}: {said}"):
            load_scenario(data)


def test_a_waiting_fire_fails_its_run_when_a_target_s_run_fails_not_only_on_its_timeout():
    """As `trigger fire --wait` exits: a host's run not ok fails the wait at once. The LB's
    own wait (back at the web, whose lock the web's waiting run holds) times out after 30 s,
    its run exits 6, and the web's wait ends then, failed, long before its 300 s."""
    data = spec(until=1000)
    data["roles"]["lb"]["resources"]["haproxy"]["notify"] = ["back"]
    data["triggers"] = {"refresh": {"hosts": [LB], "ttl": 3, "wait": True, "wait_timeout": 300},
                        "back": {"hosts": [WEB], "ttl": 3, "wait": True, "wait_timeout": 30}}
    sim = simulate(data)
    web_end = [t for t, what in lines(sim, WEB) if what == "scheduled run ends, exit 6"]
    assert web_end and web_end[0] == pytest.approx(50.0, abs=0.1), lines(sim, WEB)
    assert sim.nodes[WEB].stats.waits_failed == 1 and sim.nodes[LB].stats.waits_failed == 1
