"""`trigger history`: recent fires and what became of them; with EVENT, that fire host by host."""

from __future__ import annotations

import argparse
import sys

from ..layout import Layout
from ..output import iso_utc, show
from ..records import BadRecord, check_id
from .common import EXIT_NOT_FOUND, connection_arguments, ok_codes, open_store_of, output_argument, output_format
from .fire_report import HOST_COLUMNS, fire_document


HELP = "recent fires and what became of them; with EVENT, that fire host by host"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("event_id", metavar="EVENT", nargs="?", help="one fire's event id (default: the "
                   "newest fires)")
    p.add_argument("--limit", type=int, default=20, help="how many fires")
    p.add_argument("--ok-codes", default=None, help="judge by these exit codes instead (default: the "
                   "ones each fire was made with)")
    output_argument(p)
    connection_arguments(p)


HISTORY_COLUMNS = [("fired", "fired_at"), ("trigger", "trigger"), ("event", "event_id"), ("from", "origin"),
                   ("hosts", "hosts"), ("ok", "ok"), ("failed", lambda f: f["failed"] + f["lost"]),
                   ("pending", lambda f: f["running"] + f["waiting"]), ("no watcher", "no_watcher")]


def check(args) -> None:
    if args.limit < 1:
        raise BadRecord(f"--limit must be 1 or more, got {args.limit}")
    args.ok_codes = ok_codes(args.ok_codes) if args.ok_codes is not None else None
    if args.event_id is not None:
        check_id(args.event_id, "event id")


def run(args) -> int:
    from ..coordination import unwatched_hosts
    from ..results import counts, history, without_watcher

    layout = Layout(args.prefix)
    store = open_store_of(args)
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
        document = fire_document(f.event_id, f.trigger, f.fired_at, f.ok_codes, list(results.values()))
        show(output_format(args), document["hosts"], HOST_COLUMNS, document)
        return 0
    rows = []
    for f in fires:
        n = counts(without_watcher({r.host: r for r in f.results}, unwatched).values())
        rows.append({"event_id": f.event_id, "trigger": f.trigger, "fired_at": iso_utc(f.fired_at),
                    "origin": f.origin, "ok_codes": list(f.ok_codes), "hosts": len(f.results),
                     **{state.replace(" ", "_"): count for state, count in n.items()}})
    show(output_format(args), rows, HISTORY_COLUMNS)
    return 0
