"""A node's simulated `trigger watch`: the daemon's own procedures on a `SimDriver`.

`trigger.procedures.follow_inbox` (and `keep_membership`, when the
scenario has discovery) run here exactly as in the daemon; this only
starts them with the node's etcd connection and fake task-spooler, turns
what they tell into the node's counters and trace, and kills them as a
`kill -9` would: at once, with no revoke. A restart builds a fresh core that
learns everything again from a `Snapshot`.
"""

from __future__ import annotations

from typing import Callable

from trigger.core import Coalesce, EnqueueRun, MarkRunLost, Quarantine, RunBegan, RunEnded, WatcherCore
from trigger.effects import Note
from trigger.layout import Layout
from trigger.policy import WatchPolicy
from trigger.procedures import Registration, WatchLost, follow_inbox, serve_host

from .driver import SimDriver


class SimWatcher:
    def __init__(self, env, host: str, layout: Layout, store, tsp, policy: WatchPolicy,
                 new_run_id: Callable[[], str], stats, trace: Callable[[str], None],
                 on_coalesce: Callable[[str, str], None], processes: "Processes",
                 membership: tuple[tuple[str, ...], int] | None = None):
        """`membership` is (roles, member ttl) when the scenario has discovery:
        then the watcher claims its host first, as `trigger watch` does."""
        self.env, self.host, self.layout, self.store, self.tsp = env, host, layout, store, tsp
        self.policy, self.new_run_id, self.stats = policy, new_run_id, stats
        self.trace, self.on_coalesce, self.membership = trace, on_coalesce, membership
        self.processes = processes
        self.core: WatcherCore | None = None
        self.alive = False
        self.process = ""
        self._driver: SimDriver | None = None

    @property
    def connected(self) -> bool:
        """In a watch session: the inbox was read and its watch is open."""
        return self._driver is not None and self._driver.watching

    def start(self) -> None:
        self.alive = True
        self.process = self.processes.start(self.host)
        self.core = WatcherCore(self.host, self.layout, self.new_run_id)
        driver = self._driver = SimDriver(self.env, self.store, self.tell, tsp=self.tsp, stats=self.stats,
                                          process_alive=self._alive)
        driver.on_failure = self._failed
        if self.membership is None:
            driver.start(follow_inbox(self.core, self.policy))
            return
        roles, ttl = self.membership
        registration = Registration(self.layout, self.host, roles, ttl=ttl, process=self.process)
        driver.start(serve_host(registration, self.core, self.policy))

    def _alive(self, process: str) -> bool | None:
        """What this machine can tell: only of its own processes."""
        return self.processes.alive(process) if process.endswith("@" + self.host) else None

    def _failed(self, exc: Exception) -> None:
        """The watcher ended on an error (another took the host over): exit 1."""
        self.trace(f"watcher: {exc}; this watcher stopped")
        self.kill()

    def kill(self) -> None:
        self.alive = False
        self.processes.end(self.process)
        if self._driver is not None:
            self._driver.kill()
            self._driver = None
        self.core = None


    def tell(self, note: Note) -> None:
        what, stats = note.what, self.stats
        if isinstance(what, EnqueueRun):
            self.trace(f"queue {what.run_id} for {len(what.waiting)} fire(s)")
        elif isinstance(what, Coalesce):
            stats.fires_coalesced += 1
            self.on_coalesce(what.event_id, what.run_id)
            self.trace(f"coalesce {what.event_id} into {what.run_id}")
        elif isinstance(what, MarkRunLost):
            stats.runs_lost += 1
            self.trace(f"mark {what.run_id} lost: {what.record.reason}")
        elif isinstance(what, Quarantine):
            stats.quarantined += 1
            self.trace(f"quarantine {what.key}: {what.reason}")
        elif isinstance(what, (RunBegan, RunEnded)):
            pass  # the runs trace themselves
        elif isinstance(what, str):
            if note.level in ("warning", "error"):  # the daemon's "in sync" lines are noise here
                self.trace(f"watcher: {what}")
        else:
            self.trace(f"watcher: {what.describe()}" if isinstance(what, WatchLost) else what.describe())


class Processes:
    """The watcher processes alive on the simulated machines, by PID@host."""

    def __init__(self):
        self._alive: set[str] = set()
        self._next = 0

    def start(self, host: str) -> str:
        self._next += 1
        process = f"{self._next}@{host}"
        self._alive.add(process)
        return process

    def end(self, process: str) -> None:
        self._alive.discard(process)

    def alive(self, process: str) -> bool:
        return process in self._alive
