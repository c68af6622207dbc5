"""Cross-host coordination on etcd leases: members and roles, slots, elections.

All three are keys written under a lease that its holder keeps alive; a
holder that crashes or loses etcd for longer than the lease's TTL loses its
key, and with it its membership, its slot or its leadership.

Slots and elections rank their keys by create revision: the first `limit`
keys under a slot prefix hold a slot (etcd's semaphore recipe), the first
key under an election prefix is the leader. A waiter watches the prefix
and looks again when something there changes.
"""

from __future__ import annotations

import json
import logging
import os
import queue as queue_module
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote

from .layout import Layout
from .records import BadRecord, check_host
from .store.base import PutOp, Store, StoreError

MEMBER_TTL = 10

log = logging.getLogger("trigger.coordination")
ROLE_PREFIX = "role:"


def key_part(name: str) -> str:
    """A trigger or election name as one key segment (names may hold spaces)."""
    return quote(name, safe="")


# -- leases kept alive -----------------------------------------------------------


class KeptLease:
    """A lease refreshed from a background thread until `release()`."""

    def __init__(self, store: Store, ttl: int):
        self.store, self.ttl = store, ttl
        self.id = store.lease_grant(ttl)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, daemon=True, name="lease")
        self._thread.start()

    def _keep(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.store.lease_refresh(self.id)
            except StoreError:
                pass  # keys go when the lease ends; holders re-check their rank

    def release(self) -> None:
        self._stop.set()
        try:
            self.store.lease_revoke(self.id)
        except StoreError:
            pass  # it ends by itself within its TTL


# -- members and roles -------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    host: str
    roles: tuple[str, ...]
    since: float
    elections: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return json.dumps({"host": self.host, "roles": list(self.roles), "since": self.since,
                           "elections": list(self.elections)}, sort_keys=True).encode()


def parse_member(value: bytes) -> Member:
    try:
        data = json.loads(value)
        return Member(check_host(data["host"]), tuple(check_host(r) for r in data["roles"]),
                      float(data["since"]), tuple(str(e) for e in data.get("elections", ())))
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRecord(f"bad member record: {exc}") from None


def register(store: Store, layout: Layout, member: Member, lease: int) -> None:
    """Announce a live watcher, its roles and the elections it stands in."""
    ops = [PutOp(layout.member_key(member.host), member.encode(), lease)]
    ops += [PutOp(layout.candidate_key(key_part(e), member.host), member.host.encode(), lease)
            for e in member.elections]
    store.txn(ops)


def live_members(store: Store, layout: Layout) -> list[Member]:
    items, _ = store.get_prefix(layout.members_prefix())
    members = []
    for kv in items:
        member = member_at(layout, kv.key, kv.value)
        if member is not None:
            members.append(member)
    return members


def member_at(layout: Layout, key: str, value: bytes) -> Member | None:
    """The member record at `key`, if it names the host its key does: etcd's
    permissions are per key, so only the key says who wrote it."""
    try:
        member = parse_member(value)
    except BadRecord:
        return None
    return member if key == layout.member_key(member.host) else None


def split_targets(text: str) -> list[str]:
    """`--hosts a,b,role:lb`: host names and role:NAME entries, checked."""
    if not text.strip():
        raise BadRecord("--hosts is empty")
    targets = []
    for item in (t.strip() for t in text.split(",")):
        if item.startswith(ROLE_PREFIX):
            check_host(item[len(ROLE_PREFIX):])
        else:
            check_host(item)
        targets.append(item)
    return list(dict.fromkeys(targets))


def resolve_targets(store: Store, layout: Layout, targets: list[str]) -> tuple[list[str], list[str]]:
    """Hosts for the targets, and the roles that have no live member."""
    roles = [t[len(ROLE_PREFIX):] for t in targets if t.startswith(ROLE_PREFIX)]
    hosts = [t for t in targets if not t.startswith(ROLE_PREFIX)]
    if not roles:
        return hosts, []
    members = live_members(store, layout)
    empty = []
    for role in roles:
        found = sorted(m.host for m in members if role in m.roles)
        if not found:
            empty.append(role)
        hosts += found
    return list(dict.fromkeys(hosts)), empty


# -- ranked keys: slots and elections ---------------------------------------------------


def ranked(store: Store, prefix: str) -> list:
    items, _ = store.get_prefix(prefix)
    return sorted(items, key=lambda kv: kv.create_revision)


def leader(store: Store, layout: Layout, election: str) -> str | None:
    """The current holder of an election, or None."""
    holders = ranked(store, layout.election_prefix(key_part(election)))
    return holders[0].value.decode() if holders else None


class Slot:
    """One of `limit` slots of a trigger, held while a run executes."""

    def __init__(self, store: Store, layout: Layout, trigger: str, limit: int, holder: str,
                 ttl: int = MEMBER_TTL):
        self.store, self.limit, self.ttl = store, limit, ttl
        self.prefix = layout.slots_prefix(key_part(trigger))
        self.key = self.prefix + holder
        self.lease: KeptLease | None = None

    def acquire(self, timeout: float | None = None) -> float:
        """Wait for a slot; returns the seconds waited. Raises TimeoutError."""
        start = time.monotonic()
        self.lease = KeptLease(self.store, self.ttl)
        self.store.put(self.key, b"", self.lease.id)
        changed: queue_module.Queue = queue_module.Queue()
        watch = self.store.watch_prefix(self.prefix, 0, changed.put)
        try:
            while True:
                keys = [kv.key for kv in ranked(self.store, self.prefix)]
                if self.key not in keys:  # our lease ended while we waited: queue up anew
                    self.lease.release()
                    self.lease = KeptLease(self.store, self.ttl)
                    self.store.put(self.key, b"", self.lease.id)
                    continue
                if keys.index(self.key) < self.limit:
                    return time.monotonic() - start
                left = None if timeout is None else timeout - (time.monotonic() - start)
                if left is not None and left <= 0:
                    self.release()
                    raise TimeoutError(f"no slot of {self.limit} free within {timeout}s")
                try:
                    item = changed.get(timeout=min(left or self.ttl, self.ttl))
                except queue_module.Empty:
                    continue
                if isinstance(item, StoreError):
                    watch = self.store.watch_prefix(self.prefix, 0, changed.put)
        finally:
            watch.cancel()

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None


# -- a watcher's registration ---------------------------------------------------------


def read_config_dir(path: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Roles and elections declared as file names in DIR/roles/ and DIR/elections/.

    This is how Puppet code takes part (`trigger::role`, `trigger::election`
    drop a file there) without restarting the watcher.
    """
    def names(sub: str) -> list[str]:
        try:
            return sorted(n for n in os.listdir(os.path.join(path, sub)) if not n.startswith("."))
        except OSError:
            return []

    if not path:
        return (), ()
    roles = []
    for name in names("roles"):
        try:
            roles.append(check_host(name))
        except BadRecord as exc:  # one stray file must not drop the host from every role
            log.warning("ignoring %s/roles/%s: %s", path, name, exc)
    return tuple(roles), tuple(names("elections"))


class Membership:
    """Keeps a watcher's member key, its roles and its candidacies alive.

    Every `ttl / 3` seconds it refreshes its lease and re-reads what it
    stands for; after any store error it takes a new lease and registers
    again (a candidate whose old lease ran out meanwhile queues up anew).
    """

    def __init__(self, store: Store, layout: Layout, host: str, roles: tuple[str, ...] = (),
                 elections: tuple[str, ...] = (), config_dir: str | None = None,
                 ttl: int = MEMBER_TTL, clock=time.time):
        self.store, self.layout, self.host = store, layout, host
        self.roles, self.elections, self.config_dir = roles, elections, config_dir
        self.ttl, self.clock = ttl, clock
        self.lease: int | None = None
        self._registered: Member | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="membership")

    def start(self) -> "Membership":
        self._thread.start()
        return self

    def wanted(self) -> Member:
        roles, elections = read_config_dir(self.config_dir)
        since = self._registered.since if self._registered else self.clock()
        return Member(self.host, tuple(sorted({*self.roles, *roles})),
                      since, tuple(sorted({*self.elections, *elections})))

    def beat(self) -> None:
        """One refresh: register anew if the lease is gone or the roles changed."""
        try:
            wanted = self.wanted()
            if self.lease is None:
                self.lease = self.store.lease_grant(self.ttl)
                self._registered = None
            else:
                self.store.lease_refresh(self.lease)
            if wanted != self._registered:
                self._withdraw_dropped(wanted)
                register(self.store, self.layout, wanted, self.lease)
                self._registered = wanted
        except StoreError:
            self.lease = None

    def _withdraw_dropped(self, wanted: Member) -> None:
        if self._registered is None:
            return
        for election in set(self._registered.elections) - set(wanted.elections):
            self.store.delete(self.layout.candidate_key(key_part(election), self.host))

    def _loop(self) -> None:
        while True:
            self.beat()
            if self._stop.wait(self.ttl / 3 if self.lease else 1.0):
                return

    def stop(self) -> None:
        self._stop.set()
        if self.lease is not None:
            try:
                self.store.lease_revoke(self.lease)
            except StoreError:
                pass
