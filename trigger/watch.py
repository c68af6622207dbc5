"""The watcher daemon: drives the protocol core with a store, a queue and the clock.

It reads the host's prefix (asking the queue first, so a run the queue has
let go of is seen in the store as started if it ever started), hands the
snapshot to the core, then follows a watch from the next revision. Any
store error ends that watch; the daemon waits, re-reads and watches again,
so a restart of etcd, a compacted revision or a killed watcher loses
nothing. While something is outstanding it re-reads every
`check_interval` seconds, which is how a dead task-spooler server is
noticed; when idle it only waits on the watch.
"""

from __future__ import annotations

import logging
import queue as queue_module
import threading
import time
from typing import Callable

from .core import (
    Action,
    Changes,
    Coalesce,
    EnqueueFailed,
    EnqueueRun,
    MarkRunLost,
    Quarantine,
    Snapshot,
    Tick,
    WatcherCore,
)
from .layout import Layout
from .monitor import WatchMonitor
from .queue import QueueError, RunQueue
from .store.base import CompactedError, DeleteOp, PutOp, Store, StoreError

log = logging.getLogger("trigger.watch")


class WatchDaemon:
    def __init__(
        self,
        store: Store,
        queue: RunQueue,
        core: WatcherCore,
        run_argv: Callable[[str], list[str]],
        clock: Callable[[], float] = time.time,
        check_interval: float = 5.0,
        idle_check: float = 300.0,
        monitor=None,
    ):
        self.store = store
        self.queue = queue
        self.core = core
        self.layout: Layout = core.layout
        self.run_argv = run_argv
        self.clock = clock
        self.check_interval = check_interval
        self.idle_check = idle_check
        self.stopping = threading.Event()
        self.monitor = monitor or WatchMonitor(core)  # log lines and metrics
        self._inbox: queue_module.Queue = queue_module.Queue()

    def stop(self) -> None:
        self.stopping.set()
        self._inbox.put(None)  # wakes the loop at once

    def run_forever(self) -> None:
        self._delay = 0.2
        while not self.stopping.is_set():
            try:
                self._follow()
            except CompactedError as exc:
                log.warning("watch history gone (%s); re-reading the inbox", exc)
                self.monitor.reconnect(str(exc))
            except StoreError as exc:
                log.warning("store: %s; retrying in %.1fs", exc, self._delay)
                self.monitor.reconnect(str(exc))
                self.stopping.wait(self._delay)
                self._delay = min(self._delay * 2, 10.0)

    # -- one watch session -----------------------------------------------------

    def _follow(self) -> None:
        revision = self._resync()
        self._delay = 0.2  # the store answered: the next outage starts with a short wait
        log.info("in sync at revision %d: %d fire(s) waiting, %d run(s) active; watching",
                 revision, len(self.core.pending), sum(r.active for r in self.core.runs.values()))
        inbox = self._inbox = queue_module.Queue()
        if self.stopping.is_set():
            return
        watch = self.store.watch_prefix(self.layout.host_prefix(self.core.host), revision + 1, inbox.put)
        try:
            while not self.stopping.is_set():
                try:
                    item = inbox.get(timeout=self._timeout())
                except queue_module.Empty:
                    wake = self.core.wake_at
                    if wake is not None and self.clock() >= wake:
                        self._apply(self.core.handle(Tick(), self.clock()))
                    else:
                        self._resync()
                    continue
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                self._apply(self.core.handle(Changes(tuple(item)), self.clock()))
        finally:
            watch.cancel()

    def _timeout(self) -> float:
        timeout = self.check_interval if self.core.busy else self.idle_check
        wake = self.core.wake_at
        if wake is not None:
            timeout = min(timeout, max(0.0, wake - self.clock()))
        return max(timeout, 0.01)

    def _resync(self) -> int:
        try:
            live = self.queue.live_run_ids()
        except QueueError as exc:
            log.warning("queue: %s; not judging runs by it this time", exc)
            live = None
        items, revision = self.store.get_prefix(self.layout.host_prefix(self.core.host))
        self._apply(self.core.handle(Snapshot(tuple(items), revision, live), self.clock()))
        return revision

    # -- actions ---------------------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        self.monitor.count_received()
        for action in actions:
            self.monitor.report(action)
            if isinstance(action, EnqueueRun):
                self.store.put(self.layout.run_key(self.core.host, action.run_id), action.record.encode())
                try:
                    self.queue.enqueue(action.run_id, self.run_argv(action.run_id))
                except QueueError as exc:
                    self._apply(self.core.handle(EnqueueFailed(action.run_id, str(exc)), self.clock()))
            elif isinstance(action, MarkRunLost):
                self.store.put(self.layout.run_key(self.core.host, action.run_id), action.record.encode())
            elif isinstance(action, Quarantine):
                self.store.txn([
                    PutOp(self.layout.quarantine_key(self.core.host, action.key), action.value),
                    DeleteOp(action.key),
                ], expect_revisions=((action.key, action.revision),))
            elif isinstance(action, Coalesce):
                pass  # nothing to do but say so
