"""One simulated node: its Puppet agent, its fake Puppet runs, its watcher and queue.

Two kinds of run occupy a node, as on a real one:

* scheduled runs, from the Puppet agent's own timer (first after a splay,
  then every interval). They do not go through task-spooler and do not
  touch the inbox. If a run is already in progress the agent skips that
  turn, as `puppet agent` does ("already in progress; skipping").
* triggered runs, which task-spooler starts one at a time: `trigger run`
  calls `start_run` (acknowledging the inbox entries present), then
  Puppet runs and `finish_run` marks the end. Puppet's run lock is taken
  with waiting (`--waitforlock`): a triggered run that finds a scheduled
  run in progress waits for it rather than giving up, because giving up
  after the acknowledgement would leave its fires without a run that
  started after them.

Every run, of either kind, compiles the role's manifest when it gets the
lock, changes the resources due to change, and at its end refreshes each
notified trigger once with `trigger.fire.fire`, carrying the run's lineage
(hop and chain; a scheduled run starts a new lineage).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trigger.fire import Lineage
from trigger.runner import finish_run, pending_limits, start_run
from trigger.store.base import StoreError, UnavailableError

from .coordination import SimSlot
from .tsp import FakeTaskSpooler
from .watcher import SimWatcher

if TYPE_CHECKING:
    from .scenario import Role
    from .simulation import Simulation


@dataclass
class NodeStats:
    scheduled_runs: int = 0
    scheduled_skipped: int = 0
    triggered_runs: int = 0
    runs_aborted: int = 0  # `trigger run` could not mark its start
    runs_lost: int = 0
    fires_received: int = 0
    fires_coalesced: int = 0
    fires_sent: int = 0
    fires_refused: int = 0
    fires_failed: int = 0  # etcd unreachable when the run fired
    fires_no_target: int = 0  # role:NAME had no live member: `trigger fire` refused
    max_queue_depth: int = 0
    quarantined: int = 0
    resyncs: int = 0
    watch_errors: dict = field(default_factory=lambda: {"unavailable": 0, "compacted": 0})
    last_trigger_activity: float | None = None


class Node:
    def __init__(self, sim: Simulation, host: str, role: Role, index: int):
        self.sim = sim
        self.env = sim.env
        self.host = host
        self.role = role
        self.index = index
        self.rng = random.Random(f"{sim.seed}/{host}")
        self.stats = NodeStats()
        self.store = sim.etcd.connect(host)
        self.tsp = FakeTaskSpooler(self)
        self.watcher = SimWatcher(self)
        self.slow_factor = 1.0
        self.puppet_busy = False
        self.last_span: tuple[float, float] = (0.0, 0.0)  # the last Puppet run's start and end
        self._lock_waiters: deque = deque()
        self._run_counter = 0
        self._applied_once: set[str] = set()
        self._seen_version: dict[str, int] = {}

    def new_run_id(self) -> str:
        # Zero-padded so that sorting by id sorts by age, as the core expects.
        self._run_counter += 1
        return f"r{self._run_counter:06d}"

    # -- the Puppet agent's schedule ------------------------------------------------

    def agent(self):
        agent = self.role.agent
        until = self.sim.scenario.until
        first = self.rng.uniform(0, agent.splay)
        if first >= until:
            return
        yield self.env.timeout(first)
        while True:
            if self.puppet_busy:
                self.stats.scheduled_skipped += 1
                self.sim.puppet_runs.append((self.host, "skipped", self.env.now, self.env.now, ()))
                self.sim.trace(self.host, "scheduled run skipped: a run is in progress")
            else:
                self.puppet_busy = True  # taken now, so nothing slips in before the run begins
                self.env.process(self.puppet_run("scheduled", Lineage(), None, locked=True))
            if self.env.now + agent.interval >= until:
                return  # the scenario's time is up: no more scheduled runs
            yield self.env.timeout(agent.interval)

    # -- a run started by task-spooler -------------------------------------------------

    def triggered_run(self, run_id: str):
        """What `trigger run RUN_ID -- puppet agent --test --waitforlock` does for one queued run."""
        sim = self.sim
        # As `trigger run`: take the slots of the limited triggers waiting,
        # then acknowledge only what those slots allow.
        limits = yield from self._retry(
            lambda: pending_limits(self.store, sim.layout, self.host), run_id, "start")
        slots = []
        if limits:
            slots = yield from self._take_slots(run_id, limits)
        record = None
        if limits is not None and slots is not None:
            record = yield from self._retry(
                lambda: start_run(self.store, sim.layout, self.host, run_id, self.env.now, limits),
                run_id, "start")
        if record is None:
            for slot in slots or ():
                slot.release()
            self.stats.runs_aborted += 1
            sim.trace(self.host, f"{run_id} could not be recorded as started; not running it (exit 75)")
            return
        sim.served(self, record)
        served = ", ".join(record.served[:3]) + (f" +{len(record.served) - 3}" if len(record.served) > 3 else "")
        sim.trace(self.host, f"{run_id} starts: serves {served or 'nothing'} (hop {record.hop})")
        exit_code = yield from self.puppet_run("triggered", Lineage(record.hop, record.chain), run_id)
        for slot in slots:
            slot.release()
        for trigger, limit in record.limits:
            sim.limited_run(trigger, limit, self, run_id, *self.last_span)
        self.stats.last_trigger_activity = self.env.now
        done = yield from self._retry(
            lambda: finish_run(self.store, sim.layout, record, exit_code, self.env.now,
                               lease=sim.etcd.history_lease()), run_id, "finish")
        if done is None:
            sim.trace(self.host, f"{run_id} finished ({exit_code}) but could not be recorded")

    def _take_slots(self, run_id: str, limits: dict[str, int]):
        """`trigger run`'s `_take_slots`: a slot of every limited trigger, in name order.

        A store error gives back the slots taken and ends `trigger run` there,
        before it acknowledged anything: its fires wait for the next run.
        """
        slots = []
        for trigger, limit in sorted(limits.items()):
            # The real holder is the run id, unique across hosts; here run ids
            # are per-host counters, so the host makes the key unique.
            slot = SimSlot(self, trigger, limit, f"{run_id}.{self.host}")
            slots.append(slot)
            try:
                waited = yield from slot.acquire()
            except StoreError as exc:
                for taken in slots:
                    taken.release()
                self.sim.trace(self.host, f"{run_id} could not take a slot of {trigger!r}: {exc}")
                return None
            self.sim.slot_waited(trigger, waited)
            if waited > 0:
                self.sim.trace(self.host, f"{run_id} waited {waited:g} s for a slot of "
                                          f"{trigger!r} ({limit} at once)")
        return slots

    def _retry(self, call, run_id: str, what: str, attempts: int = 5):
        """`trigger run`'s retry: up to 5 tries while etcd is unreachable, waiting 1, 2, 4, 8, 8 s."""
        for attempt in range(attempts):
            try:
                return call()
            except UnavailableError as exc:
                self.sim.trace(self.host, f"{run_id} cannot mark its {what}: {exc}")
                yield self.env.timeout(min(2.0 ** attempt, 8.0))
        return None

    # -- a Puppet run of either kind ----------------------------------------------------

    def puppet_run(self, kind: str, lineage: Lineage, run_id: str | None, locked: bool = False):
        env, sim = self.env, self.sim
        if not locked:
            if self.puppet_busy:  # a triggered run waits for the lock (--waitforlock)
                waiter = env.event()
                self._lock_waiters.append(waiter)
                sim.trace(self.host, f"{run_id} waits for the Puppet lock")
                yield waiter  # the releasing run hands the lock over
            else:
                self.puppet_busy = True
        start = env.now
        changed = self._compile()
        label = run_id or "scheduled run"
        sim.trace(self.host, f"{label}: Puppet applies {len(changed)} change(s)")
        if kind == "scheduled":
            self.stats.scheduled_runs += 1
        else:
            self.stats.triggered_runs += 1
        yield env.timeout(self.role.agent.duration.sample(self.rng) * self.slow_factor)
        notified: dict[str, None] = {}
        for resource in changed:
            sim.versions[resource.name] = sim.versions.get(resource.name, 0) + 1
            for name in resource.notify:
                notified[name] = None
        for name in notified:
            sim.fire(name, lineage, origin=self.host, node=self)
        sim.run_spans.append((self.index, start, env.now, kind == "triggered"))
        sim.puppet_runs.append((self.host, kind, start, env.now, tuple(notified)))
        self.last_span = (start, env.now)
        exit_code = 2 if changed else 0  # puppet agent --test --detailed-exitcodes
        sim.trace(self.host, f"{label} ends, exit {exit_code}")
        if self._lock_waiters:
            self._lock_waiters.popleft().succeed()
        else:
            self.puppet_busy = False
        return exit_code

    def _compile(self) -> list:
        """The resources that change in this run, in manifest order."""
        now = self.env.now
        changed = []
        for resource in self.role.resources:
            if now < resource.start:
                continue
            how = resource.changes
            if how == "always":
                changed.append(resource)
            elif how == "once":
                if resource.name not in self._applied_once:
                    self._applied_once.add(resource.name)
                    changed.append(resource)
            elif how == "probability":
                if self.rng.random() < resource.probability:
                    changed.append(resource)
            elif how == "until_converged":
                # Changes while what it collects from other nodes has changed
                # since this node last compiled it; converged once caught up.
                versions = self.sim.versions
                current = sum(versions.get(name, 0) for name in resource.collects)
                if current > self._seen_version.get(resource.name, 0):
                    changed.append(resource)
                self._seen_version[resource.name] = current
        return changed
