"""Firing a trigger: one inbox entry per target host, with loop protection.

The hop count travels with a triggered run in the environment of `trigger
run` (TRIGGER_HOP, TRIGGER_CHAIN); a fire made inside that run carries
hop + 1 and is refused above its ttl. A refusal is recorded in the store
so it can be seen from anywhere, and raised as `LoopRefused`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Mapping, NamedTuple

from .layout import Layout
from .policy import WATCH
from .records import DEFAULT_TTL, BadRecord, Entry, check_host, check_limit, check_tags, check_ttl
from .store.base import PutOp, Store

TXN_OPS = 128  # etcd's default --max-txn-ops


class LoopRefused(Exception):
    """A fire above its ttl; the message names the chain of hosts."""


class Lineage(NamedTuple):
    """Where a fire comes from: the hop and hosts of the run that made it."""

    hop: int = 0
    chain: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Lineage":
        """Read what `trigger run` put into a run's environment."""
        raw_hop = env.get("TRIGGER_HOP", "").strip()
        if not raw_hop:
            return cls()
        if not raw_hop.isdigit():
            raise BadRecord(f"TRIGGER_HOP must be a number, got {raw_hop!r}")
        raw_chain = env.get("TRIGGER_CHAIN", "").strip()
        chain = tuple(check_host(h) for h in raw_chain.split(",")) if raw_chain else ()
        return cls(int(raw_hop), chain)

    def to_env(self) -> dict[str, str]:
        return {"TRIGGER_HOP": str(self.hop), "TRIGGER_CHAIN": ",".join(self.chain)}


def new_event_id(now: float | None = None) -> str:
    """Sortable by time, unique without coordination."""
    now = time.time() if now is None else now
    return f"{int(now * 1e6):016x}-{os.urandom(4).hex()}"  # what secrets.token_hex does, 4 ms sooner


def make_entry(
    name: str,
    lineage: Lineage,
    origin: str,
    ttl: int = DEFAULT_TTL,
    now: float | None = None,
    event_id: str | None = None,
    max_concurrent: int = 0,
    noop: bool = False,
    tags: tuple[str, ...] = (),
) -> Entry:
    """The entry a fire writes, or LoopRefused if it would exceed the ttl."""
    check_ttl(ttl)
    check_limit(max_concurrent)
    if not name or len(name) > 256:
        raise BadRecord("trigger name must be 1 to 256 characters")
    now = time.time() if now is None else now
    hop = lineage.hop + 1
    chain = lineage.chain + ((origin,) if origin else ())  # hosts that fired, in order
    if hop > ttl:
        raise LoopRefused(
            f"loop refused: trigger {name!r} would be hop {hop} > ttl {ttl}; "
            f"chain {' -> '.join(chain) or '(none)'}"
        )
    return Entry(
        id=event_id or new_event_id(now),
        trigger=name,
        fired_at=now,
        hop=hop,
        ttl=ttl,
        chain=chain[-(ttl + 1):],
        origin=origin,
        max_concurrent=max_concurrent,
        noop=bool(noop),
        tags=check_tags(tags),
    )


def write_entry(store: Store, layout: Layout, entry: Entry, hosts: list[str], first: tuple = ()) -> int:
    """Put the entry into every host's inbox, TXN_OPS keys per transaction, after the
    operations `first` (in the first transaction)."""
    value = entry.encode()
    ops = [*first, *(PutOp(layout.entry_key(check_host(h), entry.id), value) for h in hosts)]
    revision = 0
    for i in range(0, len(ops), TXN_OPS):
        revision = store.txn(ops[i : i + TXN_OPS]) or revision
    return revision


def fire(store: Store, layout: Layout, name: str, hosts: list[str], lineage: Lineage,
         origin: str, ttl: int = DEFAULT_TTL, now: float | None = None,
         event_id: str | None = None, max_concurrent: int = 0, retention: int = 0,
         ok_codes: tuple[int, ...] = (0, 2), noop: bool = False, tags: tuple[str, ...] = ()) -> Entry:
    """Write one fire into every host's inbox; record and raise a refusal.

    With `retention`, the fire and its hosts are also kept under `P/fires/`
    on a lease of that many seconds, for `trigger history` and `trigger
    wait`, with the exit codes that count as success. `noop` and `tags`
    travel with the entry: the hosts' runs add `--noop`, `--tags` where their
    watcher allows it. `event_id` is for callers that need determinism (the
    simulator).
    """
    now = time.time() if now is None else now
    event_id = event_id or new_event_id(now)
    hosts = [check_host(h) for h in hosts]
    try:
        entry = make_entry(name, lineage, origin, ttl, now, event_id, max_concurrent, noop, tags)
    except LoopRefused as refusal:
        record = {
            "id": event_id, "trigger": name, "hosts": hosts, "hop": lineage.hop + 1,
            "ttl": ttl, "chain": [*lineage.chain, origin], "refused_at": now,
            "reason": str(refusal),
        }
        store.put(layout.refused_key(event_id), json.dumps(record, sort_keys=True).encode(),
                  lease=store.lease_grant(retention or WATCH.record_retention))
        raise
    kept = ()
    if retention:  # in the entries' first transaction: no host sees the fire before `wait` can
        record = {"id": entry.id, "trigger": name, "hosts": hosts, "fired_at": now,
                  "origin": origin, "hop": entry.hop, "max_concurrent": max_concurrent,
                  "ok_codes": list(ok_codes)}
        if noop or tags:
            record.update(noop=entry.noop, tags=list(entry.tags))
        kept = (PutOp(layout.fire_key(entry.id), json.dumps(record, sort_keys=True).encode(),
                      store.lease_grant(retention)),)
    write_entry(store, layout, entry, hosts, kept)
    return entry
