"""Rows of results, and how they are shown: a rich table, JSON, Markdown.

A `Row` is one comparison: our number, the baseline's number measured in
the same run, their ratio (ours / baseline: below 1 means ours is smaller),
and the target with a verdict where the issue sets one.

`python -m bench.report FILE.json` prints the Markdown table of a results
file (how docs/benchmarks.md gets its numbers).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from .stats import ratio as _ratio

MET, MISSED, NO_TARGET = "met", "MISSED", ""


@dataclass
class Row:
    item: str  # "1 latency", "2 fan-out", ...
    metric: str
    ours: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    verdict: str = NO_TARGET
    note: str = ""
    ratio: float | None = field(default=None)

    def __post_init__(self):
        if self.ratio is None:
            self.ratio = _ratio(self.ours, self.baseline)


def verdict(ok: bool | None) -> str:
    """MET / MISSED for a target check; "" when it could not be checked."""
    if ok is None:
        return NO_TARGET
    return MET if ok else MISSED


def fmt(value: float | None, unit: str = "") -> str:
    """A number with a sensible number of digits, and its unit."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (abs(value) >= 100 and value == int(value)):
        text = f"{int(value):,}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}×"
    if 0 < value < 0.1:
        return f"{value:.2g}×"
    return f"{value:.2f}×" if value < 10 else f"{value:.1f}×"


def rich_table(rows: list[Row], title: str):
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for name, style in (("#", "dim"), ("measure", ""), ("ours", "bold"), ("baseline", ""),
                        ("ours/base", "cyan"), ("target", ""), ("", "")):
        table.add_column(name, style=style or None, overflow="fold")
    for row in rows:
        base = f"{fmt(row.baseline, row.unit)} ({row.baseline_name})" if row.baseline_name else ""
        mark = {"met": "[green]met[/]", "MISSED": "[red]MISSED[/]"}.get(row.verdict, "")
        table.add_row(row.item, row.metric + (f" [dim]({row.note})[/]" if row.note else ""),
                      fmt(row.ours, row.unit), base,
                      fmt_ratio(row.ratio) if row.baseline_name else "", row.target, mark)
    return table


def markdown_table(rows: list[Row]) -> str:
    lines = ["| # | measure | ours | baseline | ours / baseline | target | |",
             "|---|---|---:|---:|---:|---|---|"]
    for row in rows:
        base = f"{fmt(row.baseline, row.unit)} ({row.baseline_name})" if row.baseline_name else ""
        metric = row.metric + (f" ({row.note})" if row.note else "")
        lines.append(
            f"| {row.item} | {metric} | {fmt(row.ours, row.unit)} | {base} | "
            f"{fmt_ratio(row.ratio) if row.baseline_name else ''} | {row.target} | {row.verdict} |"
        )
    return "\n".join(lines)


def to_json(rows: list[Row], machine: dict, details: dict, meta: dict) -> str:
    return json.dumps({**meta, "machine": machine, "rows": [asdict(r) for r in rows],
                       "details": details}, indent=2, sort_keys=True, default=_default)


def _default(value: Any):
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def rows_from_json(text: str) -> list[Row]:
    return [Row(**r) for r in json.loads(text)["rows"]]


def machine_markdown(machine: dict) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in machine.items())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m bench.report RESULTS.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        text = f.read()
    data = json.loads(text)
    print(f"mode {data.get('mode')}, started {data.get('started')}, took {data.get('seconds', 0):.0f} s\n")
    print(machine_markdown(data["machine"]))
    print()
    print(markdown_table(rows_from_json(text)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
