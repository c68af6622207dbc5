"""The watcher's log lines and metrics, from the core's actions."""

import io
import json
import logging
import re

import pytest

from trigger.core import Coalesce, EnqueueRun, MarkRunLost, Quarantine, RunEnded, RunBegan
from trigger.monitor import WatchMonitor, setup_logging
from trigger.records import RunRecord

ISO_WITH_ZONE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"
ENQUEUE = EnqueueRun("r1", RunRecord("r1", "h", "queued"), ("e1", "e2"), ("deploy", "lb refresh"))


@pytest.fixture
def log_to():
    def setup(fmt):
        stream = io.StringIO()
        setup_logging("web1.example.com", fmt, stream)
        return stream

    yield setup
    logging.getLogger().handlers.clear()


def test_text_lines_have_an_iso_time_with_zone_and_name_the_triggers(log_to):
    stream = log_to("text")
    WatchMonitor().report(ENQUEUE)
    line = stream.getvalue().strip()
    assert re.match(ISO_WITH_ZONE + r" trigger-watch\[web1.example.com\] INFO enqueue run r1 ", line), line
    assert "'deploy', 'lb refresh'" in line


def test_json_lines_carry_the_facts(log_to):
    stream = log_to("json")
    monitor = WatchMonitor()
    monitor.report(ENQUEUE)
    monitor.report(RunEnded("r1", 2, 3.5, 1700000000.0))
    monitor.stopping("SIGTERM")
    enqueue, finished, stop = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert re.fullmatch(ISO_WITH_ZONE, enqueue["time"])
    assert (enqueue["event"], enqueue["triggers"], enqueue["host"]) == ("enqueue", ["deploy", "lb refresh"],
                                                                        "web1.example.com")
    assert (finished["event"], finished["exit_code"], finished["duration"]) == ("run_finished", 2, 3.5)
    assert (stop["event"], stop["signal"]) == ("stop", "SIGTERM") and "SIGTERM" in stop["message"]


def test_actions_are_counted(log_to):
    log_to("text")

    class Core:
        fires_received = 0

    core = Core()
    monitor = WatchMonitor(core)
    core.fires_received = 3
    for action in (ENQUEUE, Coalesce("e3", "r1", "deploy"), RunBegan("r1", 3),
                   RunEnded("r1", 0, 1.0, 100.0), RunEnded("r2", 1, None, 200.0),
                   MarkRunLost("r3", RunRecord("r3", "h", "lost", reason="x")),
                   Quarantine("/k", b"v", "not JSON", 5)):
        monitor.report(action)
    monitor.reconnect("etcd down")
    value = monitor.registry.get_sample_value
    assert value("trigger_fires_received_total") == 3
    assert value("trigger_runs_queued_total") == 1 and value("trigger_runs_started_total") == 1
    assert value("trigger_fires_coalesced_total") == 1
    assert value("trigger_runs_finished_total", {"exit_code": "0"}) == 1
    assert value("trigger_runs_finished_total", {"exit_code": "1"}) == 1
    assert value("trigger_runs_lost_total") == 1 and value("trigger_values_quarantined_total") == 1
    assert value("trigger_watch_reconnects_total") == 1
    assert value("trigger_last_run_finished_timestamp_seconds") == 200.0


def test_without_metrics_it_logs_the_same_and_prometheus_client_is_not_loaded(log_to):
    """A watcher without --metrics-port: prometheus-client is 14 MB of its RSS."""
    stream = log_to("json")
    WatchMonitor(metrics=False).report(ENQUEUE)
    WatchMonitor().report(ENQUEUE)
    first, second = stream.getvalue().splitlines()
    assert json.loads(first)["event"] == json.loads(second)["event"] == "enqueue"
    with pytest.raises(ValueError, match="without metrics"):
        WatchMonitor(metrics=False).serve(0)
    import subprocess
    import sys

    code = ("import sys, trigger.monitor, trigger.watch, trigger.cli; "
            "trigger.monitor.WatchMonitor(metrics=False).report(trigger.monitor.Coalesce('e', 'r', 't')); "
            "print('prometheus_client' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


@pytest.mark.parametrize("exit_code, level", [(0, "INFO"), (2, "INFO"), (1, "WARNING"), (127, "WARNING"),
                                              (None, "WARNING")])
def test_a_failed_run_is_logged_at_warning(log_to, exit_code, level):
    stream = log_to("text")
    WatchMonitor().report(RunEnded("r1", exit_code, 1.0, 1700000000.0))
    assert f" {level} run r1 finished: exit {exit_code}" in stream.getvalue()
