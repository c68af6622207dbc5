"""Swarm testing: many seeds with random faults, each checked, failures shrunk.

`trigger-sim explore SCENARIO --runs N [--faults KINDS]` draws, for each
seed, one to three faults of the given kinds at random times and hosts
(every one heals: a fault that lasts to the end would explain any unserved
fire), runs the scenario with them and checks the delivery promise. A run
that fails is shrunk: faults are dropped one at a time while the check
still fails, so what is printed is the fewest faults that reproduce it,
with the seed, as a scenario file `trigger-sim run` takes.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from .report import build_report
from .scenario import FAULT_KINDS, INSTANT_FAULTS, NODE_FAULTS, Duration, Fault, Scenario
from .simulation import Simulation

DEFAULT_KINDS = ("cut_off", "kill_watcher", "kill_tsp", "kill_run", "reboot", "ambiguous_writes",
                 "latency", "restart_etcd", "compact_etcd", "slow_runs", "kill_runner", "orphan_child",
                 "kill_job", "black_hole", "clock_step")
LATENCY = Duration("uniform", 0.05, 2.0)
CLOCK_STEPS = (-3600.0, -10.0, 10.0, 3600.0)  # a wrong zone's hour, NTP's usual step
DURING_RUNS = ("kill_run", "kill_runner", "kill_job", "orphan_child")  # nothing to hit on an idle host


@dataclass(frozen=True)
class Failure:
    seed: int
    faults: tuple[Fault, ...]
    problems: tuple[str, ...]


def random_faults(scenario: Scenario, rng: random.Random, kinds: tuple[str, ...]) -> tuple[Fault, ...]:
    hosts = [host for host, _ in scenario.nodes]
    faults = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(kinds)
        at = round(rng.uniform(0, scenario.until), 3)
        if kind in DURING_RUNS and scenario.fires and rng.random() < 0.5:
            # A run must be going for these to matter: half of them land within
            # a minute after an external fire, when runs are likeliest.
            at = round(rng.choice(scenario.fires).at + rng.uniform(0, 60), 3)
        span = None if kind in INSTANT_FAULTS else round(rng.uniform(1, 120), 3)
        if kind == "restart_etcd":
            span = round(rng.uniform(0.5, 20), 3)
        faults.append(Fault(
            at, kind, (rng.choice(hosts),) if kind in NODE_FAULTS else (), span,
            factor=4.0 if kind == "slow_runs" else 1.0,
            delay=LATENCY if kind == "latency" else None,
            step=rng.choice(CLOCK_STEPS) if kind == "clock_step" else 0.0))
    return tuple(sorted(faults, key=lambda f: f.at))


def check(scenario: Scenario, seed: int, faults: tuple[Fault, ...]) -> tuple[str, ...]:
    """The check's problems with these faults ((): it passed). A simulation that
    raises fails too: shrunk and written as a reproducer like any other failure,
    rather than ending the exploration (`trigger-sim run` on it shows the traceback)."""
    try:
        sim = Simulation(replace(scenario, faults=faults), seed=seed).run()
    except Exception as exc:  # noqa: BLE001 (the protocol code under test raised)
        return (f"the simulation raised {type(exc).__name__}: {exc}",)
    report = build_report(sim)
    return tuple(report.data["check"]["problems"])


def shrink(scenario: Scenario, seed: int, faults: tuple[Fault, ...]) -> tuple[tuple[Fault, ...], tuple[str, ...]]:
    """Drop faults one at a time while the check still fails."""
    problems = check(scenario, seed, faults)
    dropped = True
    while dropped and len(faults) > 1:
        dropped = False
        for i in range(len(faults)):
            fewer = faults[:i] + faults[i + 1:]
            still = check(scenario, seed, fewer)
            if still:
                faults, problems, dropped = fewer, still, True
                break
    return faults, problems


class Interrupted(Exception):
    """Ctrl-C in an exploration: what it found until then (a failure being shrunk: as drawn)."""

    def __init__(self, failures: list[Failure], runs_done: int):
        super().__init__(f"interrupted after {runs_done} run(s)")
        self.failures, self.runs_done = failures, runs_done


def explore(scenario: Scenario, runs: int, kinds: tuple[str, ...] = DEFAULT_KINDS,
            first_seed: int = 1) -> tuple[list[Failure], float]:
    """Run `runs` seeds with random faults; the failures (shrunk) and the runs per second.
    Interrupted (Ctrl-C) with the failures found so far."""
    if scenario.discovery is None:
        kinds = tuple(k for k in kinds if k != "duplicate_watcher")
    started = time.perf_counter()
    failures = []
    for seed in range(first_seed, first_seed + runs):
        faults = random_faults(scenario, random.Random(f"explore/{seed}"), kinds)
        problems: tuple[str, ...] = ()
        try:
            problems = check(scenario, seed, faults)
            if problems:
                faults, problems = shrink(scenario, seed, faults)
        except KeyboardInterrupt:
            raise Interrupted(failures + ([Failure(seed, faults, problems)] if problems else []),
                              seed - first_seed) from None
        if problems:
            failures.append(Failure(seed, faults, problems))
    elapsed = time.perf_counter() - started
    return failures, runs / elapsed if elapsed else 0.0


def fault_spec(fault: Fault) -> dict:
    """A fault as the scenario file writes it."""
    spec: dict = {"at": fault.at, "kind": fault.kind}
    if fault.hosts:
        spec["hosts"] = list(fault.hosts)
    if fault.span is not None and fault.kind not in INSTANT_FAULTS:
        spec["for"] = fault.span
    if fault.kind == "slow_runs":
        spec["factor"] = fault.factor
    if fault.kind == "clock_step":
        spec["step"] = fault.step
    if fault.delay is not None:
        kind, a, b = fault.delay.kind, fault.delay.a, fault.delay.b
        spec["delay"] = {kind: [a, b] if kind in ("uniform", "normal") else a}
    return spec


def write_reproducer(source: Path, failure: Failure, out: Path) -> Path:
    """The scenario file with the failure's seed and faults, for `trigger-sim run --check`."""
    data = yaml.safe_load(source.read_text())
    data["seed"] = failure.seed
    data["faults"] = [fault_spec(f) for f in failure.faults]
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{source.stem}-seed{failure.seed}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def parse_kinds(text: str | None) -> tuple[str, ...]:
    """`--faults cut_off,kill_run`: known kinds only (ValueError naming the unknown)."""
    if not text:
        return DEFAULT_KINDS
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown or not kinds:
        import difflib

        near = [m for k in unknown for m in difflib.get_close_matches(k, FAULT_KINDS, n=1)]
        guess = f"did you mean {' or '.join(near)}? " if near else ""
        raise ValueError(f"--faults: unknown fault kind {', '.join(unknown) or '(none)'}; "
                         f"{guess}known: {', '.join(FAULT_KINDS)}")
    return kinds
