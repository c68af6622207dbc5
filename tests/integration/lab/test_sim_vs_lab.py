"""Fidelity shown: each shipped scenario that fits the local lab gives the same per-node
counts on 11 real nodes as in the simulator (`trigger-sim run SCENARIO --lab local`).

The lab here is a lab of its own (11 nodes, etcd on the first three, the
watchers running the stand-in Puppet of simulator/lab_puppet.py), made once
for the module, played scenario after scenario, and destroyed at the end,
also on failure and SIGTERM.
"""

from __future__ import annotations

import pytest

from lab.local import claimed_lab
from simulator import SCENARIOS, load_scenario
from simulator.lab_replay import (
    CLOSE_REAL, TOLERANCE_REAL, LabReplay, close_calls, compare, lab_member_ttls, render, run_command,
    sim_table,
)
from simulator.report import build_report
from simulator.simulation import Simulation
from tests.integration.lab.conftest import _need_backend, fresh_lab

pytestmark = [pytest.mark.root, pytest.mark.etcd, pytest.mark.tsp, pytest.mark.puppet, pytest.mark.slow,
              pytest.mark.backend("local")]  # it makes a local lab of its own

NODES = 11  # the largest scenario below: rolling and storm-lab

# (scenario, time scale): as fast as each one's close calls allow (the test
# checks), given that every hop costs the real programs process start-ups
# that the scale does not shrink. rolling fires twice 8 s apart at its app nodes.
SCENARIOS_ON_LAB = [("seed", 10), ("loop", 8), ("storm-lab", 5), ("rolling", 3)]


@pytest.fixture(scope="module")
def replay_lab():
    _need_backend("local")
    with fresh_lab(claimed_lab("sim", nodes=NODES), "replay",
                   lambda lab: lab.converge(run_cmd=run_command(lab))) as lab:
        yield lab


@pytest.mark.parametrize("name, scale", SCENARIOS_ON_LAB)
def test_the_scenario_gives_the_same_counts_on_the_lab(replay_lab, name, scale):
    from rich.console import Console

    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    sim = Simulation(scenario).run()
    calls = close_calls(sim.ledger, CLOSE_REAL * scale, lab_member_ttls(scenario, scale))
    assert calls == [], f"{name} at {scale}x leaves the lab too little room: " + "; ".join(calls)
    simulated = sim_table(build_report(sim).data)
    player = LabReplay(replay_lab, scenario, sim.ledger.puppet_runs, scale, sim.seed)
    on_lab = player.run()
    tolerance = TOLERANCE_REAL * scale
    problems = compare(simulated, on_lab, tolerance)
    console = Console(width=200, record=True)
    render(console, f"{name} at {scale}x", scenario, simulated, on_lab, problems, tolerance, player.notes())
    assert problems == [], console.export_text()
