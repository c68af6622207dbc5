"""`trigger-sim run --lab`: its parts without IO (the input check, the plans taken from
the simulation, the lab's table, the comparison, scenario time) and the stand-in Puppet."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from simulator import SCENARIOS, load_scenario
from simulator import lab_replay
from simulator.cli import main
from simulator.lab_replay import (
    Clock, LabInputError, LabRecords, check_fits, close_calls, compare, lab_names, lab_table, plans,
    sim_table,
)
from simulator.ledger import Ledger
from simulator.scenario import Fault
from simulator.report import build_report
from simulator.simulation import Simulation

LAB_NODES = 17


# -- bad input: one line, before anything starts -------------------------------------------


@pytest.mark.parametrize("name", ["seed", "loop", "rolling", "storm-lab"])
def test_the_shipped_lab_scenarios_fit_a_lab_of_17(name):
    check_fits(load_scenario(SCENARIOS / f"{name}.yaml"), LAB_NODES)


def test_more_nodes_than_the_lab_has_is_named():
    with pytest.raises(LabInputError, match=r"^storm: 503 nodes, the local lab has at most 17$"):
        check_fits(load_scenario(SCENARIOS / "storm.yaml"), LAB_NODES)


def test_a_fault_the_lab_cannot_inject_is_named():
    with pytest.raises(LabInputError) as err:
        check_fits(load_scenario(SCENARIOS / "faults.yaml"), LAB_NODES)
    assert str(err.value) == ("faults: faults[0]: the local lab cannot inject cut_off "
                              "(it can: kill_watcher, slow_runs)")


@pytest.mark.parametrize("argv, message", [
    (["run", "storm", "--lab", "local"], "trigger-sim: storm: 503 nodes, the local lab has at most 24\n"),
    (["run", "faults", "--lab", "local"], "trigger-sim: faults: faults[0]: the local lab cannot inject "
                                          "cut_off (it can: kill_watcher, slow_runs)\n"),
    (["run", "seed", "--lab", "local", "--time-scale", "0"],
     "trigger-sim: --time-scale must be more than 0, got 0\n"),
])
def test_the_command_refuses_before_simulating_or_making_a_lab(argv, message, capsys, monkeypatch):
    def no_lab(*_args, **_kwargs):
        raise AssertionError("a lab was started")

    monkeypatch.setattr(lab_replay, "replay", no_lab)
    monkeypatch.setattr(Simulation, "run", no_lab)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == message and captured.out == ""


# -- what the simulation sampled --------------------------------------------------------------


def test_plans_are_the_simulated_runs_in_order_and_the_agents_turns():
    scenario = load_scenario(SCENARIOS / "loop.yaml")
    sim = Simulation(scenario).run()
    rows, _ = sim_table(build_report(sim).data)
    plan = plans(scenario, sim.ledger.puppet_runs)
    for host, row in rows.items():
        assert len(plan[host].runs) == row["runs_scheduled"] + row["runs_triggered"]
        assert all(d > 0 for d, _, _ in plan[host].runs)
        assert [start for _, _, start in plan[host].runs] == sorted(start for _, _, start in plan[host].runs)
    # loop.yaml: every run of a notifies b; one scheduled turn came while a run was going
    assert {n for _, n, _ in plan["a.example.com"].runs} == {("poke b",)}
    turns = len(plan["a.example.com"].turns) + len(plan["b.example.com"].turns)
    assert turns == sum(r["runs_scheduled"] for r in rows.values()) + 1
    assert plan["a.example.com"].turns == sorted(plan["a.example.com"].turns)


# -- the lab's table and the comparison -----------------------------------------------------------


def seed_records() -> LabRecords:
    """What the lab would record for two web nodes firing at both load balancers."""
    return LabRecords(
        runs={
            "node1": [{"kind": "scheduled", "start": 100.0, "end": 130.0}],
            "node2": [{"kind": "skipped", "start": 5.0, "end": 5.0},
                      {"kind": "scheduled", "start": 140.0, "end": 170.0}],
            "node4": [{"kind": "triggered", "run_id": "r1", "start": 131.0, "end": 143.0},
                      {"kind": "triggered", "run_id": "r2", "start": 171.0, "end": 182.0}],
            "node5": [{"kind": "triggered", "run_id": "r3", "start": 131.0, "end": 141.0}],
        },
        coalesced={"node5": 1},
        fires=[{"hosts": ["node4", "node5"], "fired_at": 130.0},
               {"hosts": ["node4", "node5"], "fired_at": 170.0}],
        refusals=[{"chain": ["node1", "node4"]}],
        inbox_left={"node5": 0},
        run_records={"node4": [{"run_id": "r1", "limits": [["refresh load balancers", 1]]},
                               {"run_id": "r2", "limits": [["refresh load balancers", 1]]}],
                     "node5": [{"run_id": "r3", "limits": [["refresh load balancers", 1]]}]},
    )


def limited_seed():
    scenario = load_scenario(SCENARIOS / "seed.yaml")
    name = "refresh load balancers"
    scenario.triggers[name] = replace(scenario.triggers[name], max_concurrent=1)
    return scenario


def test_the_lab_table_counts_what_the_nodes_recorded_in_scenario_terms():
    scenario = limited_seed()
    rows, limits = lab_table(scenario, seed_records(), lambda wall: (wall - 100.0) * 10)
    assert rows["web01.example.com"] == {
        "runs_scheduled": 1, "runs_triggered": 0, "fires_received": 0, "fires_coalesced": 0,
        "fires_refused": 0, "unserved": 0, "quiescent_at": None}
    assert rows["web02.example.com"]["runs_scheduled"] == 1  # a skipped turn is no run
    assert rows["lb01.example.com"] == {
        "runs_scheduled": 0, "runs_triggered": 2, "fires_received": 2, "fires_coalesced": 0,
        "fires_refused": 1, "unserved": 0, "quiescent_at": 820.0}
    assert rows["lb02.example.com"]["fires_coalesced"] == 1
    assert rows["lb02.example.com"]["quiescent_at"] == 700.0  # its last fire, after its last run
    assert limits == {"refresh load balancers": 2}  # r1 and r3 overlapped


def test_unserved_fires_leave_a_node_never_quiet():
    records = seed_records()
    records.inbox_left["node5"] = 2
    rows, _ = lab_table(limited_seed(), records, lambda wall: wall)
    assert rows["lb02.example.com"]["unserved"] == 2 and rows["lb02.example.com"]["quiescent_at"] is None


def table(**changes):
    row = {"runs_scheduled": 1, "runs_triggered": 3, "fires_received": 3, "fires_coalesced": 0,
           "fires_refused": 0, "unserved": 0, "quiescent_at": 566.0}
    return {"lb01": {**row, **changes}}


def test_equal_counts_and_close_times_agree():
    assert compare((table(), {"t": 1}), (table(quiescent_at=590.0), {"t": 1}), 30.0) == []


def test_each_difference_is_one_line_naming_host_and_value():
    problems = compare((table(), {"t": 1}),
                       (table(runs_triggered=4, fires_coalesced=1, quiescent_at=600.0), {"t": 2}), 30.0)
    assert problems == [
        "lb01: runs_triggered 3 in the simulation, 4 on the lab",
        "lb01: fires_coalesced 0 in the simulation, 1 on the lab",
        "lb01: quiet at 566 s in the simulation, 600 s on the lab (tolerance 30 s)",
        "limit 't': most runs at once 1 in the simulation, 2 on the lab",
    ]
    assert compare((table(), {}), (table(quiescent_at=None), {}), 30.0) == [
        "lb01: quiet at 566 s in the simulation, - on the lab (tolerance 30 s)"]


def _ledger(runs):
    """A ledger whose host h ran `runs`: [(run start, [fire times])]."""
    ledger = Ledger()
    for n, (started, fires) in enumerate(runs):
        for m, fired in enumerate(fires):
            ledger.fired[("h", f"e{n}.{m}")] = fired
            ledger.served_by[("h", f"e{n}.{m}")] = (f"r{n}", started)
    return ledger


def test_a_lone_fire_just_after_a_run_began_is_a_close_call():
    ledger = _ledger([(10.0, [10.0]), (20.0, [11.5])])
    assert close_calls(ledger, 2.0) == [
        "h: the fire at 11.5 s, 1.50 s after a run began at 10 s, was the only one of the next run"]
    assert close_calls(ledger, 1.0) == []


def test_a_fire_folded_into_the_last_run_just_before_it_began_is_a_close_call():
    ledger = _ledger([(10.0, [10.0]), (30.0, [12.0, 29.0])])
    assert close_calls(ledger, 2.0) == ["h: the fire at 29 s, 1.00 s before the last run began, was folded into it"]


def test_a_fire_whose_side_decides_only_which_run_serves_it_is_not_a_close_call():
    # 10.5 would join the first run if earlier, but 11.0 still needs the second
    # one; 19.5 would go to the third run if later, which runs anyway
    assert close_calls(_ledger([(10.0, [10.0]), (20.0, [10.5, 11.0, 19.5]), (40.0, [30.0])]), 2.0) == []


def test_two_hosts_asking_for_one_slot_at_once_is_a_close_call():
    ledger = Ledger(slot_asks=[("t", "a", 5.0, 5.0), ("t", "b", 5.5, 30.0), ("t", "a", 30.0, 31.0)])
    assert close_calls(ledger, 1.0) == [
        "b: asked for a slot of 't' within 0.50 s of a at 5 s and waited: which of them gets it first is a race"]
    # a host that asked long after the holder took the slot had nothing to race for
    assert close_calls(ledger, 0.4) == []


def test_a_fire_while_a_killed_watcher_may_be_a_member_on_one_side_only_is_a_close_call():
    # app2 killed at 100: a member until 110 in the simulation, until 130 on a lab at 3x
    ledger = Ledger(fired={("app1", "e1"): 95.0, ("app1", "e2"): 120.0, ("app2", "e3"): 140.0},
                    fault_windows=[(Fault(100.0, "kill_watcher", ("app2",), 88.0), 100.0, 188.0),
                                   (Fault(100.0, "slow_runs", ("app1",), 88.0), 100.0, 188.0)])
    assert close_calls(ledger, 6.0, (10.0, 30.0)) == [
        "app2: the fire at 120 s, 20.00 s after its watcher was killed, may find it a member on one side only"]
    # the margin reaches a fire just past the lab's lease; without roles nothing is asked
    assert len(close_calls(ledger, 11.0, (10.0, 30.0))) == 2
    assert close_calls(ledger, 6.0) == []
    assert lab_replay.lab_member_ttls(load_scenario(SCENARIOS / "rolling.yaml"), 3) == (10.0, 30.0)
    assert lab_replay.lab_member_ttls(load_scenario(SCENARIOS / "seed.yaml"), 3) is None


def test_the_scenario_clock_scales_and_skips_idle_stretches():
    clock = Clock(10.0, start=1000.0)
    assert clock.at(1002.0) == 20.0 and clock.wall(50.0) == 1005.0
    clock.skip_to(400.0, now=1003.0)  # idle from scenario time 30 s: on to 400 s
    assert clock.at(1002.0) == 20.0  # times before the skip keep their meaning
    assert clock.at(1004.0) == 410.0 and clock.wall(500.0) == 1013.0


def test_lab_names_follow_the_scenario_order():
    names = lab_names(load_scenario(SCENARIOS / "seed.yaml"))
    assert list(names.values()) == ["node1", "node2", "node3", "node4", "node5"]
    assert names["lb01.example.com"] == "node4"


# -- the stand-in Puppet -----------------------------------------------------------------------


def standin(directory, run_id=""):
    env = {k: v for k, v in os.environ.items() if k != "TRIGGER_RUN_ID"}
    if run_id:
        env["TRIGGER_RUN_ID"] = run_id
    return subprocess.Popen([sys.executable, str(lab_replay.STANDIN), str(directory)], env=env)


def test_the_standin_runs_the_plan_in_order_and_a_scheduled_turn_skips_a_busy_node(tmp_path):
    now = time.time()
    # scenario time 100 s is now, at 10x: the first run is due in 1 s (it starts early and
    # sleeps its whole duration, no more), the second was due 0.5 s ago (it starts late)
    (tmp_path / "clock.json").write_text(json.dumps({"wall": now, "at": 100.0, "scale": 10.0}))
    (tmp_path / f"{socket.gethostname()}.json").write_text(json.dumps({
        "state_dir": str(tmp_path / "state"), "runs": [[0.6, [], 110.0], [0.8, [], 95.0]],
        "default_duration": 0.01, "triggers": {}, "endpoints": ""}))
    first = standin(tmp_path, run_id="r1")
    counter = tmp_path / "state" / "count"
    deadline = time.monotonic() + 30
    while not counter.exists():  # r1 holds the lock once it took its plan index
        assert first.poll() is None and time.monotonic() < deadline, "the stand-in never started its run"
        time.sleep(0.01)
    assert standin(tmp_path).wait() == 0  # the agent's turn: skipped, not queued
    assert standin(tmp_path, run_id="r2").wait() == 0  # waited for the lock, then ran
    assert first.wait() == 0
    lines = [json.loads(line) for line in (tmp_path / "state" / "runs.jsonl").read_text().splitlines()]
    assert [(r["kind"], r.get("run_id"), r.get("index")) for r in lines] == [
        ("skipped", None, None), ("triggered", "r1", 0), ("triggered", "r2", 1)]
    assert 0.6 <= lines[1]["end"] - lines[1]["start"] < 0.9 and lines[1]["late"] < 0
    assert lines[2]["start"] >= lines[1]["end"]
    # r2 was due at scenario time 95 s, 0.5 s before now, and started after r1's 0.6 s:
    # at least 1.1 s late, it slept at most 0.8 - 1.1 s, i.e. not at all
    assert lines[2]["late"] >= 1.1 and lines[2]["end"] - lines[2]["start"] < 0.5
    assert standin(tmp_path).wait() == 0  # past the plan: the default duration, nothing notified
    assert json.loads((tmp_path / "state" / "runs.jsonl").read_text().splitlines()[-1])["index"] == 2


def test_a_coalesced_fire_that_got_a_run_of_its_own_is_not_counted_as_coalesced():
    log = "\n".join([
        "... INFO enqueue run r1 for 1 fire(s): f1",
        "... INFO coalesce fire f2 into queued run r1",
        "... INFO coalesce fire f3 into queued run r1",
        # r1's `trigger run` read the inbox before f3 landed: f3 gets a run of its own
        "... INFO enqueue run r2 for 1 fire(s): f3",
        "... INFO coalesce fire f4 into queued run r2",
    ])
    assert lab_replay.coalesced_fires(log) == 2


def test_the_report_shows_both_tables_and_names_each_difference():
    from rich.console import Console

    scenario = load_scenario(SCENARIOS / "seed.yaml")
    simulated = sim_table(build_report(Simulation(scenario).run()).data)
    on_lab = ({host: {**row, "runs_triggered": row["runs_triggered"] + (host == "lb01.example.com")}
               for host, row in simulated[0].items()}, simulated[1])
    problems = compare(simulated, on_lab, 30.0)
    for width in (80, 160):  # one above the other, or side by side
        console = Console(width=width, record=True)
        lab_replay.render(console, "seed", scenario, simulated, on_lab, problems, 30.0, ("a note",))
        text = console.export_text()
        assert "simulation" in text and "lab (real nodes)" in text and "lb01 (node4)" in text
        assert "a note" in text
        assert "differs: lb01.example.com: runs_triggered 3 in the simulation, 4 on the lab" in text
