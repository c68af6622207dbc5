"""A real `trigger watch` as the people who run it see it: its JSON log
lines and its Prometheus metrics, scraped over HTTP on loopback."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.etcd_server import free_port

ISO_WITH_ZONE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def wait_for(check, timeout: float = 30.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except OSError:  # the metrics server is not listening yet
            pass
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.etcd
@pytest.mark.tsp
def test_metrics_and_json_log_of_a_real_watcher(node):
    port = free_port()
    proc = node.start_watcher(run_seconds=0.3, exit_code=2, check_interval=0.3, extra=(
        "--metrics-port", str(port), "--metrics-address", "127.0.0.1", "--log-format", "json"))
    wait_for(lambda: scrape(port), what="the metrics endpoint")
    node.fire("deploy web")
    node.fire("lb refresh")
    assert node.wait_served() == [], node.watch_log.read_text()
    finished = ("trigger_runs_finished_total", (("exit_code", "2"),))
    metrics = wait_for(lambda: (m := scrape(port)).get(finished, 0) >= 1 and m, what="a finished run")
    assert metrics[("trigger_fires_received_total", ())] == 2
    assert metrics[("trigger_runs_queued_total", ())] >= 1
    assert metrics[("trigger_runs_started_total", ())] >= 1
    assert metrics[("trigger_last_run_finished_timestamp_seconds", ())] > time.time() - 60
    for name in ("trigger_runs_lost_total", "trigger_values_quarantined_total", "trigger_watch_reconnects_total",
                 "trigger_fires_waiting", "trigger_oldest_waiting_fire_age_seconds"):
        assert (name, ()) in metrics
    for trigger in ("deploy web", "lb refresh"):  # each fire started a run or joined a queued one
        label = (("trigger", trigger),)
        assert (metrics.get(("trigger_fires_enqueued_total", label), 0)
                + metrics.get(("trigger_fires_coalesced_total", label), 0)) == 1, metrics
    assert not any(name.endswith("_created") for name, _ in metrics)
    # A run on this host firing past the ttl: `trigger fire` records the refusal, the watcher counts it.
    from trigger.fire import Lineage, LoopRefused, fire

    with pytest.raises(LoopRefused):
        fire(node.store, node.layout, "loop", ["other.test"], Lineage(5, ("other.test",) * 5), node.host, ttl=5)
    refused = ("trigger_fires_refused_total", (("trigger", "loop"),))
    assert wait_for(lambda: scrape(port).get(refused), what="the refusal counted") == 1

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    lines = [json.loads(line) for line in node.watch_log.read_text().splitlines()]
    assert all(re.fullmatch(ISO_WITH_ZONE, line["time"]) for line in lines)
    assert all(line["host"] == "node1.test" for line in lines)
    events = [line["event"] for line in lines]
    enqueued = [line for line in lines if line["event"] == "enqueue"]
    assert {t for line in enqueued for t in line["triggers"]} | \
        {t for line in lines if line["event"] == "coalesce" for t in line["triggers"]} == {"deploy web", "lb refresh"}
    assert any("'deploy web'" in line["message"] for line in enqueued)
    done = next(line for line in lines if line["event"] == "run_finished")
    assert done["exit_code"] == 2 and done["duration"] >= 0.3
    assert "run_started" in events
    stop = next(line for line in lines if line["event"] == "stop")
    assert stop["signal"] == "SIGTERM" and events[-1] == "stopped"


@pytest.mark.etcd
@pytest.mark.tsp
def test_a_metrics_port_in_use_is_one_line(node):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = node.start_watcher(extra=("--metrics-port", str(port), "--metrics-address", "127.0.0.1"))
        assert proc.wait(timeout=20) == 2
    err = node.watch_log.read_text().strip().splitlines()
    assert err[-1].startswith(f"trigger: error: --metrics-port {port}:"), err
