"""trigger-sim: many nodes on simulated time, driving the real protocol core.

    from simulator import run_scenario
    report = run_scenario("simulator/scenarios/storm.yaml", seed=1)
    report.data["totals"], report.events, report.events_per_second

See simulator/README.md for the scenario format.
"""

from __future__ import annotations

from pathlib import Path

from .report import Report, build_report
from .scenario import Scenario, ScenarioError, load_scenario
from .simulation import Simulation

SCENARIOS = Path(__file__).parent / "scenarios"

__all__ = ["SCENARIOS", "Report", "Scenario", "ScenarioError", "Simulation", "load_scenario", "run_scenario"]


def run_scenario(source: str | Path | dict | Scenario, seed: int | None = None,
                 trace: bool = False) -> Report:
    """Simulate a scenario (a path, a parsed dict or a Scenario) and report.

    `seed` overrides the scenario's own; `trace` keeps every
    (time, host, what) step in `Report.trace`.
    """
    scenario = source if isinstance(source, Scenario) else load_scenario(source)
    return build_report(Simulation(scenario, seed=seed, trace=trace).run())
