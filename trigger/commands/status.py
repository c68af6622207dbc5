"""`trigger status`: per host, the watcher, its inbox, its runs, its last result."""

from __future__ import annotations

import argparse

from ..layout import Layout
from ..output import Key, iso_utc, rounded_seconds, show, since
from .common import connection_arguments, host_option, open_store_of, output_argument, output_format


HELP = "per host: watcher alive, inbox, runs, last result"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("hosts", metavar="HOST", nargs="*", help="only these hosts (default: every host "
                   "etcd knows of); a host etcd knows nothing of shows as absent, with nothing pending")
    output_argument(p)
    p.add_argument("--json", action="store_true", help="the same as -o json")
    connection_arguments(p)


# plain rows: one field each, for scripts
STATUS_COLUMNS = [("host", "host"), ("watcher", lambda h: "alive" if h["alive"] else "absent"),
                  ("roles", "roles"), ("inbox", "pending"), ("queued", "queued"), ("running", "running"),
                  ("quarantined", "quarantined"), ("last run", lambda h: (h["last"] or {}).get("state")),
                  ("exit", lambda h: (h["last"] or {}).get("exit_code")),
                  ("finished", lambda h: (h["last"] or {}).get("finished_at"))]


def _runs(h: dict) -> str:
    return ", ".join(f"{h[state]} {state}" for state in ("queued", "running") if h[state]) or "-"


def _last(h: dict) -> str | None:
    """`exit 0, 3 min ago`, `lost`, or none."""
    last = h["last"] or {}
    what = f"exit {last['exit_code']}" if last.get("state") == "finished" else last.get("state")
    return f"{what}, {since(last['finished_at'])}" if what and last.get("finished_at") else what


# a terminal's table: fewer, foldable columns, so that 80 columns are enough
STATUS_TABLE = [("host", Key("host")), STATUS_COLUMNS[1], ("roles", "roles"),
                ("inbox", lambda h: f"{h['pending']}" + (f" ({h['quarantined']} quarantined)" if h["quarantined"]
                                                         else "")),
                ("runs", _runs), ("last run", _last)]


def check(args) -> None:
    args.hosts = list(dict.fromkeys(host_option(h, "HOST") for h in args.hosts))


def run(args) -> int:
    from ..results import HostStatus, status

    store = open_store_of(args)
    try:
        hosts = status(store, Layout(args.prefix))
    finally:
        store.close()
    if args.hosts:
        known = {h.host: h for h in hosts}
        hosts = [known.get(name) or HostStatus(name, False, (), 0, 0, 0, 0, None) for name in args.hosts]
    rows = [{"host": h.host, "alive": h.alive, "roles": list(h.roles), "pending": h.pending,
             "queued": h.queued, "running": h.running, "quarantined": h.quarantined,
             "last": h.last and run_row(h.last)} for h in hosts]
    show("json" if args.json else output_format(args), rows, STATUS_COLUMNS, table_columns=STATUS_TABLE)
    return 0


def run_row(run) -> dict:
    took = (run.finished_at - run.started_at) if run.started_at and run.finished_at else None
    return {"run_id": run.run_id, "state": run.state, "exit_code": run.exit_code,
            "started_at": iso_utc(run.started_at), "finished_at": iso_utc(run.finished_at),
            "duration": rounded_seconds(took)}
