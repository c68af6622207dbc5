"""Races predicted, not excluded: per-node outcomes over the orders near-ties allow.

Real fleets race. Two load balancers notified at the same instant ask for
a `serial` slot within a millisecond of each other; which one gets it
first is decided by the network, and the other's runs wait. A fire that
lands a fraction of a second before a run starts is folded into it, a
fraction after it needs a run of its own. The simulation breaks such ties
one way (SimPy's scheduling order); the lab may break them the other.

So the scenario is run again with every node's watches delivering a little
later, by a per-node amount drawn from `[0, window)` with a seed of its own
(`order`): events of different nodes that are closer than the window can
swap, and nothing else changes (the nodes' own random draws, run durations
and splays, come from their own streams and stay the same). The orders are
sampled, `orders` runs in all, the unskewed run first. Per node, each count
becomes a range [min, max] over them, and the report names which races
(the unskewed run's close calls, `lab_replay.close_calls`) lie behind a
count that moved. A comparison passes when the other side's counts fall
inside the ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .report import build_report
from .scenario import Scenario
from .simulation import Simulation

COUNTS = ("runs_scheduled", "runs_triggered", "fires_received", "fires_coalesced", "fires_refused", "unserved")
DEFAULT_ORDERS = 8
DEFAULT_WINDOW = 0.5  # seconds: ties closer than this may break either way


@dataclass
class Outcomes:
    """Per host and count, (min, max) over the sampled orders; the base run's close calls per host."""

    orders: int
    window: float
    ranges: dict[str, dict[str, tuple[int, int]]]
    base: dict  # the unskewed run's report data
    races: dict[str, list[str]] = field(default_factory=dict)

    def moved(self) -> dict[str, dict[str, tuple[int, int]]]:
        """Only the hosts and counts whose outcome depends on the order."""
        out = {}
        for host, counts in self.ranges.items():
            varying = {k: r for k, r in counts.items() if r[0] != r[1]}
            if varying:
                out[host] = varying
        return out

    def outside(self, host: str, counts: dict) -> list[str]:
        """The counts of `host` (e.g. the lab's) that no sampled order gave, one line each."""
        problems = []
        for key in COUNTS:
            low, high = self.ranges[host][key]
            if not low <= counts[key] <= high:
                span = f"{low}" if low == high else f"{low} to {high}"
                problems.append(f"{host}: {key} {counts[key]}, outside the simulation's {span} "
                                f"over {self.orders} orders of its close calls")
        return problems

    def explain(self, host: str, key: str, value: int) -> str | None:
        """For a count that differs from the unskewed run but lies in the range: the note saying which race."""
        low, high = self.ranges[host][key]
        if not low <= value <= high:
            return None
        race = (self.races.get(host) or ["no close call found"])[0].split(": ", 1)[-1]
        return (f"{host}: {key} {value}, inside the simulation's {low} to {high} over {self.orders} orders; "
                f"the race: {race}")

    def to_json(self) -> dict:
        return {"orders": self.orders, "window": self.window,
                "ranges": {h: {k: list(r) for k, r in c.items()} for h, c in self.moved().items()},
                "races": {h: self.races.get(h, []) for h in self.moved()}}


def outcome_ranges(scenario: Scenario, seed: int | None = None, orders: int = DEFAULT_ORDERS,
                   window: float = DEFAULT_WINDOW) -> Outcomes:
    from .lab_replay import close_calls

    base_sim = Simulation(scenario, seed=seed).run()
    base = build_report(base_sim).data
    first = {n["host"]: {k: n[k] for k in COUNTS} for n in base["nodes"]}
    ranges = {host: {k: (v, v) for k, v in counts.items()} for host, counts in first.items()}
    races: dict[str, list[str]] = {}

    def note(ledger, hosts: set[str], order: int) -> None:
        for line in close_calls(ledger, window):
            host = line.split(":", 1)[0]
            if host in hosts and line not in races.get(host, ()):
                races.setdefault(host, []).append(line if not order else f"{line} (order {order})")

    for order in range(1, orders):
        sim = Simulation(scenario, seed=seed, skew=(window, order)).run()
        changed = set()
        for n in build_report(sim).data["nodes"]:
            r = ranges[n["host"]]
            for k in COUNTS:
                r[k] = (min(r[k][0], n[k]), max(r[k][1], n[k]))
                if n[k] != first[n["host"]][k]:
                    changed.add(n["host"])
        # the races behind a count that moved: the close calls of both orders on that host
        note(base_sim.ledger, changed, 0)
        note(sim.ledger, changed, order)
    for host in ranges:
        if host in races or all(low == high for low, high in ranges[host].values()):
            continue
        races[host] = near_fires(base_sim.ledger, host, window)
    return Outcomes(orders, window, ranges, base, races)


def near_fires(ledger, host: str, window: float, most: int = 3) -> list[str]:
    """Fires into `host` landing within `window` of one of its runs' start: on one
    side they join the queued run (coalesced), on the other they wait for the next."""
    starts = sorted({started for (h, _event), (_run, started) in ledger.served_by.items() if h == host})
    lines = []
    for (h, _event), t in sorted(ledger.fired.items(), key=lambda item: item[1]):
        if h != host:
            continue
        near = min(starts, key=lambda s: abs(s - t), default=None)
        if near is not None and abs(near - t) < window:
            side = "before" if t <= near else "after"
            lines.append((abs(near - t), f"{host}: the fire at {t:g} s landed {abs(near - t):.3f} s {side} a run "
                                         f"began at {near:g} s: joining a queued run or waiting for the next is a race"))
    lines = [line for _, line in sorted(lines)]  # the closest call first: the likeliest to decide
    return lines[:most] + ([f"{host}: and {len(lines) - most} more such fire(s)"] if len(lines) > most else [])


def render(outcomes: Outcomes, console) -> None:
    """Below the report's table: the counts that depend on how near-ties break, and why."""
    moved = outcomes.moved()
    console.print(f"races: {outcomes.orders} orders of near-ties (within {outcomes.window:g} s) sampled; "
                  + (f"{len(moved)} node(s) have counts that depend on them:" if moved else
                     "no count depends on them"), highlight=False)
    for host, counts in moved.items():
        ranges = ", ".join(f"{k} {lo} to {hi}" for k, (lo, hi) in counts.items())
        race = (outcomes.races.get(host) or ["no close call found"])[0].split(": ", 1)[-1]
        console.print(f"  {host}: {ranges}; {race}", highlight=False, markup=False)
