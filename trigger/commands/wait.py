"""`trigger wait`: re-attach to a fire and wait for its runs, as `fire --wait` does."""

from __future__ import annotations

import argparse
import sys

from ..layout import Layout
from ..records import check_id
from .common import EXIT_NOT_FOUND, connection_arguments, open_store_of, output_argument, positive
from .fire_report import wait_and_show


HELP = "re-attach to a fire: wait for its runs, as fire --wait does"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("event_id", metavar="EVENT", help="the event id `fire` printed")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait")
    output_argument(p)
    connection_arguments(p)


def check(args) -> None:
    check_id(args.event_id, "event id")
    positive(args.timeout, "--timeout")


def run(args) -> int:
    from ..coordination import unwatched_hosts
    from ..results import fire_record

    layout = Layout(args.prefix)
    store = open_store_of(args)
    try:
        kv = store.get(layout.fire_key(args.event_id))
        record = fire_record(kv.value) if kv is not None else None
        if record is None:
            print(f"trigger: no fire {args.event_id} is kept (fired with --retention 0, "
                  "or older than its retention)", file=sys.stderr)
            return EXIT_NOT_FOUND
        hosts = list(record.hosts)
        return wait_and_show(args, store, layout, record.event_id, record.trigger, record.fired_at,
                             hosts, None, record.ok_codes, unwatched_hosts(store, layout, hosts))
    finally:
        store.close()
