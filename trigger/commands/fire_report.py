"""What became of a fire, host by host: waiting for its runs with progress,
the table or document, the summary line; shared by fire, wait and history."""

from __future__ import annotations

import contextlib
import shlex
import sys
import time

from ..layout import DEFAULT_PREFIX
from ..output import iso_utc, show
from .common import EXIT_FAILED, EXIT_INTERRUPTED, output_format


def wait_and_show(args, store, layout, event_id: str, trigger: str, fired_at: float, hosts: list[str],
                  revision: int | None, ok_codes, unwatched, reattach: bool = True) -> int:
    """Wait for the fire's runs, showing progress on a terminal; print the
    results and a summary; on Ctrl-C, what is known and how to re-attach."""
    from ..results import wait_for_fire, without_watcher

    started = time.monotonic()
    latest: dict = {}
    progress = Progress(len(hosts)) if sys.stderr.isatty() else None

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
        show_fire(args, event_id, trigger, fired_at, ok_codes, results, time.monotonic() - started,
                  interrupted=True)
        if reattach:
            print(f"trigger: interrupted; the fire goes on. Re-attach with: {reattach_command(args, event_id)}",
                  file=sys.stderr)
        else:
            print("trigger: interrupted; the fire goes on (kept no record to re-attach to: --retention 0)",
                  file=sys.stderr)
        return EXIT_INTERRUPTED
    results = without_watcher(results, unwatched)
    show_fire(args, event_id, trigger, fired_at, ok_codes, results, time.monotonic() - started)
    return 0 if all(r.state == "ok" for r in results.values()) else EXIT_FAILED


def reattach_command(args, event_id: str) -> str:
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


class Progress:
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
        from ..results import counts

        n = counts(results.values())
        self.progress.update(self.task, completed=n["ok"] + n["failed"] + n["lost"], description=(
            f"done {n['ok']} · failed {n['failed'] + n['lost']} · running {n['running']} · "
            f"no watcher {n['no watcher']} · waiting {n['waiting']}"))


HOST_COLUMNS = [("host", "host"), ("result", "result"), ("exit", "exit_code"),
                ("duration", lambda r: None if r["duration"] is None else f"{r['duration']:.1f}s"),
                ("run", "run_id"), ("started", "started_at")]


def host_rows(results) -> list[dict]:
    return [{"host": r.host, "result": r.state, "exit_code": r.exit_code, "duration": r.duration,
             "run_id": r.run_id, "started_at": iso_utc(r.started_at),
             "finished_at": iso_utc(r.finished_at)}
            for r in sorted(results, key=lambda r: r.host)]


def fire_document(event_id, trigger, fired_at, ok_codes, results, seconds=None, interrupted=False) -> dict:
    """One fire host by host, as `fire --wait`, `wait` and `history EVENT` print it in JSON."""
    from ..results import counts

    summary = {state.replace(" ", "_"): n for state, n in counts(results).items()}
    summary.update(hosts=len(results), seconds=None if seconds is None else round(seconds, 3),
                   interrupted=interrupted)
    return {"event_id": event_id, "trigger": trigger, "fired_at": iso_utc(fired_at),
            "ok_codes": list(ok_codes), "hosts": host_rows(results), "summary": summary}


def show_fire(args, event_id, trigger, fired_at, ok_codes, results: dict, seconds: float,
              interrupted: bool = False) -> None:
    from ..results import counts

    values = list(results.values())
    document = fire_document(event_id, trigger, fired_at, ok_codes, values, seconds, interrupted)
    show(output_format(args), document["hosts"], HOST_COLUMNS, document)
    n = counts(values)
    parts = [f"{n['ok']} ok", f"{n['failed']} failed"] + [f"{n[s]} {s}" for s in
                                                         ("lost", "running", "waiting", "no watcher") if n[s]]
    print(f"trigger: {trigger!r}{' ' + event_id if event_id else ''}: {', '.join(parts)} "
          f"of {len(values)} host(s) after {seconds:.1f}s{' (interrupted)' if interrupted else ''}",
          file=sys.stderr)
