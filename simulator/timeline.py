"""The timeline picture: which node ran Puppet when, scheduled or triggered.

Few nodes (up to GANTT_MAX): one bar row per node, scheduled runs grey,
triggered runs colored, each run its own bar (back-to-back runs keep a
gap); the time axis spans the activity, not the idle time around it. Each
fire is a marker on its target's row and an arrow to the start of the run
it caused, drawn from the end of the run that fired it (an operator's
fire: from its marker), so a loop reads as one chain (up to MAX_ARROWS);
a fire no run served is a red marker, TTL refusals a cross on the refusing
node, slot waits a hatched bar, faults a labelled band; the legend outside
the data. `layout(report)` is what the drawing is made of, for the tests.
Many nodes: a raster, one pixel row per node (or
per group of nodes when there are more rows than a picture can show),
time in columns, colored by what most of the cell was doing; above it,
the number of runs in progress over time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

GANTT_MAX = 60
SMALL_ROLE = 24  # roles up to this many nodes get bars in a large picture
MAX_ROWS = 1000
MAX_ARROWS = 200  # more fire -> run arrows than this hide the runs
SCHEDULED, TRIGGERED, FAULT = "#9e9e9e", "#d62728", "#ffe8a3"
FIRE, UNSERVED, REFUSED, WAIT = "#1f77b4", "#d62728", "#000000", "#ff7f0e"
MARGIN = 0.03  # of the active span, on either side of it
GAP = 1 / 300  # of the window: what keeps two back-to-back runs two bars (a few pixels)


@dataclass(frozen=True)
class Bar:
    """A Puppet run as drawn: inset from its real start and end, so that a
    run starting the instant another ends is still a bar of its own."""

    index: int  # the node's
    start: float
    stop: float
    triggered: bool


@dataclass(frozen=True)
class Link:
    """An arrow from a fire to the run it caused: from the end of the run
    that fired (`from_index`, its node), or from the fire's marker on the
    target's row when an operator fired (`from_index` None)."""

    from_index: int | None
    fired_at: float
    to_index: int
    run_start: float


@dataclass(frozen=True)
class Layout:
    window: tuple[float, float]  # the time axis
    bars: list[Bar]
    links: list[Link]


def activity_window(report) -> tuple[float, float]:
    """The time axis: from the first thing that happened to the last, with a
    margin; from 0 when that starts near it. Idle time after the last run
    (a simulation goes on to its last re-read) would squeeze the picture."""
    times = [t for _, start, stop, _ in report.run_spans for t in (start, stop)]
    times += [t for t, _, _ in report.fires] + [t for t, _ in report.refusals]
    times += [t for _, start, stop in report.slot_waits for t in (start, stop)]
    for fault in report.data["faults"]:
        times += [fault["at"]] + ([fault["at"] + fault["for"]] if fault["for"] else [])
    if not times:
        return 0.0, max(report.data["ended_at"], 1.0)
    first, last = min(times), max(times)
    margin = max(MARGIN * (last - first), 1.0)
    return (0.0 if first <= 0.1 * (last - first) else first - margin), last + margin


def run_bars(spans, window: tuple[float, float]) -> list[Bar]:
    """One bar per run, inset by up to GAP of the window (a quarter of a short run at most)."""
    width = window[1] - window[0]
    smallest = width / 1000
    out = []
    for index, start, stop, triggered in spans:
        inset = min(GAP * width / 2, (stop - start) / 4)
        left = start + inset
        out.append(Bar(index, left, max(stop - inset, left + smallest), triggered))
    return out


def causal_links(report) -> list[Link]:
    """Each served fire's arrow: from the run that made it, else from the fire
    itself, to the Puppet run (the bar) of the `trigger run` that served it.

    That `trigger run` may have waited for Puppet's lock (a scheduled run in
    progress): its bar is then the first triggered one on its row starting
    at or after the served run's start, as task-spooler runs one at a time.
    """
    from bisect import bisect_left

    starts: dict[int, list[float]] = {}
    for index, start, _, triggered in report.run_spans:
        if triggered:
            starts.setdefault(index, []).append(start)
    for row in starts.values():
        row.sort()

    def bar_start(index: int, served_at: float) -> float:
        row = starts.get(index, [])
        at = bisect_left(row, served_at)
        return row[at] if at < len(row) else served_at

    by_run = {(fired_at, target, start): origin for fired_at, origin, target, start in report.causes}
    return [Link(by_run.get((fired_at, target, start)), fired_at, target, bar_start(target, start))
            for fired_at, target, start in report.fires if start is not None]


def layout(report) -> Layout:
    window = activity_window(report)
    return Layout(window, run_bars(report.run_spans, window), causal_links(report))


def draw(report, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = figure(report)
    path = Path(path)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def figure(report):
    """The matplotlib figure of a report (the caller saves and closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hosts = report.hosts
    spans = report.run_spans
    end = max(report.data["ended_at"], *(s[2] for s in spans)) or 1.0
    title = f"{report.data['scenario']}: Puppet runs per node (seed {report.data['seed']})"
    if len(hosts) <= GANTT_MAX:
        return _gantt(plt, report, layout(report), title)
    return _raster(plt, hosts, spans, end, title)


def _gantt(plt, report, drawn: Layout, title):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    hosts, faults = report.hosts, report.data["faults"]
    lo, hi = drawn.window
    fig, ax = plt.subplots(figsize=(11, max(2.6, 1.2 + 0.35 * len(hosts))))
    # Faults behind the bars: a band on each affected row (all rows for etcd).
    row_of = {h: len(hosts) - 1 - i for i, (h, _) in enumerate(hosts)}
    for fault in faults:
        start = fault["at"]
        if fault["kind"] in ("compact_etcd", "kill_tsp") and not fault["for"]:
            stop = start  # happens at once
        else:
            stop = hi if fault["for"] is None else start + fault["for"]
        rows = [row_of[h] for h in fault["hosts"]] or list(range(len(hosts)))
        ax.annotate(fault["kind"], (start, max(rows) + 0.42), fontsize=6, color="#8a6d00",
                    ha="left", va="top", zorder=4)
        for y in rows:
            if stop > start:
                ax.axhspan(y - 0.5, y + 0.5, xmin=(start - lo) / (hi - lo),
                           xmax=min((stop - lo) / (hi - lo), 1.0), color=FAULT, zorder=0)
            else:
                ax.plot([start, start], [y - 0.5, y + 0.5], color="#e6a100", linewidth=1, zorder=0)
    rows: dict[int, dict[bool, list]] = {}
    for bar in drawn.bars:
        rows.setdefault(bar.index, {False: [], True: []})[bar.triggered].append((bar.start, bar.stop - bar.start))
    for index, kinds in rows.items():
        y = len(hosts) - 1 - index
        ax.broken_barh(kinds[False], (y - 0.35, 0.7), facecolors=SCHEDULED)
        ax.broken_barh(kinds[True], (y - 0.35, 0.7), facecolors=TRIGGERED)
    handles = [Patch(color=SCHEDULED, label="scheduled run"), Patch(color=TRIGGERED, label="triggered run")]
    handles += _marks(ax, report, drawn.links, len(hosts), Line2D, Patch)
    ax.set_yticks(range(len(hosts)))
    ax.set_yticklabels([h for h, _ in reversed(hosts)], fontsize=8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.7, len(hosts) - 0.3)
    ax.set_xlabel("simulated time (s)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if faults:
        handles.append(Patch(color=FAULT, label="fault"))
    # Outside the axes, right of the data: it never hides a run.
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              borderaxespad=0.0)
    fig.tight_layout()
    return fig


def _marks(ax, report, links: list[Link], count, Line2D, Patch) -> list:
    """Fires (with arrows from the runs that made them to the runs they
    caused), refusals and slot waits; returns the legend entries for what it drew."""
    handles = []
    y_of = lambda index: count - 1 - index  # noqa: E731 (rows are drawn top down)
    waits = report.slot_waits
    if waits:
        for index, start, stop in waits:
            ax.broken_barh([(start, stop - start)], (y_of(index) - 0.12, 0.24), facecolors="none",
                           edgecolor=WAIT, hatch="////", linewidth=0.6, zorder=2)
        handles.append(Patch(facecolor="none", edgecolor=WAIT, hatch="////", label="waiting for a slot"))
    fires = report.fires
    if fires:
        served = [(t, y_of(i)) for t, i, start in fires if start is not None]
        lost = [(t, y_of(i)) for t, i, start in fires if start is None]
        if served:
            ax.plot(*zip(*served), linestyle="none", marker="v", markersize=5, color=FIRE, zorder=5,
                    label="_fire")
            handles.append(Line2D([], [], linestyle="none", marker="v", color=FIRE,
                                  label="fire → the run it caused"))
        if lost:
            ax.plot(*zip(*lost), linestyle="none", marker="v", markersize=6, color=UNSERVED, zorder=5,
                    markeredgecolor="black", label="_unserved")
            handles.append(Line2D([], [], linestyle="none", marker="v", color=UNSERVED,
                                  markeredgecolor="black", label="fire never served"))
        if len(links) <= MAX_ARROWS:
            for link in links:
                origin = (link.fired_at, y_of(link.to_index) + 0.3) if link.from_index is None \
                    else (link.fired_at, y_of(link.from_index))
                ax.annotate("", xy=(link.run_start, y_of(link.to_index)), xytext=origin,
                            arrowprops={"arrowstyle": "->", "color": FIRE, "linewidth": 0.7,
                                        "shrinkA": 0, "shrinkB": 0}, zorder=5)
    if report.refusals:
        ax.plot([t for t, _ in report.refusals], [y_of(i) for _, i in report.refusals],
                linestyle="none", marker="x", markersize=7, color=REFUSED, zorder=6, label="_refused")
        handles.append(Line2D([], [], linestyle="none", marker="x", color=REFUSED,
                              label="fire refused by the loop TTL"))
    return handles


def _raster(plt, hosts, spans, end, title):
    import numpy as np
    from matplotlib.colors import ListedColormap

    # Small roles (the load balancers a storm lands on) would be a few
    # pixel rows in the raster: they get bars of their own instead.
    sizes: dict[str, int] = {}
    for _, role in hosts:
        sizes[role] = sizes.get(role, 0) + 1
    small = {r for r, n in sizes.items() if n <= SMALL_ROLE}
    if sum(sizes[r] for r in small) > GANTT_MAX:
        small = set()
    bar_rows = {i: k for k, i in enumerate(i for i, (_, r) in enumerate(hosts) if r in small)}
    raster_hosts = [(i, h, r) for i, (h, r) in enumerate(hosts) if r not in small]
    raster_row = {i: k for k, (i, _, _) in enumerate(raster_hosts)}

    bins = 600
    n = len(raster_hosts)
    group = max(1, -(-n // MAX_ROWS))  # nodes per pixel row
    rows = max(1, -(-n // group))
    busy = np.zeros((rows, bins, 2))  # time fraction spent in scheduled / triggered runs
    running = np.zeros((bins, 2))
    width = end / bins
    bars: dict[int, dict[bool, list]] = {}
    for index, start, stop, triggered in spans:
        kind = int(triggered)
        first, last = int(start / width), min(int(stop / width), bins - 1)
        row = raster_row.get(index)
        for b in range(first, last + 1):
            overlap = (min(stop, (b + 1) * width) - max(start, b * width)) / width
            if overlap > 0:
                running[b, kind] += overlap
                if row is not None:
                    busy[row // group, b, kind] += overlap
        if index in bar_rows:
            bars.setdefault(index, {False: [], True: []})[triggered].append(
                (start, max(stop - start, end / 2000)))
    busy /= group
    image = np.zeros((rows, bins))  # 0 idle, 1 mostly scheduled, 2 mostly triggered
    active = busy.sum(axis=2) > 0.05
    image[active] = 1 + (busy[..., 1] >= busy[..., 0])[active]

    panels = [1.2] + ([max(1.0, 0.25 * len(bar_rows))] if bar_rows else []) + [4]
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 8 + 0.1 * len(bar_rows)), sharex=True,
                             gridspec_kw={"height_ratios": panels})
    top, ax = axes[0], axes[-1]
    t = (np.arange(bins) + 0.5) * width
    top.fill_between(t, 0, running[:, 0], color=SCHEDULED, step="mid", label="scheduled")
    top.fill_between(t, running[:, 0], running[:, 0] + running[:, 1], color=TRIGGERED,
                     step="mid", label="triggered")
    top.set_ylabel("runs in\nprogress")
    top.legend(loc="upper right", fontsize=8)
    top.set_title(title, fontsize=10)
    if bar_rows:
        mid = axes[1]
        count = len(bar_rows)
        for index, kinds in bars.items():
            y = count - 1 - bar_rows[index]
            mid.broken_barh(kinds[False], (y - 0.35, 0.7), facecolors=SCHEDULED, edgecolor="white", linewidth=0.6)
            mid.broken_barh(kinds[True], (y - 0.35, 0.7), facecolors=TRIGGERED, edgecolor="white", linewidth=0.6)
        ordered = sorted(bar_rows, key=bar_rows.get)
        mid.set_yticks(range(count))
        mid.set_yticklabels([hosts[i][0] for i in reversed(ordered)], fontsize=7)
        mid.set_ylim(-0.7, count - 0.3)
        mid.grid(axis="x", alpha=0.3)
    cmap = ListedColormap(["white", SCHEDULED, TRIGGERED])
    ax.imshow(image, aspect="auto", interpolation="nearest", cmap=cmap, vmin=0, vmax=2,
              extent=(0, end, rows, 0))
    ticks, labels, first = [], [], 0
    for k in range(1, n + 1):
        if k == n or raster_hosts[k][2] != raster_hosts[first][2]:
            ticks.append((first + k) / 2 / group)
            labels.append(f"{raster_hosts[first][2]} ({k - first})")
            if k < n:
                ax.axhline(k / group, color="black", linewidth=0.5)
            first = k
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylabel("nodes" if group == 1 else f"nodes ({group} per pixel row)")
    ax.set_xlabel("simulated time (s)")
    ax.set_xlim(0, end)
    fig.tight_layout()
    return fig
