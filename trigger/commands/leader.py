"""`trigger leader`: the current holder of an election."""

from __future__ import annotations

import argparse
import sys

from ..layout import Layout
from ..output import show
from .common import EXIT_NOT_FOUND, connection_arguments, open_store_of, output_argument, output_format


HELP = "print the current holder of an election (exit 5: none)"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the election's name")
    output_argument(p)
    connection_arguments(p)


def run(args) -> int:
    from ..coordination import leader

    store = open_store_of(args)
    try:
        holder = leader(store, Layout(args.prefix), args.name)
    finally:
        store.close()
    fmt = output_format(args)
    if fmt == "json":
        show("json", [], [], {"election": args.name, "leader": holder})
    elif holder is not None:
        print(holder)
    if holder is None:
        print(f"trigger: no holder of {args.name!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    return 0
