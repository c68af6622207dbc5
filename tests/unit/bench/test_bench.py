"""The pure parts of bench/: percentiles, ratios, matching fires to runs,
formatting and the results file. Nothing here is timed."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from bench import cli
from bench.fanout import hosts
from bench.harness import RunLog, proc_pss_mb, proc_rss_mb
from bench.report import MET, MISSED, Row, fmt, fmt_ratio, markdown_table, rows_from_json, to_json, verdict
from bench.stats import cpu_percent, extrapolate, fire_to_run, first_after, percentile, ratio, summarize
from tests.eventually import eventually


def test_percentile_interpolates_between_closest_ranks():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5, 1, 3], 0) == 1 and percentile([5, 1, 3], 100) == 5
    assert percentile(range(101), 99) == 99
    assert percentile([7], 99) == 7
    assert percentile([], 50) is None


def test_percentile_refuses_nonsense():
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_summarize_empty_and_full():
    assert summarize([])["p99"] is None and summarize([])["n"] == 0
    s = summarize([1.0, 2.0, 3.0])
    assert (s["n"], s["p50"], s["mean"], s["min"], s["max"]) == (3, 2.0, 2.0, 1.0, 3.0)


def test_ratio_is_ours_over_baseline_and_none_when_meaningless():
    assert ratio(10, 5) == 2.0
    assert ratio(0, 0) == 1.0
    assert ratio(3, 0) is None
    assert ratio(None, 1) is None and ratio(1, None) is None


def test_fire_to_run_matches_each_fire_to_the_first_later_start():
    delays, unserved = fire_to_run([1.0, 2.0, 5.0], [2.5, 1.5])
    assert delays == [0.5, 0.5] and unserved == [5.0]
    assert first_after([1.0, 2.0], 2.0) is None  # strictly after


def test_cpu_percent_and_extrapolate():
    assert cpu_percent(0.5, 10) == 5.0 and cpu_percent(1, 0) == 0.0
    assert extrapolate(2.0, 100, 10000) == 200.0
    with pytest.raises(ValueError):
        extrapolate(1.0, 0, 10)


def test_row_computes_its_ratio_and_verdict_words():
    row = Row("1 latency", "p99", 20.0, "ms", 10.0, "etcd floor")
    assert row.ratio == 2.0
    assert Row("x", "y", 1.0, "").ratio is None
    assert (verdict(True), verdict(False), verdict(None)) == (MET, MISSED, "")


def test_formatting():
    assert fmt(None) == "n/a"
    assert fmt(1234.0, "ms") == "1,234 ms"
    assert fmt(12.345, "s") == "12.3 s"
    assert fmt(0.1234) == "0.12"
    assert fmt(3) == "3"
    assert fmt_ratio(None) == "n/a" and fmt_ratio(2.0) == "2.00×" and fmt_ratio(250.0) == "250×"
    assert fmt_ratio(0.004) == "0.004×"


def test_results_file_round_trips_and_renders_as_markdown():
    rows = [Row("2 fan-out", "10,000 hosts", 0.6, "s", 160.0, "etcdctl put ×N", target="< 1 s", verdict=MET)]
    text = to_json(rows, {"nproc": 2}, {"fanout": {"sizes": (1, 2)}}, {"mode": "quick"})
    data = json.loads(text)
    assert data["mode"] == "quick" and data["machine"]["nproc"] == 2 and data["details"]["fanout"]["sizes"] == [1, 2]
    assert rows_from_json(text) == rows
    table = markdown_table(rows)
    assert "| 2 fan-out | 10,000 hosts | 0.60 s | 160 s (etcdctl put ×N) |" in table and table.endswith("| met |")


def test_run_log_parses_recorder_lines_and_skips_partial_ones(tmp_path):
    log = RunLog(tmp_path / "runs.log")
    assert log.entries() == [] and log.size() == 0
    (tmp_path / "runs.log").write_text("2.5 run-b\n1.5 -\n3.0\nnot-a-number x\n")
    assert log.entries() == [(2.5, "run-b"), (1.5, "-")]
    assert log.starts() == [1.5, 2.5]


def test_fanout_host_names_fit_one_argument():
    names = hosts(10000)
    assert len(set(names)) == 10000
    assert len(",".join(names)) < 128 * 1024  # Linux's MAX_ARG_STRLEN


def test_cli_refuses_unknown_items_before_starting_anything(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--only", "latency,bogus"])
    assert exc.value.code == 2
    assert "bogus" in capsys.readouterr().err


@pytest.mark.parametrize("inside", [[False, False], [False, True], [True]])
def test_a_storm_retried_on_a_loaded_machine_still_makes_a_results_file(monkeypatch, inside):
    from bench import storm

    outcomes = iter(inside)

    def attempt(*_args):
        return {"storm_inside_first_run": {"ours": next(outcomes), "seed": True}}

    monkeypatch.setattr(storm, "_storm_during_run_once", attempt)
    result = storm._storm_during_run(None, None, None, None)
    assert len(result["failed_attempts"]) == len(inside) - 1
    assert json.loads(to_json([], {}, {"storm": result}, {}))["details"]["storm"] == result


def test_pss_counts_shared_pages_for_a_share_only():
    assert 0 < proc_pss_mb(os.getpid()) <= proc_rss_mb(os.getpid())
    child = subprocess.Popen(["sleep", "30"])
    try:  # sleep's pages are almost all libc and the binary, mapped by other processes too
        eventually(lambda: proc_rss_mb(child.pid) > 0.5, 5, what="sleep to be exec'd and loaded")
        assert 0 < proc_pss_mb(child.pid) < proc_rss_mb(child.pid)
    finally:
        child.kill()
        child.wait()


def test_idle_watchers_only_re_read_every_idle_check():
    from bench.simulation import measure_idle

    idle = measure_idle(10, 1)
    # One read at start, then one every 300 s (the idle check) before the hour ends.
    assert idle["resyncs"] == 10 * 12
    assert idle["events"] >= idle["resyncs"]


def test_the_breakdown_accounts_for_every_event_by_what_it_wakes():
    from bench.simulation import measure_breakdown

    breakdown = measure_breakdown("seed.yaml")
    kinds = breakdown["kinds"]
    assert sum(count for count, _ in kinds.values()) == breakdown["events"] > 0
    assert "NodeWatch.send.<locals>.<lambda>" in kinds  # a fire reaching a watcher
    assert "process Node.triggered_run" in kinds
    assert all(seconds > 0 for _, seconds in kinds.values())
