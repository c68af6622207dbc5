"""`trigger watch`: the daemon, one per host."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from ..fire import new_event_id
from ..layout import Layout
from ..policy import RUN, STANDBY_LINGER, STANDBY_MAX_LINGER
from ..records import BadRecord, allowed_run_options
from ..store import UnavailableError
from .common import (DEFAULT_RETENTION, connection_arguments, endpoints, host_option, names, not_negative,
                     open_store_of, pass_on, positive, run_policy, targets)


HELP = "the daemon: queue a run when this host's inbox fills"


DEFAULT_RUN_CMD = "puppet agent --test"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="this host's name (lower-cased), as fires name it "
                   "(default: none, required)")
    p.add_argument("--run-cmd", default=DEFAULT_RUN_CMD, help="the command a run executes, split like a "
                   "shell would but never run through one")
    p.add_argument("--run-options", help="what a fire may add to --run-cmd: noop (--noop), tags "
                   "(--tags), comma-separated, or none; a run asked for another is refused and runs "
                   "nothing (default: both for puppet agent/apply, else none)")
    p.add_argument("--queue", default="tsp", choices=["tsp", "standby", "inline"],
                   help="tsp: task-spooler ($TS_SOCKET honoured); standby: task-spooler, runs carried "
                   "out by a `trigger run` started ahead (what --standby picks); inline: a child "
                   "process (tests)")
    p.add_argument("--check-interval", type=float, default=5.0,
                   help="seconds between re-reads while runs are outstanding")
    p.add_argument("--retention", type=int, default=DEFAULT_RETENTION,
                   help="seconds a finished run record is kept")
    p.add_argument("--roles", help="roles this host has, comma-separated, for --hosts role:NAME "
                   "(default: none)")
    p.add_argument("--elections", help="elections this host stands in, comma-separated (default: none)")
    p.add_argument("--config-dir", help="also read roles and elections from the file names in "
                   "DIR/roles/ and DIR/elections/, as Puppet writes them (default: none)")
    p.add_argument("--member-ttl", type=int, default=10,
                   help="seconds after which a silent watcher loses its roles and elections")
    p.add_argument("--run-lease-ttl", type=int, default=RUN.lease_ttl,
                   help=f"seconds a dead run keeps the host's run lock and its slots (default "
                        f"{RUN.lease_ttl}); a run cut off from etcd stops its command "
                        f"{RUN.stop_grace + RUN.stop_margin:g} s before that")
    p.add_argument("--standby", action="store_true",
                   help="keep one `trigger run` started beside the watcher, and carry runs out through "
                   "it: 100 ms sooner a run (docs/benchmarks.md), a second process's memory "
                   "(default: off, each run starts `trigger run` afresh)")
    p.add_argument("--no-standby", dest="standby", action="store_false",
                   help="the default: start `trigger run` afresh for each run")
    p.add_argument("--standby-linger", type=float, default=STANDBY_LINGER,
                   help="seconds the standby `trigger run` is kept after the last run that went through "
                   "it; then the idle host keeps one process and its next run starts cold")
    p.add_argument("--log-format", default="text", choices=["text", "json"],
                   help="text lines, or one JSON object a line; times are ISO 8601 with their zone")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="serve Prometheus metrics over HTTP on this port at /metrics (0: off)")
    p.add_argument("--metrics-address", default="0.0.0.0",
                   help="the address --metrics-port listens on")
    connection_arguments(p)


def check(args) -> None:
    args.host = host_option(args.host)
    args.run_argv = shlex.split(args.run_cmd)
    if not args.run_argv:
        raise BadRecord("--run-cmd is empty")
    args.allowed_options = allowed_run_options(args.run_options, args.run_argv)
    positive(args.check_interval, "--check-interval")
    positive(args.standby_linger, "--standby-linger")
    if args.standby_linger > STANDBY_MAX_LINGER:
        raise BadRecord(f"--standby-linger must be at most {STANDBY_MAX_LINGER} seconds (30 days), "
                        f"got {args.standby_linger:g}")
    if args.member_ttl < 1:
        raise BadRecord(f"--member-ttl must be at least 1 second, got {args.member_ttl}")
    not_negative(args.retention, "--retention")
    if not 0 <= args.metrics_port <= 65535:
        raise BadRecord(f"--metrics-port must be 0 (off) to 65535, got {args.metrics_port}")
    if args.config_dir is not None:
        if not os.path.isdir(args.config_dir):
            raise BadRecord(f"--config-dir {args.config_dir} is not a directory")
    args.role_names = tuple(targets(args.roles)) if args.roles else ()
    args.election_names = tuple(names(args.elections))
    run_policy(args.run_lease_ttl, "--run-lease-ttl")


def run(args) -> int:
    import logging  # here: the other commands start 5 ms sooner without it
    import signal

    from ..driver import this_process
    from ..procedures import HostTaken, Registration
    from ..core import WatcherCore
    from ..monitor import WatchMonitor, setup_logging
    from ..queue import open_queue
    from ..queue.standby import NoStandby, StandbySettings
    from ..watch import WatchDaemon

    host, run_cmd = args.host, args.run_argv
    layout = Layout(args.prefix)
    urls = endpoints(args.endpoints)
    store = open_store_of(args)
    check_access(store, layout, host)
    connection = pass_on(args) if args.store != "memory" else []

    def trigger_run(*which: str) -> list[str]:
        # -I: only the installed package may load, never a trigger/ in the cwd
        return [sys.executable, "-I", "-m", "trigger", "run", "--host", host, *which,
                "--prefix", args.prefix, "--endpoints", ",".join(urls), *connection,
                "--retention", str(args.retention), "--lease-ttl", str(args.run_lease_ttl),
                "--run-options", ",".join(args.allowed_options) or "none", "--", *run_cmd]

    def run_argv(run_id: str) -> list[str]:
        return trigger_run("--run-id", run_id)

    setup_logging(host, args.log_format)
    name = "standby" if args.queue == "tsp" and args.standby else args.queue
    settings = StandbySettings(host, args.prefix, ",".join(urls), shlex.join(run_cmd), trigger_run,
                               args.standby_linger)
    try:
        queue = open_queue(name, settings)
    except NoStandby as exc:
        logging.getLogger("trigger.watch").warning(  # one line; every fire is still served, cold
            "no standby: %s; each run starts `trigger run` afresh", exc,
            extra={"fields": {"event": "standby_refused"}})
        name, queue = "tsp", open_queue("tsp")
    standby = queue if name == "standby" else None
    core = WatcherCore(host, layout, lambda: new_event_id())
    monitor = WatchMonitor(core, metrics=bool(args.metrics_port))
    if args.metrics_port:
        try:
            monitor.serve(args.metrics_port, args.metrics_address)
        except OSError as exc:
            raise BadRecord(f"--metrics-port {args.metrics_port}: {exc.strerror or exc}") from None
        monitor.count_refusals(store, layout.refused_key(""), host)
    registration = Registration(layout, host, args.role_names, args.election_names, args.config_dir,
                                args.member_ttl, process=this_process())
    daemon = WatchDaemon(store, queue, core, run_argv, check_interval=args.check_interval,
                         registration=registration, monitor=monitor)

    def stop(signum, _frame):
        monitor.stopping(signal.Signals(signum).name)
        daemon.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    logging.getLogger("trigger.watch").info(
        "watching %s on %s, queue %s, run %s", layout.host_prefix(host), ",".join(urls),
        name, shlex.join(run_cmd), extra={"fields": {"event": "start"}})
    if standby:
        standby.start()
    try:
        daemon.run_forever()
    except HostTaken as exc:
        raise UnavailableError(f"{exc}; this watcher stopped") from None
    finally:
        if standby:
            standby.stop()
        monitor.close()
        store.close()
    logging.getLogger("trigger.watch").info("stopped", extra={"fields": {"event": "stopped"}})
    return 0


def check_access(store, layout: Layout, host: str) -> None:
    """Read the inbox once before starting: a refused TLS handshake, a wrong
    password or a missing permission is a one-line error and exit 1 now,
    rather than a daemon retrying forever. An unreachable etcd is not: the
    daemon waits for it, as it always did."""
    try:
        store.get_prefix(layout.host_prefix(host))
    except UnavailableError:
        pass
