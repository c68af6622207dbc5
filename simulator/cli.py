"""`trigger-sim run SCENARIO [--seed N] [--out DIR] [--check] [--lab local [--time-scale K]]`.

`trigger-sim plan ...` (the scenario from Puppet catalogs) is simulator/plan/cli.py.

Exit status: 0 done (and, with --check, the check passed; with --lab, the
lab agreed); 1 --check found an unbounded loop or fires never followed by
a run, or --lab found a difference (each named) or could not play; 2 bad
usage or a bad scenario, or one the lab cannot take (one line on stderr
naming the field, never a traceback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .scenario import ScenarioError

EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


def _scenario_path(name: str) -> Path:
    """A path, or the name of a shipped scenario (`storm` -> simulator/scenarios/storm.yaml).

    A bare name that is neither raises ScenarioError naming the nearest
    shipped ones: `loopx` is a typo far more often than a missing file.
    """
    path = Path(name)
    if path.exists() or "/" in name or name.endswith((".yaml", ".yml")):
        return path
    import difflib

    from . import SCENARIOS

    shipped = SCENARIOS / f"{name}.yaml"
    if shipped.exists():
        return shipped
    near = difflib.get_close_matches(name, sorted(p.stem for p in SCENARIOS.glob("*.yaml")), n=3)
    guess = f"; did you mean {' or '.join(near)}?" if near else ""
    raise ScenarioError(f"{name}: no such file, nor a shipped scenario{guess} (`trigger-sim list` shows them)")


def _write(report, args) -> list[Path]:
    (args.out / "report.json").write_bytes(report.to_json())
    written = [args.out / "report.json"]
    if args.trace:
        lines = [f"{t:12.3f}  {host}  {what}\n" for t, host, what in report.trace]
        (args.out / "trace.txt").write_text("".join(lines))
        written.append(args.out / "trace.txt")
    if not args.no_plot:
        from .timeline import draw

        written.append(draw(report, args.out / "timeline.png"))
    return written


def main(argv: list[str] | None = None) -> int:
    """`trigger-sim`; a closed pipe (`trigger-sim list | head -1`) ends it quietly with exit 141."""
    from trigger.output import closed_pipe_ends_quietly

    try:
        return closed_pipe_ends_quietly(lambda: _main(argv))
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (explore says what it found first)
        print("trigger-sim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="trigger-sim",
        description="Simulate trigger across many nodes on simulated time, with the real protocol core.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="simulate a scenario and report")
    run.add_argument("scenario", help="a scenario YAML file, or the name of a shipped one (seed, storm, loop, fleet, faults, rolling)")
    run.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's, else 1)")
    run.add_argument("--out", type=Path, default=None,
                     help="directory for report.json and timeline.png (default: out/sim/SCENARIO)")
    run.add_argument("--check", action="store_true",
                     help="exit 1 on an unbounded loop or fires never followed by a run")
    run.add_argument("--trace", action="store_true", help="also write trace.txt: every (time, host, what)")
    run.add_argument("--no-plot", action="store_true", help="skip timeline.png")
    run.add_argument("--all-nodes", action="store_true", help="one table row per node even for large scenarios")
    run.add_argument("--lab", choices=["local"], default=None,
                     help="also play the scenario on the local lab's real nodes (root) and compare the two")
    run.add_argument("--time-scale", type=float, default=10.0, metavar="K",
                     help="with --lab: the lab plays K scenario seconds per real second (default 10)")
    run.add_argument("--races", type=int, default=None, metavar="N",
                     help="also run N orders of near-ties (0: none; default 0, with --lab 8) and report each "
                          "node's counts as a range; --lab passes when the lab's counts fall inside")
    run.add_argument("--race-window", type=float, default=None, metavar="S",
                     help="ties closer than S scenario seconds may break either way (default 0.5; with --lab "
                          "the lab's close-call window, 2 real seconds at its time scale)")
    sub.add_parser("list", help="list the shipped scenarios")
    explore = sub.add_parser("explore", help="run many seeds with random faults; print each failure, "
                                             "shrunk to the fewest faults that still fail")
    explore.add_argument("scenario", help="a scenario YAML file, or the name of a shipped one")
    explore.add_argument("--runs", type=int, default=100, help="how many seeds (default 100)")
    explore.add_argument("--first-seed", type=int, default=1, help="the first seed (default 1)")
    explore.add_argument("--faults", default=None,
                         help="fault kinds to draw from, comma-separated (default: every kind that heals)")
    explore.add_argument("--out", type=Path, default=Path("out") / "explore",
                         help="where reproducing scenario files go (default out/explore)")
    from .plan.cli import add_parser as add_plan_parser

    add_plan_parser(sub)
    bench = sub.add_parser("bench", help="time scenarios: wall, CPU, simulated events per second")
    bench.add_argument("scenarios", nargs="*", default=["seed", "storm", "loop", "faults", "fleet"])
    bench.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)

    if args.command == "list":
        from . import SCENARIOS, load_scenario

        broken = False
        for path in sorted(SCENARIOS.glob("*.yaml")):
            try:
                scenario = load_scenario(path)
            except ScenarioError as exc:  # one line for it; the others are still listed
                print(f"trigger-sim: {exc}", file=sys.stderr)
                broken = True
                continue
            print(f"{path.stem:8} {len(scenario.nodes):6} nodes  {scenario.description.splitlines()[0] if scenario.description else ''}")
        return 2 if broken else 0

    if args.command == "explore":
        return _explore(args)

    if args.command == "plan":
        from .plan.cli import main as plan_main

        return plan_main(args)

    if args.command == "bench":
        from . import run_scenario

        print(f"{'scenario':10} {'nodes':>6} {'events':>9} {'wall s':>7} {'cpu s':>7} {'events/s':>9}")
        for name in args.scenarios:
            try:
                report = run_scenario(_scenario_path(name), seed=args.seed)
            except ScenarioError as exc:
                print(f"trigger-sim: {exc}", file=sys.stderr)
                return EXIT_BAD_INPUT
            print(f"{name:10} {len(report.hosts):>6} {report.events:>9} {report.wall_seconds:>7.2f} "
                  f"{report.cpu_seconds:>7.2f} {report.events_per_second:>9.0f}", flush=True)
        return 0

    from . import load_scenario
    from .report import build_report, console_for, render
    from .simulation import Simulation

    try:
        scenario = load_scenario(_scenario_path(args.scenario))
    except ScenarioError as exc:
        print(f"trigger-sim: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.lab:
        return _run_on_lab(scenario, args)
    if args.out is None:
        args.out = Path("out") / "sim" / scenario.name
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"trigger-sim: --out {args.out}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT

    if args.races is not None and args.races < 0:
        print("trigger-sim: --races must be 0 or more", file=sys.stderr)
        return EXIT_BAD_INPUT
    sim = Simulation(scenario, seed=args.seed, trace=args.trace).run()
    report = build_report(sim)
    console = console_for()
    render(report, console, all_nodes=args.all_nodes)
    if args.races:
        from . import races

        outcomes = races.outcome_ranges(scenario, args.seed, args.races, args.race_window or races.DEFAULT_WINDOW)
        races.render(outcomes, console)
        report.data["races"] = outcomes.to_json()
    try:
        written = _write(report, args)
    except OSError as exc:
        print(f"trigger-sim: cannot write to {args.out}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    console.print(
        f"{report.events:,} simulated events in {report.wall_seconds:.2f} s wall, "
        f"{report.cpu_seconds:.2f} s CPU ({report.events_per_second:,.0f} events/s); wrote {', '.join(str(p) for p in written)}",
        highlight=False,
    )
    if args.check and not report.ok:
        return EXIT_CHECK_FAILED
    return 0


def _explore(args) -> int:
    from . import load_scenario
    from .explore import Interrupted, explore, parse_kinds, write_reproducer

    try:
        path = _scenario_path(args.scenario)
        kinds = parse_kinds(args.faults)
        if args.runs < 1:
            raise ValueError(f"--runs must be at least 1, got {args.runs}")
        scenario = load_scenario(path)
    except (ScenarioError, ValueError) as exc:
        print(f"trigger-sim: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        failures, per_second = explore(scenario, args.runs, kinds, args.first_seed)
    except Interrupted as stop:
        failures, per_second = stop.failures, None
        ran = f"interrupted after {stop.runs_done} of {args.runs} runs"
    else:
        ran = f"{args.runs} runs"
    for failure in failures:
        try:
            reproducer = write_reproducer(path, failure, args.out)
        except OSError as exc:
            print(f"trigger-sim: cannot write to {args.out}: {exc.strerror}", file=sys.stderr)
            return EXIT_BAD_INPUT
        faults = "; ".join(f.describe() for f in failure.faults)
        print(f"seed {failure.seed} fails with {faults}: {failure.problems[0]}")
        print(f"  reproduce: trigger-sim run {reproducer} --check --trace")
    print(f"{ran} with random faults ({', '.join(kinds)}): {len(failures)} failed"
          + ("" if per_second is None else f"; {per_second:.1f} runs/s"))
    if per_second is None:
        return EXIT_INTERRUPTED
    return EXIT_CHECK_FAILED if failures else 0


def _run_on_lab(scenario, args) -> int:
    """`--lab local`: the simulation, then the same scenario on real nodes; 0 when they agree."""
    import os

    from . import lab_replay
    from .report import build_report, console_for
    from .simulation import Simulation

    try:
        if not args.time_scale > 0:
            raise lab_replay.LabInputError(f"--time-scale must be more than 0, got {args.time_scale:g}")
        lab_replay.check_fits(scenario, lab_replay.local_lab().MAX_NODES)
        if os.geteuid() != 0:
            raise lab_replay.LabInputError("--lab local needs root (network namespaces, mounts)")
    except lab_replay.LabInputError as exc:
        print(f"trigger-sim: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sim = Simulation(scenario, seed=args.seed).run()
    report = build_report(sim)
    from lab.base import LabError  # importable now: local_lab() found the checkout

    try:
        lab_rows, notes = lab_replay.replay(scenario, sim, args.time_scale)
    except (LabError, lab_replay.LabReplayError) as exc:
        print(f"trigger-sim: the local lab: {exc}".splitlines()[0], file=sys.stderr)
        return EXIT_CHECK_FAILED
    sim_rows = lab_replay.sim_table(report.data)
    tolerance = lab_replay.TOLERANCE_REAL * args.time_scale
    # The lab breaks near-ties its own way: counts inside the range over the
    # orders those ties allow agree, and the note says which race decided.
    from . import races

    orders = races.DEFAULT_ORDERS if args.races is None else max(1, args.races)
    outcomes = races.outcome_ranges(scenario, args.seed, orders,
                                    args.race_window or lab_replay.CLOSE_REAL * args.time_scale)
    race_notes: list[str] = []
    problems = lab_replay.compare(sim_rows, lab_rows, tolerance, outcomes, race_notes)
    notes = (*notes, *race_notes)
    close = lab_replay.close_calls(sim.ledger, lab_replay.CLOSE_REAL * args.time_scale,
                                   lab_replay.lab_member_ttls(scenario, args.time_scale))
    if close:  # the likely cause of a count that differs: say so beside the tables
        notes = (*notes, f"{len(close)} close call(s) at {args.time_scale:g}x, where the lab may "
                 f"fold a fire differently:", *close)
    lab_replay.render(console_for(), f"trigger-sim: {scenario.name} (seed {sim.seed}) simulated and on "
                      f"the local lab at {args.time_scale:g}x", scenario, sim_rows, lab_rows,
                      problems, tolerance, notes)
    return EXIT_CHECK_FAILED if problems else 0


if __name__ == "__main__":
    sys.exit(main())
