"""`trigger run`: what the queue executes: mark start, run, mark finish."""

from __future__ import annotations

import argparse
import os
import sys

from ..layout import Layout
from ..output import one_line
from ..policy import RUN
from ..records import BadRecord, check_host, check_id
from .common import DEFAULT_RETENTION, connection_arguments, open_store_of, run_policy


HELP = "what the queue executes: mark start, run, mark finish"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="the host whose run this is (default: none, required)")
    p.add_argument("--run-id", help="the run record to start and finish (default: none; this or --standby)")
    p.add_argument("--standby", metavar="FIFO", help="wait started, and carry out each run whose "
                   "task-spooler job opens FIFO (what `trigger watch` keeps; default: none)")
    p.add_argument("--watcher", type=int, metavar="PID", help="with --standby: leave when idle once "
                   "this process is gone (default: the parent)")
    p.add_argument("--retention", type=int, default=DEFAULT_RETENTION,
                   help="seconds the finished run record is kept")
    p.add_argument("--lease-ttl", type=int, default=RUN.lease_ttl,
                   help="seconds of the run's lease: its lock and slots outlive a dead run this long")
    p.add_argument("--run-options", help="what a fire may add to the command: noop (--noop), tags "
                   "(--tags), comma-separated, or none (default: both for puppet agent/apply, else none)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- and the command to run")
    connection_arguments(p)


def run(args) -> int:
    import logging

    from ..driver import RealDriver, stop_on_sigterm
    from ..effects import CommandStopped
    from ..procedures import triggered_run
    from ..records import allowed_run_options
    from ..runner import option_argv, start_command

    host = check_host(args.host)
    if (args.run_id is None) == (args.standby is None):
        raise BadRecord("give one of --run-id RUN and --standby FIFO")
    run_id = None if args.run_id is None else check_id(args.run_id, "run id")
    if not args.command:
        raise BadRecord("no command given after --")
    allowed = allowed_run_options(args.run_options, args.command)
    policy = run_policy(args.lease_ttl, "--lease-ttl")
    store = open_store_of(args)

    def one_run(run_id: str, out: int | None = None) -> int:
        """One run; its command's output and ours to `out` (a standby's FIFO), else inherited."""
        stream = sys.stderr if out is None else open(out, "w", buffering=1, closefd=False)
        output = None
        if out is not None:  # the standby's command writes into a pipe copied to the FIFO; its job killed stops it
            from ..queue.standby_runner import JOB_GONE, JobOutput  # here: a cold run has no use for it

            output = JobOutput(out, lambda: driver.command.stop(policy.stop_grace, JOB_GONE))

        def execute(record):
            if output is not None and output.gone:
                return CommandStopped(None, JOB_GONE)
            try:
                return start_command(args.command + option_argv(record), record,
                                     out if output is None else output.write_end)
            except BadRecord as exc:  # the run ends as a shell's would: 127, and its fires are served
                print(f"trigger: error: {exc}", file=stream)
                return 127, f"trigger: error: {exc}\n"
            finally:
                if output is not None:
                    output.close_write_end()

        driver = RealDriver(store, execute=execute, tell=lambda note: tell(note, stream))
        if out is None:  # a cold run: SIGTERM (`tsp -k`) stops its command and gives its fires back
            stop_on_sigterm(driver)
        logs = logging.StreamHandler(stream)  # the store's complaints too, as a cold run's stderr has them
        logging.getLogger().addHandler(logs)
        try:
            return driver.run(triggered_run(Layout(args.prefix), host, run_id, args.retention, policy=policy,
                                            allowed=allowed))
        finally:
            logging.getLogger().removeHandler(logs)
            if output is not None:
                output.close()

    try:
        if run_id is not None:
            return one_run(run_id)
        from pathlib import Path

        from ..queue.standby_runner import jobs_running, serve

        fifo = Path(args.standby)
        serve(fifo, one_run, jobs_running(fifo), args.watcher or os.getppid())
        return 0
    finally:
        store.close()


def tell(note, stream) -> None:
    """`trigger run` speaks on stderr, a standby into its FIFO: task-spooler keeps it with the run's output."""
    from ..driver import note_text

    if note.level == "debug":
        return
    level = "" if note.level == "info" else f"{note.level}: "
    try:
        print(f"trigger: {level}{one_line(note_text(note))}", file=stream)
    except OSError:
        pass  # a standby's job went (its cat killed): the run goes on without a listener
