"""The watcher's log lines and metrics, from the core's actions."""

import io
import json
import logging
import re

import pytest
from collections import namedtuple

from trigger.core import Coalesce, EnqueueRun, MarkRunLost, Quarantine, RunEnded, RunBegan
from trigger.monitor import WatchMonitor, setup_logging
from trigger.records import RunRecord

Entry = namedtuple("Entry", "id trigger fired_at", defaults=(0.0,))  # what the monitor reads of the core's pending entries
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
        pending = {"e1": Entry("e1", "deploy"), "e2": Entry("e2", "lb refresh")}

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
    assert value("trigger_fires_coalesced_total", {"trigger": "deploy"}) == 1
    assert value("trigger_fires_enqueued_total", {"trigger": "deploy"}) == 1
    assert value("trigger_fires_enqueued_total", {"trigger": "lb refresh"}) == 1
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


def test_the_exposition_has_no_created_series(log_to):
    """prometheus-client's `_created` gauges double the series and nothing reads them."""
    from prometheus_client import generate_latest

    log_to("text")
    monitor = WatchMonitor()
    monitor.report(Coalesce("e3", "r1", "deploy"))
    text = generate_latest(monitor.registry).decode()
    assert 'trigger_fires_coalesced_total{trigger="deploy"} 1.0' in text
    assert "_created" not in text


def test_loop_refusals_made_by_this_hosts_runs_are_counted_by_trigger(log_to):
    """`trigger fire` records a refusal with its chain; the host at its end counts it, once."""
    from trigger.fire import Lineage, LoopRefused, fire
    from trigger.layout import Layout
    from trigger.store.memory import MemoryStore

    log_to("text")
    store, layout = MemoryStore(), Layout("/t")
    web, lb = WatchMonitor(), WatchMonitor()
    web.count_refusals(store, layout.refused_key(""), "web1")
    lb.count_refusals(store, layout.refused_key(""), "lb1")
    looping = Lineage(hop=5, chain=("lb1", "web2", "lb1", "web2", "lb1"))
    for name in ("refresh", "refresh", "deploy"):
        with pytest.raises(LoopRefused):
            fire(store, layout, name, ["lb1"], looping, origin="web1", ttl=5)
    fire(store, layout, "refresh", ["lb1"], Lineage(hop=1, chain=("lb1",)), origin="web1", ttl=5)
    value = web.registry.get_sample_value
    assert value("trigger_fires_refused_total", {"trigger": "refresh"}) == 2
    assert value("trigger_fires_refused_total", {"trigger": "deploy"}) == 1
    assert lb.registry.get_sample_value("trigger_fires_refused_total", {"trigger": "refresh"}) is None
    web.close()
    with pytest.raises(LoopRefused):
        fire(store, layout, "refresh", ["lb1"], looping, origin="web1", ttl=5)
    assert value("trigger_fires_refused_total", {"trigger": "refresh"}) == 2  # stopped counting


def test_a_lost_refusal_watch_comes_back_from_where_it_was(log_to, monkeypatch):
    from trigger.fire import Lineage, LoopRefused, fire
    from trigger.layout import Layout
    from trigger.monitor import RefusalCounter
    from trigger.store import StoreError
    from trigger.store.memory import MemoryStore

    log_to("text")
    monkeypatch.setattr(RefusalCounter, "RETRY_SECONDS", 0.01)
    store, layout = MemoryStore(), Layout("/t")
    monitor = WatchMonitor()
    monitor.count_refusals(store, layout.refused_key(""), "web1")
    monitor.refusals._watch.cancel()
    monitor.refusals._changes(StoreError("connection reset"))  # as a store reports a lost watch
    looping = Lineage(hop=5, chain=("lb1",))
    with pytest.raises(LoopRefused):  # while the watch is down
        fire(store, layout, "refresh", ["lb1"], looping, origin="web1", ttl=5)
    monitor.refusals._retry.join(5)
    assert monitor.registry.get_sample_value("trigger_fires_refused_total", {"trigger": "refresh"}) == 1
    monitor.close()


def test_what_waits_is_read_from_the_core_when_scraped(log_to):
    import time

    log_to("text")

    class Core:
        fires_received = 0
        pending = {}

    core = Core()
    monitor = WatchMonitor(core)
    value = monitor.registry.get_sample_value
    assert value("trigger_fires_waiting") == 0 and value("trigger_oldest_waiting_fire_age_seconds") == 0
    core.pending.update(e1=Entry("e1", "deploy", time.time() - 600), e2=Entry("e2", "deploy", time.time()))
    assert value("trigger_fires_waiting") == 2
    assert 599 < value("trigger_oldest_waiting_fire_age_seconds") < 660
