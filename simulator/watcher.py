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

from trigger.core import Coalesce, EnqueueRun, MarkRunLost, Quarantine, WatcherCore
from trigger.effects import Note
from trigger.layout import Layout
from trigger.policy import WatchPolicy
from trigger.procedures import Registration, follow_inbox, keep_membership

from .driver import SimDriver


class SimWatcher:
    def __init__(self, env, host: str, layout: Layout, store, tsp, policy: WatchPolicy,
                 new_run_id: Callable[[], str], stats, trace: Callable[[str], None],
                 on_coalesce: Callable[[str, str], None],
                 membership: tuple[tuple[str, ...], int] | None = None):
        """`membership` is (roles, member ttl) when the scenario has discovery."""
        self.env, self.host, self.layout, self.store, self.tsp = env, host, layout, store, tsp
        self.policy, self.new_run_id, self.stats = policy, new_run_id, stats
        self.trace, self.on_coalesce, self.membership = trace, on_coalesce, membership
        self.core: WatcherCore | None = None
        self.alive = False
        self.incarnation = 0  # a restarted watcher is another process
        self._drivers: list[SimDriver] = []

    @property
    def connected(self) -> bool:
        """In a watch session: the inbox was read and its watch is open."""
        return bool(self._drivers) and self._drivers[0].watching

    def start(self) -> None:
        self.alive = True
        self.core = WatcherCore(self.host, self.layout, self.new_run_id)
        self.incarnation += 1
        if self.membership is not None:  # `trigger watch` registers before it follows the inbox
            roles, ttl = self.membership
            registration = Registration(self.layout, self.host, roles, ttl=ttl, process=self.process)
            member = SimDriver(self.env, self.store, self.tell, process_alive=self._alive)
            member.start(keep_membership(registration))
        inbox = SimDriver(self.env, self.store, self.tell, tsp=self.tsp, stats=self.stats)
        self._drivers = [inbox.start(follow_inbox(self.core, self.policy))]
        if self.membership is not None:
            self._drivers.append(member)

    @property
    def process(self) -> str:
        return f"{self.incarnation}@{self.host}"

    def _alive(self, process: str) -> bool:
        """A watcher process of this node is alive only if it is the current one."""
        return self.alive and process == self.process

    def kill(self) -> None:
        self.alive = False
        for driver in self._drivers:
            driver.kill()
        self._drivers = []
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
        elif isinstance(what, str):
            if note.level in ("warning", "error"):  # the daemon's "in sync" lines are noise here
                self.trace(f"watcher: {what}")
        else:
            self.trace(what.describe())
