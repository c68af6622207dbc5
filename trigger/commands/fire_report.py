"""What became of a fire, host by host: waiting for its runs with progress,
the table or document, the summary line; shared by fire, wait and history."""

from __future__ import annotations

import contextlib
import shlex
import sys
import time

from ..layout import DEFAULT_PREFIX
from ..output import Key, Moment, Seconds, iso_utc, rounded_seconds, show
from .common import EXIT_FAILED, EXIT_INTERRUPTED, output_format


def wait_and_show(args, store, layout, event_id: str, trigger: str, fired_at: float, hosts: list[str],
                  revision: int | None, ok_codes, unwatched, reattach: bool = True) -> int:
    """Wait for the fire's runs, showing progress on a terminal; print the
    results and a summary; on Ctrl-C, what is known and how to re-attach."""
    from ..policy import NO_WATCHER_GRACE
    from ..results import wait_for_fire, wait_succeeded, without_watcher

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
                                    on_change=on_change, unwatched=unwatched,
                                    absent_grace=None if args.wait_for_absent else NO_WATCHER_GRACE)
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
    return 0 if wait_succeeded(results) else EXIT_FAILED


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
        finished = n["ok"] + n["failed"] + n["refused"] + n["refused option"] + n["lost"]
        self.progress.update(self.task, completed=finished, description=(
            f"done {n['ok']} · failed {n['failed'] + n['lost']} · running {n['running']} · "
            f"no watcher {n['no watcher']} · waiting {n['waiting']}"))


HOST_COLUMNS = [("host", Key("host")), ("result", lambda r: r["result"] + noop_note(r)), ("exit", "exit_code"),
                ("duration", Seconds("duration")), ("run", "run_id"), ("started", Moment("started_at"))]


OUTPUT_LINES = 10  # of a failed host's output under the table (`trigger logs` prints all that is kept)


def noop_note(row: dict) -> str:
    """What a noop run's exit code means (Puppet's --detailed-exitcodes: 2, changes)."""
    if not row.get("noop"):
        return ""
    return " (noop: would change)" if row["exit_code"] == 2 else " (noop)"


def host_rows(results) -> list[dict]:
    rows = []
    for r in sorted(results, key=lambda r: r.host):
        row = {"host": r.host, "result": r.state, "exit_code": r.exit_code, "duration": rounded_seconds(r.duration),
               "run_id": r.run_id, "started_at": iso_utc(r.started_at),
               "finished_at": iso_utc(r.finished_at)}
        if r.noop:
            row["noop"] = True
        if r.output and r.state not in ("ok", "running"):  # why it failed, or why nothing ran
            row["output"] = r.output
        rows.append(row)
    return rows


def show_outputs(rows: list[dict], event_id: str | None, fmt: str) -> None:
    """The last lines of each failed host's output: under a table, on stderr
    beside plain rows (a script reads those), in the JSON document already."""
    from ..output import last_lines

    if fmt == "json":
        return
    stream = sys.stdout if fmt == "table" else sys.stderr
    for row in rows:
        if row.get("output"):
            print(f"--- {row['host']}: {row['result']}, last lines of run {row['run_id']} "
                  f"(all kept: trigger logs {event_id or row['run_id']} --host {row['host']})", file=stream)
            for line in last_lines(row["output"], OUTPUT_LINES):
                print(f"    {line}", file=stream)


def fire_document(event_id, trigger, fired_at, ok_codes, results, seconds=None, interrupted=False) -> dict:
    """One fire host by host, as `fire --wait`, `wait` and `history EVENT` print it in JSON."""
    from ..results import counts

    summary = {state.replace(" ", "_"): n for state, n in counts(results).items()}
    summary.update(hosts=len(results), seconds=rounded_seconds(seconds),
                   interrupted=interrupted)
    return {"event_id": event_id, "trigger": trigger, "fired_at": iso_utc(fired_at),
            "ok_codes": list(ok_codes), "hosts": host_rows(results), "summary": summary}


def show_fire(args, event_id, trigger, fired_at, ok_codes, results: dict, seconds: float,
              interrupted: bool = False) -> None:
    from ..results import counts

    values = list(results.values())
    document = fire_document(event_id, trigger, fired_at, ok_codes, values, seconds, interrupted)
    show(output_format(args), document["hosts"], HOST_COLUMNS, document)
    show_outputs(document["hosts"], event_id, output_format(args))
    n = counts(values)
    parts = [f"{n['ok']} ok", f"{n['failed']} failed"] + [f"{n[s]} {s}" for s in
                                                         ("refused", "lost", "running", "waiting", "no watcher",
                                                          "refused option") if n[s]]
    print(f"trigger: {trigger!r}{' ' + event_id if event_id else ''}: {', '.join(parts)} "
          f"of {len(values)} host(s) after {seconds:.1f}s{' (interrupted)' if interrupted else ''}",
          file=sys.stderr)
