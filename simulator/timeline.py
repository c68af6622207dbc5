"""The timeline picture: which node ran Puppet when, scheduled or triggered.

Few nodes (up to GANTT_MAX): one bar row per node, scheduled runs grey,
triggered runs colored. Many nodes: a raster, one pixel row per node (or
per group of nodes when there are more rows than a picture can show),
time in columns, colored by what most of the cell was doing; above it,
the number of runs in progress over time.
"""

from __future__ import annotations

from pathlib import Path

GANTT_MAX = 60
MAX_ROWS = 1000
SCHEDULED, TRIGGERED = "#9e9e9e", "#d62728"


def draw(report, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hosts = report.hosts
    spans = report.run_spans
    end = max([report.data["ended_at"], *(s[2] for s in spans)] or [1.0]) or 1.0
    title = f"{report.data['scenario']}: Puppet runs per node (seed {report.data['seed']})"
    if len(hosts) <= GANTT_MAX:
        fig = _gantt(plt, hosts, spans, end, title)
    else:
        fig = _raster(plt, hosts, spans, end, title)
    path = Path(path)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def _gantt(plt, hosts, spans, end, title):
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.35 * len(hosts)))
    rows: dict[int, dict[bool, list]] = {}
    for index, start, stop, triggered in spans:
        rows.setdefault(index, {False: [], True: []})[triggered].append((start, max(stop - start, end / 2000)))
    for index, kinds in rows.items():
        y = len(hosts) - 1 - index
        ax.broken_barh(kinds[False], (y - 0.35, 0.7), facecolors=SCHEDULED)
        ax.broken_barh(kinds[True], (y - 0.35, 0.7), facecolors=TRIGGERED)
    ax.set_yticks(range(len(hosts)))
    ax.set_yticklabels([h for h, _ in reversed(hosts)], fontsize=8)
    ax.set_xlim(0, end)
    ax.set_ylim(-0.7, len(hosts) - 0.3)
    ax.set_xlabel("simulated time (s)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=[Patch(color=SCHEDULED, label="scheduled run"),
                       Patch(color=TRIGGERED, label="triggered run")],
              loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def _raster(plt, hosts, spans, end, title):
    import numpy as np
    from matplotlib.colors import ListedColormap

    bins = 600
    n = len(hosts)
    group = max(1, -(-n // MAX_ROWS))  # nodes per row
    rows = -(-n // group)
    busy = np.zeros((rows, bins, 2))  # time fraction spent in scheduled / triggered runs
    running = np.zeros((bins, 2))
    width = end / bins
    for index, start, stop, triggered in spans:
        row, kind = index // group, int(triggered)
        first, last = int(start / width), min(int(stop / width), bins - 1)
        for b in range(first, last + 1):
            overlap = min(stop, (b + 1) * width) - max(start, b * width)
            if overlap > 0:
                busy[row, b, kind] += overlap / width
                running[b, kind] += overlap / width
    busy /= group
    # 0 idle, 1 mostly scheduled, 2 mostly triggered
    image = np.zeros((rows, bins))
    active = busy.sum(axis=2) > 0.05
    image[active] = 1 + (busy[..., 1] >= busy[..., 0])[active]
    fig, (top, ax) = plt.subplots(
        2, 1, figsize=(12, 8), sharex=True, gridspec_kw={"height_ratios": [1, 4]}
    )
    t = (np.arange(bins) + 0.5) * width
    top.fill_between(t, 0, running[:, 0], color=SCHEDULED, step="mid", label="scheduled")
    top.fill_between(t, running[:, 0], running[:, 0] + running[:, 1], color=TRIGGERED,
                     step="mid", label="triggered")
    top.set_ylabel("runs in\nprogress")
    top.legend(loc="upper right", fontsize=8)
    top.set_title(title, fontsize=10)
    cmap = ListedColormap(["white", SCHEDULED, TRIGGERED])
    ax.imshow(image, aspect="auto", interpolation="nearest", cmap=cmap, vmin=0, vmax=2,
              extent=(0, end, rows, 0))
    # Role bands on the left axis.
    ticks, labels, start = [], [], 0
    for i in range(1, n + 1):
        if i == n or hosts[i][1] != hosts[start][1]:
            ticks.append((start + i) / 2 / group)
            labels.append(f"{hosts[start][1]} ({i - start})")
            if i < n:
                ax.axhline(i / group, color="black", linewidth=0.5)
            start = i
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylabel("nodes" if group == 1 else f"nodes ({group} per row)")
    ax.set_xlabel("simulated time (s)")
    fig.tight_layout()
    return fig
