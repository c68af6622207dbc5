"""The timeline picture explains what happened: checked on the drawn artists, not pixels."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.text import Annotation

from simulator import SCENARIOS, run_scenario
from simulator.report import render
from simulator.timeline import figure, layout, run_bars


def _markers(ax, marker: str) -> int:
    return sum(len(line.get_xdata()) for line in ax.get_lines() if line.get_marker() == marker)


def _arrows(ax) -> list[Annotation]:
    return [a for a in ax.texts if isinstance(a, Annotation) and a.arrow_patch is not None]


def test_fires_are_marked_and_refusals_are_crossed():
    report = run_scenario(SCENARIOS / "loop.yaml")
    fig = figure(report)
    try:
        ax = fig.axes[0]
        assert _markers(ax, "v") == len(report.fires) > 0
        assert _markers(ax, "x") == len(report.refusals) == report.data["totals"]["fires_refused"] > 0
    finally:
        plt.close(fig)


def test_slot_waits_are_hatched_and_faults_are_named_on_their_band():
    report = run_scenario(SCENARIOS / "rolling.yaml")
    fig = figure(report)
    try:
        ax = fig.axes[0]
        hatched = [c for c in ax.collections if c.get_hatch() == "////"]
        assert len(hatched) == len(report.slot_waits) > 0
        labels = {t.get_text() for t in ax.texts}
        assert {f["kind"] for f in report.data["faults"]} <= labels
    finally:
        plt.close(fig)


def test_the_legend_stands_outside_the_data_and_names_an_unserved_fire():
    report = run_scenario(SCENARIOS / "faults.yaml")
    fig = figure(report)
    try:
        fig.canvas.draw()
        ax = fig.axes[0]
        legend = ax.get_legend()
        assert legend.get_window_extent().x0 >= ax.get_window_extent().x1
        assert "fire never served" in [t.get_text() for t in legend.get_texts()]
    finally:
        plt.close(fig)


def test_the_check_line_never_says_plain_ok_beside_unserved_fires():
    from rich.console import Console

    report = run_scenario(SCENARIOS / "faults.yaml")
    console = Console(width=200, record=True)
    render(report, console)
    text = console.export_text()
    assert report.ok and "check: ok, but 1 fire(s) unserved" in text
    assert "check: ok (" not in text


def _early_loop():
    """loop.yaml started at once, then idle: the loop is over long before the
    simulation's last event (an idle re-read near `until`)."""
    import yaml

    data = yaml.safe_load((SCENARIOS / "loop.yaml").read_text())
    data["agent"]["splay"] = 10
    data["until"] = 1000
    return run_scenario(data)


def test_the_time_axis_is_fitted_to_the_activity_not_to_the_last_event():
    report = _early_loop()
    last_run_end = max(stop for _, _, stop, _ in report.run_spans)
    assert report.data["ended_at"] > 2 * last_run_end  # the idle tail the axis used to span
    lo, hi = layout(report).window
    assert lo <= min(start for _, start, _, _ in report.run_spans) and last_run_end <= hi
    assert last_run_end - lo >= 0.9 * (hi - lo)  # the loop fills the picture
    fig = figure(report)
    try:
        assert fig.axes[0].get_xlim() == (lo, hi)
    finally:
        plt.close(fig)


def test_back_to_back_runs_are_two_bars_with_a_gap():
    spans = [(0, 100.0, 130.0, False), (0, 130.0, 160.0, True), (1, 100.0, 100.2, True)]
    first, second, short = run_bars(spans, (0.0, 300.0))
    assert 100.0 < first.start < first.stop < second.start < second.stop < 160.0
    assert (first.triggered, second.triggered) == (False, True)
    assert 100.0 < short.start < short.stop  # a short run stays visible


def test_every_run_is_its_own_bar_and_drawn_as_such():
    report = run_scenario(SCENARIOS / "loop.yaml")
    drawn = layout(report)
    assert len(drawn.bars) == len(report.run_spans)
    for index in {bar.index for bar in drawn.bars}:
        row = sorted((bar.start, bar.stop) for bar in drawn.bars if bar.index == index)
        assert all(stop < next_start for (_, stop), (next_start, _) in zip(row, row[1:]))
    fig = figure(report)
    try:
        rectangles = sum(len(c.get_paths()) for c in fig.axes[0].collections if c.get_hatch() is None
                         and type(c).__name__ == "PolyCollection")
        assert rectangles == len(drawn.bars)
    finally:
        plt.close(fig)


def test_a_loop_is_one_chain_of_arrows_from_each_run_that_fired_to_the_run_it_caused():
    report = run_scenario(SCENARIOS / "loop.yaml")
    links = layout(report).links
    triggered = {(index, start) for index, start, _, triggered in report.run_spans if triggered}
    # Every triggered run has its arrow in, and every arrow leaves the end of
    # a run on the other node: A's run -> B's run -> A's run ... the whole loop.
    assert {(link.to_index, link.run_start) for link in links} == triggered
    run_ends = {(index, stop) for index, _, stop, _ in report.run_spans}
    for link in links:
        assert link.from_index == 1 - link.to_index
        assert (link.from_index, link.fired_at) in run_ends
    fig = figure(report)
    try:
        arrows = _arrows(fig.axes[0])
        rows = len(report.hosts)
        assert sorted((a.xyann, a.xy) for a in arrows) == sorted(
            ((link.fired_at, rows - 1 - link.from_index), (link.run_start, rows - 1 - link.to_index))
            for link in links)
    finally:
        plt.close(fig)


def test_an_operator_fire_has_its_arrow_from_its_own_marker():
    report = run_scenario(SCENARIOS / "rolling.yaml")  # an operator restarts role:app
    operator = [link for link in layout(report).links if link.from_index is None]
    assert operator and all(link.run_start > link.fired_at for link in operator)
