"""`trigger fire`: write a fire into its hosts' inboxes (or run the exec provider)."""

from __future__ import annotations

import argparse
import sys
import time

from ..fire import Lineage, fire, new_event_id
from ..layout import Layout
from ..output import iso_utc, show
from ..records import DEFAULT_TTL, BadRecord, check_limit, check_ttl
from .common import (DEFAULT_OK_CODES, DEFAULT_RETENTION, EXIT_FAILED, connection_arguments, ok_codes,
                     not_negative, open_store_of, origin, output_argument, output_format, positive, targets)
from .fire_report import show_fire, wait_and_show


HELP = "make the hosts of a trigger run Puppet"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the trigger's name")
    # Repeatable: the kernel refuses any one argument over 128 KiB (about
    # 5,000 FQDNs), so long lists come in several --hosts.
    p.add_argument("--hosts", action="append",
                   help="comma-separated host names (lower-cased) and role:NAME targets; may be repeated "
                   "(default: none, give --hosts or --hosts-file)")
    p.add_argument("--hosts-file", help="more targets, one per line or comma-separated; '-' reads "
                   "standard input (for lists longer than a command line may be) (default: none)")
    p.add_argument("--ttl", type=int, default=DEFAULT_TTL, help="loop limit: hops allowed, 1 to 100")
    p.add_argument("--provider", default="etcd", choices=["etcd", "dummy", "exec"],
                   help="etcd: write the hosts' inboxes; dummy: write nothing; exec: run --exec-cmd per host")
    p.add_argument("--exec-cmd", help="exec provider only: the command per host, {host} filled in, "
                   "e.g. 'mco puppet runonce -I {host}' (never run through a shell) (default: none)")
    p.add_argument("--max-concurrent", type=int, default=0,
                   help="at most N of the hosts run at once (0: no limit)")
    p.add_argument("--serial", action="store_true", help="one host at a time (--max-concurrent 1)")
    p.add_argument("--wait", action="store_true",
                   help="wait for every host to finish a run that serves this fire; progress on a "
                   "terminal, a table and a summary at the end; Ctrl-C tells how to re-attach")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits")
    p.add_argument("--ok-codes", default=DEFAULT_OK_CODES,
                   help="exit codes that count as success (puppet --test: 0 no change, 2 changes); "
                   "kept with the fire for `history` and `wait`")
    p.add_argument("--retention", type=int, default=DEFAULT_RETENTION,
                   help="seconds the fire is kept for `history` and `wait` (0: not kept)")
    output_argument(p)
    connection_arguments(p)


def check(args) -> None:
    """Everything `fire` is given, checked and parsed before it writes."""
    if not args.name or len(args.name) > 256:
        raise BadRecord("the trigger name must be 1 to 256 characters")
    args.targets = targets(hosts_text(args))
    args.lineage = Lineage.from_env()
    check_ttl(args.ttl)
    check_limit(args.max_concurrent)
    if args.serial and args.max_concurrent not in (0, 1):
        raise BadRecord(f"--serial means --max-concurrent 1, but --max-concurrent is {args.max_concurrent}")
    args.ok_codes = ok_codes(args.ok_codes)
    positive(args.timeout, "--timeout")
    not_negative(args.retention, "--retention")
    if args.exec_cmd is not None and args.provider != "exec":
        raise BadRecord(f"--exec-cmd is only used with --provider exec (the provider is {args.provider})")
    if args.provider == "exec":
        from ..providers import exec_argv

        if not args.exec_cmd:
            raise BadRecord("the exec provider needs --exec-cmd, e.g. 'mco puppet runonce -I {host}'")
        exec_argv(args.exec_cmd, "host.example")


def run(args) -> int:
    from ..coordination import resolve_targets, unwatched_hosts

    targets, lineage = args.targets, args.lineage
    limit = 1 if args.serial else args.max_concurrent
    if args.provider == "dummy":
        print(f"dummy provider: would fire {args.name!r} for {', '.join(targets)}; wrote nothing")
        return 0
    layout = Layout(args.prefix)
    needs_store = args.provider == "etcd" or any(t.startswith("role:") for t in targets)
    store = open_store_of(args) if needs_store else None
    try:
        hosts, empty = resolve_targets(store, layout, targets) if store else (targets, [])
        for role in empty:
            print(f"trigger: warning: role:{role} has no live member", file=sys.stderr)
        if not hosts:
            raise BadRecord(f"no host to fire {args.name!r} at: {','.join(targets)} has no live member")
        if args.provider == "exec":
            return fire_by_exec(args, hosts, lineage)
        unwatched = unwatched_hosts(store, layout, hosts)
        event_id = new_event_id()
        # the revision before the fire, for --wait to watch the runs from
        revision = store.get_prefix(layout.fire_key(event_id))[1] if args.wait else 0
        entry = fire(store, layout, args.name, hosts, lineage, origin(), args.ttl, event_id=event_id,
                     max_concurrent=limit, retention=args.retention, ok_codes=args.ok_codes)
        if unwatched:  # once fired: a refused or failed fire says only why
            shown = ", ".join(unwatched[:5]) + (f" and {len(unwatched) - 5} more" if len(unwatched) > 5 else "")
            print(f"trigger: warning: {len(unwatched)} of {len(hosts)} host(s) have no live watcher "
                  f"(no member key), nothing serves them until one starts: {shown}", file=sys.stderr)
        if not args.wait:
            if output_format(args) == "json":
                show("json", [], [], {"event_id": entry.id, "trigger": entry.trigger,
                                      "fired_at": iso_utc(entry.fired_at), "hosts": hosts,
                                      "no_watcher": unwatched, "ok_codes": list(args.ok_codes)})
            else:
                print(entry.id)
            return 0
        if output_format(args) != "json":
            print(entry.id, flush=True)  # first, as without --wait: scripts read it from line 1
        return wait_and_show(args, store, layout, entry.id, args.name, entry.fired_at, hosts,
                             revision, args.ok_codes, unwatched, reattach=bool(args.retention))
    finally:
        if store is not None:
            store.close()


def hosts_text(args) -> str:
    """Every --hosts and --hosts-file together, as one comma-separated list."""
    parts = list(args.hosts or [])
    if args.hosts_file:
        try:
            text = sys.stdin.read() if args.hosts_file == "-" else open(args.hosts_file).read()
        except OSError as exc:
            raise BadRecord(f"cannot read --hosts-file {args.hosts_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise BadRecord(f"--hosts-file {args.hosts_file} is not UTF-8 text") from None
        lines = [line.strip() for line in text.splitlines()]
        parts += [line for line in lines if line and not line.startswith("#")]
    if not parts:
        raise BadRecord("give the hosts with --hosts or --hosts-file")
    return ",".join(parts)


def fire_by_exec(args, hosts, lineage) -> int:
    from ..providers import exec_fire
    from ..results import HostResult

    started = time.time()
    results = exec_fire(args.exec_cmd, args.name, hosts, lineage, origin(), args.ttl,
                        timeout=args.timeout if args.wait else None)
    ok = args.ok_codes
    by_host = {r.host: HostResult(r.host, "ok" if r.exit_code in ok else "failed", r.exit_code)
               for r in results}
    show_fire(args, None, args.name, started, ok, by_host, time.time() - started)
    return 0 if all(r.exit_code in ok for r in results) else EXIT_FAILED
