"""How every command prints rows: `-o table`, `-o plain` or `-o json`.

In etcdctl's `-w` spirit: a table for people at a terminal (rich), plain
tab-separated rows for scripts (never cut, one row a line, no header; the
default when stdout is not a terminal), and JSON with the documented fields
(README.md) and times as ISO 8601 in UTC.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from typing import Any, Callable, Sequence, Union

FORMATS = ("table", "plain", "json")
STATE_COLOURS = {"ok": "green", "alive": "green", "failed": "red", "lost": "red", "refused option": "red",
                 "no watcher": "red", "absent": "red", "waiting": "yellow", "running": "yellow"}

# A column: its header and the field of a row it shows (or how to make it).
Column = tuple[str, Union[str, Callable[[dict], Any]]]


def default_format(stream=None) -> str:
    """table at a terminal, plain rows when piped or redirected."""
    stream = stream or sys.stdout
    return "table" if stream.isatty() else "plain"


def iso_utc(seconds: float | None) -> str | None:
    """A Unix time as ISO 8601 in UTC (2026-11-30T11:41:46.123Z), None stays None."""
    if seconds is None:
        return None
    from datetime import datetime, timezone  # here: 1 ms of a cold start that prints no time

    text = datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def show(fmt: str, rows: Sequence[dict], columns: Sequence[Column], document: Any = None,
         stream=None) -> None:
    """Print `rows` as a table or as plain rows, or `document` (default: the
    rows themselves) as one JSON document."""
    stream = stream or sys.stdout
    if fmt == "json":
        print(json.dumps(rows if document is None else document, sort_keys=True), file=stream)
        return
    cells = [[_text(_value(row, field)) for _, field in columns] for row in rows]
    if fmt == "plain":
        for line in cells:
            print("\t".join(one_line(c) for c in line), file=stream)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for header, _ in columns:
        table.add_column(header, overflow="fold")  # a narrow terminal wraps ids, never cuts them
    for line in cells:
        table.add_row(*[Text(c, style=STATE_COLOURS.get(c, "")) for c in line])
    Console(file=stream).print(table)


def _value(row: dict, field) -> Any:
    return field(row) if callable(field) else row.get(field)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
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
