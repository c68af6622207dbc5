"""What a watcher tells the people who run it: log lines and Prometheus metrics.

One log line per decision of the core (naming the triggers), per run start
and end (exit code, duration), per lost watch and per stop signal; times are
ISO 8601 with their zone. `--log-format json` writes the same lines as one
JSON object each, with the facts as fields. The metrics are counters and
gauges of prometheus-client, served over HTTP by `--metrics-port`; without
it prometheus-client is not loaded (14 MB of an idle watcher's 26 MB RSS).

The watch loop calls `WatchMonitor.report(action)` for every action of the
core and `reconnect(reason)` for every lost watch; nothing here changes what
the watcher does.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from .procedures import WatchLost
from .results import PUPPET_OK
from .store.base import CompactedError, Put, StoreError

from .core import (
    Coalesce,
    EnqueueRun,
    MarkRunLost,
    Quarantine,
    RunEnded,
    RunBegan,
)

log = logging.getLogger("trigger.watch")
LOG_FORMATS = ("text", "json")


def iso_time(seconds: float) -> str:
    """A time as ISO 8601 in the local zone, with the zone: 2026-11-30T11:41:46.123+00:00."""
    return datetime.fromtimestamp(seconds, timezone.utc).astimezone().isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    def __init__(self, host: str):
        super().__init__()
        self.host = host

    def format(self, record: logging.LogRecord) -> str:
        return f"{iso_time(record.created)} trigger-watch[{self.host}] {record.levelname} {record.getMessage()}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, host, message and the facts of the line."""

    def __init__(self, host: str):
        super().__init__()
        self.host = host

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": iso_time(record.created), "level": record.levelname.lower(),
                "host": self.host, "message": record.getMessage(), "event": "log"}
        line.update(getattr(record, "fields", {}))
        return json.dumps(line, sort_keys=True)


def setup_logging(host: str, log_format: str = "text", stream=None) -> None:
    """Send the watcher's log to `stream` (stderr) in the chosen format."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(host) if log_format == "json" else TextFormatter(host))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def failed(action) -> bool:
    """A run that ended with an exit code other than `puppet agent --test`'s success (0, 2; a fire's
    own --ok-codes are not known here): logged at WARNING, so `journalctl -p warning` shows it."""
    return isinstance(action, RunEnded) and action.exit_code not in PUPPET_OK


REPORTED = (EnqueueRun, Coalesce, RunBegan, RunEnded, MarkRunLost, Quarantine)


def _fields(action) -> dict:
    """The facts of an action, for a JSON log line."""
    if isinstance(action, EnqueueRun):
        return {"event": "enqueue", "run_id": action.run_id, "triggers": list(action.triggers),
                "fires": len(action.waiting)}
    if isinstance(action, Coalesce):
        return {"event": "coalesce", "run_id": action.run_id, "fire": action.event_id,
                "triggers": [action.trigger]}
    if isinstance(action, RunBegan):
        return {"event": "run_started", "run_id": action.run_id, "fires": action.served}
    if isinstance(action, RunEnded):
        return {"event": "run_finished", "run_id": action.run_id, "exit_code": action.exit_code,
                "duration": action.duration, **({"note": action.note} if action.note else {})}
    if isinstance(action, MarkRunLost):
        return {"event": "run_lost", "run_id": action.run_id, "reason": action.record.reason}
    if isinstance(action, Quarantine):
        return {"event": "quarantine", "key": action.key, "reason": action.reason}
    return {"event": type(action).__name__}


class _Unread:
    """A metric nobody can read (no --metrics-port): counting it costs nothing."""

    def inc(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def labels(self, *values: str) -> "_Unread":
        return self

    def set_function(self, read) -> None:
        pass


class WatchMonitor:
    """Logs the watcher's actions and counts them into Prometheus metrics (`metrics`: else not)."""

    def __init__(self, core=None, metrics: bool = True):
        self.core = core  # read for fires received, a count the core keeps
        if metrics:
            import prometheus_client
            from prometheus_client import CollectorRegistry, Counter, Gauge

            # A `_created` gauge beside every counter doubles the series for
            # nothing an alert or a graph uses (OpenMetrics' start time; rate()
            # handles a counter's reset without it).
            prometheus_client.disable_created_metrics()
            self.registry = CollectorRegistry()
            counter = lambda name, text, *labels: Counter(name, text, labels, registry=self.registry)  # noqa: E731
            gauge = lambda name, text: Gauge(name, text, registry=self.registry)  # noqa: E731
        else:
            self.registry = None
            counter = gauge = lambda *args: _Unread()  # noqa: E731
        self.fires_received = counter("trigger_fires_received", "Inbox entries (fires) seen arriving")
        self.runs_queued = counter("trigger_runs_queued", "Runs queued")
        self.runs_started = counter("trigger_runs_started", "Runs recorded as started")
        self.runs_finished = counter("trigger_runs_finished", "Runs finished, by exit code", "exit_code")
        self.fires_coalesced = counter("trigger_fires_coalesced", "Fires that joined a run already queued",
                                       "trigger")
        # By trigger for fires, not for runs: one run serves the fires of several triggers.
        self.fires_enqueued = counter("trigger_fires_enqueued",
                                      "Fires a newly queued run will serve (a fire a lost run gave back "
                                      "counts again)", "trigger")
        self.fires_refused = counter("trigger_fires_refused",
                                     "Fires refused by the loop TTL that a run on this host made "
                                     "(records under P/refused/ whose chain ends here)", "trigger")
        self.runs_lost = counter("trigger_runs_lost", "Runs marked lost (they will never start or end)")
        self.quarantined = counter("trigger_values_quarantined", "Unusable inbox values moved aside")
        self.reconnects = counter("trigger_watch_reconnects",
                                  "Watches lost (store errors, compaction) and re-established")
        self.last_run = gauge("trigger_last_run_finished_timestamp_seconds",
                              "When the last run finished (Unix time)")
        self.last_duration = gauge("trigger_last_run_duration_seconds", "How long the last finished run took")
        # Read when scraped: what waits now, for "fires unserved past a bound".
        self.fires_waiting = gauge("trigger_fires_waiting",
                                   "Fires received that no started run has claimed yet")
        self.fires_waiting.set_function(lambda: len(self._waiting()))
        self.oldest_waiting = gauge("trigger_oldest_waiting_fire_age_seconds",
                                    "Seconds since the oldest fire no started run has claimed was "
                                    "fired (0: none waits)")
        self.oldest_waiting.set_function(self._oldest_waiting_age)
        self._received = 0
        self.server = None
        self.refusals: RefusalCounter | None = None

    def serve(self, port: int, address: str = "0.0.0.0"):
        """Serve the metrics over HTTP on `address:port` from a thread."""
        from prometheus_client import start_http_server

        if self.registry is None:
            raise ValueError("this monitor was made without metrics")
        self.server, _ = start_http_server(port, address, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", address, self.server.server_port,
                 extra={"fields": {"event": "metrics", "port": self.server.server_port}})
        return self.server.server_port

    def count_refusals(self, store, refused_prefix: str, host: str) -> None:
        """Count the loop refusals of runs on `host` (see RefusalCounter), until close()."""
        if self.registry is not None:
            self.refusals = RefusalCounter(store, refused_prefix, host, self.fires_refused)
            self.refusals.start()

    def close(self) -> None:
        if self.refusals is not None:
            self.refusals.stop()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def report(self, action) -> None:
        """Log one action of the core and count it."""
        fields = _fields(action)
        level = logging.WARNING if isinstance(action, (MarkRunLost, Quarantine)) or failed(action) \
            or getattr(action, "note", "") else logging.INFO
        log.log(level, "%s", action.describe(), extra={"fields": fields})
        if isinstance(action, EnqueueRun):
            self.runs_queued.inc()
            for trigger in self._triggers_of(action):
                self.fires_enqueued.labels(trigger).inc()
        elif isinstance(action, Coalesce):
            self.fires_coalesced.labels(action.trigger).inc()
        elif isinstance(action, RunBegan):
            self.runs_started.inc()
        elif isinstance(action, RunEnded):
            self.runs_finished.labels(str(action.exit_code)).inc()
            if action.finished_at is not None:
                self.last_run.set(action.finished_at)
            if action.duration is not None:
                self.last_duration.set(action.duration)
        elif isinstance(action, MarkRunLost):
            self.runs_lost.inc()
        elif isinstance(action, Quarantine):
            self.quarantined.inc()
        self.count_received()

    def _waiting(self) -> list:
        """The fires the core holds as pending, read from the metrics server's thread."""
        pending = getattr(self.core, "pending", None) or {}
        for _ in range(3):
            try:
                return list(pending.values())
            except RuntimeError:  # changed size while read: the watch loop moved on; read again
                continue
        return []

    def _oldest_waiting_age(self) -> float:
        import time

        waiting = self._waiting()
        return max(0.0, time.time() - min(entry.fired_at for entry in waiting)) if waiting else 0.0

    def _triggers_of(self, action: EnqueueRun) -> list[str]:
        """The trigger of each fire the queued run will serve: the core still
        holds them as pending (the action names only the set of triggers)."""
        pending = getattr(self.core, "pending", {}) or {}
        alone = action.triggers[0] if len(action.triggers) == 1 else ""
        return [getattr(pending.get(event_id), "trigger", alone) for event_id in action.waiting]

    def note(self, note) -> None:
        """What the watcher's procedures tell: an action is reported and
        counted, a lost watch counted, anything else logged at its level."""
        what = note.what
        if isinstance(what, WatchLost):
            self.reconnect(what.reason)
            return
        if isinstance(what, REPORTED):
            self.report(what)
            return
        text = what.describe() if hasattr(what, "describe") else str(what)
        log.log(logging.getLevelName(note.level.upper()), "%s", text)

    def count_received(self) -> None:
        if self.core is not None and self.core.fires_received > self._received:
            self.fires_received.inc(self.core.fires_received - self._received)
            self._received = self.core.fires_received

    def reconnect(self, reason: str) -> None:
        self.reconnects.inc()
        log.warning("%s", reason, extra={"fields": {"event": "watch_lost", "reason": reason}})

    def stopping(self, signal_name: str) -> None:
        log.info("stopping on %s: no new runs are queued; queued and running runs go on",
                 signal_name, extra={"fields": {"event": "stop", "signal": signal_name}})


class RefusalCounter:
    """Counts the fires refused by the loop TTL that runs on this host made.

    `trigger fire` refuses inside the run that would extend the loop, and
    records the refusal under `P/refused/<event-id>` with its chain of
    hosts, the last of which is the host whose run fired. The watcher of
    that host counts it (`trigger_fires_refused_total{trigger}`), so each
    refusal is counted once across the fleet. A run's exit code says nothing
    honest about a refusal (`puppet agent` reports a failed resource), so the
    record is what is counted. Only a watcher serving metrics watches the
    records (one more watch, woken by refusals only); a refusal made while
    this watch was down and compacted away before it came back is missed,
    and said so in the log.
    """

    RETRY_SECONDS = 5.0  # after a lost watch, as the watcher's own first backoff step

    def __init__(self, store, refused_prefix: str, host: str, counter):
        self.store, self.prefix, self.host, self.counter = store, refused_prefix, host, counter
        self.revision = 0  # the last revision seen
        self._watch = None
        self._retry = None
        self._stopped = False

    def start(self) -> None:
        """Count the refusals recorded from now on."""
        _, self.revision = self.store.get_prefix(self.prefix)
        self._watch_from(self.revision + 1)

    def stop(self) -> None:
        self._stopped = True
        if self._retry is not None:
            self._retry.cancel()
        if self._watch is not None:
            self._watch.cancel()

    def _watch_from(self, revision: int) -> None:
        if self._stopped:
            return
        try:
            self._watch = self.store.watch_prefix(self.prefix, revision, self._changes)
        except StoreError as exc:
            self._retry_later(exc)

    def _retry_later(self, error: StoreError) -> None:
        import threading

        if isinstance(error, CompactedError):
            log.warning("refusals between revisions %d and %d were compacted away before they "
                        "were counted", self.revision + 1, error.compact_revision - 1)
            self.revision = error.compact_revision - 1
        timer = threading.Timer(self.RETRY_SECONDS, self._watch_from, (self.revision + 1,))
        timer.daemon = True
        self._retry = timer
        if not self._stopped:
            timer.start()

    def _changes(self, changes) -> None:
        if isinstance(changes, StoreError):
            self._retry_later(changes)
            return
        for change in changes:
            self.revision = max(self.revision, change.revision)
            if not isinstance(change, Put):
                continue  # a record's lease ended
            try:
                record = json.loads(change.value)
                chain, trigger = record["chain"], str(record["trigger"])
            except (ValueError, KeyError, TypeError):
                continue  # not a record `trigger fire` wrote: nothing to count
            if isinstance(chain, list) and chain and chain[-1] == self.host:
                self.counter.labels(trigger).inc()
