"""`trigger wait`: re-attach to a fire and wait for its runs, as `fire --wait` does."""

from __future__ import annotations

import argparse

from ..layout import Layout
from ..records import check_id
from .common import (DEFAULT_WAIT_TIMEOUT, connection_arguments, open_store_of, output_argument,
                     NotFound, pick_event_id, positive, wait_for_absent_argument)
from .fire_report import wait_and_show


HELP = "re-attach to a fire: wait for its runs, as fire --wait does"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("event_id", metavar="EVENT", help="the event id `fire` printed, a unique beginning "
                   "of it, or `last` (the newest fire kept)")
    p.add_argument("--timeout", type=float, default=DEFAULT_WAIT_TIMEOUT, help="seconds to wait")
    wait_for_absent_argument(p)
    output_argument(p)
    connection_arguments(p)


def check(args) -> None:
    check_id(args.event_id, "event id")
    positive(args.timeout, "--timeout")


def run(args) -> int:
    from ..coordination import unwatched_hosts
    from ..results import fire_record, kept_event_ids

    layout = Layout(args.prefix)
    store = open_store_of(args)
    try:
        event_id = pick_event_id(args.event_id, kept_event_ids(store, layout))
        kv = store.get(layout.fire_key(event_id))
        record = fire_record(kv.value) if kv is not None else None
        if record is None:  # its retention ended since
            raise NotFound(f"no fire {event_id} is kept any more (older than its retention)")
        hosts = list(record.hosts)
        return wait_and_show(args, store, layout, record.event_id, record.trigger, record.fired_at,
                             hosts, None, record.ok_codes, unwatched_hosts(store, layout, hosts))
    finally:
        store.close()
