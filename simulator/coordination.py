"""Members and slots on simulated time: `trigger.coordination`'s rules, without its threads.

`Membership` and `Slot` in trigger/coordination.py keep their leases alive
from threads and block on a queue. Here the same steps run on SimPy time,
through the node's etcd connection (so a cut-off node loses them):

* `SimMembership` calls the real `Membership.beat()` every `ttl / 3` (every
  second after a store error, as its loop does). It lives as long as the
  node's watcher: a killed watcher stops beating without revoking its lease
  (the process is gone), so the member drops out when the lease ends.
* `SimSlot.acquire()` is `Slot.acquire()` step for step: a lease kept alive
  every `ttl / 3`, the key `slots/<trigger>/<holder>` put under it, ranked
  with the real `coordination.ranked` (by create revision; the first `limit`
  hold a slot), and a wait for a change under the prefix (through a store
  watch) or for `ttl`, then a new look. `release()` revokes the lease, as
  `KeptLease.release` does; a crashed run's lease ends by itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trigger.coordination import MEMBER_TTL, Membership, key_part, ranked
from trigger.store.base import StoreError

if TYPE_CHECKING:
    from .node import Node


class SimMembership:
    """A watcher's registration: the real `Membership.beat` on a simulated timer."""

    def __init__(self, node: Node, ttl: int):
        self.node = node
        self.env = node.env
        self.membership = Membership(node.store, node.sim.layout, node.host, (node.role.name,),
                                     ttl=ttl, clock=lambda: self.env.now)
        self.alive = True
        self._beat()

    def _beat(self) -> None:
        if not self.alive:
            return
        membership = self.membership
        had_lease = membership.lease is not None
        membership.beat()
        if membership.lease is None and had_lease:
            self.node.sim.trace(self.node.host, "membership: etcd unreachable; registering anew")
        wait = membership.ttl / 3 if membership.lease else 1.0
        self.env.timeout(wait).callbacks.append(lambda _e: self._beat())

    def crash(self) -> None:
        """The watcher process died: no more beats, and no revoke."""
        self.alive = False


class SimSlot:
    """One of `limit` slots of a trigger, held by one run while Puppet runs."""

    def __init__(self, node: Node, trigger: str, limit: int, holder: str, ttl: int = MEMBER_TTL):
        self.node, self.env, self.store = node, node.env, node.store
        self.trigger, self.limit, self.ttl = trigger, limit, ttl
        self.prefix = node.sim.layout.slots_prefix(key_part(trigger))
        self.key = self.prefix + holder
        self.lease: int | None = None
        self._keeping = False
        self._generation = 0  # which lease the refresh chain keeps

    def _keep(self, generation: int) -> None:
        """KeptLease's thread: refresh every ttl / 3; errors are ignored (the key may go)."""
        if not self._keeping or generation != self._generation:
            return
        try:
            self.store.lease_refresh(self.lease)
        except StoreError:
            pass
        self.env.timeout(self.ttl / 3).callbacks.append(lambda _e: self._keep(generation))

    def _join(self) -> None:
        """Queue up, as `Slot.acquire` does: a fresh lease kept alive, the key on it."""
        self.release()
        self.lease = self.store.lease_grant(self.ttl)
        self._generation += 1
        self._keeping = True
        generation = self._generation
        self.env.timeout(self.ttl / 3).callbacks.append(lambda _e: self._keep(generation))
        self.store.put(self.key, b"", self.lease)

    def acquire(self):
        """Wait for a slot (a SimPy generator); returns the seconds waited.

        A StoreError propagates, as it does out of `Slot.acquire`.
        """
        env, store = self.env, self.store
        start = env.now
        self._join()
        changed: list = []
        wake = [None]

        def on_change(item) -> None:
            changed.append(item)
            if wake[0] is not None and not wake[0].triggered:
                wake[0].succeed()

        watch = store.watch_prefix(self.prefix, 0, on_change)
        try:
            while True:
                keys = [kv.key for kv in ranked(store, self.prefix)]
                if self.key not in keys:  # our lease ended while we waited: queue up anew
                    self._join()
                    continue
                if keys.index(self.key) < self.limit:
                    return env.now - start
                if not changed:
                    wake[0] = env.event()
                    yield wake[0] | env.timeout(self.ttl)
                    wake[0] = None
                if not changed:
                    continue  # `changed.get(timeout=ttl)` ran out: look again
                item = changed.pop(0)
                if isinstance(item, StoreError):
                    watch = store.watch_prefix(self.prefix, 0, on_change)
        finally:
            watch.cancel()

    def release(self) -> None:
        """`KeptLease.release`: stop refreshing, revoke; if etcd is away it ends by itself."""
        self.stop()
        if self.lease is not None:
            try:
                self.store.lease_revoke(self.lease)
            except StoreError:
                pass
            self.lease = None

    def stop(self) -> None:
        """The process died: no more refreshes; the lease ends within its ttl."""
        self._keeping = False
