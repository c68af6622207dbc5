"""The simulated standby (simulator/standby.py): the standby's decisions from trigger.procedures
and the same `triggered_run`, on simulated time, under the faults that broke the real one."""

from __future__ import annotations

import json

import pytest
import yaml

from simulator import SCENARIOS
from simulator.cli import main
from simulator.report import build_report, executed_twice
from simulator.scenario import ScenarioError, load_scenario
from simulator.standby import COLD_START, STANDBY_START
from tests.unit.simulator.test_sim_faults import LB, lines, one_at_a_time, served_to_the_end, simulate, spec


def with_standby(data: dict, linger: float = 300) -> dict:
    data["watcher"] = {"standby": True, "standby_linger": linger}
    return data


def starts(sim, host=LB) -> list[float]:
    return [start for start, _end, _run_id in sim.ledger.commands.get(host, [])]


def test_a_fleet_with_a_standby_serves_every_fire_and_passes_the_check():
    sim = simulate(with_standby(spec(until=400, fires=[10, 50, 51, 52, 120, 300])))
    report = build_report(sim)
    assert served_to_the_end(sim) and one_at_a_time(sim)
    assert report.ok, report.data["check"]["problems"]
    assert len(starts(sim)) >= 4


def test_the_first_run_starts_cold_and_the_next_through_the_standby_sooner():
    sim = simulate(with_standby(spec(until=400, fires=[10, 100])))
    first, second = starts(sim)[:2]
    latency = 0.002  # the watch delivery of the default settings
    assert first == pytest.approx(10 + latency + COLD_START, abs=0.01)  # no standby yet: cold
    assert second == pytest.approx(100 + latency + STANDBY_START, abs=0.01)
    assert not any("cold" in what for _, what in lines(sim))


def test_an_unused_standby_is_let_go_after_its_linger_and_the_next_run_starts_cold():
    sim = simulate(with_standby(spec(until=400, fires=[10, 20, 200]), linger=60))
    let_go = [t for t, what in lines(sim) if what.startswith("standby let go")]
    assert let_go[0] == pytest.approx(20 + 60, abs=1)  # the run at 20 was the last through it
    third = starts(sim)[2]
    assert third == pytest.approx(200 + 0.002 + COLD_START, abs=0.01)
    assert served_to_the_end(sim) and build_report(sim).ok


def test_a_standby_killed_mid_run_never_executes_a_run_twice_and_its_fires_come_back():
    """Issue 21, failure 1 on simulated time: the standby dies in a run (kill -9); its command
    is stopped by the watchdog, its job ends, the run is judged lost once its lease ends, and a
    new standby serves the fires; no run id is carried out twice."""
    faults = [{"at": 105, "kind": "kill_run", "hosts": LB}]
    sim = simulate(with_standby(spec(until=400, fires=[10, 100, 106], faults=faults)))
    trace = [what for _, what in lines(sim)]
    assert "standby killed in a run; its command is the watchdog's" in trace
    assert any(what.startswith("mark r000002 lost") for what in trace)
    assert executed_twice(sim.ledger.commands[LB]) == [] and len(sim.ledger.commands[LB]) >= 3
    report = build_report(sim)
    assert report.ok, report.data["check"]["problems"]
    assert served_to_the_end(sim) and one_at_a_time(sim)


def test_standby_must_be_true_or_false():
    with pytest.raises(ScenarioError, match="watcher.standby: expected true or false, got 'yes'"):
        load_scenario({**spec(), "watcher": {"standby": "yes"}})


@pytest.mark.parametrize("name", ["faults", "seed"])
def test_the_fault_scenarios_pass_the_check_with_a_standby_on_every_node(name, tmp_path):
    """Every fault of the scenario (cut-offs, killed watchers, queues and runs, etcd restarts,
    reboots) on a fleet whose watchers keep a standby: `trigger-sim run --check` passes."""
    data = yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())
    data["watcher"] = {**(data.get("watcher") or {}), "standby": True, "standby_linger": 120}
    path = tmp_path / f"{name}-standby.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--check", "--no-plot", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["check"]["ok"], report["check"]["problems"]


def test_a_standby_let_go_serves_nothing_more():
    """Let go while idle, it is gone: the jobs after are the next standby's, each served once."""
    sim = simulate(with_standby(spec(until=600, fires=[10, 20, 200, 200.05, 260, 400]), linger=30))
    assert sum(what.startswith("standby let go") for _, what in lines(sim)) >= 2
    assert executed_twice(sim.ledger.commands[LB]) == [] and served_to_the_end(sim)
    assert build_report(sim).ok


def test_tsp_k_of_a_standby_job_stops_its_command_and_gives_its_fires_back():
    """Issue 21, failure 6 on simulated time: the job's cat goes, the FIFO tells the
    run (no reader), which stops its command and gives its fires back; the next run
    serves them, and no run id is carried out twice."""
    faults = [{"at": 105, "kind": "kill_job", "hosts": LB}]
    sim = simulate(with_standby(spec(until=400, fires=[10, 100], faults=faults)))
    trace = [what for _, what in lines(sim)]
    assert "tsp -k: the standby job of r000002 ends" in trace
    assert ("r000002 gave its fires back: its task-spooler job ended before it (killed?); command stopped"
            in trace)
    assert executed_twice(sim.ledger.commands[LB]) == [] and len(sim.ledger.commands[LB]) == 3
    assert served_to_the_end(sim) and one_at_a_time(sim) and build_report(sim).ok


def test_a_killed_runner_on_a_standby_host_kills_the_standby_and_leaves_its_command_to_the_watchdog():
    faults = [{"at": 105, "kind": "kill_runner", "hosts": LB}]
    sim = simulate(with_standby(spec(until=400, fires=[10, 100], faults=faults)))
    assert "standby killed in a run; its command is the watchdog's" in [what for _, what in lines(sim)]
    assert executed_twice(sim.ledger.commands[LB]) == []
    assert served_to_the_end(sim) and one_at_a_time(sim) and build_report(sim).ok
