"""`trigger logs`: the tail of a run's output, kept with its finished record."""

from __future__ import annotations

import argparse
import sys

from ..layout import Layout
from ..records import OUTPUT_TAIL_BYTES, check_id
from .common import EXIT_NOT_FOUND, connection_arguments, host_option, open_store_of


HELP = f"the last {OUTPUT_TAIL_BYTES // 1024} KiB of a run's output: of run RUN, or of the runs that served EVENT"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="RUN|EVENT", help="a run id, or the event id `fire` printed")
    p.add_argument("--host", help="only this host's run (default: every host's, each under a header)")
    connection_arguments(p)


def check(args) -> None:
    check_id(args.id, "run or event id")
    args.host = host_option(args.host) if args.host is not None else None


def run(args) -> int:
    from ..results import list_runs, runs_serving

    store = open_store_of(args)
    try:
        runs, _ = list_runs(store, Layout(args.prefix), args.host)
    finally:
        store.close()
    found = [r for r in runs if r.run_id == args.id] or list(runs_serving(runs).get(args.id, {}).values())
    if not found:
        where = f" on {args.host}" if args.host else ""
        print(f"trigger: no run{where} is kept that is or served {args.id} (not fired there, not "
              f"run yet, or older than its retention)", file=sys.stderr)
        return EXIT_NOT_FOUND
    found.sort(key=lambda r: r.host)
    for run in found:
        if len(found) > 1:
            print(f"--- {run.host}: run {run.run_id}, {describe(run)}", flush=True)
        if run.output:
            sys.stdout.write(run.output if run.output.endswith("\n") else run.output + "\n")
        elif len(found) == 1:
            print(f"trigger: run {run.run_id} on {run.host} kept no output ({describe(run)})", file=sys.stderr)
    return 0


def describe(run) -> str:
    if run.state != "finished":
        return run.state
    if run.reason:
        return run.reason
    return f"exit {run.exit_code}" + (" (noop)" if run.noop else "")
