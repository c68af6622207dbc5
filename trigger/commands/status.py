"""`trigger status`: per host, the watcher, its inbox, its runs, its last result."""

from __future__ import annotations

import argparse

from ..layout import Layout
from ..output import iso_utc, show
from .common import connection_arguments, open_store_of, output_argument, output_format


HELP = "per host: watcher alive, inbox, runs, last result"


def arguments(p: argparse.ArgumentParser) -> None:
    output_argument(p)
    p.add_argument("--json", action="store_true", help="the same as -o json")
    connection_arguments(p)


STATUS_COLUMNS = [("host", "host"), ("watcher", lambda h: "alive" if h["alive"] else "absent"),
                  ("roles", "roles"), ("inbox", "pending"), ("queued", "queued"), ("running", "running"),
                  ("quarantined", "quarantined"), ("last run", lambda h: (h["last"] or {}).get("state")),
                  ("exit", lambda h: (h["last"] or {}).get("exit_code")),
                  ("finished", lambda h: (h["last"] or {}).get("finished_at"))]


def run(args) -> int:
    from ..results import status

    store = open_store_of(args)
    try:
        hosts = status(store, Layout(args.prefix))
    finally:
        store.close()
    rows = [{"host": h.host, "alive": h.alive, "roles": list(h.roles), "pending": h.pending,
             "queued": h.queued, "running": h.running, "quarantined": h.quarantined,
             "last": h.last and run_row(h.last)} for h in hosts]
    show("json" if args.json else output_format(args), rows, STATUS_COLUMNS)
    return 0


def run_row(run) -> dict:
    took = (run.finished_at - run.started_at) if run.started_at and run.finished_at else None
    return {"run_id": run.run_id, "state": run.state, "exit_code": run.exit_code,
            "started_at": iso_utc(run.started_at), "finished_at": iso_utc(run.finished_at),
            "duration": took}
