"""Every timeout, retry count and delay of trigger, in one place.

The daemon, `trigger run`, the coordination code and the simulator all read
these; a scenario may override the watcher's, and the command line the
check interval and the member TTL. Nothing else states a number of seconds.
"""

from __future__ import annotations

from typing import NamedTuple


class WatchPolicy(NamedTuple):
    """How `trigger watch` follows its inbox."""

    check_interval: float = 5.0  # re-read after this long without a delivery while busy
    idle_check: float = 300.0  # ... and while idle
    reconnect_delay: float = 0.2  # first wait after a store error; doubles ...
    reconnect_max: float = 10.0  # ... up to this; reset once the store answers again
    min_wait: float = 0.01  # the shortest wait for a delivery (a wake time already past)
    record_retention: int = 7 * 24 * 3600  # lost-run and quarantine records expire after this

    def next_reconnect_delay(self, delay: float) -> float:
        return min(delay * 2, self.reconnect_max)


class RunPolicy(NamedTuple):
    """How `trigger run` rides out an unreachable etcd around its command."""

    attempts: int = 5  # tries of each step (start, finish) while etcd is unreachable
    first_delay: float = 1.0  # then 2, 4, 8, 8 s
    max_delay: float = 8.0
    slow_slot_note: float = 0.5  # a slot wait longer than this is reported
    # The run's lease: its lock and slots outlive a dead run this long, and a
    # run that cannot renew it for `stop_after()` stops its command. 30 s rides
    # out an etcd restart or election (seconds) without stopping Puppet runs
    # fleet-wide; the price is that a crashed run delays its host's next run
    # by up to 30 s.
    lease_ttl: int = 30
    stop_grace: float = 2.0  # SIGTERM, then SIGKILL this much later
    stop_margin: float = 1.0  # ... all done this long before the lease can end

    def stop_after(self) -> float:
        """Seconds without a lease renewal after which the command is stopped:
        SIGKILL then still comes `stop_margin` before etcd can end the lease."""
        return self.lease_ttl - self.stop_grace - self.stop_margin

    def delay(self, attempt: int) -> float:
        return min(self.first_delay * 2.0 ** attempt, self.max_delay)


STORE_TIMEOUT = 5.0  # seconds etcd's client waits for one endpoint's answer; endpoints are tried in turn
MEMBER_TTL = 10  # seconds a member, candidate or slot key outlives its holder
BEATS_PER_TTL = 3  # leases are refreshed every ttl / 3
RETRY_AFTER_STORE_ERROR = 1.0  # membership: how soon to register again after an error
# `--wait`: a host without a live watcher this long is reported `no watcher`, ending its wait; long
# enough for a watcher to restart (the unit's RestartSec=2, then about a second to register)
NO_WATCHER_GRACE = 5.0
WAIT_TIMEOUT = 600.0  # seconds `trigger fire --wait` waits: the Puppet type's wait_timeout, the simulator's
MAX_ENQUEUE_DELAY = 60.0  # the core: the longest wait before queueing again after a refusal
STANDBY_LINGER = 300.0  # seconds an unused standby run stays before its watcher lets it go (its memory back)
STANDBY_IDLE_CHECK = 10.0  # seconds between an idle standby run's looks at its watcher, where the kernel cannot tell it
STANDBY_MAX_LINGER = 30 * 86400  # longer is as good as never; past threading.TIMEOUT_MAX its timer would fail
STANDBY_OPEN_WAIT = 0.5  # seconds for inotify to tell which run link a job opened, once the FIFO has opened
STANDBY_CLOSE_WAIT = 2.0  # seconds for a served job's cat to close its link before the next open
OUTPUT_DRAIN_WAIT = 5.0  # seconds a run's output pipe may stay open after its command exited (a child
                         # holding it); then the run is recorded with the tail read so far

WATCH = WatchPolicy()
RUN = RunPolicy()
