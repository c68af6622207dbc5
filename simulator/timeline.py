"""The timeline picture: which node ran Puppet when, scheduled or triggered.

Few nodes (up to GANTT_MAX): one bar row per node, scheduled runs grey,
triggered runs colored; each fire a marker on its target's row with an
arrow to the start of the run that served it (up to MAX_ARROWS), a fire
no run served a red marker, TTL refusals a cross on the refusing node,
slot waits a hatched bar, faults a labelled band; the legend outside the
data. Many nodes: a raster, one pixel row per node (or
per group of nodes when there are more rows than a picture can show),
time in columns, colored by what most of the cell was doing; above it,
the number of runs in progress over time.
"""

from __future__ import annotations

from pathlib import Path

GANTT_MAX = 60
SMALL_ROLE = 24  # roles up to this many nodes get bars in a large picture
MAX_ROWS = 1000
MAX_ARROWS = 200  # more fire -> run arrows than this hide the runs
SCHEDULED, TRIGGERED, FAULT = "#9e9e9e", "#d62728", "#ffe8a3"
FIRE, UNSERVED, REFUSED, WAIT = "#1f77b4", "#d62728", "#000000", "#ff7f0e"


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
        return _gantt(plt, hosts, spans, end, title, report.data["faults"], report)
    return _raster(plt, hosts, spans, end, title)


def _gantt(plt, hosts, spans, end, title, faults=(), report=None):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.35 * len(hosts)))
    # Faults behind the bars: a band on each affected row (all rows for etcd).
    row_of = {h: len(hosts) - 1 - i for i, (h, _) in enumerate(hosts)}
    for fault in faults:
        start = fault["at"]
        if fault["kind"] in ("compact_etcd", "kill_tsp") and not fault["for"]:
            stop = start  # happens at once
        else:
            stop = end if fault["for"] is None else start + fault["for"]
        rows = [row_of[h] for h in fault["hosts"]] or list(range(len(hosts)))
        ax.annotate(fault["kind"], (start, max(rows) + 0.42), fontsize=6, color="#8a6d00",
                    ha="left", va="top", zorder=4)
        for y in rows:
            if stop > start:
                ax.axhspan(y - 0.5, y + 0.5, xmin=start / end, xmax=min(stop / end, 1.0),
                           color=FAULT, zorder=0)
            else:
                ax.plot([start, start], [y - 0.5, y + 0.5], color="#e6a100", linewidth=1, zorder=0)
    rows: dict[int, dict[bool, list]] = {}
    for index, start, stop, triggered in spans:
        rows.setdefault(index, {False: [], True: []})[triggered].append((start, max(stop - start, end / 2000)))
    for index, kinds in rows.items():
        y = len(hosts) - 1 - index
        ax.broken_barh(kinds[False], (y - 0.35, 0.7), facecolors=SCHEDULED, edgecolor="white", linewidth=0.6)
        ax.broken_barh(kinds[True], (y - 0.35, 0.7), facecolors=TRIGGERED, edgecolor="white", linewidth=0.6)
    handles = [Patch(color=SCHEDULED, label="scheduled run"), Patch(color=TRIGGERED, label="triggered run")]
    if report is not None:
        handles += _marks(ax, report, len(hosts), Line2D, Patch)
    ax.set_yticks(range(len(hosts)))
    ax.set_yticklabels([h for h, _ in reversed(hosts)], fontsize=8)
    ax.set_xlim(0, end)
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


def _marks(ax, report, count, Line2D, Patch) -> list:
    """Fires (with arrows to the runs that served them), refusals and slot
    waits; returns the legend entries for what it drew."""
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
                                  label="fire → the run that served it"))
        if lost:
            ax.plot(*zip(*lost), linestyle="none", marker="v", markersize=6, color=UNSERVED, zorder=5,
                    markeredgecolor="black", label="_unserved")
            handles.append(Line2D([], [], linestyle="none", marker="v", color=UNSERVED,
                                  markeredgecolor="black", label="fire never served"))
        if len(served) <= MAX_ARROWS:
            for t, index, start in fires:
                if start is not None and start > t:
                    y = y_of(index)
                    ax.annotate("", xy=(start, y), xytext=(t, y + 0.3),
                                arrowprops={"arrowstyle": "->", "color": FIRE, "linewidth": 0.7},
                                zorder=5)
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
