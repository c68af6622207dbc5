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
import os
from typing import NamedTuple
from urllib.parse import quote

from .layout import Layout
from .records import BadRecord, check_host
from .store.base import PutOp, Store

ROLE_PREFIX = "role:"


def key_part(name: str) -> str:
    """A trigger or election name as one key segment (names may hold spaces)."""
    return quote(name, safe="")


# -- members and roles -------------------------------------------------------------


class Member(NamedTuple):
    host: str
    roles: tuple[str, ...]
    since: float
    elections: tuple[str, ...] = ()
    process: str = ""  # "PID@BOOT-ID" of the watcher: a restarted one tells its dead self

    def encode(self) -> bytes:
        return json.dumps({"host": self.host, "roles": list(self.roles), "since": self.since,
                           "elections": list(self.elections), "process": self.process},
                          sort_keys=True).encode()


def parse_member(value: bytes) -> Member:
    try:
        data = json.loads(value)
        return Member(check_host(data["host"]), tuple(check_host(r) for r in data["roles"]),
                      float(data["since"]), tuple(str(e) for e in data.get("elections", ())),
                      str(data.get("process", ""))[:200])
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRecord(f"bad member record: {exc}") from None


def register(store: Store, layout: Layout, member: Member, lease: int, claim: bool = False) -> bool:
    """Announce a live watcher, its roles and the elections it stands in.

    With `claim`, only if no watcher holds the host's member key: False then.
    """
    key = layout.member_key(member.host)
    ops = [PutOp(key, member.encode(), lease)]
    ops += [PutOp(layout.candidate_key(key_part(e), member.host), member.host.encode(), lease)
            for e in member.elections]
    return store.txn(ops, expect_missing=(key,) if claim else ()) is not None


def live_members(store: Store, layout: Layout) -> list[Member]:
    items, _ = store.get_prefix(layout.members_prefix())
    members = []
    for kv in items:
        member = member_at(layout, kv.key, kv.value)
        if member is not None:
            members.append(member)
    return members


def unwatched_hosts(store: Store, layout: Layout, hosts) -> list[str]:
    """The hosts that have no live watcher now (no member key): nothing will serve them."""
    alive = {m.host for m in live_members(store, layout)}
    return [h for h in hosts if h not in alive]


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
            import logging  # here: `trigger fire` starts 3 ms sooner without it

            logging.getLogger("trigger.coordination").warning("ignoring %s/roles/%s: %s", path, name, exc)
    return tuple(roles), tuple(names("elections"))
