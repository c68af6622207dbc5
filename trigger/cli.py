"""`trigger`: fire, wait, watch, run, status, history, leader, drop.

Every option is checked before anything is written or run. Errors the
user can fix end in one line on stderr and a non-zero exit: 2 for bad
input, 1 when the store cannot be reached, 3 for a fire refused by the loop
TTL, 4 when a waited-for run failed or did not finish in time, 5 when what
was asked for is not there (no holder of an election, no such fire), 75
when a run could not be recorded as started, 130 when a wait was
interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import time

from .fire import Lineage, LoopRefused, fire, new_event_id
from .layout import DEFAULT_PREFIX, Layout
from .output import FORMATS, default_format, iso_utc, one_line, show
from .policy import RUN, STANDBY_LINGER, STANDBY_MAX_LINGER
from .queue import QueueError
from .records import DEFAULT_TTL, BadRecord, check_host, check_id, check_limit, check_ttl
from .store import DEFAULT_ENDPOINTS, StoreError, UnavailableError, open_store

EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_REFUSED, EXIT_FAILED = 2, 1, 3, 4
EXIT_NOT_FOUND, EXIT_INTERRUPTED = 5, 130
DEFAULT_RUN_CMD = "puppet agent --test"
DEFAULT_RETENTION = 7 * 24 * 3600
DEFAULT_OK_CODES = "0,2"


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
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="key prefix in etcd")
    p.add_argument("--endpoints", help="etcd URLs, comma-separated (default: $ETCDCTL_ENDPOINTS, else "
                   f"{DEFAULT_ENDPOINTS}); a dead one fails over to the next; https:// for TLS")
    p.add_argument("--cacert", help="TLS: the CA that signed etcd's certificate, PEM "
                   "(default: $ETCDCTL_CACERT, else the system's CAs)")
    p.add_argument("--cert", help="TLS: this client's certificate, PEM (default: $ETCDCTL_CERT)")
    p.add_argument("--key", help="TLS: the key of --cert, PEM, unencrypted (default: $ETCDCTL_KEY)")
    p.add_argument("--user", help="etcd user, NAME or NAME:PASSWORD (default: $ETCDCTL_USER); "
                   "prefer --password-file or $ETCDCTL_PASSWORD to a password on the command line")
    p.add_argument("--password-file", help="file whose first line is the password of --user "
                   "(default: $ETCDCTL_PASSWORD)")
    p.add_argument("--store", default="etcd", choices=["etcd", "etcd-grpc", "memory"], help=argparse.SUPPRESS)


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=FORMATS, default=None,
                   help="table, plain tab-separated rows (never cut), or json with ISO 8601 UTC "
                   "times (default: table on a terminal, else plain)")


def _format(args) -> str:
    return args.output or default_format()


def _origin() -> str:
    return os.environ.get("TRIGGER_HOST") or os.uname().nodename  # gethostname(), without socket


def _positive(value: float, option: str) -> None:
    if not value > 0 or value != value or value == float("inf"):
        raise BadRecord(f"{option} must be a number of seconds above 0, got {value:g}")


def _not_negative(value: int, option: str) -> None:
    if value < 0:
        raise BadRecord(f"{option} must be 0 or more, got {value}")


def _targets(text: str) -> list[str]:
    """Host names lower-cased (DNS names are case-insensitive, inbox keys are
    not), role:NAME targets as given."""
    from .coordination import ROLE_PREFIX, split_targets

    lowered = [t if t.startswith(ROLE_PREFIX) else t.lower() for t in split_targets(text)]
    return list(dict.fromkeys(lowered))


def _host(text: str, option: str = "--host") -> str:
    try:
        return check_host(text.strip()).lower()
    except BadRecord as exc:
        raise BadRecord(f"{option}: {exc}") from None


# -- fire ------------------------------------------------------------------------


def check_fire(args) -> None:
    """Everything `fire` is given, checked and parsed before it writes."""
    if not args.name or len(args.name) > 256:
        raise BadRecord("the trigger name must be 1 to 256 characters")
    args.targets = _targets(_hosts_text(args))
    args.lineage = Lineage.from_env()
    check_ttl(args.ttl)
    check_limit(args.max_concurrent)
    if args.serial and args.max_concurrent not in (0, 1):
        raise BadRecord(f"--serial means --max-concurrent 1, but --max-concurrent is {args.max_concurrent}")
    args.ok_codes = _ok_codes(args.ok_codes)
    _positive(args.timeout, "--timeout")
    _not_negative(args.retention, "--retention")
    if args.exec_cmd is not None and args.provider != "exec":
        raise BadRecord(f"--exec-cmd is only used with --provider exec (the provider is {args.provider})")
    if args.provider == "exec":
        from .providers import exec_argv

        if not args.exec_cmd:
            raise BadRecord("the exec provider needs --exec-cmd, e.g. 'mco puppet runonce -I {host}'")
        exec_argv(args.exec_cmd, "host.example")


def cmd_fire(args) -> int:
    from .coordination import resolve_targets, unwatched_hosts

    targets, lineage = args.targets, args.lineage
    limit = 1 if args.serial else args.max_concurrent
    if args.provider == "dummy":
        print(f"dummy provider: would fire {args.name!r} for {', '.join(targets)}; wrote nothing")
        return 0
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
        unwatched = unwatched_hosts(store, layout, hosts)
        event_id = new_event_id()
        # the revision before the fire, for --wait to watch the runs from
        revision = store.get_prefix(layout.fire_key(event_id))[1] if args.wait else 0
        entry = fire(store, layout, args.name, hosts, lineage, _origin(), args.ttl, event_id=event_id,
                     max_concurrent=limit, retention=args.retention, ok_codes=args.ok_codes)
        if unwatched:  # once fired: a refused or failed fire says only why
            shown = ", ".join(unwatched[:5]) + (f" and {len(unwatched) - 5} more" if len(unwatched) > 5 else "")
            print(f"trigger: warning: {len(unwatched)} of {len(hosts)} host(s) have no live watcher "
                  f"(no member key), nothing serves them until one starts: {shown}", file=sys.stderr)
        if not args.wait:
            if _format(args) == "json":
                show("json", [], [], {"event_id": entry.id, "trigger": entry.trigger,
                                      "fired_at": iso_utc(entry.fired_at), "hosts": hosts,
                                      "no_watcher": unwatched, "ok_codes": list(args.ok_codes)})
            else:
                print(entry.id)
            return 0
        if _format(args) != "json":
            print(entry.id, flush=True)  # first, as without --wait: scripts read it from line 1
        return _wait_and_show(args, store, layout, entry.id, args.name, entry.fired_at, hosts,
                              revision, args.ok_codes, unwatched, reattach=bool(args.retention))
    finally:
        if store is not None:
            store.close()


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

    started = time.time()
    results = exec_fire(args.exec_cmd, args.name, hosts, lineage, _origin(), args.ttl,
                        timeout=args.timeout if args.wait else None)
    ok = args.ok_codes
    by_host = {r.host: HostResult(r.host, "ok" if r.exit_code in ok else "failed", r.exit_code)
               for r in results}
    _show_fire(args, None, args.name, started, ok, by_host, time.time() - started)
    return 0 if all(r.exit_code in ok for r in results) else EXIT_FAILED


def _ok_codes(text: str) -> tuple[int, ...]:
    try:
        codes = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise BadRecord(f"--ok-codes must be exit codes (0 to 255) separated by commas, got {text!r}") from None
    if not all(0 <= c <= 255 for c in codes):
        raise BadRecord(f"--ok-codes must be exit codes (0 to 255) separated by commas, got {text!r}")
    return codes


# -- waiting for a fire, and showing what became of it -------------------------------


def _wait_and_show(args, store, layout, event_id: str, trigger: str, fired_at: float, hosts: list[str],
                   revision: int | None, ok_codes, unwatched, reattach: bool = True) -> int:
    """Wait for the fire's runs, showing progress on a terminal; print the
    results and a summary; on Ctrl-C, what is known and how to re-attach."""
    from .results import wait_for_fire, without_watcher

    started = time.monotonic()
    latest: dict = {}
    progress = _Progress(len(hosts)) if sys.stderr.isatty() else None

    def on_change(results):
        latest.update(results)
        if progress:
            progress.update(without_watcher(results, unwatched))

    try:
        with progress or contextlib.nullcontext():
            results = wait_for_fire(store, layout, event_id, hosts, revision, args.timeout, ok_codes,
                                    on_change=on_change)
    except KeyboardInterrupt:
        results = without_watcher(latest, unwatched)
        _show_fire(args, event_id, trigger, fired_at, ok_codes, results, time.monotonic() - started,
                   interrupted=True)
        if reattach:
            print(f"trigger: interrupted; the fire goes on. Re-attach with: {_reattach(args, event_id)}",
                  file=sys.stderr)
        else:
            print("trigger: interrupted; the fire goes on (kept no record to re-attach to: --retention 0)",
                  file=sys.stderr)
        return EXIT_INTERRUPTED
    results = without_watcher(results, unwatched)
    _show_fire(args, event_id, trigger, fired_at, ok_codes, results, time.monotonic() - started)
    return 0 if all(r.state == "ok" for r in results.values()) else EXIT_FAILED


def _reattach(args, event_id: str) -> str:
    argv = ["trigger", "wait", event_id]
    if args.prefix != DEFAULT_PREFIX:
        argv += ["--prefix", args.prefix]
    if args.endpoints:
        argv += ["--endpoints", args.endpoints]
    for option in ("cacert", "cert", "key", "password_file"):
        if getattr(args, option):
            argv += [f"--{option.replace('_', '-')}", getattr(args, option)]
    if args.user:
        argv += ["--user", args.user.partition(":")[0]]
    if args.output:
        argv += ["-o", args.output]
    return shlex.join(argv)


class _Progress:
    """rich's progress on stderr: done / failed / running / no watcher, and a bar."""

    def __init__(self, total: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self.task = self.progress.add_task("waiting", total=total)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *_):
        self.progress.stop()

    def update(self, results) -> None:
        from .results import counts

        n = counts(results.values())
        self.progress.update(self.task, completed=n["ok"] + n["failed"] + n["lost"], description=(
            f"done {n['ok']} · failed {n['failed'] + n['lost']} · running {n['running']} · "
            f"no watcher {n['no watcher']} · waiting {n['waiting']}"))


HOST_COLUMNS = [("host", "host"), ("result", "result"), ("exit", "exit_code"),
                ("duration", lambda r: None if r["duration"] is None else f"{r['duration']:.1f}s"),
                ("run", "run_id"), ("started", "started_at")]


def _host_rows(results) -> list[dict]:
    return [{"host": r.host, "result": r.state, "exit_code": r.exit_code, "duration": r.duration,
             "run_id": r.run_id, "started_at": iso_utc(r.started_at),
             "finished_at": iso_utc(r.finished_at)}
            for r in sorted(results, key=lambda r: r.host)]


def _fire_document(event_id, trigger, fired_at, ok_codes, results, seconds=None, interrupted=False) -> dict:
    """One fire host by host, as `fire --wait`, `wait` and `history EVENT` print it in JSON."""
    from .results import counts

    summary = {state.replace(" ", "_"): n for state, n in counts(results).items()}
    summary.update(hosts=len(results), seconds=None if seconds is None else round(seconds, 3),
                   interrupted=interrupted)
    return {"event_id": event_id, "trigger": trigger, "fired_at": iso_utc(fired_at),
            "ok_codes": list(ok_codes), "hosts": _host_rows(results), "summary": summary}


def _show_fire(args, event_id, trigger, fired_at, ok_codes, results: dict, seconds: float,
               interrupted: bool = False) -> None:
    from .results import counts

    values = list(results.values())
    document = _fire_document(event_id, trigger, fired_at, ok_codes, values, seconds, interrupted)
    show(_format(args), document["hosts"], HOST_COLUMNS, document)
    n = counts(values)
    parts = [f"{n['ok']} ok", f"{n['failed']} failed"] + [f"{n[s]} {s}" for s in
                                                         ("lost", "running", "waiting", "no watcher") if n[s]]
    print(f"trigger: {trigger!r}{' ' + event_id if event_id else ''}: {', '.join(parts)} "
          f"of {len(values)} host(s) after {seconds:.1f}s{' (interrupted)' if interrupted else ''}",
          file=sys.stderr)


def check_wait(args) -> None:
    check_id(args.event_id, "event id")
    _positive(args.timeout, "--timeout")


def cmd_wait(args) -> int:
    from .coordination import unwatched_hosts
    from .results import fire_record

    layout = Layout(args.prefix)
    store = _store(args)
    try:
        kv = store.get(layout.fire_key(args.event_id))
        record = fire_record(kv.value) if kv is not None else None
        if record is None:
            print(f"trigger: no fire {args.event_id} is kept (fired with --retention 0, "
                  "or older than its retention)", file=sys.stderr)
            return EXIT_NOT_FOUND
        hosts = list(record.hosts)
        return _wait_and_show(args, store, layout, record.event_id, record.trigger, record.fired_at,
                              hosts, None, record.ok_codes, unwatched_hosts(store, layout, hosts))
    finally:
        store.close()


# -- watch -----------------------------------------------------------------------


def check_watch(args) -> None:
    args.host = _host(args.host)
    args.run_argv = shlex.split(args.run_cmd)
    if not args.run_argv:
        raise BadRecord("--run-cmd is empty")
    _positive(args.check_interval, "--check-interval")
    _positive(args.standby_linger, "--standby-linger")
    if args.standby_linger > STANDBY_MAX_LINGER:
        raise BadRecord(f"--standby-linger must be at most {STANDBY_MAX_LINGER} seconds (30 days), "
                        f"got {args.standby_linger:g}")
    if args.member_ttl < 1:
        raise BadRecord(f"--member-ttl must be at least 1 second, got {args.member_ttl}")
    _not_negative(args.retention, "--retention")
    if not 0 <= args.metrics_port <= 65535:
        raise BadRecord(f"--metrics-port must be 0 (off) to 65535, got {args.metrics_port}")
    if args.config_dir is not None:
        if not os.path.isdir(args.config_dir):
            raise BadRecord(f"--config-dir {args.config_dir} is not a directory")
    args.role_names = tuple(_targets(args.roles)) if args.roles else ()
    args.election_names = tuple(_names(args.elections))
    _run_policy(args.run_lease_ttl, "--run-lease-ttl")


def cmd_watch(args) -> int:
    import logging  # here: the other commands start 5 ms sooner without it
    import signal

    from .driver import this_process
    from .procedures import HostTaken, Registration
    from .core import WatcherCore
    from .monitor import WatchMonitor, setup_logging
    from .queue import open_queue
    from .standby import StandbyQueue, fifo_for
    from .watch import WatchDaemon

    host, run_cmd = args.host, args.run_argv
    layout = Layout(args.prefix)
    endpoints = _endpoints(args.endpoints)
    store = _store(args)
    _check_access(store, layout, host)
    queue = open_queue(args.queue)
    connection = _pass_on(args) if args.store != "memory" else []

    def trigger_run(*which: str) -> list[str]:
        # -I: only the installed package may load, never a trigger/ in the cwd
        return [sys.executable, "-I", "-m", "trigger", "run", "--host", host, *which,
                "--prefix", args.prefix, "--endpoints", ",".join(endpoints), *connection,
                "--retention", str(args.retention), "--lease-ttl", str(args.run_lease_ttl),
                "--", *run_cmd]

    def run_argv(run_id: str) -> list[str]:
        return trigger_run("--run-id", run_id)

    fifo = fifo_for(host, args.prefix) if args.queue == "tsp" and args.standby else None
    standby = StandbyQueue(queue, fifo, trigger_run("--standby", str(fifo), "--watcher", str(os.getpid())),
                           args.standby_linger) if fifo else None
    queue = standby or queue

    setup_logging(host, args.log_format)
    core = WatcherCore(host, layout, lambda: new_event_id())
    monitor = WatchMonitor(core, metrics=bool(args.metrics_port))
    if args.metrics_port:
        try:
            monitor.serve(args.metrics_port, args.metrics_address)
        except OSError as exc:
            raise BadRecord(f"--metrics-port {args.metrics_port}: {exc.strerror or exc}") from None
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
        "watching %s on %s, queue %s, run %s", layout.host_prefix(host), ",".join(endpoints),
        args.queue, shlex.join(run_cmd), extra={"fields": {"event": "start"}})
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
    import logging

    from .driver import RealDriver, stop_on_sigterm
    from .effects import CommandStopped
    from .procedures import triggered_run
    from .runner import start_command
    from .standby import JOB_GONE, JobOutput

    host = check_host(args.host)
    if (args.run_id is None) == (args.standby is None):
        raise BadRecord("give one of --run-id RUN and --standby FIFO")
    run_id = None if args.run_id is None else check_id(args.run_id, "run id")
    if not args.command:
        raise BadRecord("no command given after --")
    policy = _run_policy(args.lease_ttl, "--lease-ttl")
    store = _store(args)

    def run(run_id: str, out: int | None = None) -> int:
        """One run; its command's output and ours to `out` (a standby's FIFO), else inherited."""
        stream = sys.stderr if out is None else open(out, "w", buffering=1, closefd=False)
        # the standby's command writes into a pipe copied to the FIFO; its job killed stops it
        output = None if out is None else JobOutput(out, lambda: driver.command.stop(policy.stop_grace, JOB_GONE))

        def execute(record):
            if output is not None and output.gone:
                return CommandStopped(None, JOB_GONE)
            try:
                return start_command(args.command, record, out if output is None else output.write_end)
            except BadRecord as exc:  # the run ends as a shell's would: 127, and its fires are served
                print(f"trigger: error: {exc}", file=stream)
                return 127
            finally:
                if output is not None:
                    output.close_write_end()

        driver = RealDriver(store, execute=execute, tell=lambda note: _tell(note, stream))
        if out is None:  # a cold run: SIGTERM (`tsp -k`) stops its command and gives its fires back
            stop_on_sigterm(driver)
        logs = logging.StreamHandler(stream)  # the store's complaints too, as a cold run's stderr has them
        logging.getLogger().addHandler(logs)
        try:
            return driver.run(triggered_run(Layout(args.prefix), host, run_id, args.retention, policy=policy))
        finally:
            logging.getLogger().removeHandler(logs)
            if output is not None:
                output.close()

    try:
        if run_id is not None:
            return run(run_id)
        from pathlib import Path

        from .queue.tsp import TspQueue
        from .standby import serve

        serve(Path(args.standby), run, TspQueue().running_run_ids, args.watcher or os.getppid())
        return 0
    finally:
        store.close()


def _run_policy(lease_ttl: int, option: str):
    """The run policy with this lease TTL, long enough to stop a command in time."""
    shortest = int(RUN.stop_grace + RUN.stop_margin) + 3
    if not shortest <= lease_ttl <= 3600:
        raise BadRecord(f"{option} must be from {shortest} to 3600 seconds, got {lease_ttl}")
    return RUN._replace(lease_ttl=lease_ttl)


def _tell(note, stream) -> None:
    """`trigger run` speaks on stderr, a standby into its FIFO: task-spooler keeps it with the run's output."""
    from .driver import note_text

    if note.level == "debug":
        return
    level = "" if note.level == "info" else f"{note.level}: "
    try:
        print(f"trigger: {level}{one_line(note_text(note))}", file=stream)
    except OSError:
        pass  # a standby's job went (its cat killed): the run goes on without a listener


# -- status ----------------------------------------------------------------------


STATUS_COLUMNS = [("host", "host"), ("watcher", lambda h: "alive" if h["alive"] else "absent"),
                  ("roles", "roles"), ("inbox", "pending"), ("queued", "queued"), ("running", "running"),
                  ("quarantined", "quarantined"), ("last run", lambda h: (h["last"] or {}).get("state")),
                  ("exit", lambda h: (h["last"] or {}).get("exit_code")),
                  ("finished", lambda h: (h["last"] or {}).get("finished_at"))]


def cmd_status(args) -> int:
    from .results import status

    store = _store(args)
    try:
        hosts = status(store, Layout(args.prefix))
    finally:
        store.close()
    rows = [{"host": h.host, "alive": h.alive, "roles": list(h.roles), "pending": h.pending,
             "queued": h.queued, "running": h.running, "quarantined": h.quarantined,
             "last": h.last and _run_row(h.last)} for h in hosts]
    show("json" if args.json else _format(args), rows, STATUS_COLUMNS)
    return 0


def _run_row(run) -> dict:
    took = (run.finished_at - run.started_at) if run.started_at and run.finished_at else None
    return {"run_id": run.run_id, "state": run.state, "exit_code": run.exit_code,
            "started_at": iso_utc(run.started_at), "finished_at": iso_utc(run.finished_at),
            "duration": took}


HISTORY_COLUMNS = [("fired", "fired_at"), ("trigger", "trigger"), ("event", "event_id"), ("from", "origin"),
                   ("hosts", "hosts"), ("ok", "ok"), ("failed", lambda f: f["failed"] + f["lost"]),
                   ("pending", lambda f: f["running"] + f["waiting"]), ("no watcher", "no_watcher")]


def check_history(args) -> None:
    if args.limit < 1:
        raise BadRecord(f"--limit must be 1 or more, got {args.limit}")
    args.ok_codes = _ok_codes(args.ok_codes) if args.ok_codes is not None else None
    if args.event_id is not None:
        check_id(args.event_id, "event id")


def cmd_history(args) -> int:
    from .coordination import unwatched_hosts
    from .results import counts, history, without_watcher

    layout = Layout(args.prefix)
    store = _store(args)
    try:
        fires = history(store, layout, args.limit, args.ok_codes, event_id=args.event_id)
        unwatched = set(unwatched_hosts(store, layout, {r.host for f in fires for r in f.results}))
    finally:
        store.close()
    if args.event_id is not None:
        if not fires:
            print(f"trigger: no fire {args.event_id} is kept (fired with --retention 0, "
                  "or older than its retention)", file=sys.stderr)
            return EXIT_NOT_FOUND
        f = fires[0]
        results = without_watcher({r.host: r for r in f.results}, unwatched)
        document = _fire_document(f.event_id, f.trigger, f.fired_at, f.ok_codes, list(results.values()))
        show(_format(args), document["hosts"], HOST_COLUMNS, document)
        return 0
    rows = []
    for f in fires:
        n = counts(without_watcher({r.host: r for r in f.results}, unwatched).values())
        rows.append({"event_id": f.event_id, "trigger": f.trigger, "fired_at": iso_utc(f.fired_at),
                     "origin": f.origin, "ok_codes": list(f.ok_codes), "hosts": len(f.results),
                     **{state.replace(" ", "_"): count for state, count in n.items()}})
    show(_format(args), rows, HISTORY_COLUMNS)
    return 0


def cmd_leader(args) -> int:
    from .coordination import leader

    store = _store(args)
    try:
        holder = leader(store, Layout(args.prefix), args.name)
    finally:
        store.close()
    fmt = _format(args)
    if fmt == "json":
        show("json", [], [], {"election": args.name, "leader": holder})
    elif holder is not None:
        print(holder)
    if holder is None:
        print(f"trigger: no holder of {args.name!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    return 0


def check_drop(args) -> None:
    args.host = _host(args.host)


def cmd_drop(args) -> int:
    """Remove the inbox entries of a host that no watcher serves (a retired
    host): fires nothing will ever run for. A host with a live watcher is
    refused: its entries are not stale, its next run takes them."""
    from .coordination import live_members
    from .fire import TXN_OPS
    from .store.base import DeleteOp

    layout = Layout(args.prefix)
    store = _store(args)
    try:
        if any(m.host == args.host for m in live_members(store, layout)):
            raise BadRecord(f"{args.host} has a live watcher: its inbox is not stale "
                            "(stop the watcher first)")
        items, _ = store.get_prefix(layout.host_prefix(args.host))
        keys = [kv.key for kv in items if layout.classify(args.host, kv.key)[0] == "entry"]
        if args.dry_run:
            for key in keys:
                print(key.rsplit("/", 1)[-1])
            print(f"would drop {len(keys)} inbox entr{'y' if len(keys) == 1 else 'ies'} of {args.host}",
                  file=sys.stderr)
            return 0
        for i in range(0, len(keys), TXN_OPS):
            store.txn([DeleteOp(key) for key in keys[i:i + TXN_OPS]])
    finally:
        store.close()
    print(f"dropped {len(keys)} inbox entr{'y' if len(keys) == 1 else 'ies'} of {args.host}")
    return 0


# -- auth ------------------------------------------------------------------------


def cmd_auth_setup(args) -> int:
    from .auth import plan, setup, write_passwords

    layout = Layout(args.prefix)
    hosts = [_host(h, "--hosts") for h in (args.hosts or "").split(",") if h.strip()]
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


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size tells it: $COLUMNS, stdout's, or 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default; help that names its default in words
    (an environment variable, a computed value) is left as written."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        # argparse makes one for every option and asks shutil for the width: importing
        # shutil (with zlib, bz2 and lzma) was 1.6 ms of every cold start
        if width is None:
            width = _columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or not action.option_strings):
            return text
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """A bad option is one line and exit 2, like any other bad input."""
        print(f"trigger: error: {one_line(message)} (see: {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


class _Version(argparse._VersionAction):
    """--version, looked up only when asked: importlib.metadata costs every command 11 ms."""

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("trigger")
        except PackageNotFoundError:
            found = "unknown"
        print(f"trigger {found}")
        parser.exit()


def _fire_arguments(p: argparse.ArgumentParser) -> None:
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
    _output(p)
    _common(p)


def _wait_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("event_id", metavar="EVENT", help="the event id `fire` printed")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait")
    _output(p)
    _common(p)


def _watch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="this host's name (lower-cased), as fires name it "
                   "(default: none, required)")
    p.add_argument("--run-cmd", default=DEFAULT_RUN_CMD, help="the command a run executes, split like a "
                   "shell would but never run through one")
    p.add_argument("--queue", default="tsp", choices=["tsp", "inline"],
                   help="tsp: task-spooler ($TS_SOCKET honoured); inline: a child process (tests)")
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
    _common(p)


def _run_arguments(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- and the command to run")
    _common(p)


def _status_arguments(p: argparse.ArgumentParser) -> None:
    _output(p)
    p.add_argument("--json", action="store_true", help="the same as -o json")
    _common(p)


def _history_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("event_id", metavar="EVENT", nargs="?", help="one fire's event id (default: the "
                   "newest fires)")
    p.add_argument("--limit", type=int, default=20, help="how many fires")
    p.add_argument("--ok-codes", default=None, help="judge by these exit codes instead (default: the "
                   "ones each fire was made with)")
    _output(p)
    _common(p)


def _leader_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the election's name")
    _output(p)
    _common(p)


def _drop_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="the retired host (default: none, required)")
    p.add_argument("--dry-run", action="store_true", help="list the entries and count them; delete nothing")
    _common(p)


def _auth_arguments(p: argparse.ArgumentParser) -> None:
    auth = p.add_subparsers(dest="auth_command", required=True, metavar="COMMAND", title="commands")
    p = auth.add_parser("setup", help="a user and role per node, a firer role, then enable etcd auth",
                        formatter_class=HelpFormatter)
    p.add_argument("--hosts", help="the nodes, comma-separated: user NAME, role trigger-node-NAME each "
                   "(default: none)")
    p.add_argument("--firers", help="users that may fire (a node that fires is one), comma-separated "
                   "(default: none)")
    p.add_argument("--password-dir", help="write new users' passwords to DIR/USER.password (mode 0600) "
                   "instead of printing them (default: print them)")
    p.add_argument("--root-password-file", help="password for etcd's root user if it is created "
                   "(default: a random one, printed or written like the others)")
    p.add_argument("--no-enable", action="store_true", help="create users and roles, leave auth off")
    p.add_argument("--dry-run", action="store_true", help="print the roles and users; touch nothing")
    _common(p)
    p.set_defaults(func=cmd_auth_setup, check=None)


# name: (help, what runs it, what checks its options first, its arguments)
COMMANDS = {
    "fire": ("make the hosts of a trigger run Puppet", cmd_fire, check_fire, _fire_arguments),
    "wait": ("re-attach to a fire: wait for its runs, as fire --wait does", cmd_wait, check_wait,
             _wait_arguments),
    "watch": ("the daemon: queue a run when this host's inbox fills", cmd_watch, check_watch, _watch_arguments),
    "run": ("what the queue executes: mark start, run, mark finish", cmd_run, None, _run_arguments),
    "status": ("per host: watcher alive, inbox, runs, last result", cmd_status, None, _status_arguments),
    "history": ("recent fires and what became of them; with EVENT, that fire host by host", cmd_history,
                check_history, _history_arguments),
    "leader": ("print the current holder of an election (exit 5: none)", cmd_leader, None, _leader_arguments),
    "drop": ("remove the stale inbox entries of a host no watcher serves", cmd_drop, check_drop,
             _drop_arguments),
    "auth": ("etcd users and roles for trigger (docs/security.md)", None, None, _auth_arguments),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given the words it will parse, only the command they name (building
    all the others costs a cold `trigger fire` 4 ms)."""
    parser = Parser(prog="trigger", formatter_class=HelpFormatter,
                    description="Puppet-native cross-node orchestration over etcd. Exit codes: 0 done, "
                    "1 etcd unreachable, 2 bad input, 3 fire refused by the loop TTL, 4 a waited-for run "
                    "failed or timed out, 5 not found (no election holder, no such fire), "
                    "75 run not recorded as started, 130 wait interrupted.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND",
                                title="commands")
    names = [argv[0]] if argv and argv[0] in COMMANDS else COMMANDS
    for name in names:
        help, func, check, arguments = COMMANDS[name]
        p = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
        p.set_defaults(func=func, check=check)
        arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    args = build_parser(argv).parse_args(argv)
    if getattr(args, "command", None) and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    try:
        # Everything is checked before anything is read, written or run.
        if hasattr(args, "prefix"):
            Layout(args.prefix)
        if args.check is not None:
            args.check(args)
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
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
