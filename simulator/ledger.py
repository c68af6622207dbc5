"""What a simulation records as it goes: one object that every component writes into.

The report, the timeline and the tests read it; nothing in it decides
anything. Components get it (or one of its methods) passed in, so none of
them reaches through the `Simulation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Ledger:
    tracing: bool = False
    trace_lines: list = field(default_factory=list)  # (time, host, what)
    versions: dict = field(default_factory=dict)  # resource name -> times changed on any node
    run_spans: list = field(default_factory=list)  # (node index, start, end, triggered)
    # (host, scheduled/triggered/skipped, start, end, triggers notified): what `--lab` replays
    puppet_runs: list = field(default_factory=list)
    coalesced: list = field(default_factory=list)  # (time, host, event id, run id)
    fired: dict = field(default_factory=dict)  # (host, event id) -> written at
    fired_by_run: dict = field(default_factory=dict)  # event id -> index of the node whose run made it
    served_by: dict = field(default_factory=dict)  # (host, event id) -> (run id, started at)
    fault_windows: list = field(default_factory=list)  # (fault, start, end)
    # trigger -> [(start, end, host, run id)] of the Puppet runs of runs that held its slot
    limited_spans: dict = field(default_factory=dict)
    limits: dict = field(default_factory=dict)  # trigger -> the smallest limit its runs carried
    slot_waits: dict = field(default_factory=dict)  # trigger -> [seconds waited]
    slot_wait_spans: list = field(default_factory=list)  # (host, from, to) of each wait for a slot
    slot_asks: list = field(default_factory=list)  # (trigger, host, asked at, got at) of every slot taken
    # (host, event id) -> start times of the runs that served it and ran to their end
    completed: dict = field(default_factory=dict)
    commands: dict = field(default_factory=dict)  # host -> [(start, end, run id)] of triggered commands
    reached: dict = field(default_factory=dict)  # event id -> the hosts the fire was written for
    waiters: dict = field(default_factory=dict)  # event id -> SimPy events of `wait => true` runs
    # (host, run id) -> when it started, in true time: its record's started_at is the
    # host's wall clock, which a clock_step moves
    started: dict = field(default_factory=dict)

    def trace(self, now: float, host: str, what: str) -> None:
        if self.tracing:
            self.trace_lines.append((round(now, 3), host, what))

    def served(self, host: str, record, now: float) -> None:
        self.started[(host, record.run_id)] = now
        for event_id in record.served:
            self.served_by[(host, event_id)] = (record.run_id, now)

    def finished(self, host: str, record, now: float) -> None:
        started = self.started.get((host, record.run_id), record.started_at)
        for event_id in record.served:
            self.completed.setdefault((host, event_id), []).append(started)
            for waiter in self.waiters.pop(event_id, ()):
                waiter.succeed()

    def when_served(self, env, event_id: str):
        """A SimPy event: the next run serving the fire ended (a `--wait` looks again then)."""
        event = env.event()
        self.waiters.setdefault(event_id, []).append(event)
        return event

    def limited_run(self, trigger: str, limit: int, host: str, run_id: str,
                    start: float, end: float) -> None:
        self.limited_spans.setdefault(trigger, []).append((start, end, host, run_id))
        self.limits[trigger] = min(self.limits.get(trigger, limit), limit)

    def slot_waited(self, trigger: str, waited: float, host: str, now: float) -> None:
        self.slot_waits.setdefault(trigger, []).append(waited)
        self.slot_asks.append((trigger, host, now - waited, now))
        if waited > 0:
            self.slot_wait_spans.append((host, now - waited, now))
