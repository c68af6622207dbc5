"""Races as outcome ranges: near-ties broken each sampled way, counts as [min, max], the race named."""

from __future__ import annotations

from simulator import SCENARIOS, Simulation, load_scenario
from simulator.lab_replay import compare, sim_table
from simulator.races import COUNTS, outcome_ranges
from simulator.report import build_report


def test_no_skew_is_the_plain_simulation_byte_for_byte():
    scenario = load_scenario(SCENARIOS / "storm-lab.yaml")
    plain = build_report(Simulation(scenario).run()).to_json()
    assert build_report(Simulation(scenario, skew=None).run()).to_json() == plain
    assert build_report(Simulation(scenario, skew=(0.0, 3)).run()).to_json() == plain


def test_a_storm_into_load_balancers_depends_on_near_ties_and_says_which():
    scenario = load_scenario(SCENARIOS / "storm-lab.yaml")
    outcomes = outcome_ranges(scenario, orders=8, window=2.0)
    assert outcomes.moved() == {f"lb{i}.example.com": {"fires_coalesced": (5, 6)} for i in (1, 2, 3)}
    assert outcomes.races["lb1.example.com"][0] == (
        "lb1.example.com: the fire at 80.0193 s landed 0.002 s before a run began at 80.0213 s: "
        "joining a queued run or waiting for the next is a race")
    # every sampled order is within the range, the unskewed one included
    base = {n["host"]: n for n in outcomes.base["nodes"]}
    for host, counts in outcomes.ranges.items():
        for key in COUNTS:
            assert counts[key][0] <= base[host][key] <= counts[key][1]
    assert outcome_ranges(scenario, orders=8, window=2.0).ranges == outcomes.ranges  # deterministic


def test_a_scenario_without_near_ties_has_one_outcome():
    outcomes = outcome_ranges(load_scenario(SCENARIOS / "seed.yaml"), orders=4, window=0.5)
    assert outcomes.moved() == {} and outcomes.to_json()["ranges"] == {}


def test_the_lab_comparison_passes_inside_the_range_and_names_the_race():
    scenario = load_scenario(SCENARIOS / "storm-lab.yaml")
    outcomes = outcome_ranges(scenario, orders=8, window=2.0)
    sim = sim_table(outcomes.base)
    rows = {host: dict(row) for host, row in sim[0].items()}
    low, high = outcomes.ranges["lb2.example.com"]["fires_coalesced"]
    other = high if rows["lb2.example.com"]["fires_coalesced"] == low else low
    rows["lb2.example.com"]["fires_coalesced"] = other
    notes: list[str] = []
    assert compare(sim, (rows, sim[1]), 10.0, outcomes, notes) == []
    assert notes == [f"lb2.example.com: fires_coalesced {other}, inside the simulation's 5 to 6 over 8 orders; "
                     "the race: the fire at 80.0193 s landed 0.002 s before a run began at 80.0213 s: "
                     "joining a queued run or waiting for the next is a race"]
    rows["lb2.example.com"]["runs_triggered"] += 5
    (problem,) = compare(sim, (rows, sim[1]), 10.0, outcomes, [])
    assert problem.startswith("lb2.example.com: runs_triggered ") and problem.endswith("over 8 orders)")
