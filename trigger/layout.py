"""Where things live in the store, as pure functions of the prefix.

    P/hosts/<host>/<event-id>     inbox entry (one per fire and target host)
    P/hosts/<host>/runs/<run-id>  run record while queued or started (or lost)
    P/hosts/<host>/lock/run       the run id running now (on that run's lease)
    P/done/<host>/<run-id>        a finished run record, kept for the retention (lease)
    P/quarantine/<host>/<key>     an inbox value the watcher could not use
    P/refused/<event-id>          a fire refused by the loop TTL
    P/fires/<event-id>            a fire and its hosts, kept for the retention (lease)
    P/members/<host>              a live watcher and its roles (lease)
    P/elections/<name>/<host>     a candidate; the oldest is the leader (lease)
    P/slots/<trigger>/<run-id>    a run holding or waiting for a slot (lease)

Inbox entries, run records and the run lock of a host share one prefix so
that one watch sees, in order, a run take the lock, claim entries, finish
(removing them), and its lease (and lock) end. A finished run record moves
to P/done/ in the transaction that finishes it: a busy host's prefix then
holds only what its watcher and its next run need, however many finished
runs are kept (reading it was the cost of every run start and re-read,
docs/benchmarks.md).
"""

from __future__ import annotations

from typing import NamedTuple

DEFAULT_PREFIX = "/puppet_trigger/events"


class _Prefix(NamedTuple):
    prefix: str = DEFAULT_PREFIX


class Layout(_Prefix):
    __slots__ = ()

    def __new__(cls, prefix: str = DEFAULT_PREFIX):
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"bad prefix {prefix!r}: it must start with '/' and not end with '/'")
        return super().__new__(cls, prefix)

    def host_prefix(self, host: str) -> str:
        return f"{self.prefix}/hosts/{host}/"

    def entry_key(self, host: str, event_id: str) -> str:
        return f"{self.prefix}/hosts/{host}/{event_id}"

    def runs_prefix(self, host: str) -> str:
        return f"{self.prefix}/hosts/{host}/runs/"

    def run_key(self, host: str, run_id: str) -> str:
        return f"{self.prefix}/hosts/{host}/runs/{run_id}"

    def run_lock_key(self, host: str) -> str:
        return f"{self.prefix}/hosts/{host}/lock/run"

    def done_prefix(self, host: str | None = None) -> str:
        """Where finished run records are kept: of one host, or of all."""
        return f"{self.prefix}/done/{host}/" if host is not None else f"{self.prefix}/done/"

    def done_key(self, host: str, run_id: str) -> str:
        return f"{self.prefix}/done/{host}/{run_id}"

    def run_at(self, key: str) -> tuple[str, str] | None:
        """(host, run id) when `key` is a run record, active or finished; else None."""
        parts = key[len(self.prefix) + 1:].split("/") if key.startswith(self.prefix + "/") else ()
        if len(parts) == 4 and parts[0] == "hosts" and parts[2] == "runs" and parts[1] and parts[3]:
            return parts[1], parts[3]
        if len(parts) == 3 and parts[0] == "done" and parts[1] and parts[2]:
            return parts[1], parts[2]
        return None

    def quarantine_key(self, host: str, key: str) -> str:
        """Where a bad value under the host's prefix is set aside: the same
        path under quarantine/, so an entry `x` and a run record `runs/x`
        do not land on one key."""
        rest = key[len(self.host_prefix(host)):] if key.startswith(self.host_prefix(host)) else key
        return f"{self.prefix}/quarantine/{host}/{rest.lstrip('/')}"

    def refused_key(self, event_id: str) -> str:
        return f"{self.prefix}/refused/{event_id}"

    def fire_key(self, event_id: str) -> str:
        return f"{self.prefix}/fires/{event_id}"

    def fires_prefix(self) -> str:
        return f"{self.prefix}/fires/"

    def members_prefix(self) -> str:
        return f"{self.prefix}/members/"

    def member_key(self, host: str) -> str:
        return f"{self.prefix}/members/{host}"

    def election_prefix(self, name: str) -> str:
        return f"{self.prefix}/elections/{name}/"

    def candidate_key(self, name: str, host: str) -> str:
        return f"{self.prefix}/elections/{name}/{host}"

    def slots_prefix(self, trigger: str) -> str:
        return f"{self.prefix}/slots/{trigger}/"

    def classify(self, host: str, key: str) -> tuple[str, str]:
        """('entry', id), ('run', run_id), ('lock', 'run') or ('other', rest) for a key
        under host_prefix."""
        rest = key[len(self.host_prefix(host)):]
        if "/" not in rest and rest:
            return "entry", rest
        if rest.startswith("runs/") and "/" not in rest[5:] and rest[5:]:
            return "run", rest[5:]
        if rest == "lock/run":
            return "lock", "run"
        return "other", rest
