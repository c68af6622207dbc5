"""`trigger fire`: write a fire into its hosts' inboxes (or run the exec provider)."""

from __future__ import annotations

import argparse
import sys
import time

from ..coordination import ROLE_PREFIX
from ..fire import Lineage, fire, new_event_id
from ..layout import Layout
from ..output import iso_utc, show
from ..records import DEFAULT_TTL, BadRecord, check_limit, check_ttl
from .common import (DEFAULT_OK_CODES, DEFAULT_RETENTION, DEFAULT_WAIT_TIMEOUT, EXIT_FAILED, connection_arguments,
                     few, not_negative, ok_codes, open_store_of, origin, output_argument, output_format, positive,
                     targets, wait_for_absent_argument)
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
    p.add_argument("--query", help="more hosts: the active nodes PuppetDB names, by PQL "
                   "('inventory[certname] { facts.os.family = \"Debian\" }') or 'Class[Profile::Lb]' "
                   "(needs --puppetdb) (default: none)")
    p.add_argument("--puppetdb", metavar="URL", help="PuppetDB for --query, e.g. https://puppet:8081 "
                   "(default: none)")
    for name, what in (("cacert", "CA certificate"), ("cert", "certificate"), ("key", "private key")):
        p.add_argument(f"--puppetdb-{name}", metavar="FILE", help=f"TLS {what} for --puppetdb "
                       "(default: the Puppet agent's, from `puppet config print`)")
    p.add_argument("--ttl", type=int, default=DEFAULT_TTL, help="loop limit: hops allowed, 1 to 100")
    p.add_argument("--provider", default="etcd", choices=["etcd", "dummy", "exec"],
                   help="etcd: write the hosts' inboxes; dummy: resolve the targets and write nothing "
                   "(as --dry-run); exec: run --exec-cmd per host")
    p.add_argument("--dry-run", action="store_true",
                   help="resolve the targets (role:NAME from etcd), check the ttl and the limits, print "
                   "what would be fired; write and run nothing")
    p.add_argument("--exec-cmd", help="exec provider only: the command per host, {host} filled in, "
                   "e.g. 'mco puppet runonce -I {host}' (never run through a shell) (default: none)")
    p.add_argument("--max-concurrent", type=int, default=0,
                   help="at most N of the hosts run at once (0: no limit)")
    p.add_argument("--serial", action="store_true", help="one host at a time (--max-concurrent 1)")
    p.add_argument("--wait", action="store_true",
                   help="wait for every host to finish a run that serves this fire; progress on a "
                   "terminal, a table and a summary at the end; Ctrl-C tells how to re-attach")
    p.add_argument("--timeout", type=float, default=DEFAULT_WAIT_TIMEOUT, help="seconds --wait waits")
    wait_for_absent_argument(p)
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
    text = hosts_text(args, required=not args.query)
    args.targets = targets(text) if text else []
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
    # last: the only check that asks another server
    args.targets = list(dict.fromkeys(args.targets + query_hosts(args)))


def run(args) -> int:
    from ..coordination import unwatched_hosts

    targets, lineage = args.targets, args.lineage
    limit = 1 if args.serial else args.max_concurrent
    layout = Layout(args.prefix)
    dry_run = args.dry_run or args.provider == "dummy"
    roles = [t for t in targets if t.startswith(ROLE_PREFIX)]
    needs_store = args.provider == "etcd" or bool(roles)
    store = open_store_of(args) if needs_store else None
    try:
        reached = reach(store, layout, targets) if roles else {t: [t] for t in targets}
        hosts = list(dict.fromkeys(h for found in reached.values() for h in found))
        for target, found in reached.items():
            if not found:
                print(f"trigger: warning: {target} has no live member", file=sys.stderr)
        if not hosts:
            raise BadRecord(f"no host to fire {args.name!r} at: {','.join(targets)} has no live member")
        if dry_run:
            return show_dry_run(args, store, layout, reached, hosts, limit)
        if args.provider == "exec":
            return fire_by_exec(args, hosts, lineage)
        unwatched = unwatched_hosts(store, layout, hosts)
        event_id = new_event_id()
        # the revision before the fire, for --wait to watch the runs from
        revision = store.get_prefix(layout.fire_key(event_id))[1] if args.wait else 0
        entry = fire(store, layout, args.name, hosts, lineage, origin(), args.ttl, event_id=event_id,
                     max_concurrent=limit, retention=args.retention, ok_codes=args.ok_codes)
        if unwatched:  # once fired: a refused or failed fire says only why
            print(f"trigger: warning: {len(unwatched)} of {len(hosts)} host(s) have no live watcher "
                  f"(no member key), nothing serves them until one starts: {few(unwatched)}", file=sys.stderr)
        fmt = output_format(args)
        if fmt == "table":  # a person at a terminal: what the fire reached, before the id
            print(f"trigger: fired {args.name!r} at {reach_text(reached, hosts)}", file=sys.stderr)
        if not args.wait:
            if fmt == "json":
                show("json", [], [], {"event_id": entry.id, "trigger": entry.trigger,
                                      "fired_at": iso_utc(entry.fired_at), "hosts": hosts,
                                      "no_watcher": unwatched, "ok_codes": list(args.ok_codes)})
            else:
                print(entry.id)
            return 0
        if fmt != "json":
            print(entry.id, flush=True)  # first, as without --wait: scripts read it from line 1
        return wait_and_show(args, store, layout, entry.id, args.name, entry.fired_at, hosts,
                             revision, args.ok_codes, unwatched, reattach=bool(args.retention))
    finally:
        if store is not None:
            store.close()


def reach(store, layout, targets: list[str]) -> dict[str, list[str]]:
    """Each target and the hosts it stands for: a host itself, a role its live members."""
    from ..coordination import live_members

    members = live_members(store, layout)
    return {t: sorted(m.host for m in members if t[len(ROLE_PREFIX):] in m.roles)
            if t.startswith(ROLE_PREFIX) else [t] for t in targets}


def reach_text(reached: dict[str, list[str]], hosts: list[str]) -> str:
    """`3 host(s): web01, lb01, lb02 (role:lb)`: every host once, each role with what it became."""
    parts = [f"{', '.join(found)} ({target})" if target.startswith(ROLE_PREFIX) else target
             for target, found in reached.items() if found]
    return f"{len(hosts)} host(s): {'; '.join(parts)}"


def show_dry_run(args, store, layout, reached, hosts: list[str], limit: int) -> int:
    """What the fire would reach, after the checks a real fire makes; nothing written."""
    from ..coordination import unwatched_hosts
    from ..fire import make_entry

    make_entry(args.name, args.lineage, origin(), args.ttl, max_concurrent=limit)  # LoopRefused: exit 3
    unwatched = unwatched_hosts(store, layout, hosts) if args.provider == "etcd" else []
    if output_format(args) == "json":
        show("json", [], [], {"trigger": args.name, "dry_run": True, "provider": args.provider,
                              "targets": reached, "hosts": hosts, "no_watcher": unwatched,
                              "hop": args.lineage.hop + 1, "ttl": args.ttl, "max_concurrent": limit})
    else:
        for host in hosts:
            print(host)
    print(f"trigger: {args.provider + ' provider' if args.provider == 'dummy' else 'dry run'}: would fire "
          f"{args.name!r} at {reach_text(reached, hosts)}"
          f"{f'; {len(unwatched)} without a live watcher: {few(unwatched)}' if unwatched else ''}; wrote nothing",
          file=sys.stderr)
    return 0


def query_hosts(args) -> list[str]:
    """The hosts --query names in PuppetDB: asked before anything is written, and shown."""
    if not args.query:
        if args.puppetdb:
            raise BadRecord("--puppetdb is only used with --query")
        return []
    from ..puppetdb import PuppetDBError
    from ..puppetdb import query_hosts as ask_puppetdb

    try:
        hosts = ask_puppetdb(args.query, args.puppetdb, [args.puppetdb_cacert, args.puppetdb_cert, args.puppetdb_key])
    except PuppetDBError as exc:
        raise BadRecord(str(exc)) from None
    print(f"trigger: --query matched {len(hosts)} host(s): {', '.join(hosts)}", file=sys.stderr)
    return hosts


def hosts_text(args, required: bool = True) -> str:
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
    if not parts and required:
        raise BadRecord("give the hosts with --hosts or --hosts-file (or --query)")
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
