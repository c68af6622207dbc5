"""Wiring: a scenario's nodes, etcd, faults and external fires on one SimPy clock.

The simulation runs in two phases. Until `scenario.until`, the Puppet
agents run on their schedule and faults and external fires happen at their
times. Then it drains: no more scheduled runs, and triggered activity goes
on until nothing is left to do or `scenario.drain` seconds have passed. A
loop that the TTL bounds dies out in the drain; one still firing at its end
is reported as unbounded.

Everything is deterministic: SimPy breaks time ties by scheduling order,
every node draws from its own `random.Random(f"{seed}/{host}")`, event and
run ids are counters, and nothing reads the wall clock except the report's
wall-time measure, which stays out of the report's JSON.
"""

from __future__ import annotations

import gc
import json
import random
import time

import simpy

from trigger.coordination import resolve_targets
from trigger.fire import Lineage, LoopRefused, fire
from trigger.layout import Layout
from trigger.records import BadRecord, parse_entry
from trigger.store.base import StoreError

from .ledger import Ledger
from .network import Etcd, NodeStore
from .node import Node
from .watcher import Processes
from .scenario import Fault, Scenario


class Simulation:
    def __init__(self, scenario: Scenario, seed: int | None = None, trace: bool = False,
                 skew: tuple[float, int] | None = None):
        """`skew` = (window, order): every node's watches deliver up to `window` s
        later, by an amount drawn from `order` (simulator.races); None: no skew."""
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        self.skew = skew
        self.env = simpy.Environment()
        self.layout = Layout()
        self.etcd = Etcd(
            self.env, self.layout.prefix + "/hosts/",
            scenario.watcher.watch_latency,
        )
        self.operator = NodeStore(self.etcd, "operator")  # `trigger fire` outside any node
        self.ledger = Ledger(tracing=trace)
        self.draining = False
        self.fires_made = 0
        self.no_target_fires = 0
        self.last_fire_at: float | None = None
        self.first_fire_at: float | None = None
        self.events = 0
        self.quiet = False
        self._scheduled_left = len(scenario.faults) + (1 if scenario.fires else 0)
        self.wall_seconds = 0.0
        self.cpu_seconds = 0.0
        self.ended_at = 0.0
        self._event_counter = 0
        self.nodes: dict[str, Node] = {}
        member_ttl = scenario.discovery.member_ttl if scenario.discovery is not None else None
        processes = Processes()
        for index, (host, role) in enumerate(scenario.nodes):
            self.nodes[host] = Node(
                self.env, host, scenario.roles[role], index, seed=self.seed,
                store=self.etcd.connect(host), layout=self.layout, ledger=self.ledger,
                settings=scenario.watcher, until=scenario.until, fire=self.fire,
                processes=processes, member_ttl=member_ttl,
                waits={n: t.wait_timeout for n, t in scenario.triggers.items() if t.wait})
        if skew is not None:  # its own random stream: the nodes' draws stay exactly as unskewed
            window, order = skew
            rng = random.Random(f"{self.seed}/skew/{order}")
            for node in self.nodes.values():
                node.store.skew = rng.uniform(0.0, window)

    def trace(self, host: str, what: str) -> None:
        self.ledger.trace(self.env.now, host, what)

    # -- firing ----------------------------------------------------------------------

    def fire(self, name: str, lineage: Lineage, origin: str, node: Node | None) -> str | None:
        """`trigger fire NAME` from a run on `node` (or by an operator when node is None).

        The event id of the fire written, None if it was refused or failed."""
        trigger = self.scenario.triggers[name]
        self._event_counter += 1
        event_id = f"ev{self._event_counter:07d}"
        now = self.env.now
        store = node.store if node is not None else self.operator
        who = origin or "operator"
        hosts = trigger.hosts
        try:
            if self.scenario.discovery is not None and trigger.by_role:
                # `trigger fire --hosts role:NAME`: the live members, read at fire time
                resolved, empty = resolve_targets(store, self.layout, list(trigger.targets))
                for role in empty:
                    self.trace(who, f"fire {name!r}: role:{role} has no live member")
                if not resolved:
                    if node is not None:
                        node.stats.fires_no_target += 1
                    self.no_target_fires += 1
                    self.trace(who, f"fire {name!r} refused: no host to fire at, no live member")
                    return None
                hosts = tuple(resolved)
            fire(store, self.layout, name, list(hosts), lineage, origin,  # on the host's wall clock
                 trigger.ttl, now + store.wall_offset, event_id, max_concurrent=trigger.max_concurrent)
        except LoopRefused as refusal:
            if node is not None:
                node.stats.fires_refused += 1
            self.trace(who, f"fire {name!r} refused: {refusal}")
            return None
        except StoreError as exc:
            if node is not None:
                node.stats.fires_failed += 1
            self.trace(who, f"fire {name!r} failed: {exc}")
            return None
        if node is not None:
            node.stats.fires_sent += 1
        self.fires_made += 1
        self.last_fire_at = now
        if self.first_fire_at is None:
            self.first_fire_at = now
        self.ledger.reached[event_id] = tuple(hosts)
        for host in hosts:
            target = self.nodes[host]
            target.stats.fires_received += 1
            target.stats.last_trigger_activity = now
            self.ledger.fired[(host, event_id)] = now
        self.trace(who, f"fire {name!r} {event_id} hop {lineage.hop + 1} to {len(hosts)} host(s)")
        return event_id

    def _external_fires(self):
        for spec in self.scenario.fires:
            if spec.at > self.env.now:
                yield self.env.timeout(spec.at - self.env.now)
            node = self.nodes[spec.origin] if spec.origin else None
            self.fire(spec.trigger, Lineage(), spec.origin, node)
        self._scheduled_left -= 1

    # -- faults ----------------------------------------------------------------------

    def _fault(self, fault: Fault):
        try:
            yield from self._apply_fault(fault)
        finally:
            self._scheduled_left -= 1

    def _apply_fault(self, fault: Fault):
        env = self.env
        yield env.timeout(fault.at)
        end = float("inf") if fault.span is None else env.now + fault.span
        self.ledger.fault_windows.append((fault, env.now, end))
        nodes = [self.nodes[h] for h in fault.hosts]
        label = fault.hosts[0] if len(fault.hosts) == 1 else "etcd" if not fault.hosts else f"{len(fault.hosts)} hosts"
        self.trace(label, f"fault: {fault.describe()}")
        kind = fault.kind
        if kind == "cut_off":
            for node in nodes:
                node.store.cut_off()
        elif kind == "kill_watcher":
            for node in nodes:
                node.watcher.kill()
        elif kind == "restart_etcd":
            self.etcd.go_down()
        elif kind == "compact_etcd":
            self.etcd.compact()
            return
        elif kind == "slow_runs":
            for node in nodes:
                node.slow_factor = fault.factor
        elif kind == "kill_tsp":
            for node in nodes:
                for run_id in node.tsp.kill(fault.span or 0.0):
                    self.trace(node.host, f"task-spooler killed: queued {run_id} vanished")
            return  # the queue's own down_until ends the span
        elif kind == "kill_run":
            for node in nodes:
                node.kill_runs()
            return
        elif kind == "kill_runner":
            for node in nodes:
                node.kill_runners()
            return
        elif kind == "kill_job":
            for node in nodes:
                node.kill_job()
            return
        elif kind == "reboot":
            for node in nodes:
                node.go_down(fault.span)
        elif kind == "ambiguous_writes":
            for node in nodes:
                node.store.answers_lost = True
        elif kind == "latency":
            for node in nodes:
                node.store.delay = (fault.delay, node.rng)
        elif kind == "duplicate_watcher":
            for node in nodes:
                node.start_duplicate_watcher()
        elif kind == "clock_step":
            for node in nodes:
                node.store.wall_offset += fault.step
        elif kind == "black_hole":
            for node in nodes:
                node.store.black_hole(end)
        elif kind == "orphan_child":
            for node in nodes:
                node.orphans_until = max(node.orphans_until, end)
        if fault.span is None:
            return
        yield env.timeout(fault.span)
        self.trace(label, f"fault over: {kind}")
        if kind == "cut_off":
            for node in nodes:
                node.store.reconnect()
        elif kind == "kill_watcher":
            for node in nodes:
                node.watcher.start()
        elif kind == "restart_etcd":
            self.etcd.come_up()
        elif kind == "slow_runs":
            for node in nodes:
                node.slow_factor = 1.0
        elif kind == "reboot":
            for node in nodes:
                node.come_up()
        elif kind == "ambiguous_writes":
            for node in nodes:
                node.store.answers_lost = False
        elif kind == "latency":
            for node in nodes:
                node.store.delay = None
        elif kind == "duplicate_watcher":
            for node in nodes:
                node.stop_duplicate_watcher()
        elif kind == "clock_step":  # NTP steps it back
            for node in nodes:
                node.store.wall_offset -= fault.step

    # -- running -----------------------------------------------------------------------

    def run(self) -> Simulation:
        # Thousands of nodes keep millions of objects alive, and the default
        # thresholds make the collector rescan them all every few thousand
        # allocations: 12-15 % of the fleet scenario's time, measured.
        thresholds = gc.get_threshold()
        gc.set_threshold(50_000, 50, 100)
        try:
            return self._run()
        finally:
            gc.set_threshold(*thresholds)

    def _run(self) -> Simulation:
        env = self.env
        started, cpu_started = time.perf_counter(), time.process_time()
        for node in self.nodes.values():
            node.watcher.start()
            env.process(node.agent())
        if self.scenario.fires:
            env.process(self._external_fires())
        for fault in self.scenario.faults:
            env.process(self._fault(fault))
        step, peek = env.step, env.peek
        until = self.scenario.until
        events = 0
        while peek() < until:
            step()
            events += 1
        self.draining = True
        end = until + self.scenario.drain
        env.process(self._watch_for_quiet())
        while not self.quiet and peek() <= end:
            step()
            events += 1
        self.events = events
        self.ended_at = env.now
        self.still_busy = self._busy_at_end(end)
        self.wall_seconds = time.perf_counter() - started
        self.cpu_seconds = time.process_time() - cpu_started
        return self

    def _watch_for_quiet(self):
        """During the drain, stop once nothing is left that could lead to a run.

        Idle watchers re-read every `idle_check` forever; that alone must not
        keep the simulation going.
        """
        nodes = list(self.nodes.values())
        hint = 0
        while True:
            if self._scheduled_left == 0 and self.etcd.in_flight == 0:
                for i in range(len(nodes)):
                    node = nodes[(hint + i) % len(nodes)]
                    watcher = node.watcher
                    if node.tsp.depth or node.puppet_busy or watcher.alive and (
                        not watcher.connected or watcher.core.busy
                    ):
                        hint = (hint + i) % len(nodes)
                        break
                else:
                    self.quiet = True
                    return
            yield self.env.timeout(1.0)

    def _busy_at_end(self, end: float) -> bool:
        """Triggered activity still going when the drain window closed."""
        if self.quiet or self.env.peek() == float("inf"):
            return False
        if any(n.tsp.depth for n in self.nodes.values()):
            return True
        window = max(self.scenario.drain / 4, 1.0)
        return self.last_fire_at is not None and self.last_fire_at >= end - window

    # -- reading the outcome from the store ------------------------------------------------

    def remaining_entries(self) -> list[tuple[str, str, float, str]]:
        """Inbox entries still in the store: (host, event id, fired at, trigger)."""
        items, _ = self.etcd.store.get_prefix(self.layout.prefix + "/hosts/")
        left = []
        for kv in items:
            host = kv.key[len(self.layout.prefix) + 7:].split("/", 1)[0]
            kind, name = self.layout.classify(host, kv.key)
            if kind != "entry":
                continue
            try:
                entry = parse_entry(kv.value)
            except BadRecord:
                continue
            left.append((host, name, entry.fired_at, entry.trigger))
        return left

    def refusals(self) -> list[dict]:
        items, _ = self.etcd.store.get_prefix(self.layout.prefix + "/refused/")
        return [json.loads(kv.value) for kv in items]

    def explain_unserved(self, host: str) -> str | None:
        """The fault that makes serving `host` impossible at the end, if any."""
        node = self.nodes[host]
        for fault, start, end in self.ledger.fault_windows:
            if end < self.ended_at:
                continue
            if fault.kind == "restart_etcd":
                return f"etcd down since {start:g} s (restart_etcd)"
            if host not in fault.hosts:
                continue
            if fault.kind == "cut_off":
                return f"{host} cut off from etcd since {start:g} s"
            if fault.kind == "black_hole":
                return f"{host}'s etcd requests unanswered since {start:g} s"
            if fault.kind == "kill_watcher" and not node.watcher.alive:
                return f"watcher of {host} killed at {start:g} s and not restarted"
            if fault.kind == "kill_tsp" and not node.tsp.up:
                return f"task-spooler of {host} down since {start:g} s"
        if self.still_busy:
            return f"still being served when the drain window closed at {self.ended_at:g} s"
        return None
