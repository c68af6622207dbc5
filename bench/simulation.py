"""Item 5: the simulator on the 10,000-node, one-hour scenario (scenarios/fleet.yaml).

Wall time and simulated events per second, via `simulator.run_scenario`,
in a process of its own (10,000 nodes' state should not sit in the bench's
memory, nor its garbage collector's work in other items' numbers). Side by
side, in a second process: bare SimPy processing the same number of events
(timeouts of 10,000 processes, no protocol; best of 3), the engine's floor on this
machine; the ratio says how much of the time is the protocol and the fakes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from .harness import base_env
from .report import Row, verdict

TARGET_SECONDS = 10.0


def measure_scenario(name: str = "fleet.yaml") -> dict:
    """Run in the worker process: the scenario's wall time, events and verdict."""
    try:
        from simulator import SCENARIOS, run_scenario
    except ImportError as exc:  # the simulator has not landed on this checkout
        return {"available": False, "why": str(exc)}
    t0 = time.perf_counter()
    report = run_scenario(SCENARIOS / name)
    wall = time.perf_counter() - t0
    data = report.data
    return {"available": True, "wall_s": wall, "simulator_wall_s": report.wall_seconds,
            "events": report.events, "events_per_s": report.events / wall if wall else None,
            "ok": report.ok, "simulated_s": data.get("ended_at"), "totals": data.get("totals")}


def measure_simpy(events: int, processes: int = 10000) -> dict:
    """Bare SimPy: `processes` processes yielding timeouts until `events` were processed."""
    import random

    import simpy

    env = simpy.Environment()
    rng = random.Random(5)
    per_process = max(1, events // processes)

    def node():
        for _ in range(per_process):
            yield env.timeout(rng.uniform(0, 3600 / per_process))

    for _ in range(processes):
        env.process(node())
    t0 = time.perf_counter()
    env.run()
    wall = time.perf_counter() - t0
    total = per_process * processes
    return {"wall_s": wall, "events": total, "events_per_s": total / wall if wall else None}


def measure_explore(runs: int) -> dict:
    """`trigger-sim explore seed --runs N`: checked runs with random faults per second."""
    from simulator import SCENARIOS, load_scenario
    from simulator.explore import explore

    failures, per_second = explore(load_scenario(SCENARIOS / "seed.yaml"), runs)
    return {"runs": runs, "runs_per_s": per_second, "failures": len(failures)}


def _worker(*args: str) -> dict:
    """`python -m bench.simulation ARGS` in a fresh process; its JSON answer."""
    done = subprocess.run([sys.executable, "-m", "bench.simulation", *args], env=base_env(),
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"simulation worker failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run() -> tuple[list[Row], dict]:
    fleet = _worker("scenario", "fleet.yaml")
    if not fleet["available"]:
        return [Row("5 simulator", "fleet.yaml (10,000 nodes × 1 h) wall time", None, "s",
                    note=f"simulator not available: {fleet['why']}")], fleet
    # Best of 3: a second of bare SimPy is easily hit by a neighbour's burst.
    bare = min((_worker("simpy", str(fleet["events"])) for _ in range(3)), key=lambda r: r["wall_s"])
    rows = [
        Row("5 simulator", "fleet.yaml (10,000 nodes × 1 h) wall time", fleet["wall_s"], "s",
            bare["wall_s"], "bare SimPy, same events", target=f"< {TARGET_SECONDS:.0f} s",
            verdict=verdict(fleet["wall_s"] < TARGET_SECONDS),
            note=f"{fleet['events']:,} events; check {'ok' if fleet['ok'] else 'FAILED'}"),
        Row("5 simulator", "simulated events per second", fleet["events_per_s"], "/s", bare["events_per_s"],
            "bare SimPy"),
    ]
    swarm = _worker("explore", "300")
    rows.append(Row("5 simulator", "explore: checked runs with random faults per second (seed.yaml)",
                    swarm["runs_per_s"], "/s", note=f"{swarm['runs']} runs, {swarm['failures']} failed"))
    return rows, {"fleet": fleet, "bare_simpy": bare, "explore": swarm}


if __name__ == "__main__":
    what, arg = sys.argv[1], sys.argv[2]
    measure = {"scenario": measure_scenario, "simpy": lambda n: measure_simpy(int(n)),
               "explore": lambda n: measure_explore(int(n))}[what]
    result = measure(arg)
    print(json.dumps(result))
