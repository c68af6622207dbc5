"""etcd on simulated time: one shared MemoryStore, seen by each node through its own connection.

`Etcd` owns the real `trigger.store.memory.MemoryStore` (etcd's semantics:
revisions, watch from a revision, compaction, leases on the simulated
clock). Each node talks to it through a `NodeStore`, which is what a node's
watcher, its `trigger run` and its `trigger fire` see: the same `Store`
interface, but it fails with `UnavailableError` while the node is cut off or
etcd is restarting, and its watches deliver after a small network latency
instead of synchronously inside the write.

A black-holed node (`black_hole`) is not refused: its requests and watch
events wait, unanswered, until the hole closes, and the procedures' calls
give up when their own time is out (`Call.within`, else the client's
`STORE_TIMEOUT` for each of `ENDPOINTS` endpoints in turn). An open watch
notices the silence by gRPC's keepalive (`KEEPALIVE` s) and dies with an
error; a watch asked for in the hole dies when its request times out.

Watches are multiplexed, as an etcd client does over one gRPC stream: the
store holds a single watch on the hosts prefix and `Etcd` routes each change
to the node watches of its host. MemoryStore calls every watch at every
write, so 10,000 separate watches would cost 10,000 calls per write. A node
watch still starts through the store's own `watch_prefix` (which replays the
backlog from its start revision or fails with `CompactedError`), then moves
to the router; both happen at one simulated instant, so nothing slips past.
"""

from __future__ import annotations

from collections.abc import Callable

from trigger.policy import STORE_TIMEOUT
from trigger.store.base import CompactedError, StoreError, UnavailableError
from trigger.store.memory import MemoryStore

ENDPOINTS = 3  # a fleet's etcd cluster: a call no endpoint answers takes this many timeouts
NO_ANSWER = STORE_TIMEOUT * ENDPOINTS  # how long a call without its own bound waits for nothing
KEEPALIVE = 10.0 + 5.0  # trigger.store.etcd's grpc keepalive: a ping after 10 s, 5 s for its answer


class NodeWatch:
    """A node's watch on its host prefix; dies once, with an error, on a fault."""

    __slots__ = ("_batch", "_batch_at", "alive", "callback", "conn", "host")

    def __init__(self, conn: NodeStore, host: str, callback: Callable):
        self.conn = conn
        self.host = host
        self.callback = callback
        self.alive = True
        self._batch: list | None = None
        self._batch_at = -1.0

    def send(self, changes: list) -> None:
        """Deliver changes after the network latency, in order; one delivery per instant."""
        env = self.conn.etcd.env
        latency = self.conn.etcd.latency + self.conn.skew + self.conn.held()
        if latency == float("inf"):
            return  # a black hole that never closes: nothing arrives
        at = env.now + latency
        if self._batch is not None and self._batch_at == at:
            self._batch.extend(changes)
            return
        batch = list(changes)
        self._batch, self._batch_at = batch, at
        self.conn.etcd.in_flight += 1
        env.timeout(latency).callbacks.append(lambda _e: self._deliver(batch))

    def _deliver(self, batch: list) -> None:
        self.conn.etcd.in_flight -= 1
        if self._batch is batch:
            self._batch = None
        if self.alive:
            self.callback(batch)

    def die(self, error: StoreError) -> None:
        """The connection broke: drop what is in flight, report the error once."""
        if not self.alive:
            return
        self.alive = False
        self.conn.etcd.unroute(self)
        self.conn.watches.pop(self, None)
        env = self.conn.etcd.env
        env.timeout(self.conn.etcd.latency).callbacks.append(lambda _e: self.callback(error))

    def cancel(self) -> None:
        if self.alive:
            self.alive = False
            self.conn.etcd.unroute(self)
            self.conn.watches.pop(self, None)


class PrefixWatch:
    """A watch on any other prefix (slots, members): the store's own watch, one per request.

    Few of these live at once (one per run waiting for or holding a slot),
    so they need no router. Like a node watch, it delivers after the
    network latency and dies once, with an error, on a fault.
    """

    __slots__ = ("_inner", "alive", "callback", "conn")

    def __init__(self, conn: NodeStore, prefix: str, start_revision: int, callback: Callable):
        self.conn = conn
        self.callback = callback
        self.alive = True
        self._inner = None
        # The store calls back at once with any backlog (or CompactedError):
        # that too travels the network.
        self._inner = conn.etcd.store.watch_prefix(prefix, start_revision, self._relay)

    def _relay(self, payload) -> None:
        if isinstance(payload, StoreError):
            self.die(payload)
            return
        etcd = self.conn.etcd
        latency = etcd.latency + self.conn.skew + self.conn.held()
        if latency == float("inf"):
            return  # a black hole that never closes: nothing arrives
        etcd.in_flight += 1
        batch = list(payload)
        etcd.env.timeout(latency).callbacks.append(lambda _e: self._deliver(batch))

    def _deliver(self, batch: list) -> None:
        self.conn.etcd.in_flight -= 1
        if self.alive:
            self.callback(batch)

    def die(self, error: StoreError) -> None:
        if not self.alive:
            return
        self.cancel()
        self.conn.etcd.env.timeout(self.conn.etcd.latency).callbacks.append(
            lambda _e: self.callback(error))

    def cancel(self) -> None:
        if self.alive:
            self.alive = False
            if self._inner is not None:
                self._inner.cancel()
            self.conn.watches.pop(self, None)


class Etcd:
    """The etcd cluster: the shared store, whether it is up, and the watch router."""

    def __init__(self, env, hosts_prefix: str, latency: float):
        self.env = env
        self.store = MemoryStore(clock=lambda: env.now)
        self.latency = latency
        self.up = True
        self.in_flight = 0  # watch deliveries and watch requests on the wire
        self.connections: dict[str, NodeStore] = {}
        self._routes: dict[str, list[NodeWatch]] = {}
        self._hosts_prefix = hosts_prefix
        self._cut = len(hosts_prefix)
        self.store.watch_prefix(hosts_prefix, 0, self._route)

    def connect(self, host: str) -> NodeStore:
        conn = NodeStore(self, host)
        self.connections[host] = conn
        return conn

    # -- routing -----------------------------------------------------------------

    def _route(self, changes: list) -> None:
        cut = self._cut
        routes = self._routes
        if len(changes) == 1:
            key = changes[0].key
            watches = routes.get(key[cut:key.find("/", cut)])
            if watches:
                for watch in watches:
                    watch.send(changes)
            return
        by_host: dict[str, list] = {}
        for change in changes:
            key = change.key
            host = key[cut:key.find("/", cut)]
            if host in routes:
                by_host.setdefault(host, []).append(change)
        for host, mine in by_host.items():
            for watch in routes[host]:
                watch.send(mine)

    def route(self, watch: NodeWatch) -> None:
        self._routes.setdefault(watch.host, []).append(watch)

    def unroute(self, watch: NodeWatch) -> None:
        watches = self._routes.get(watch.host)
        if watches and watch in watches:
            watches.remove(watch)
            if not watches:
                del self._routes[watch.host]

    # -- faults ------------------------------------------------------------------

    def go_down(self) -> None:
        """etcd stops (a restart begins): every watch dies, every call fails; data is kept."""
        self.up = False
        for host in sorted(self.connections):
            self.connections[host].kill_watches(UnavailableError("etcd restarting"))

    def come_up(self) -> None:
        self.up = True

    def compact(self) -> int:
        """Compact all history up to the current revision; returns it."""
        revision = self.store.revision
        try:
            self.store.compact(revision)
        except CompactedError:
            pass  # already compacted there
        return revision


class NodeStore:
    """One node's connection to etcd: the `Store` interface, failing while cut off."""

    __slots__ = ("etcd", "host", "cut", "answers_lost", "delay", "skew", "wall_offset", "silent_until",
                 "watches", "_store")

    def __init__(self, etcd: Etcd, host: str):
        self.etcd = etcd
        self.host = host
        # Extra watch delay of this node (simulator.races): 0 but when the
        # simulation is re-run to break near-ties between nodes the other way.
        self.skew = 0.0
        self.cut = False
        self.answers_lost = False  # ambiguous_writes: writes are applied, their answers lost
        self.delay = None  # latency: (Duration, rng) each call of a procedure takes
        # The host's wall clock minus true time (clock_step). Kept here because
        # this is what the host's drivers hold; etcd's own clock is unmoved.
        self.wall_offset = 0.0
        self.silent_until = -1.0  # black_hole: no answer, and no watch event, before this time
        self.watches: dict[NodeWatch | PrefixWatch, None] = {}  # insertion order: deterministic
        self._store = etcd.store

    def _check(self) -> None:
        if self.cut:
            raise UnavailableError(f"{self.host} is cut off from etcd")
        if not self.etcd.up:
            raise UnavailableError("etcd is restarting")
        if self.silent_until > self.etcd.env.now:
            # Only a call made outside a procedure gets here in a black hole (`trigger
            # fire` at a Puppet run's end, which waited already): procedures' calls
            # wait for their answer in the driver (`call_delay`).
            raise UnavailableError(f"{self.host}: no answer from etcd within {NO_ANSWER:g}s")

    def held(self) -> float:
        """Seconds until what etcd sends this node arrives (0 unless black-holed)."""
        return max(self.silent_until - self.etcd.env.now, 0.0)

    def _answer(self, result):
        """A write's answer: lost on the way back while `answers_lost`."""
        if self.answers_lost:
            raise UnavailableError(f"{self.host}: the answer was lost (the write was applied)")
        return result

    def call_delay(self) -> float:
        """How long the next call of a procedure takes before its answer (the
        latency fault; a black hole: until it closes, maybe never)."""
        delay = 0.0
        if self.delay is not None:
            duration, rng = self.delay
            delay = duration.sample(rng)
        return max(delay, self.held())

    def get(self, key):
        self._check()
        return self._store.get(key)

    def get_prefix(self, prefix):
        self._check()
        return self._store.get_prefix(prefix)

    def put(self, key, value, lease=0):
        self._check()
        return self._answer(self._store.put(key, value, lease))

    def delete(self, key):
        self._check()
        return self._answer(self._store.delete(key))

    def txn(self, ops, expect_missing=(), expect_revisions=()):
        self._check()
        return self._answer(self._store.txn(ops, expect_missing, expect_revisions))

    def lease_grant(self, ttl):
        self._check()
        return self._answer(self._store.lease_grant(ttl))

    def lease_refresh(self, lease):
        self._check()
        return self._answer(self._store.lease_refresh(lease))

    def lease_revoke(self, lease):
        self._check()
        return self._answer(self._store.lease_revoke(lease))

    def compact(self, revision):
        self._check()
        return self._store.compact(revision)

    def close(self):
        self.kill_watches(UnavailableError("connection closed"))

    def watch_prefix(self, prefix: str, start_revision: int, callback) -> NodeWatch:
        """Ask for a watch; the server creates it one latency later.

        Changes made in between are in its backlog (it starts at
        `start_revision`); a compaction in between fails it with
        CompactedError, as a real watch request would.
        """
        if self.cut or not self.etcd.up:
            self._check()  # refused at once; a black-holed request only waits
        host = prefix[self.etcd._cut:-1]
        if not prefix.startswith(self.etcd._hosts_prefix) or "/" in host or not host:
            # Not a whole host prefix (slots, members, a host's run lock): few
            # of these live at once, the store's own watch will do.
            other = PrefixWatch(self, prefix, start_revision, callback)
            if other.alive:
                self.watches[other] = None
            return other
        watch = NodeWatch(self, host, callback)
        self.watches[watch] = None
        self._request(watch, prefix, start_revision, self.etcd.latency)
        return watch

    def _request(self, watch: NodeWatch, prefix: str, start_revision: int, delay: float) -> None:
        self.etcd.in_flight += 1
        self.etcd.env.timeout(delay).callbacks.append(
            lambda _e: self._create(watch, prefix, start_revision)
        )

    def _create(self, watch: NodeWatch, prefix: str, start_revision: int) -> None:
        self.etcd.in_flight -= 1
        if not watch.alive:
            return
        held = self.held()
        if held and held <= NO_ANSWER:  # the request waits in the black hole, then is answered
            self._request(watch, prefix, start_revision, held)
            return
        if held:  # ... or times out first
            self._silenced([watch], NO_ANSWER, "the watch request")
            return
        try:
            self._check()
        except StoreError as exc:
            watch.die(exc)
            return
        replies: list = []
        probe = self._store.watch_prefix(prefix, start_revision, replies.append)
        probe.cancel()
        if replies and isinstance(replies[0], StoreError):
            watch.die(replies[0])
            return
        self.etcd.route(watch)
        if replies:
            watch.send(replies[0])

    def kill_watches(self, error: StoreError) -> None:
        for watch in list(self.watches):
            watch.die(error)

    # -- faults ----------------------------------------------------------------------

    def black_hole(self, until: float) -> None:
        """Nothing etcd sends arrives before `until`; open watches notice by their keepalive."""
        self.silent_until = max(self.silent_until, until)
        self._silenced(list(self.watches), KEEPALIVE, "keepalive")

    def _silenced(self, watches: list, after: float, what: str) -> None:
        """The watches die `after` s from now if the hole is still open then."""
        def check(_event) -> None:
            if self.held():
                for watch in watches:
                    watch.die(UnavailableError(f"{self.host}: {what} got no answer within {after:g}s"))
        self.etcd.env.timeout(after).callbacks.append(check)

    def cut_off(self) -> None:
        self.cut = True
        self.kill_watches(UnavailableError(f"{self.host} is cut off from etcd"))

    def reconnect(self) -> None:
        self.cut = False
