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
from typing import Callable

from simpy import Interrupt

from trigger.driver import STOPPED_BY_SIGTERM
from trigger.effects import Note
from trigger.fire import Lineage
from trigger.layout import Layout
from trigger.leftovers import remark
from trigger.policy import RUN
from trigger.procedures import RunAborted, RunFinished, RunStarted, SlotWaited, triggered_run
from trigger.results import list_runs, serving_results, wait_over, wait_succeeded
from trigger.store.base import StoreError

from .driver import SimDriver
from .ledger import Ledger
from .network import NO_ANSWER
from .scenario import Role, WatcherSettings
from .standby import SimStandby
from .tsp import FakeTaskSpooler
from .watcher import Processes, SimWatcher


STOPPED = 128 + 15  # the exit status of a command stopped with SIGTERM


@dataclass(slots=True)
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
    waits_failed: int = 0  # `wait => true` fires with a host's run failed, or not over within wait_timeout
    max_queue_depth: int = 0
    quarantined: int = 0
    resyncs: int = 0
    watch_errors: dict = field(default_factory=lambda: {"unavailable": 0, "compacted": 0})
    last_trigger_activity: float | None = None


class Node:
    def __init__(self, env, host: str, role: Role, index: int, *, seed: int, store, layout: Layout,
                 ledger: Ledger, settings: WatcherSettings, until: float,
                 fire: Callable, processes: Processes, member_ttl: int | None = None,
                 waits: dict[str, float] | None = None):
        """`fire(name, lineage, origin, node)` is `trigger fire` from a run on this node
        (it returns the fire's event id, None when refused or failed);
        `member_ttl` is set when the scenario has discovery; `waits`: the wait_timeout of
        each trigger with `wait => true`."""
        self.env = env
        self.host = host
        self.role = role
        self.index = index
        self.layout, self.ledger, self.settings, self.until, self.fire = layout, ledger, settings, until, fire
        self.waits = waits or {}
        self.rng = random.Random(f"{seed}/{host}")
        self.stats = NodeStats()
        self.store = store
        self.tsp = FakeTaskSpooler(env, lambda run_id: self.triggered_run(run_id), self.stats)
        self.standby = SimStandby(env, self, self.tsp, settings.standby_linger) if settings.standby else None
        self.watcher = self._new_watcher(processes, member_ttl)
        self.duplicate: SimWatcher | None = None  # a second `trigger watch` (duplicate_watcher)
        self.runs: dict[SimDriver, str] = {}  # the `trigger run` processes alive, and their run ids
        # `trigger run` starts its command's watchdog (trigger.driver.WATCHDOG); False models
        # one that could not be started, for the tests to see what it prevents
        self.watchdog = True
        self.orphans_until = -1.0  # orphan_child: commands ending before this leave a child behind
        self.scheduled: object = None  # the SimPy process of a scheduled Puppet run in progress
        self.slow_factor = 1.0
        self.puppet_busy = False
        self.last_span: tuple[float, float] = (0.0, 0.0)  # the last Puppet run's start and end
        self._lock_waiters: deque = deque()
        self._run_counter = 0
        self._applied_once: set[str] = set()
        self._seen_version: dict[str, int] = {}

    def _new_watcher(self, processes: Processes, member_ttl: int | None) -> SimWatcher:
        env, host, ledger = self.env, self.host, self.ledger
        return SimWatcher(
            env, host, self.layout, self.store, self.standby or self.tsp, self.settings.policy(), self.new_run_id,
            self.stats, self.trace,
            lambda event_id, run_id: ledger.coalesced.append((env.now, host, event_id, run_id)),
            processes, membership=None if member_ttl is None else ((self.role.name,), member_ttl))

    # -- faults of the whole node ---------------------------------------------------------

    def kill_runs(self) -> None:
        """kill -9 of every `trigger run` and its command (OOM, an operator)."""
        for driver in list(self.runs):
            self.trace("trigger run killed with its command")
            driver.kill(exit_status=137)
        self.runs.clear()
        if self.standby is not None:
            self.standby.kill()

    def kill_runners(self) -> None:
        """kill -9 of every `trigger run` but not of its command, which is in a
        process group of its own: the run's watchdog (trigger.driver.WATCHDOG)
        sees the run gone and ends the group, SIGTERM then SIGKILL `stop_grace`
        later. Puppet is taken to hold on until the SIGKILL, the longest a
        command outlives its run."""
        for driver in list(self.runs):
            command = driver.command[0]
            self.trace("trigger run killed; its command is left to the watchdog")
            driver.kill(exit_status=137, command=False)
            if command is not None and command.is_alive and self.watchdog:
                self.env.timeout(RUN.stop_grace).callbacks.append(
                    lambda _e, c=command: c.interrupt("watchdog") if c.is_alive else None)
        self.runs.clear()
        if self.standby is not None:  # the standby is a `trigger run` too: the same watchdog
            self.standby.kill()

    def kill_job(self) -> None:
        """`tsp -k`: SIGTERM to the running job, `trigger run`. With a command
        running, the run stops it and gives its fires back at once; without,
        it exits as it would have, and its lease ends the rest."""
        if self.standby is not None and self.tsp.running in self.standby.jobs:
            self.trace(f"tsp -k: the standby job of {self.tsp.running} ends")
            self.tsp.process.interrupt("tsp -k")  # its cat goes; the standby's run is told
            return
        job = next((d for d, run_id in self.runs.items() if run_id == self.tsp.running), None)
        if job is None:
            self.trace("tsp -k: no job running")
        elif not job.stop_command(STOPPED_BY_SIGTERM):
            self.trace(f"tsp -k: {self.runs.pop(job)} exits, no command running (exit 143)")
            job.kill(exit_status=STOPPED)

    def go_down(self, span: float | None) -> None:
        """A reboot: every process of the node dies; nothing reaches etcd meanwhile."""
        self.watcher.kill()
        self.stop_duplicate_watcher()
        self.kill_runs()
        if self.standby is not None:
            self.standby.jobs_die()
        self.tsp.kill(float("inf"))
        if self.scheduled is not None and self.scheduled.is_alive:
            self.scheduled.interrupt("reboot")
        self.store.cut_off()

    def come_up(self) -> None:
        self.store.reconnect()
        self.tsp.down_until = self.env.now
        self.watcher.start()

    def start_duplicate_watcher(self) -> None:
        self.duplicate = self._new_watcher(self.watcher.processes, self.watcher.membership[1])
        self.duplicate.start()

    def stop_duplicate_watcher(self) -> None:
        if self.duplicate is not None:
            self.duplicate.kill()
            self.duplicate = None

    def trace(self, what: str) -> None:
        self.ledger.trace(self.env.now, self.host, what)

    def new_run_id(self) -> str:
        # Zero-padded so that sorting by id sorts by age, as the core expects.
        self._run_counter += 1
        return f"r{self._run_counter:06d}"

    # -- the Puppet agent's schedule ------------------------------------------------

    def agent(self):
        agent = self.role.agent
        until = self.until
        first = self.rng.uniform(0, agent.splay)
        if first >= until:
            return
        yield self.env.timeout(first)
        while True:
            if self.puppet_busy:
                self.stats.scheduled_skipped += 1
                self.ledger.puppet_runs.append((self.host, "skipped", self.env.now, self.env.now, ()))
                self.trace("scheduled run skipped: a run is in progress")
            else:
                self.puppet_busy = True  # taken now, so nothing slips in before the run begins
                self.scheduled = self.env.process(self.puppet_run("scheduled", Lineage(), None, locked=True))
            if self.env.now + agent.interval >= until:
                return  # the scenario's time is up: no more scheduled runs
            yield self.env.timeout(agent.interval)

    # -- a run started by task-spooler -------------------------------------------------

    def triggered_run(self, run_id: str):
        """`trigger run RUN_ID -- puppet agent --test --waitforlock`: the real procedure."""
        driver = SimDriver(self.env, self.store, self._tell_run, execute=self._command)
        self.runs[driver] = run_id
        # The real holder is the run id, unique across hosts; here run ids are
        # per-host counters, so the host makes the slot key unique.
        yield from driver.run(triggered_run(self.layout, self.host, run_id,
                                            int(self.settings.run_history), f"{run_id}.{self.host}"))
        self.runs.pop(driver, None)

    def _command(self, record):
        """The run's command: Puppet, its span kept to check one run at a time."""
        start, before = self.env.now, self.last_span
        try:
            exit_code = yield from self.puppet_run("triggered", Lineage(record.hop, record.chain),
                                                   record.run_id)
        finally:
            self.ledger.commands.setdefault(self.host, []).append((start, self.env.now, record.run_id))
            if self.last_span is not before:  # Puppet ran: its span counts against the limits,
                for trigger, limit in record.limits:  # whether the run lived to record it or not
                    self.ledger.limited_run(trigger, limit, self.host, record.run_id, *self.last_span)
        left = yield from self._stop_left_behind()
        return (exit_code, "", left) if left else exit_code

    def _stop_left_behind(self):
        """A background child the command left (orphan_child): `trigger run`, its
        subreaper, stops it once Puppet has exited (trigger.leftovers), SIGTERM then
        SIGKILL after stop_grace; the child is taken to hold on until the SIGKILL.
        Only then is the run recorded and the queue's job done, but Puppet's lock
        is free: the next run is late by that stop at most. Returns the remark."""
        life = self.orphans_until - self.env.now
        if life <= 0:
            return ""
        stopped = self.env.timeout(min(life, RUN.stop_grace))
        while not stopped.processed:
            try:
                yield stopped
            except Interrupt:
                pass  # a stop of the run's command (tsp -k) signals the group; this child goes on
        return remark(1, "a background child")

    def _tell_run(self, note: Note) -> None:
        what, now = note.what, self.env.now
        if isinstance(what, RunStarted):
            self.ledger.served(self.host, what.record, now)
        elif isinstance(what, RunFinished):  # the command ran to its end, recorded or not
            self.ledger.finished(self.host, what.record, now)
        elif isinstance(what, SlotWaited):
            self.ledger.slot_waited(what.trigger, what.seconds, self.host, now)
            if what.seconds <= 0:
                return
        elif isinstance(what, RunAborted):
            self.stats.runs_aborted += 1
        if isinstance(what, RunFinished):
            self.stats.last_trigger_activity = now
            if what.recorded:
                return
        self.trace(what.describe() if hasattr(what, "describe") else str(what))

    # -- a Puppet run of either kind ----------------------------------------------------

    def puppet_run(self, kind: str, lineage: Lineage, run_id: str | None, locked: bool = False):
        env = self.env
        label = run_id or "scheduled run"
        waiter = None
        if not locked:
            if self.puppet_busy:  # a triggered run waits for the lock (--waitforlock)
                waiter = env.event()
                self._lock_waiters.append(waiter)
                self.trace(f"{run_id} waits for the Puppet lock")
                try:
                    yield waiter  # the releasing run hands the lock over
                except Interrupt:
                    if waiter in self._lock_waiters:
                        self._lock_waiters.remove(waiter)
                    else:
                        self._release_lock()
                    self.trace(f"{label} stopped while waiting for the Puppet lock")
                    return STOPPED
            else:
                self.puppet_busy = True
        start = env.now
        changed = self._compile()
        self.trace(f"{label}: Puppet applies {len(changed)} change(s)")
        if kind == "scheduled":
            self.stats.scheduled_runs += 1
        else:
            self.stats.triggered_runs += 1
        try:
            yield env.timeout(self.role.agent.duration.sample(self.rng) * self.slow_factor)
            if self.store.held() and any(resource.notify for resource in changed):
                # `trigger fire` at Puppet's end waits for an answer that does not come
                yield env.timeout(min(self.store.held(), NO_ANSWER))
        except Interrupt:  # stopped: Puppet did not get to its end, so it refreshes nothing
            self._record_span(kind, start)
            self.trace(f"{label} stopped before its end")
            self._release_lock()
            return STOPPED
        notified: dict[str, None] = {}
        for resource in changed:
            self.ledger.versions[resource.name] = self.ledger.versions.get(resource.name, 0) + 1
            for name in resource.notify:
                notified[name] = None
        wait_failed = False
        for name in notified:  # in order: a `wait => true` fire holds up the ones after it
            event_id = self.fire(name, lineage, self.host, self)
            if event_id is not None:
                self.ledger.fired_by_run[event_id] = self.index
                if name in self.waits:
                    try:
                        wait_failed |= not (yield from self._wait_served(name, event_id, label))
                    except Interrupt:
                        self._record_span(kind, start)
                        self.trace(f"{label} stopped while waiting for {name!r}")
                        self._release_lock()
                        return STOPPED
        self._record_span(kind, start)
        self.ledger.puppet_runs.append((self.host, kind, start, self.env.now, tuple(notified)))
        # puppet agent --test --detailed-exitcodes: 2 changes, 6 changes and failures (a wait failed)
        exit_code = (6 if wait_failed else 2) if changed else 0
        self.trace(f"{label} ends, exit {exit_code}")
        self._release_lock()
        return exit_code

    def _wait_served(self, name: str, event_id: str, label: str):
        """`trigger fire --wait`, with this run's Puppet lock held: its rules (`trigger.results`)
        on the run records, looked at again whenever a run serving the fire ends; True if every
        host's run ended ok, False if one failed or `wait_timeout` came first (the resource fails).
        (Not modelled: the real wait's giving up on a host without a watcher after 5 s.)"""
        deadline = self.env.now + self.waits[name]
        hosts = self.ledger.reached[event_id]
        while True:
            try:
                results = serving_results(list_runs(self.store, self.layout)[0], event_id, hosts)
            except StoreError:
                results = None  # etcd away: the wait cannot tell, and waits on
            if results is not None and wait_over(results):
                if wait_succeeded(results):
                    return True
                failed = ", ".join(h for h, r in results.items() if r.state != "ok")
                self.trace(f"{label}: waiting for {name!r}: runs not ok on {failed}")
                break
            left = deadline - self.env.now
            if left <= 0:
                self.trace(f"{label}: waiting for {name!r} timed out after {self.waits[name]:g} s")
                break
            yield self.ledger.when_served(self.env, event_id) | self.env.timeout(left)
        self.stats.waits_failed += 1
        return False

    def _record_span(self, kind: str, start: float) -> None:
        self.ledger.run_spans.append((self.index, start, self.env.now, kind == "triggered"))
        self.last_span = (start, self.env.now)

    def _release_lock(self) -> None:
        if self._lock_waiters:
            self._lock_waiters.popleft().succeed()
        else:
            self.puppet_busy = False

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
                versions = self.ledger.versions
                current = sum(versions.get(name, 0) for name in resource.collects)
                if current > self._seen_version.get(resource.name, 0):
                    changed.append(resource)
                self._seen_version[resource.name] = current
        return changed
