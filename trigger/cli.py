"""`trigger`: fire, watch, run, status.

Errors the user can fix end in one line on stderr and a non-zero exit:
2 for bad input, 1 when the store cannot be reached, 3 for a fire refused
by the loop TTL, 4 when a waited-for run failed or did not finish in time,
75 when a run could not be recorded as started.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import sys
import time
import unicodedata

from .fire import Lineage, LoopRefused, fire, new_event_id
from .layout import DEFAULT_PREFIX, Layout
from .policy import RUN
from .records import DEFAULT_TTL, BadRecord, check_host, check_id
from .queue import QueueError
from .store import DEFAULT_ENDPOINTS, StoreError, UnavailableError, open_store

EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_REFUSED, EXIT_FAILED = 2, 1, 3, 4
DEFAULT_RUN_CMD = "puppet agent --test"
DEFAULT_RETENTION = 7 * 24 * 3600


def _endpoints(value: str | None) -> list[str]:
    text = value or os.environ.get("ETCDCTL_ENDPOINTS") or DEFAULT_ENDPOINTS
    endpoints = [e.strip() for e in text.split(",") if e.strip()]
    if not endpoints:
        raise BadRecord("--endpoints is empty")
    return endpoints


def _store(args):
    return open_store(args.store, endpoints=_endpoints(args.endpoints), **_connection(args)) \
        if args.store != "memory" else open_store(args.store)


def _connection(args) -> dict:
    """TLS files and credentials for etcd: options first, then etcdctl's
    environment names (ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY,
    ETCDCTL_USER, ETCDCTL_PASSWORD)."""
    options = {
        "cacert": args.cacert or os.environ.get("ETCDCTL_CACERT") or None,
        "cert": args.cert or os.environ.get("ETCDCTL_CERT") or None,
        "key": args.key or os.environ.get("ETCDCTL_KEY") or None,
    }
    user, password = _credentials(args)
    if user is not None:
        options.update(user=user, password=password)
    return {name: value for name, value in options.items() if value is not None}


def _credentials(args) -> tuple[str | None, str | None]:
    """(user, password) from --user NAME[:PASSWORD] or ETCDCTL_USER; the
    password, if not there, from --password-file or ETCDCTL_PASSWORD."""
    text = args.user or os.environ.get("ETCDCTL_USER") or ""
    if not text:
        if args.password_file:
            raise BadRecord("--password-file needs --user NAME (or ETCDCTL_USER)")
        return None, None
    name, colon, password = text.partition(":")
    if not name:
        raise BadRecord("--user needs a name: NAME or NAME:PASSWORD")
    if colon:
        return name, password
    if args.password_file:
        return name, _read_secret(args.password_file, "--password-file")
    if "ETCDCTL_PASSWORD" in os.environ:
        return name, os.environ["ETCDCTL_PASSWORD"]
    raise BadRecord(f"no password for etcd user {name!r}: give --user {name}:PASSWORD, "
                    "--password-file FILE or ETCDCTL_PASSWORD")


def _read_secret(path: str, option: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(4096)
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRecord(f"cannot read {option} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    secret = text.splitlines()[0] if text.strip() else ""
    if not secret:
        raise BadRecord(f"{option} {path} is empty")
    return secret


def _pass_on(args) -> list[str]:
    """The connection options of `trigger run`, as the watcher was given them.

    Files go by absolute path. A password never goes on a command line
    (`ps` and `tsp -l` show those): a password file is passed by name;
    a password given otherwise is put into ETCDCTL_PASSWORD in our own
    environment, which the queue hands to the run (task-spooler passes the
    environment of the `tsp` call to its job; the inline queue's child
    inherits it).
    """
    options = _connection(args)
    argv: list[str] = []
    for name in ("cacert", "cert", "key"):
        if name in options:
            argv += [f"--{name}", os.path.abspath(options[name])]
    if "user" in options:
        argv += ["--user", options["user"]]
        if args.password_file and ":" not in (args.user or os.environ.get("ETCDCTL_USER") or ""):
            argv += ["--password-file", os.path.abspath(args.password_file)]
        else:
            os.environ["ETCDCTL_PASSWORD"] = options["password"]
    return argv


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"key prefix (default {DEFAULT_PREFIX})")
    p.add_argument("--endpoints", help="etcd URLs, comma-separated (default $ETCDCTL_ENDPOINTS or "
                   f"{DEFAULT_ENDPOINTS}); a dead one fails over to the next; https:// for TLS")
    p.add_argument("--cacert", help="TLS: the CA that signed etcd's certificate, PEM "
                   "(default $ETCDCTL_CACERT, else the system's CAs)")
    p.add_argument("--cert", help="TLS: this client's certificate, PEM (default $ETCDCTL_CERT)")
    p.add_argument("--key", help="TLS: the key of --cert, PEM, unencrypted (default $ETCDCTL_KEY)")
    p.add_argument("--user", help="etcd user, NAME or NAME:PASSWORD (default $ETCDCTL_USER); "
                   "prefer --password-file or $ETCDCTL_PASSWORD to a password on the command line")
    p.add_argument("--password-file", help="file whose first line is the password of --user")
    p.add_argument("--store", default="etcd", choices=["etcd", "etcd-grpc", "memory"], help=argparse.SUPPRESS)


def _origin() -> str:
    return os.environ.get("TRIGGER_HOST") or socket.gethostname()


# -- fire ------------------------------------------------------------------------


def cmd_fire(args) -> int:
    from .coordination import resolve_targets, split_targets

    targets = split_targets(_hosts_text(args))
    lineage = Lineage.from_env()
    limit = 1 if args.serial else args.max_concurrent
    if args.provider == "dummy":
        print(f"dummy provider: would fire {args.name!r} for {', '.join(targets)}; wrote nothing")
        return 0
    if args.provider == "exec" and not args.exec_cmd:
        raise BadRecord("the exec provider needs --exec-cmd, e.g. 'mco puppet runonce -I {host}'")
    layout = Layout(args.prefix)
    needs_store = args.provider == "etcd" or any(t.startswith("role:") for t in targets)
    store = _store(args) if needs_store else None
    try:
        hosts, empty = resolve_targets(store, layout, targets) if store else (targets, [])
        for role in empty:
            print(f"trigger: warning: role:{role} has no live member", file=sys.stderr)
        if not hosts:
            raise BadRecord(f"no host to fire {args.name!r} at: {','.join(targets)} has no live member")
        if args.provider == "exec":
            return _exec_fire(args, hosts, lineage)
        event_id = new_event_id()
        _, revision = store.get_prefix(layout.fire_key(event_id))  # the revision before the fire
        entry = fire(store, layout, args.name, hosts, lineage, _origin(), args.ttl,
                     event_id=event_id, max_concurrent=limit, retention=args.retention)
        print(entry.id)
        if not args.wait:
            return 0
        from .results import wait_for_fire

        results = wait_for_fire(store, layout, entry.id, hosts, revision, args.timeout,
                                _ok_codes(args.ok_codes))
    finally:
        if store is not None:
            store.close()
    _print_results(results.values())
    return 0 if all(r.state == "ok" for r in results.values()) else EXIT_FAILED


def _hosts_text(args) -> str:
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


def _exec_fire(args, hosts, lineage) -> int:
    from .providers import exec_fire
    from .results import HostResult

    results = exec_fire(args.exec_cmd, args.name, hosts, lineage, _origin(), args.ttl,
                        timeout=args.timeout if args.wait else None)
    ok = _ok_codes(args.ok_codes)
    _print_results([HostResult(r.host, "ok" if r.exit_code in ok else "failed", r.exit_code)
                    for r in results])
    return 0 if all(r.exit_code in ok for r in results) else EXIT_FAILED


def _ok_codes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise BadRecord(f"--ok-codes must be numbers separated by commas, got {text!r}") from None


def _print_results(results) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("host", "result", "exit", "duration")
    colour = {"ok": "green", "failed": "red", "lost": "red"}
    for r in sorted(results, key=lambda r: r.host):
        table.add_row(r.host, f"[{colour.get(r.state, 'yellow')}]{r.state}",
                      "" if r.exit_code is None else str(r.exit_code),
                      "" if r.duration is None else f"{r.duration:.1f}s")
    Console(stderr=False).print(table)


# -- watch -----------------------------------------------------------------------


def cmd_watch(args) -> int:
    import logging

    from .coordination import split_targets
    from .driver import this_process
    from .procedures import HostTaken, Registration
    from .core import WatcherCore
    from .queue import open_queue
    from .watch import WatchDaemon

    host = check_host(args.host)
    run_cmd = shlex.split(args.run_cmd)
    if not run_cmd:
        raise BadRecord("--run-cmd is empty")
    _run_policy(args.run_lease_ttl, "--run-lease-ttl")
    layout = Layout(args.prefix)
    endpoints = _endpoints(args.endpoints)
    store = _store(args)
    _check_access(store, layout, host)
    queue = open_queue(args.queue)
    connection = _pass_on(args) if args.store != "memory" else []

    def run_argv(run_id: str) -> list[str]:
        # -I: only the installed package may load, never a trigger/ in the cwd
        return [sys.executable, "-I", "-m", "trigger", "run", "--host", host, "--run-id", run_id,
                "--prefix", args.prefix, "--endpoints", ",".join(endpoints), *connection,
                "--retention", str(args.retention), "--lease-ttl", str(args.run_lease_ttl),
                "--", *run_cmd]

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s trigger-watch[{host}] %(levelname)s %(message)s")
    core = WatcherCore(host, layout, lambda: new_event_id())
    roles = tuple(split_targets(args.roles)) if args.roles else ()
    registration = Registration(layout, host, roles, tuple(_names(args.elections)), args.config_dir,
                                args.member_ttl, process=this_process())
    daemon = WatchDaemon(store, queue, core, run_argv, check_interval=args.check_interval,
                         registration=registration)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.stop())
    logging.getLogger("trigger.watch").info(
        "watching %s on %s, queue %s, run %s", layout.host_prefix(host), ",".join(endpoints),
        args.queue, shlex.join(run_cmd))
    try:
        daemon.run_forever()
    except HostTaken as exc:
        raise UnavailableError(f"{exc}; this watcher stopped") from None
    finally:
        store.close()
    return 0


def _check_access(store, layout: Layout, host: str) -> None:
    """Read the inbox once before starting: a refused TLS handshake, a wrong
    password or a missing permission is a one-line error and exit 1 now,
    rather than a daemon retrying forever. An unreachable etcd is not: the
    daemon waits for it, as it always did."""
    try:
        store.get_prefix(layout.host_prefix(host))
    except UnavailableError:
        pass


def _names(text: str | None) -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    for n in names:
        if len(n) > 256:
            raise BadRecord(f"name longer than 256 characters: {n[:40]!r}...")
    return names


# -- run -------------------------------------------------------------------------


def cmd_run(args) -> int:
    from .driver import RealDriver
    from .procedures import triggered_run
    from .runner import start_command

    host, run_id = check_host(args.host), check_id(args.run_id, "run id")
    if not args.command:
        raise BadRecord("no command given after --")

    def execute(record):
        try:
            return start_command(args.command, record)
        except BadRecord as exc:  # the run ends as a shell's would: 127, and its fires are served
            print(f"trigger: error: {exc}", file=sys.stderr)
            return 127

    policy = _run_policy(args.lease_ttl, "--lease-ttl")
    store = _store(args)
    driver = RealDriver(store, execute=execute, tell=_tell_stderr)
    code = driver.run(triggered_run(Layout(args.prefix), host, run_id, args.retention, policy=policy))
    store.close()
    return code


def _run_policy(lease_ttl: int, option: str):
    """The run policy with this lease TTL, long enough to stop a command in time."""
    from dataclasses import replace

    shortest = int(RUN.stop_grace + RUN.stop_margin) + 3
    if not shortest <= lease_ttl <= 3600:
        raise BadRecord(f"{option} must be from {shortest} to 3600 seconds, got {lease_ttl}")
    return replace(RUN, lease_ttl=lease_ttl)


def _tell_stderr(note) -> None:
    """`trigger run` speaks on stderr (task-spooler keeps it with the run's output)."""
    from .driver import note_text

    if note.level == "debug":
        return
    level = "" if note.level == "info" else f"{note.level}: "
    print(f"trigger: {level}{one_line(note_text(note))}", file=sys.stderr)


# -- status ----------------------------------------------------------------------


def cmd_status(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .results import status

    store = _store(args)
    try:
        hosts = status(store, Layout(args.prefix))
    finally:
        store.close()
    if args.json:
        print(json.dumps([{**h.__dict__, "last": h.last and h.last.__dict__} for h in hosts],
                         sort_keys=True))
        return 0
    table = Table("host", "watcher", "roles", "inbox", "queued", "running", "quarantined", "last run")
    for h in hosts:
        last = h.last
        last_text = f"{last.state} exit={last.exit_code} ({last.run_id})" if last else "-"
        table.add_row(h.host, "[green]alive" if h.alive else "[red]absent", ",".join(h.roles),
                      str(h.pending), str(h.queued), str(h.running),
                      f"[red]{h.quarantined}" if h.quarantined else "0", last_text)
    Console().print(table)
    return 0


def cmd_history(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .results import history

    store = _store(args)
    try:
        fires = history(store, Layout(args.prefix), args.limit, _ok_codes(args.ok_codes))
    finally:
        store.close()
    table = Table("fired", "trigger", "event", "from", "ok", "failed", "pending")
    for f in fires:
        count = lambda *states: str(sum(r.state in states for r in f.results))  # noqa: E731
        table.add_row(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f.fired_at)), f.trigger,
                      f.event_id, f.origin, count("ok"), count("failed", "lost"),
                      count("waiting", "running"))
    Console().print(table)
    return 0


def cmd_leader(args) -> int:
    from .coordination import leader

    store = _store(args)
    try:
        holder = leader(store, Layout(args.prefix), args.name)
    finally:
        store.close()
    if holder is None:
        print(f"trigger: no holder of {args.name!r}", file=sys.stderr)
        return EXIT_FAILED
    print(holder)
    return 0


# -- auth ------------------------------------------------------------------------


def cmd_auth_setup(args) -> int:
    from .auth import plan, setup, write_passwords

    layout = Layout(args.prefix)
    hosts = [h.strip() for h in (args.hosts or "").split(",") if h.strip()]
    the_plan = plan(layout, hosts, _names(args.firers))
    if args.dry_run:
        print("\n".join(the_plan.describe()))
        return 0
    if args.store == "memory":
        raise BadRecord("auth setup works on etcd only")
    root_password = _read_secret(args.root_password_file, "--root-password-file") \
        if args.root_password_file else None
    if args.password_dir:  # before any user exists whose password would have nowhere to go
        try:
            os.makedirs(args.password_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise BadRecord(f"cannot use --password-dir {args.password_dir}: {exc.strerror}") from None

    def created(user: str, secret: str) -> None:
        """Kept at once: a later failure must not lose a password etcd has."""
        if args.password_dir:
            path, = write_passwords(args.password_dir, {user: secret})
            print(f"user {user} created; password in {path}")
        else:
            print(f"user {user} created; password {secret}")

    store = _store(args)
    try:
        report = setup(store, layout, the_plan, enable=not args.no_enable,
                       root_password=root_password, created=created)
    finally:
        store.close()
    for line in the_plan.describe():
        print(line)
    for user in report.existing_users:
        print(f"user {user} existed; its password is unchanged")
    if report.enabled:
        print("authentication enabled" + ("; root created" if report.root_created else ""))
    return 0


# -- main ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trigger", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command_name", required=True)

    p = sub.add_parser("fire", help="make the hosts of a trigger run Puppet")
    p.add_argument("name")
    # Repeatable: the kernel refuses any one argument over 128 KiB (about
    # 5,000 FQDNs), so long lists come in several --hosts.
    p.add_argument("--hosts", action="append",
                   help="comma-separated host names and role:NAME targets; may be repeated")
    p.add_argument("--hosts-file", help="more targets, one per line or comma-separated; '-' reads "
                   "standard input (for lists longer than a command line may be)")
    p.add_argument("--ttl", type=int, default=DEFAULT_TTL, help="loop limit: hops allowed (default 5)")
    p.add_argument("--provider", default="etcd", choices=["etcd", "dummy", "exec"])
    p.add_argument("--exec-cmd", help="exec provider: the command per host, {host} filled in, "
                   "e.g. 'mco puppet runonce -I {host}' (never run through a shell)")
    p.add_argument("--max-concurrent", type=int, default=0,
                   help="at most N of the hosts run at once (0: no limit)")
    p.add_argument("--serial", action="store_true", help="one host at a time (--max-concurrent 1)")
    p.add_argument("--wait", action="store_true",
                   help="wait for every host to finish a run that serves this fire")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits (default 3600)")
    p.add_argument("--ok-codes", default="0,2",
                   help="exit codes that count as success (default 0,2: puppet --test)")
    p.add_argument("--retention", type=int, default=DEFAULT_RETENTION,
                   help="seconds the fire is kept for `trigger history` (0: not kept)")
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
    p.add_argument("--roles", help="roles this host has, comma-separated (for --hosts role:NAME)")
    p.add_argument("--elections", help="elections this host stands in, comma-separated")
    p.add_argument("--config-dir", help="also read roles and elections from the file names in "
                   "DIR/roles/ and DIR/elections/, as Puppet writes them")
    p.add_argument("--member-ttl", type=int, default=10,
                   help="seconds after which a silent watcher loses its roles and elections")
    p.add_argument("--run-lease-ttl", type=int, default=RUN.lease_ttl,
                   help=f"seconds a dead run keeps the host's run lock and its slots (default "
                        f"{RUN.lease_ttl}); a run cut off from etcd stops its command "
                        f"{RUN.stop_grace + RUN.stop_margin:g} s before that")
    _common(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("run", help="what the queue executes: mark start, run, mark finish")
    p.add_argument("--host", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--retention", type=int, default=DEFAULT_RETENTION)
    p.add_argument("--lease-ttl", type=int, default=RUN.lease_ttl,
                   help=f"seconds of the run's lease (default {RUN.lease_ttl})")
    p.add_argument("command", nargs=argparse.REMAINDER)
    _common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="per host: watcher alive, inbox, runs, last result")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("history", help="recent fires and what became of them")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--ok-codes", default="0,2")
    _common(p)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("leader", help="print the current holder of an election")
    p.add_argument("name")
    _common(p)
    p.set_defaults(func=cmd_leader)

    p = sub.add_parser("auth", help="etcd users and roles for trigger (docs/security.md)")
    auth = p.add_subparsers(dest="auth_command", required=True)
    p = auth.add_parser("setup", help="a user and role per node, a firer role, then enable etcd auth")
    p.add_argument("--hosts", help="the nodes, comma-separated: user NAME, role trigger-node-NAME each")
    p.add_argument("--firers", help="users that may fire (a node that fires is one), comma-separated")
    p.add_argument("--password-dir", help="write new users' passwords to DIR/USER.password (mode 0600) "
                   "instead of printing them")
    p.add_argument("--root-password-file", help="password for etcd's root user if it is created "
                   "(default: a random one, printed or written like the others)")
    p.add_argument("--no-enable", action="store_true", help="create users and roles, leave auth off")
    p.add_argument("--dry-run", action="store_true", help="print the roles and users; touch nothing")
    _common(p)
    p.set_defaults(func=cmd_auth_setup)
    return parser


def one_line(message: object) -> str:
    """The message with line breaks and other control characters escaped:
    an error quoting a path or a value given to us stays one line."""
    return "".join(ch.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in str(message))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    try:
        if hasattr(args, "ttl"):
            from .records import check_limit, check_ttl

            check_ttl(args.ttl)
            check_limit(args.max_concurrent)
        if hasattr(args, "prefix"):
            Layout(args.prefix)
        return args.func(args)
    except LoopRefused as exc:
        print(f"trigger: warning: {one_line(exc)}", file=sys.stderr)
        return EXIT_REFUSED
    except (BadRecord, ValueError) as exc:
        print(f"trigger: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StoreError as exc:
        print(f"trigger: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except QueueError as exc:  # e.g. task-spooler not installed
        print(f"trigger: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TimeoutError as exc:
        print(f"trigger: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
