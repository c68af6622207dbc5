"""How every command prints rows: `-o table`, `-o plain` or `-o json`.

In etcdctl's `-w` spirit: a table for people at a terminal (rich), plain
tab-separated rows for scripts (never cut, one row a line, no header; the
default when stdout is not a terminal), and JSON with the documented fields
(README.md) and times as ISO 8601 in UTC.
"""

from __future__ import annotations

import json
import os
import sys
import time
import unicodedata
from typing import Any, Callable, NamedTuple, Sequence, Union

FORMATS = ("table", "plain", "json")
STATE_COLOURS = {"ok": "green", "alive": "green", "failed": "red", "lost": "red",
                 "no watcher": "red", "absent": "red", "waiting": "yellow", "running": "yellow",
                 "refused": "magenta", "refused option": "red"}


class Key(NamedTuple):
    """A column of values people copy (a host name, an event id): a table never wraps it, its
    other columns fold first."""

    field: str


class Moment(NamedTuple):
    """A column of ISO 8601 times: as they are in plain rows, "3 min ago" in a table."""

    field: str


class Seconds(NamedTuple):
    """A column of durations: seconds to the millisecond in plain rows (as in JSON), 2.0s in a table."""

    field: str


# A column: its header and the field of a row it shows (or how to make it).
Column = tuple[str, Union[str, Key, Moment, Seconds, Callable[[dict], Any]]]


def default_format(stream=None) -> str:
    """table at a terminal, plain rows when piped or redirected."""
    stream = stream or sys.stdout
    return "table" if stream.isatty() else "plain"


def rounded_seconds(value: float | None) -> float | None:
    """A duration as every command prints it in plain rows and JSON: seconds, to the millisecond."""
    return None if value is None else round(value, 3)


def iso_utc(seconds: float | None) -> str | None:
    """A Unix time as ISO 8601 in UTC (2026-11-30T11:41:46.123Z), None stays None."""
    if seconds is None:
        return None
    from datetime import datetime, timezone  # here: 1 ms of a cold start that prints no time

    text = datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def show(fmt: str, rows: Sequence[dict], columns: Sequence[Column], document: Any = None,
         stream=None, table_columns: Sequence[Column] | None = None) -> None:
    """Print `rows` as a table (of `table_columns`, if fewer fit a terminal better) or as plain rows,
    or `document` (default: the rows themselves) as one JSON document."""
    stream = stream or sys.stdout
    if fmt == "json":
        print(json.dumps(rows if document is None else document, sort_keys=True), file=stream)
        return
    if fmt == "plain":
        for row in rows:
            print("\t".join(one_line(_text(_value(row, field))) for _, field in columns), file=stream)
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    now = time.time()
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0),
                  collapse_padding=True)  # a line under the header; columns a space apart
    columns = table_columns or columns
    for header, field in columns:
        # a narrow terminal folds the other columns (wraps them, never cuts them), no narrower
        # than their header's words; a host name or an event id, the value one copies, stays
        # on one line
        table.add_column(header, overflow="fold", no_wrap=isinstance(field, Key),
                         min_width=max(map(len, header.split())))
    for row in rows:
        cells = [_table_text(field, _value(row, field), now) for _, field in columns]
        table.add_row(*[Text(c, style=STATE_COLOURS.get(c, "")) for c in cells])
    pipe_console(file=stream).print(table)


def _value(row: dict, field) -> Any:
    if isinstance(field, (Key, Moment, Seconds)):
        return row.get(field.field)
    return field(row) if callable(field) else row.get(field)


def _table_text(field, value: Any, now: float) -> str:
    if value is not None and isinstance(field, Moment):
        return since(value, now)
    if value is not None and isinstance(field, Seconds):
        return f"{value:.1f}s"
    return _text(value)


def since(iso: str, now: float | None = None) -> str:
    """An ISO 8601 time (as iso_utc writes it) as how long ago: "3 min ago"."""
    from datetime import datetime

    then = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    return ago((time.time() if now is None else now) - then)


def ago(seconds_past: float) -> str:
    """How long ago, as people say it: "12 s ago", "3 min ago", "5 h ago", "2 d ago"."""
    if seconds_past < -1:  # another host's clock ahead of ours
        return "in " + ago(-seconds_past).removesuffix(" ago")
    past = max(seconds_past, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if past >= size:
            return f"{int(past // size)} {unit} ago"
    return f"{int(past)} s ago"


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return repr(value)  # as JSON writes it: plain rows and JSON agree
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def one_line(message: object) -> str:
    """The message with tabs, line breaks and other control characters
    escaped: an error quoting a value, or a row holding a trigger name, stays
    one line (and one field)."""
    text = str(message)
    if text.isprintable():  # no control character, nor any other: nothing to escape
        return text
    return "".join(ch.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)


def last_lines(text: str, count: int) -> list[str]:
    """The last `count` lines of a command's output, for a terminal: colours
    and other escape sequences gone, every other control character escaped."""
    import re

    plain = re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]", "", text)
    return [one_line(line) for line in plain.rstrip("\n").splitlines()[-count:]]


def pipe_console(**options):
    """A rich Console that leaves a closed pipe to `closed_pipe_ends_quietly` (exit 141):
    rich's own handling exits 1, the code of an unreachable etcd."""
    from rich.console import Console

    class PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError("stdout closed")

    return PipeConsole(**options)


EXIT_CLOSED_PIPE = 141  # what a shell reports for a tool SIGPIPE ended: `set -o pipefail` sees it


def closed_pipe_ends_quietly(run: Callable[[], int]) -> int:
    """`run()`; its output cut short by a closed pipe (`trigger history | head -1`) ends it
    quietly with exit 141, as `seq 1000000 | head -1` ends seq."""
    try:
        try:
            return run()
        finally:  # also after --help's SystemExit
            sys.stdout.flush()  # here, not at exit: a closed pipe is then seen and answered
    except BrokenPipeError:
        # stdout to /dev/null: what is still buffered for it is dropped, not written at exit (an error)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_CLOSED_PIPE
