"""`trigger`: fire, watch, run, status.

Errors the user can fix end in one line on stderr and a non-zero exit:
2 for bad input, 1 when the store cannot be reached, 3 for a fire refused
by the loop TTL, 75 when a run could not be recorded as started.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import socket
import sys
import time

from .fire import Lineage, LoopRefused, fire
from .layout import DEFAULT_PREFIX, Layout
from .records import DEFAULT_TTL, BadRecord, check_host, check_id, parse_entry, parse_run, split_hosts
from .store import DEFAULT_ENDPOINTS, StoreError, UnavailableError, open_store

EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_REFUSED, EXIT_TEMPFAIL = 2, 1, 3, 75
DEFAULT_RUN_CMD = "puppet agent --test"
DEFAULT_RETENTION = 7 * 24 * 3600


def _endpoints(value: str | None) -> list[str]:
    text = value or os.environ.get("ETCDCTL_ENDPOINTS") or DEFAULT_ENDPOINTS
    endpoints = [e.strip() for e in text.split(",") if e.strip()]
    if not endpoints:
        raise BadRecord("--endpoints is empty")
    return endpoints


def _store(args):
    return open_store(args.store, endpoints=_endpoints(args.endpoints)) if args.store == "etcd" \
        else open_store(args.store)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"key prefix (default {DEFAULT_PREFIX})")
    p.add_argument("--endpoints", help="etcd URLs, comma-separated (default $ETCDCTL_ENDPOINTS or "
                   f"{DEFAULT_ENDPOINTS}); a dead one fails over to the next")
    p.add_argument("--store", default="etcd", choices=["etcd", "memory"], help=argparse.SUPPRESS)


def _origin() -> str:
    return os.environ.get("TRIGGER_HOST") or socket.gethostname()


# -- fire ------------------------------------------------------------------------


def cmd_fire(args) -> int:
    hosts = split_hosts(args.hosts)
    lineage = Lineage.from_env()
    if args.provider == "dummy":
        print(f"dummy provider: would fire {args.name!r} for {', '.join(hosts)}; wrote nothing")
        return 0
    store = _store(args)
    try:
        entry = fire(store, Layout(args.prefix), args.name, hosts, lineage, _origin(), args.ttl)
    finally:
        store.close()
    print(entry.id)
    return 0


# -- watch -----------------------------------------------------------------------


def cmd_watch(args) -> int:
    from .core import WatcherCore
    from .fire import new_event_id
    from .queue import open_queue
    from .watch import WatchDaemon

    host = check_host(args.host)
    run_cmd = shlex.split(args.run_cmd)
    if not run_cmd:
        raise BadRecord("--run-cmd is empty")
    layout = Layout(args.prefix)
    endpoints = _endpoints(args.endpoints)
    store = _store(args)
    queue = open_queue(args.queue)

    def run_argv(run_id: str) -> list[str]:
        return [sys.executable, "-m", "trigger", "run", "--host", host, "--run-id", run_id,
                "--prefix", args.prefix, "--endpoints", ",".join(endpoints),
                "--retention", str(args.retention), "--", *run_cmd]

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s trigger-watch[{host}] %(levelname)s %(message)s")
    core = WatcherCore(host, layout, lambda: new_event_id())
    daemon = WatchDaemon(store, queue, core, run_argv, check_interval=args.check_interval)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.stop())
    logging.getLogger("trigger.watch").info(
        "watching %s on %s, queue %s, run %s", layout.host_prefix(host), ",".join(endpoints),
        args.queue, shlex.join(run_cmd))
    daemon.run_forever()
    store.close()
    return 0


# -- run -------------------------------------------------------------------------


def cmd_run(args) -> int:
    from .runner import finish_run, run_command, start_run

    host, run_id = check_host(args.host), check_id(args.run_id, "run id")
    if not args.command:
        raise BadRecord("no command given after --")
    layout = Layout(args.prefix)
    store = _store(args)
    record = _retry(lambda: start_run(store, layout, host, run_id, time.time()))
    if record is None:
        print(f"trigger: error: run {run_id} could not be recorded as started; not running it",
              file=sys.stderr)
        return EXIT_TEMPFAIL
    code = run_command(args.command, record)
    lease = _retry(lambda: store.lease_grant(args.retention)) if args.retention else 0
    if _retry(lambda: finish_run(store, layout, record, code, time.time(), lease or 0)) is None:
        print(f"trigger: warning: run {run_id} finished ({code}) but could not be recorded",
              file=sys.stderr)
    store.close()
    return code


def _retry(call, attempts: int = 5):
    for attempt in range(attempts):
        try:
            return call()
        except UnavailableError as exc:
            print(f"trigger: warning: {exc}", file=sys.stderr)
            time.sleep(min(2.0 ** attempt, 8.0))
    return None


# -- status ----------------------------------------------------------------------


def cmd_status(args) -> int:
    layout = Layout(args.prefix)
    store = _store(args)
    try:
        items, revision = store.get_prefix(f"{args.prefix}/")
    finally:
        store.close()
    hosts: dict[str, dict] = {}
    for kv in items:
        parts = kv.key[len(args.prefix) + 1:].split("/")
        if parts[0] == "hosts" and len(parts) >= 3:
            h = hosts.setdefault(parts[1], {"pending": 0, "runs": [], "quarantined": 0})
            kind, _ = layout.classify(parts[1], kv.key)
            try:
                if kind == "entry":
                    parse_entry(kv.value)
                    h["pending"] += 1
                elif kind == "run":
                    h["runs"].append(parse_run(kv.value))
            except BadRecord:
                h["quarantined"] += 1
        elif parts[0] == "quarantine" and len(parts) >= 3:
            hosts.setdefault(parts[1], {"pending": 0, "runs": [], "quarantined": 0})["quarantined"] += 1
    if args.json:
        print(json.dumps({h: {**v, "runs": [r.__dict__ for r in v["runs"]]} for h, v in hosts.items()},
                         default=list, sort_keys=True))
        return 0
    print(f"{'host':30} {'pending':>7} {'active':>6} {'quarant.':>8}  last run")
    for name in sorted(hosts):
        h = hosts[name]
        runs = sorted(h["runs"], key=lambda r: r.queued_at or r.started_at or 0)
        active = sum(r.active for r in runs)
        last = runs[-1] if runs else None
        last_text = f"{last.run_id} {last.state} exit={last.exit_code}" if last else "-"
        print(f"{name:30} {h['pending']:>7} {active:>6} {h['quarantined']:>8}  {last_text}")
    return 0


# -- main ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trigger", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command_name", required=True)

    p = sub.add_parser("fire", help="make the hosts of a trigger run Puppet")
    p.add_argument("name")
    p.add_argument("--hosts", required=True, help="comma-separated host names")
    p.add_argument("--ttl", type=int, default=DEFAULT_TTL, help="loop limit: hops allowed (default 5)")
    p.add_argument("--provider", default="etcd", choices=["etcd", "dummy"])
    _common(p)
    p.set_defaults(func=cmd_fire)

    p = sub.add_parser("watch", help="the daemon: queue a run when this host's inbox fills")
    p.add_argument("--host", required=True)
    p.add_argument("--run-cmd", default=DEFAULT_RUN_CMD, help=f"default: {DEFAULT_RUN_CMD}")
    p.add_argument("--queue", default="tsp", choices=["tsp", "inline"])
    p.add_argument("--check-interval", type=float, default=5.0,
                   help="seconds between re-reads while runs are outstanding")
    p.add_argument("--retention", type=int, default=DEFAULT_RETENTION,
                   help="seconds a finished run record is kept")
    _common(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("run", help="what the queue executes: mark start, run, mark finish")
    p.add_argument("--host", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--retention", type=int, default=DEFAULT_RETENTION)
    p.add_argument("command", nargs=argparse.REMAINDER)
    _common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="inboxes and runs per host")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    try:
        if hasattr(args, "ttl"):
            from .records import check_ttl

            check_ttl(args.ttl)
        if hasattr(args, "prefix"):
            Layout(args.prefix)
        return args.func(args)
    except LoopRefused as exc:
        print(f"trigger: warning: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (BadRecord, ValueError) as exc:
        print(f"trigger: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StoreError as exc:
        print(f"trigger: error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
