"""`trigger-sim plan`: the fleet's triggers from its Puppet catalogs, before a change ships.

    trigger-sim plan --catalogs DIR [-o json] [--fail-on loop,storm[:N],warning]
    trigger-sim plan --manifest site.pp --facts DIR [--modulepath P] [--hiera-config F]
    trigger-sim plan --environment-path P [--environment E] --facts DIR
    trigger-sim plan --puppetdb URL [--puppetdb-cacert F --puppetdb-cert F --puppetdb-key F] [--changes reports]
        [--out DIR] [--run [--check]] [--changes ...] [--interval S] [--splay S] [--duration S|MIN-MAX]

Exit status: 0 done; 1 `--fail-on` found something (each finding named on
stderr) or `--run --check` failed; 2 bad usage, or input that could not
be read (one line per file or node on stderr; the rest of the fleet is
still planned and reported).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from .scenario_writer import Assumptions

# the exit statuses above; `trigger-sim run` gives the same meanings to 1 and 2
EXIT_FINDINGS = EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2


def add_parser(sub) -> None:
    d = Assumptions()
    plan = sub.add_parser("plan", help="the fleet's triggers, loops and storms from its Puppet catalogs",
                          description=__doc__.splitlines()[0])
    source = plan.add_argument_group("where the catalogs come from (one of)")
    source.add_argument("--catalogs", type=Path, metavar="DIR",
                        help="catalog JSON files: Puppet's, PuppetDB wire format or PuppetDB query API "
                             "(detected per file)")
    source.add_argument("--manifest", type=Path, metavar="FILE",
                        help="compile every node of --facts with Puppet, in one process")
    source.add_argument("--environment-path", type=Path, metavar="P",
                        help="compile from Puppet environments (with --environment, default production)")
    source.add_argument("--puppetdb", metavar="URL",
                        help="every active node's catalog from PuppetDB (https://puppet:8081; TLS: the agent's "
                        "own files unless the three --puppetdb-* are given)")
    for name in ("cacert", "cert", "key"):
        plan.add_argument(f"--puppetdb-{name}", metavar="F", help=f"with --puppetdb: the {name} PEM file")
    plan.add_argument("--facts", type=Path, metavar="DIR",
                      help="NODE.json ({name, values}, as `puppet facts find` prints) or NODE.yaml per node")
    plan.add_argument("--modulepath", metavar="P", help="with --manifest: Puppet's modulepath (DIR:DIR)")
    plan.add_argument("--hiera-config", type=Path, metavar="F", help="Puppet's hiera_config")
    plan.add_argument("--environment", default="production", help="with --environment-path (default production)")
    plan.add_argument("--save-catalogs", type=Path, metavar="DIR",
                      help="also write each compiled catalog to DIR/NODE.json")
    plan.add_argument("-o", "--output", choices=["table", "json"], default="table",
                      help="tables on the terminal (default), or one JSON document on stdout")
    plan.add_argument("--fail-on", metavar="KINDS",
                      help="exit 1 naming each finding: loop, storm[:N] (more than N fires, default 10, "
                           "into one host in one wave), warning; comma-separated")
    plan.add_argument("--out", type=Path, metavar="DIR",
                      help="write the generated scenario (NAME.yaml) and plan.json here")
    plan.add_argument("--name", default="plan", help="the scenario's name (default plan)")
    plan.add_argument("--run", action="store_true", help="simulate the generated scenario at once and report")
    plan.add_argument("--check", action="store_true", help="with --run: exit 1 when the simulation's check fails")
    plan.add_argument("--seed", type=int, default=d.seed, help=f"with --run: random seed (default {d.seed})")
    plan.add_argument("--races", type=int, default=0, metavar="N",
                      help="with --run: also N orders of near-ties; each node's counts as a range (simulator/races.py)")
    plan.add_argument("--no-plot", action="store_true", help="with --run: skip timeline.png")
    plan.add_argument("--all-nodes", action="store_true", help="with --run: one table row per node")
    what = plan.add_argument_group("what catalogs cannot say (the scenario's assumptions)")
    what.add_argument("--changes", default=d.changes.describe().replace(":*", ""),
                      help="release[@T][:GLOB] (default release@60: every notifying resource changes "
                           "once on the nodes matching GLOB, which CI runs at T), converge[@T][:GLOB] "
                           "(and their targets change until caught up), always, rate:P, or reports (with "
                           "--puppetdb: each resource's rate of change in the reports PuppetDB keeps)")
    what.add_argument("--interval", type=float, default=d.interval, help=f"runinterval, s (default {d.interval:g})")
    what.add_argument("--splay", type=float, default=d.splay, help=f"first run within this, s (default {d.splay:g})")
    what.add_argument("--duration", default=d.duration, help=f"a Puppet run, s: N or MIN-MAX (default {d.duration})")
    what.add_argument("--until", type=float, default=d.until, help=f"simulated time, s (default {d.until:g})")
    what.add_argument("--drain", type=float, default=d.drain, help=f"then at most this long to settle (default {d.drain:g})")


def _fail(message: str) -> int:
    print(f"trigger-sim: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _fleet(args):
    """The catalogs read or compiled; raises ValueError (one line) when there is nothing to plan."""
    from .catalog import CatalogError
    from .importers import load_catalog_dir, load_catalogs

    chosen = [o for o in ("catalogs", "manifest", "environment_path", "puppetdb") if getattr(args, o) is not None]
    if len(chosen) != 1:
        raise ValueError("give one of --catalogs DIR, --manifest FILE, --environment-path P or --puppetdb URL")
    if args.puppetdb is not None:
        return _puppetdb_fleet(args)
    if args.catalogs is not None:
        try:
            return load_catalog_dir(args.catalogs)
        except CatalogError as exc:
            raise ValueError(str(exc)) from None
    from .compile import CompileError, CompileOptions, compile_catalogs

    if args.facts is None:
        raise ValueError("compiling needs --facts DIR (one fact file per node)")
    options = CompileOptions(args.manifest, args.facts, args.modulepath, args.hiera_config,
                             args.environment_path, args.environment)
    docs, errors = [], []
    try:
        for node, result in compile_catalogs(options):
            if isinstance(result, str):
                errors.append(result)
                continue
            docs.append((f"{node} (compiled)", result))
            if args.save_catalogs:
                args.save_catalogs.mkdir(parents=True, exist_ok=True)
                (args.save_catalogs / f"{node}.json").write_text(json.dumps(result, indent=1) + "\n")
    except CompileError as exc:
        raise ValueError(str(exc)) from None
    except OSError as exc:
        raise ValueError(f"--save-catalogs {args.save_catalogs}: {exc.strerror}") from None
    fleet = load_catalogs(docs)
    fleet.errors[:0] = errors
    return fleet


def _puppetdb_fleet(args):
    """The catalogs PuppetDB keeps; with `--changes reports`, its reports as the change rates."""
    from trigger.puppetdb import PuppetDB, PuppetDBError, TLSFiles

    from .importers import load_catalogs
    from .scenario_writer import rates_from_reports

    files = [args.puppetdb_cacert, args.puppetdb_cert, args.puppetdb_key]
    if any(files) and not all(files):
        raise ValueError("give all of --puppetdb-cacert, --puppetdb-cert and --puppetdb-key, or none "
                         "(the agent's own)")
    try:
        db = PuppetDB(args.puppetdb, TLSFiles(*files) if all(files) else None)
        fleet = load_catalogs((f"puppetdb:{doc.get('certname')}", doc) for doc in db.catalogs())
        if args.assume.changes.kind == "reports":
            args.assume = replace(args.assume, changes=replace(
                args.assume.changes, rates=rates_from_reports(db.changed_resources())))
    except PuppetDBError as exc:
        raise ValueError(str(exc)) from None
    return fleet


def main(args) -> int:
    from rich.console import Console

    from .analysis import analyse
    from .report import findings, parse_fail_on, plan_document, render
    from .scenario_writer import Assumptions, build_scenario, parse_changes, scenario_yaml

    try:
        fail_on = parse_fail_on(args.fail_on)
        assume = Assumptions(parse_changes(args.changes), args.interval, args.splay, args.duration,
                             args.until, args.drain, args.seed)
        if args.check and not args.run:
            raise ValueError("--check needs --run")
        if assume.changes.kind == "reports" and args.puppetdb is None:
            raise ValueError("--changes reports needs --puppetdb URL (the reports PuppetDB keeps)")
        args.assume = assume
        fleet = _fleet(args)
        assume = args.assume
    except ValueError as exc:
        return _fail(str(exc))
    if not fleet.catalogs:
        for line in fleet.errors:
            print(f"trigger-sim: {line}", file=sys.stderr)
        return _fail("no catalog could be read: nothing to plan")
    plan = analyse(fleet.catalogs, fleet.errors)
    document = plan_document(plan)
    console = Console(stderr=args.output == "json")

    scenario = None
    if args.out or args.run:
        try:
            scenario = build_scenario(plan, assume, args.name)
        except ValueError as exc:
            return _fail(str(exc))
    if args.out:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{args.name}.yaml").write_text(scenario_yaml(scenario, plan, assume))
            (args.out / "plan.json").write_text(json.dumps(document, indent=1) + "\n")
        except OSError as exc:
            return _fail(f"--out {args.out}: {exc.strerror}")

    status = 0
    if args.output == "table":
        render(plan, console)
    if args.run:
        status = _simulate(scenario, args, console, document)
    if args.output == "json":
        print(json.dumps(document, indent=1))
    if args.out:
        console.print(f"wrote {args.out / (args.name + '.yaml')} and {args.out / 'plan.json'}", highlight=False)
    for line in plan.errors:
        print(f"trigger-sim: {line}", file=sys.stderr)
    found = findings(plan, fail_on)
    for line in found:
        print(f"trigger-sim: {line}", file=sys.stderr)
    if plan.errors:
        return EXIT_BAD_INPUT
    return EXIT_FINDINGS if found else status


def _simulate(scenario: dict, args, console, document: dict) -> int:
    """`--run`: the generated scenario through the same simulator `trigger-sim run` uses."""
    from ..report import build_report, render
    from ..scenario import ScenarioError, parse_scenario
    from ..simulation import Simulation

    try:
        checked = parse_scenario(scenario, args.name)
    except ScenarioError as exc:  # a plan that makes a bad scenario is our bug: say so plainly
        console.print(f"trigger-sim: the generated scenario is not valid: {exc}", highlight=False)
        return EXIT_BAD_INPUT
    sim = Simulation(checked, seed=args.seed).run()
    report = build_report(sim)
    if args.races:
        from .. import races

        outcomes = races.outcome_ranges(checked, args.seed, args.races)
        report.data["races"] = outcomes.to_json()
    if args.output == "json":
        document["simulation"] = report.data
    else:
        render(report, console, all_nodes=args.all_nodes)
        if args.races:
            races.render(outcomes, console)
    if args.out and not args.no_plot:
        from ..timeline import draw

        draw(report, args.out / "timeline.png")
    return EXIT_CHECK_FAILED if args.check and not report.ok else 0
