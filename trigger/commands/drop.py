"""`trigger drop`: the stale inbox entries of a retired host."""

from __future__ import annotations

import argparse
import sys

from ..layout import Layout
from ..records import BadRecord
from .common import connection_arguments, host_option, open_store_of


HELP = "remove the stale inbox entries of a host no watcher serves"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="the retired host (default: none, required)")
    p.add_argument("--dry-run", action="store_true", help="list the entries and count them; delete nothing")
    connection_arguments(p)


def check(args) -> None:
    args.host = host_option(args.host)


def run(args) -> int:
    """Remove the inbox entries of a host that no watcher serves (a retired
    host): fires nothing will ever run for. A host with a live watcher is
    refused: its entries are not stale, its next run takes them."""
    from ..coordination import live_members
    from ..fire import TXN_OPS
    from ..store.base import DeleteOp

    layout = Layout(args.prefix)
    store = open_store_of(args)
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
