"""The daemon crashing at each step of its work, on real etcd and task-spooler.

A crash is an exception escaping the daemon between two of its writes, in
process, so each phase is hit exactly; the next daemon starts from what
etcd and task-spooler hold, as after a kill -9.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from tests.eventually import eventually
from tests.integration.test_watch import _states
from trigger.core import WatcherCore
from trigger.queue.tsp import TspQueue
from trigger.store.base import PutOp
from trigger.watch import WatchDaemon

pytestmark = [pytest.mark.etcd, pytest.mark.tsp]


class Crash(BaseException):
    """Not an error the daemon handles: it ends the daemon thread."""


class CrashingStore:
    """Passes calls through to the real store; raises Crash at a chosen call."""

    def __init__(self, store, crash_when):
        self._store, self._crash_when = store, crash_when

    def __getattr__(self, name):
        real = getattr(self._store, name)

        def call(*args, **kwargs):
            if self._crash_when(name, args):
                self._crash_when = lambda *_: False
                raise Crash(name)
            return real(*args, **kwargs)

        return call


class CrashingQueue(TspQueue):
    def __init__(self, crash_after_enqueue=False):
        super().__init__()
        self.crash_after_enqueue = crash_after_enqueue

    def enqueue(self, run_id, argv):
        super().enqueue(run_id, argv)
        if self.crash_after_enqueue:
            self.crash_after_enqueue = False
            raise Crash("after enqueue")


def start_daemon(node, store, queue):
    from tests.integration.conftest import RECORDER
    import sys

    ids = (f"r{time.monotonic_ns()}x{i}" for i in itertools.count())
    core = WatcherCore(node.host, node.layout, lambda: next(ids))
    run_cmd = [sys.executable, str(RECORDER), str(node.log), "0.1"]

    def run_argv(run_id):
        return [sys.executable, "-m", "trigger", "run", "--host", node.host, "--run-id", run_id,
                "--endpoints", node.endpoint, "--", *run_cmd]

    daemon = WatchDaemon(store, queue, core, run_argv, check_interval=0.3)
    died = []

    def target():
        try:
            daemon.run_forever()
        except Crash as crash:
            died.append(str(crash))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return daemon, thread, died


@pytest.fixture
def tsp_env(node, monkeypatch):
    monkeypatch.setenv("TS_SOCKET", node.env["TS_SOCKET"])
    monkeypatch.setenv("TMPDIR", node.env["TMPDIR"])


def test_crash_between_queued_record_and_enqueue(node, tsp_env):
    def queued_record_written(name, args):
        return name == "put" and "/runs/" in args[0]

    # Crash on the put of the queued record: it never reaches tsp.
    daemon, thread, died = start_daemon(node, CrashingStore(node.store, queued_record_written), TspQueue())
    node.fire()
    thread.join(10)
    assert died == ["put"]
    assert node.tsp("-l").count("trigger:") == 0
    daemon, thread, died = start_daemon(node, node.store, TspQueue())
    try:
        assert node.wait_served() == []
    finally:
        daemon.stop()
        thread.join(10)


def test_crash_after_enqueue_makes_no_duplicate_run(node, tsp_env):
    daemon, thread, died = start_daemon(node, node.store, CrashingQueue(crash_after_enqueue=True))
    node.fire()
    thread.join(10)
    assert died == ["after enqueue"]
    daemon, thread, died = start_daemon(node, node.store, TspQueue())
    try:
        assert node.wait_served() == []
        eventually(lambda: _states(node) == ["finished"], what="the run to finish")
        node.wait_idle()  # a duplicate would be queued or running now
        assert len(node.runs()) == 1  # the restarted daemon adopted the queued run
    finally:
        daemon.stop()
        thread.join(10)


def test_crash_while_quarantining_keeps_the_bad_value(node, tsp_env):
    node.store.put(node.layout.entry_key(node.host, "bad"), b"[]")

    def quarantine_txn(name, args):
        return name == "txn" and any("/quarantine/" in op.key for op in args[0] if isinstance(op, PutOp))

    daemon, thread, died = start_daemon(node, CrashingStore(node.store, quarantine_txn), TspQueue())
    thread.join(10)
    assert died == ["txn"]
    assert node.store.get(node.layout.entry_key(node.host, "bad")).value == b"[]"
    daemon, thread, died = start_daemon(node, node.store, TspQueue())
    try:
        eventually(lambda: node.store.get(node.layout.quarantine_key(node.host, "bad")) is not None,
                 what="the quarantine")
        assert node.store.get(node.layout.entry_key(node.host, "bad")) is None
    finally:
        daemon.stop()
        thread.join(10)


def test_compaction_between_read_and_watch_is_recovered(node, tsp_env, caplog):
    """History compacted after the daemon read the inbox: its watch is refused."""
    store = node.store
    compacted = []

    class CompactAfterRead:
        def __getattr__(self, name):
            return getattr(store, name)

        def get_prefix(self, prefix):
            items, revision = store.get_prefix(prefix)
            if not compacted:
                node.fire()  # lands after the read...
                store.put("/unrelated", b"x")
                store.compact(store.get_prefix("/unrelated")[1])  # ...and its history is gone
                compacted.append(revision)
            return items, revision

    daemon, thread, died = start_daemon(node, CompactAfterRead(), TspQueue())
    try:
        eventually(lambda: compacted, what="the compaction")
        assert node.wait_served() == []
        assert "history gone" in caplog.text
    finally:
        daemon.stop()
        thread.join(10)
