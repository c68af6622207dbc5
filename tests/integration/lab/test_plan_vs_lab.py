"""Shown on real nodes: the control repo, compiled by real Puppet and planned by
`trigger-sim plan`, gives per node the counts its simulation predicts when one
release is played on the local lab (as `trigger-sim run PLAN.yaml --lab local`).

The lab's watchers run the stand-in Puppet (simulator/lab_puppet.py), which
takes Puppet's run lock, sleeps the simulated durations and fires, with the
real `trigger fire`, what the plan's resources notify. The control repo has
near-ties (two load balancers ask for the serial slot within a few
milliseconds; a fire lands close to a run's start), so the comparison is
against the simulation's outcome ranges over the orders those ties allow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.lab_replay import CLOSE_REAL, TOLERANCE_REAL, LabReplay, compare, render, sim_table
from simulator.plan.analysis import analyse
from simulator.plan.compile import CompileOptions, compile_catalogs
from simulator.plan.importers import load_catalogs
from simulator.plan.scenario_writer import Assumptions, build_scenario
from simulator.races import outcome_ranges
from simulator.scenario import parse_scenario
from simulator.simulation import Simulation
from tests.conftest import need
from tests.integration.lab.test_sim_vs_lab import pytestmark, replay_lab  # noqa: F401 (the lab fixture)

ROOT = Path(__file__).resolve().parents[3]
REPO = ROOT / "examples" / "control-repo"
SCALE = 10


def test_the_control_repo_release_on_the_lab_matches_its_plan(replay_lab):  # noqa: F811
    from rich.console import Console

    need("ruby", "ruby")
    options = CompileOptions(REPO / "manifests" / "site.pp", REPO / "facts", f"{REPO / 'site'}:{ROOT / 'puppet'}",
                             REPO / "hiera.yaml")
    compiled = list(compile_catalogs(options))
    assert [n for n, c in compiled if isinstance(c, str)] == []
    fleet = load_catalogs(compiled)
    plan = analyse(fleet.catalogs)
    assert [(lp.hosts, lp.ttl) for lp in plan.loops] == [(("app01.example.com", "app02.example.com"), 3)]
    scenario = parse_scenario(build_scenario(plan, Assumptions(until=600, drain=600), "control-repo"),
                              "control-repo")

    sim = Simulation(scenario).run()
    outcomes = outcome_ranges(scenario, orders=8, window=CLOSE_REAL * SCALE)
    simulated = sim_table(outcomes.base)
    player = LabReplay(replay_lab, scenario, sim.ledger.puppet_runs, SCALE, sim.seed)
    on_lab = player.run()
    tolerance = TOLERANCE_REAL * SCALE
    notes: list[str] = []
    problems = compare(simulated, on_lab, tolerance, outcomes, notes)
    console = Console(width=200, record=True)
    render(console, f"control-repo at {SCALE}x", scenario, simulated, on_lab, problems, tolerance,
           (*player.notes(), *notes))
    assert problems == [], console.export_text()
    # the loop ran and was refused by its ttl on the lab too
    assert on_lab[0]["app01.example.com"]["fires_refused"] + on_lab[0]["app02.example.com"]["fires_refused"] > 0
