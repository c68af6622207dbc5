"""What contrib/ ships around the daemon: Prometheus alert rules that
promtool accepts and that fire when they should, and a Grafana dashboard
that imports; both name only metrics a real watcher serves."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import need
from trigger.core import Coalesce, EnqueueRun, MarkRunLost, Quarantine, RunBegan, RunEnded
from trigger.monitor import WatchMonitor
from trigger.records import RunRecord

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
ALERTS = CONTRIB / "prometheus" / "alerts.yml"
DASHBOARD = CONTRIB / "grafana" / "trigger.json"
PROMETHEUS_OWN = {"up"}  # the scrape's own series: a watcher down has no metrics of its own


def served_metric_names() -> set[str]:
    """The metric names a watcher serves at /metrics, scraped over HTTP."""
    monitor = WatchMonitor()
    for action in (EnqueueRun("r1", RunRecord("r1", "h", "queued"), ("e1",), ("deploy",)),
                   Coalesce("e2", "r1", "deploy"), RunBegan("r1", 2), RunEnded("r1", 1, 2.0, 100.0),
                   MarkRunLost("r2", RunRecord("r2", "h", "lost", reason="x")),
                   Quarantine("/k", b"v", "not JSON", 3)):
        monitor.report(action)
    port = monitor.serve(0, "127.0.0.1")
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        monitor.close()
    return set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: its identifiers, less label matchers,
    grouping labels, ranges, functions (a name before "(") and keywords."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    keywords = {"and", "or", "unless", "bool", "offset"}
    return {name for name in re.findall(r"\b([a-zA-Z_:][\w:]*)\b(?!\s*\()", bare) if name not in keywords}


def alert_exprs() -> dict[str, str]:
    import yaml

    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_alert_rules_pass_promtool(tmp_path):
    promtool = need("promtool", "prometheus")
    done = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0 and "SUCCESS: 6 rules found" in done.stdout, done.stdout + done.stderr
    # promtool does catch a broken expression.
    broken = tmp_path / "alerts.yml"
    broken.write_text(ALERTS.read_text().replace("> 900", "> > 900"))
    done = subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode != 0


def test_the_alerts_fire_when_they_should(tmp_path):
    """promtool's rule unit tests: series in, alerts out."""
    promtool = need("promtool", "prometheus")
    watcher = 'instance="web1:9100", job="trigger_watch"'
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text())
    (tmp_path / "test.yml").write_text(textwrap.dedent(f"""\
        rule_files: [alerts.yml]
        evaluation_interval: 1m
        tests:
          - interval: 1m
            input_series:
              - series: 'up{{{watcher}}}'
                values: '1 1 0 0 0 0'
              - series: 'trigger_runs_finished_total{{{watcher}, exit_code="0"}}'
                values: '0 1 2 3 4 5'
              - series: 'trigger_runs_finished_total{{{watcher}, exit_code="1"}}'
                values: '0 0 1 1 1 1'
              - series: 'trigger_oldest_waiting_fire_age_seconds{{{watcher}}}'
                values: '0+300x30'
              - series: 'trigger_fires_refused_total{{{watcher}, trigger="refresh"}}'
                values: '0 0 0 1 1 1'
            alert_rule_test:
              - eval_time: 5m
                alertname: TriggerWatcherDown
                exp_alerts:
                  - exp_labels: {{instance: "web1:9100", job: trigger_watch, severity: critical}}
                    exp_annotations:
                      summary: "trigger watcher web1:9100 is down"
                      description: "Prometheus cannot scrape the watcher at web1:9100 for 2 minutes. Fires to its host are kept in etcd, but no run serves them until a watcher runs again (`systemctl status trigger-watch`)."
              - eval_time: 5m
                alertname: TriggerRunsFailing
                exp_alerts:
                  - exp_labels: {{instance: "web1:9100", exit_code: "1", severity: warning}}
                    exp_annotations:
                      summary: "triggered runs on web1:9100 exited 1"
                      description: "1 triggered run(s) on web1:9100 exited 1 in the last 15 minutes (`trigger history`, the run's output in task-spooler)."
              - eval_time: 5m
                alertname: TriggerFiresUnserved
                exp_alerts: []
              - eval_time: 15m
                alertname: TriggerFiresUnserved
                exp_alerts:
                  - exp_labels: {{instance: "web1:9100", job: trigger_watch, severity: warning}}
                    exp_annotations:
                      summary: "fires wait unserved on web1:9100"
                      description: "The oldest fire waiting on web1:9100 was fired 1h 15m 0s ago (`trigger status`)."
              - eval_time: 5m
                alertname: TriggerLoopRefused
                exp_alerts:
                  - exp_labels: {{instance: "web1:9100", trigger: refresh, severity: warning}}
                    exp_annotations:
                      summary: "trigger refresh refused by the loop TTL"
                      description: "A run on web1:9100 fired refresh beyond its ttl 1 time(s) in the last hour: triggers notify each other in a loop. The refusals and their chains are under P/refused/ in etcd."
        """))
    done = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_imports_as_grafana_expects():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    for panel in dashboard["panels"]:
        assert panel["targets"] and panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()


@pytest.mark.parametrize("where", ["alerts", "dashboard"])
def test_every_metric_named_is_one_a_watcher_serves(where):
    exprs = list(alert_exprs().values()) if where == "alerts" else dashboard_exprs()
    named = set().union(*(metric_names(expr) for expr in exprs))
    assert len(named) >= 6, named  # the parsing found them
    served = served_metric_names()
    assert named - served - PROMETHEUS_OWN == set()
    if where == "dashboard":  # every metric served has a panel
        assert served - named == set()


def test_metric_names_are_read_from_promql():
    assert metric_names('sum by (instance, trigger) (increase(trigger_fires_refused_total{job="x"}[1h])) > 0') == {
        "trigger_fires_refused_total"}
    assert metric_names('time() - trigger_last_run_finished_timestamp_seconds{a="b"}') == {
        "trigger_last_run_finished_timestamp_seconds"}
