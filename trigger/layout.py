"""Where things live in the store, as pure functions of the prefix.

    P/hosts/<host>/<event-id>     inbox entry (one per fire and target host)
    P/hosts/<host>/runs/<run-id>  run record (queued, started, finished, lost)
    P/hosts/<host>/lock/run       the run id running now (on that run's lease)
    P/quarantine/<host>/<key>     an inbox value the watcher could not use
    P/refused/<event-id>          a fire refused by the loop TTL
    P/fires/<event-id>            a fire and its hosts, kept for the retention (lease)
    P/members/<host>              a live watcher and its roles (lease)
    P/elections/<name>/<host>     a candidate; the oldest is the leader (lease)
    P/slots/<trigger>/<run-id>    a run holding or waiting for a slot (lease)

Inbox entries, run records and the run lock of a host share one prefix so
that one watch sees, in order, a run take the lock, claim entries, finish
and remove them, and its lease (and lock) end.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "/puppet_trigger/events"


@dataclass(frozen=True)
class Layout:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self):
        if not self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError(
                f"bad prefix {self.prefix!r}: it must start with '/' and not end with '/'"
            )

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
