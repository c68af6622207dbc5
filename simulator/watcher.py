"""The simulated `trigger watch`: the real `WatcherCore`, driven as `trigger.watch.WatchDaemon` drives it.

The core decides; this adapter only carries out its actions and feeds it
events, with the node's etcd connection and fake task-spooler, step for
step like the daemon's loop (trigger/watch.py), only on simulated time and
with callbacks instead of a thread:

* a session: ask the queue for its live runs, read the host prefix at
  revision R -> `Snapshot`; watch from R + 1.
* each watch delivery -> `Changes`. A watch error ends the session: after
  `CompactedError` a new one starts at once; after any other store error
  (and after a store error while carrying out an action) the daemon waits
  `reconnect_delay`, doubling up to `reconnect_max`, and starts one.
* no delivery for `check_interval` while `core.busy` (`idle_check` while
  idle, sooner if `core.wake_at` says so) -> `Tick` if the core's wake time
  has come, else a re-read -> `Snapshot`. This is how a queued run that a
  killed task-spooler lost gets noticed and replaced.
* `EnqueueRun`: write the queued record, then push to the queue; a refused
  push -> `EnqueueFailed`. `MarkRunLost`: write the record. `Quarantine`:
  move the value under the quarantine key. `Coalesce`: count it.

A killed watcher stops at once: its watch is cancelled and every pending
timer of that incarnation is ignored; a restart builds a fresh core that
learns everything again from a Snapshot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trigger.core import (
    Changes,
    Coalesce,
    EnqueueFailed,
    EnqueueRun,
    MarkRunLost,
    Quarantine,
    RunFinished,
    RunStarted,
    Snapshot,
    Tick,
    WatcherCore,
)
from trigger.store.base import CompactedError, DeleteOp, PutOp, StoreError

if TYPE_CHECKING:
    from .node import Node


class SimWatcher:
    def __init__(self, node: Node):
        self.node = node
        self.sim = node.sim
        self.env = node.sim.env
        self.layout = node.sim.layout
        self.settings = node.sim.scenario.watcher
        self.prefix = self.layout.host_prefix(node.host)
        self.core: WatcherCore | None = None
        self.watch = None
        self.connected = False
        self.alive = False
        self.incarnation = 0
        self.delay = self.settings.reconnect_delay
        self._deadline = 0.0
        self._timer_at: float | None = None
        self.membership = None  # SimMembership while alive, when the scenario has discovery

    # -- life --------------------------------------------------------------------

    def start(self) -> None:
        self.incarnation += 1
        self.alive = True
        self.core = WatcherCore(self.node.host, self.layout, self.node.new_run_id)
        self.delay = self.settings.reconnect_delay
        self._timer_at = None
        discovery = self.sim.scenario.discovery
        if discovery is not None:  # `trigger watch` registers before it follows the inbox
            from .coordination import SimMembership

            self.membership = SimMembership(self.node, discovery.member_ttl)
        self._follow()

    def kill(self) -> None:
        self.incarnation += 1
        self.alive = False
        self._end_session()
        self.core = None
        if self.membership is not None:
            self.membership.crash()
            self.membership = None

    def _later(self, delay: float, action) -> None:
        """Run `action` after `delay` unless this watcher was killed or restarted meanwhile."""
        incarnation = self.incarnation

        def fire(_event):
            if self.incarnation == incarnation:
                action()

        self.env.timeout(delay).callbacks.append(fire)

    # -- sessions ------------------------------------------------------------------

    def _follow(self) -> None:
        """One watch session: Snapshot, then watch from the next revision."""
        try:
            revision = self._resync()
            self.watch = self.node.store.watch_prefix(self.prefix, revision + 1, self._on_watch)
        except StoreError as exc:
            self._session_failed(exc)
            return
        self.connected = True
        self._arm()

    def _resync(self) -> int:
        # The queue first: a run it has let go of is then seen in the store
        # as started, if it ever started (as the daemon does).
        live = self.node.tsp.live_run_ids()
        items, revision = self.node.store.get_prefix(self.prefix)
        self.node.stats.resyncs += 1
        self._act(self.core.handle(Snapshot(tuple(items), revision, live), self.env.now))
        return revision

    def _end_session(self) -> None:
        self.connected = False
        self._timer_at = None
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None

    def _session_failed(self, error: StoreError) -> None:
        was_connected = self.connected
        self._end_session()
        if isinstance(error, CompactedError):
            self.sim.trace(self.node.host, f"watcher: watch history gone ({error}); re-reading")
            self._later(0.0, self._follow)
            return
        if was_connected or self.delay == self.settings.reconnect_delay:
            self.sim.trace(self.node.host, f"watcher: {error}; retrying in {self.delay:g} s")
        delay = self.delay
        # Like the daemon, the delay doubles and is not reset by a session
        # that worked; it stays at its cap once there.
        self.delay = min(self.delay * 2, self.settings.reconnect_max)
        self._later(delay, self._follow)

    # -- events into the core --------------------------------------------------------

    def _on_watch(self, payload) -> None:
        if not self.alive or not self.connected:
            return
        if isinstance(payload, StoreError):
            kind = "compacted" if isinstance(payload, CompactedError) else "unavailable"
            self.node.stats.watch_errors[kind] += 1
            self.watch = None
            self._session_failed(payload)
            return
        try:
            self._act(self.core.handle(Changes(tuple(payload)), self.env.now))
        except StoreError as exc:
            self._session_failed(exc)
            return
        self._arm()

    def _arm(self) -> None:
        """Restart the wait for the next delivery, as the daemon's inbox.get(timeout) does."""
        core = self.core
        now = self.env.now
        timeout = self.settings.check_interval if core.busy else self.settings.idle_check
        wake = core.wake_at
        if wake is not None:
            timeout = min(timeout, max(0.0, wake - now))
        self._deadline = deadline = now + max(timeout, 0.01)
        if self._timer_at is None or self._timer_at > deadline:
            self._set_timer(deadline)

    def _set_timer(self, at: float) -> None:
        self._timer_at = at

        def expire():
            if self._timer_at != at or not self.connected:
                return  # a newer timer replaced this one, or the session ended
            self._timer_at = None
            if self.env.now < self._deadline:
                self._set_timer(self._deadline)  # deliveries came meanwhile: wait on
            else:
                self._timed_out()

        self._later(at - self.env.now, expire)

    def _timed_out(self) -> None:
        core = self.core
        wake = core.wake_at
        try:
            if wake is not None and self.env.now >= wake:
                self._act(core.handle(Tick(), self.env.now))
            else:
                self._resync()
        except StoreError as exc:
            self._session_failed(exc)
            return
        self._arm()

    # -- actions out of the core ---------------------------------------------------

    def _act(self, actions) -> None:
        node, now = self.node, self.env.now
        for action in actions:
            if isinstance(action, EnqueueRun):
                node.store.put(self.layout.run_key(node.host, action.run_id), action.record.encode())
                self.sim.trace(node.host, f"queue {action.run_id} for {len(action.waiting)} fire(s)")
                refused = node.tsp.push(action.run_id)
                if refused:
                    self.sim.trace(node.host, f"tsp refused {action.run_id}: {refused}")
                    self._act(self.core.handle(EnqueueFailed(action.run_id, refused), now))
            elif isinstance(action, Coalesce):
                node.stats.fires_coalesced += 1
                self.sim.coalesced.append((now, node.host, action.event_id, action.run_id))
                self.sim.trace(node.host, f"coalesce {action.event_id} into {action.run_id}")
            elif isinstance(action, MarkRunLost):
                node.store.put(self.layout.run_key(node.host, action.run_id), action.record.encode())
                node.stats.runs_lost += 1
                self.sim.trace(node.host, f"mark {action.run_id} lost: {action.record.reason}")
            elif isinstance(action, Quarantine):
                node.store.txn([
                    PutOp(self.layout.quarantine_key(node.host, action.key), action.value),
                    DeleteOp(action.key),
                ], expect_revisions=((action.key, action.revision),))
                node.stats.quarantined += 1
                self.sim.trace(node.host, f"quarantine {action.key}: {action.reason}")
            elif isinstance(action, (RunStarted, RunFinished)):
                pass  # report only: the simulator traces runs itself
            else:  # an action kind added to the core that the simulator does not know yet
                raise TypeError(f"simulator cannot carry out {action!r}")
