"""The timeline picture explains what happened: checked on the drawn artists, not pixels."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.text import Annotation

from simulator import SCENARIOS, run_scenario
from simulator.report import render
from simulator.timeline import figure


def _markers(ax, marker: str) -> int:
    return sum(len(line.get_xdata()) for line in ax.get_lines() if line.get_marker() == marker)


def _arrows(ax) -> list[Annotation]:
    return [a for a in ax.texts if isinstance(a, Annotation) and a.arrow_patch is not None]


def test_fires_point_at_the_runs_that_served_them_and_refusals_are_crossed():
    report = run_scenario(SCENARIOS / "loop.yaml")
    fig = figure(report)
    try:
        ax = fig.axes[0]
        assert _markers(ax, "v") == len(report.fires) > 0
        assert _markers(ax, "x") == len(report.refusals) == report.data["totals"]["fires_refused"] > 0
        served_later = [f for f in report.fires if f[2] is not None and f[2] > f[0]]
        arrows = _arrows(ax)
        assert len(arrows) == len(served_later)
        for arrow, (fired_at, _, started) in zip(arrows, served_later):
            assert arrow.xy[0] == started and arrow.xyann[0] == fired_at  # from the fire to its run
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
