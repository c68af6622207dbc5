"""The rules around the protocol core, written once, without IO.

Theory of operation
-------------------
`trigger.core` decides what a watcher does with what it sees. Everything
around it that takes time is here, as generators that yield effects
(`trigger.effects`) and get their results back:

* `follow_inbox`: the daemon's loop. Read the queue and the inbox
  (`Snapshot`), watch from the next revision, feed deliveries to the core
  (`Changes`), re-read after `check_interval` without a delivery while busy
  (`idle_check` while idle, sooner when a delayed retry is due: `Tick`),
  carry out the core's actions. A compacted watch re-reads at once; any other
  store error waits `reconnect_delay`, doubling up to `reconnect_max`, and
  the delay is reset once the store answers again.
* `triggered_run`: what `trigger run` does for one queued run. Take a slot
  of every limited trigger waiting (in name order), acknowledge the inbox
  (`runner.start_run`), execute the command, give the slots back, record the
  finish. Each store step is retried while etcd is unreachable
  (`RunPolicy`); a run that cannot be recorded as started runs nothing.
* `acquire_slot` / `release_slot`: etcd's semaphore recipe: a key under a
  lease kept alive beside the run; the first `limit` keys by create revision
  hold a slot; a waiter watches the prefix and looks again on any change or
  every `ttl`; a waiter whose lease ended queues up anew.
* `keep_membership`: a watcher's member key, roles and candidacies, beaten
  every `ttl / 3` and registered anew after any store error.

`trigger.driver` runs these on real time, `simulator.driver` on SimPy
time. Every number comes from `trigger.policy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .coordination import Member, key_part, member_at, ranked, register
from .core import Changes, EnqueueFailed, EnqueueRun, MarkRunLost, Quarantine, RunEnded, Snapshot, Tick, \
    WatcherCore
from .effects import ELAPSED, LIVE_RUNS, NOW, UNWATCH, Call, Cancel, CommandStopped, Enqueue, Execute, \
    NextChange, Note, ProcessAlive, ReadConfig, Sleep, Spawn, StopCommand, Watch
from .layout import Layout
from .policy import BEATS_PER_TTL, MEMBER_TTL, RETRY_AFTER_STORE_ERROR, RUN, WATCH, RunPolicy, \
    WatchPolicy
from .queue import QueueError
from .records import RUN_OPTIONS, BadRecord, RunRecord, lock_value, parse_run
from .runner import RunRefused, execution_of, finish_run, give_back, refused_options, start_run, \
    take_run_lock
from .store.base import CompactedError, DeleteOp, PutOp, StoreError, UnavailableError

EXIT_TEMPFAIL = 75  # `trigger run` could not be recorded as started: it ran nothing
EXIT_OPTION_REFUSED = 64  # its fires asked for a run option the watcher does not allow: it ran nothing


# -- store steps, as functions of the store (what `Call` runs) ----------------------


def _put(store, key: str, value: bytes, lease: int = 0) -> int:
    return store.put(key, value, lease)


def _get(store, key: str):
    return store.get(key)


def _delete(store, key: str) -> bool:
    return store.delete(key)


def _txn(store, ops, expect_revisions=()):
    return store.txn(ops, expect_revisions=expect_revisions)


def _get_prefix(store, prefix: str):
    return store.get_prefix(prefix)


def _grant(store, ttl: int) -> int:
    return store.lease_grant(ttl)


def _refresh(store, lease: int) -> None:
    store.lease_refresh(lease)


def _revoke(store, lease: int) -> None:
    store.lease_revoke(lease)


# -- the watcher ---------------------------------------------------------------------


def follow_inbox(core: WatcherCore, policy: WatchPolicy = WATCH):
    """`trigger watch`'s loop, forever; the driver stops it where it waits."""
    prefix = core.layout.host_prefix(core.host)
    delay = policy.reconnect_delay
    while True:
        try:
            revision = yield from resync(core, prefix, policy)
            delay = policy.reconnect_delay  # the store answered: the next outage starts short
            yield Note(f"in sync at revision {revision}: {len(core.pending)} fire(s) waiting, "
                       f"{sum(r.active for r in core.runs.values())} run(s) active; watching")
            yield Watch(prefix, revision + 1)
            next_check = None
            # Deadlines on the monotonic clock: a wall clock stepped back must
            # not postpone a re-read or a delayed retry (issue 21).
            now = yield ELAPSED
            while True:
                # Deliveries never postpone the re-read: a run lost with its
                # queue is noticed within check_interval, whatever the fire rate.
                # (`now` is the time of the last wait's end: the steps since
                # are instant in the simulator and take milliseconds for real.)
                interval = policy.check_interval if core.busy else policy.idle_check
                next_check = now + interval if next_check is None else min(next_check, now + interval)
                changes = yield NextChange(_wait(core, policy, now, next_check))
                now = yield ELAPSED
                if changes is not None:
                    actions = core.handle(Changes(tuple(changes)), (yield NOW), now)
                    yield from carry_out(core, actions, policy)
                if core.wake_at is not None and now >= core.wake_at:
                    yield from carry_out(core, core.handle(Tick(), (yield NOW), now), policy)
                if now >= next_check:
                    yield from resync(core, prefix, policy)
                    next_check = None
        except CompactedError as exc:
            yield Note(WatchLost(f"watch history gone ({exc}); re-reading the inbox"), "warning")
        except StoreError as exc:
            yield Note(WatchLost(f"store: {exc}; retrying in {delay:.1f}s"), "warning")
            yield Sleep(delay)
            delay = policy.next_reconnect_delay(delay)


def _wait(core: WatcherCore, policy: WatchPolicy, now: float, next_check: float) -> float:
    """How long to wait for a delivery before re-reading (or ticking)."""
    until = next_check if core.wake_at is None else min(next_check, core.wake_at)
    return max(until - now, policy.min_wait)


def resync(core: WatcherCore, prefix: str, policy: WatchPolicy = WATCH):
    """Ask the queue, then read the prefix: a run the queue has let go of is
    then seen in the store as started, if it ever started. Returns the revision."""
    try:
        live = yield LIVE_RUNS
    except QueueError as exc:
        yield Note(f"queue: {exc}; not judging runs by it this time", "warning")
        live = None
    items, revision = yield Call(_get_prefix, (prefix,))
    now = yield NOW
    actions = core.handle(Snapshot(tuple(items), revision, live), now, (yield ELAPSED))
    if actions:  # most re-reads find nothing to do
        yield from carry_out(core, actions, policy)
    return revision


@dataclass(frozen=True)
class WatchLost:
    """The watch ended on a store error; the watcher reads again (told)."""

    reason: str

    def describe(self) -> str:
        return self.reason


def carry_out(core: WatcherCore, actions: list, policy: WatchPolicy = WATCH):
    """Do what the core asked; report-only actions are only told. What the
    watcher writes for people to look at later (lost runs, quarantined
    values) lives on a lease of `record_retention`."""
    layout, host = core.layout, core.host
    for action in actions:
        if isinstance(action, RunEnded) and action.exit_code is None:
            action = yield from _how_it_ended(layout, host, action)
        yield Note(action)
        if isinstance(action, EnqueueRun):
            yield Call(_put, (layout.run_key(host, action.run_id), action.record.encode()))
            try:
                yield Enqueue(action.run_id)
            except QueueError as exc:
                yield Note(f"queue refused {action.run_id}: {exc}", "warning")
                now = yield NOW
                failed = core.handle(EnqueueFailed(action.run_id, str(exc)), now, (yield ELAPSED))
                yield from carry_out(core, failed, policy)
        elif isinstance(action, MarkRunLost):
            lease = yield Call(_grant, (policy.record_retention,))
            yield Call(_put, (layout.run_key(host, action.run_id), action.record.encode(), lease))
        elif isinstance(action, Quarantine):
            lease = yield Call(_grant, (policy.record_retention,))
            yield Call(_txn, ([PutOp(layout.quarantine_key(host, action.key), action.value, lease),
                               DeleteOp(action.key)], ((action.key, action.revision),)))


def _how_it_ended(layout: Layout, host: str, ended: RunEnded):
    """A finished run's exit code and duration, from its record under P/done/."""
    try:
        kv = yield Call(_get, (layout.done_key(host, ended.run_id),))
        run = parse_run(kv.value) if kv is not None else None
    except (StoreError, BadRecord):
        return ended
    if run is None:
        return ended
    took = run.finished_at - run.started_at if run.finished_at and run.started_at else None
    return RunEnded(ended.run_id, run.exit_code, took, run.finished_at, run.reason)


# -- a triggered run -----------------------------------------------------------------------


@dataclass(frozen=True)
class RunStarted:
    """`trigger run` recorded its start; the command runs next (told, not done)."""

    record: RunRecord

    def describe(self) -> str:
        served = self.record.served
        names = ", ".join(served[:3]) + (f" +{len(served) - 3}" if len(served) > 3 else "")
        return f"{self.record.run_id} starts: serves {names or 'nothing'} (hop {self.record.hop})"


@dataclass(frozen=True)
class RunAborted:
    """`trigger run` could not take its slots or record its start: nothing ran (told)."""

    run_id: str

    def describe(self) -> str:
        return f"{self.run_id} could not be recorded as started; not running it (exit {EXIT_TEMPFAIL})"


@dataclass(frozen=True)
class RunGaveBack:
    """A run's command was stopped before its end; its fires stay for the next run (told)."""

    record: RunRecord
    reason: str
    recorded: bool = True

    def describe(self) -> str:
        if self.recorded:
            return f"{self.record.run_id} gave its fires back: {self.reason}"
        return (f"{self.record.run_id} was stopped ({self.reason}) but could not record it; "
                f"its fires come back when its lease ends")


@dataclass(frozen=True)
class RunFinished:
    """The command of a started run returned (told, not done)."""

    record: RunRecord
    exit_code: int
    recorded: bool

    def describe(self) -> str:
        if self.recorded:
            return f"{self.record.run_id} finished, exit {self.exit_code}"
        return f"{self.record.run_id} finished ({self.exit_code}) but could not be recorded"


@dataclass(frozen=True)
class SlotWaited:
    """A run got a slot of a limited trigger after waiting (told, not done)."""

    run_id: str
    trigger: str
    limit: int
    seconds: float

    def describe(self) -> str:
        return (f"{self.run_id} waited {self.seconds:g} s for a slot of {self.trigger!r} "
                f"({self.limit} at once)")


@dataclass
class RunLease:
    """The lease a run holds its lock and slots on, kept alive beside its command."""

    id: int
    ttl: int
    expired: bool = False  # renewals failed too long: the command was stopped


def triggered_run(layout: Layout, host: str, run_id: str, retention: int = 0,
                  holder: str | None = None, policy: RunPolicy = RUN, allowed=RUN_OPTIONS):
    """What `trigger run` does around its command; returns the exit status.

    Take a lease kept alive beside the run, the host's run lock on it (one
    run at a time, whatever task-spooler did), a slot of every limited
    trigger waiting, then claim the inbox, run the command, finish. `holder`
    names the run in slot keys (the run id by default). EXIT_TEMPFAIL when
    nothing ran: the fires wait in the inbox for the next run. A run whose
    options (noop, tags) are not all `allowed` runs nothing either, but its
    fires are served: its finished record says why, and it returns EXIT_OPTION_REFUSED.
    """
    what = f"{run_id} cannot mark its start"
    lease_id = yield from retrying(lambda now: Call(_grant, (policy.lease_ttl,)), what, policy)
    if lease_id is None:
        return (yield from _abort(run_id, None))
    lease = RunLease(lease_id, policy.lease_ttl)
    keeper = yield Spawn(keep_run_lease(lease, run_id, policy))
    slots: list[HeldSlot] | None = []
    record = None
    execution = execution_of(lease_id)
    if (yield from wait_for_run_lock(layout, host, run_id, lease, policy)):
        record = yield from retrying(
            lambda now: Call(start_run, (layout, host, run_id, now, None, execution)), what, policy)
        if isinstance(record, dict):  # limited triggers wait: their slots first, then the claim
            limits, record = record, None
            slots = yield from take_slots(layout, limits, holder or run_id, run_id, lease)
            if slots is not None and not lease.expired:
                record = yield from retrying(
                    lambda now: Call(start_run, (layout, host, run_id, now, limits, execution)), what, policy)
    if isinstance(record, RunRefused):  # another execution's run: nothing of it is ours to touch
        yield from release_slots(slots)
        yield Note(record, "warning")
        yield from _end_lease(keeper, lease)
        return EXIT_TEMPFAIL
    retained = 0
    if record is not None and retention:  # the records' lease, taken while etcd answers
        retained = yield from retrying(lambda now: Call(_grant, (retention,)), what, policy)
    if record is None:
        return (yield from _abort(run_id, keeper, lease))
    yield Note(RunStarted(record))
    refusal = refused_options(record, allowed)
    reason = None  # why the command was stopped before its end, if it was
    remark = refusal  # what the finished record says besides its exit code
    started = False
    if refusal:  # nothing runs; the fires are served, the record says why
        yield Note(f"{run_id}: {refusal}", "warning")
        exit_code, output = None, ""
    elif lease.expired:  # it ended while the start was retried: the lock and the slots may be
        exit_code, output = None, ""  # another run's by now, so the command must not start
    else:
        started = True
        ended = yield Execute(record)
        if isinstance(ended, CommandStopped):
            exit_code, output, reason = ended.exit_code, "", ended.reason
        else:
            exit_code, output, *left = ended if isinstance(ended, tuple) else (ended, "")
            if left and left[0]:  # the record says it, so the watcher's log does too
                remark = left[0]
                yield Note(f"{run_id}: {remark}", "warning")
    if lease.expired:  # stopped before its end, rather than losing the lease after it
        reason = (f"lease not renewed for {policy.stop_after():g} s; "
                  f"{'command stopped' if started else 'command not started'}")
    # The end is when the command returned, not when the record is written:
    # the slots go back in between, and a run recorded as ending after the
    # next one started would misreport serial order.
    ended = yield NOW
    yield from release_slots(slots)
    if reason is not None:  # its fires go back to the inbox
        done = yield from retrying(
            lambda now: Call(give_back, (layout, record, reason, ended, exit_code, retained or 0)),
            f"{run_id} cannot mark its end", policy)
        yield Note(RunGaveBack(record, reason, done is not None), "warning" if done is not None else "error")
    else:
        done = yield from retrying(
            lambda now: Call(finish_run, (layout, record, exit_code, ended, retained or 0, output, remark)),
            f"{run_id} cannot mark its finish", policy)
        if not refusal:
            yield Note(RunFinished(record, exit_code, done is not None),
                       "info" if done is not None else "warning")
    yield from _end_lease(keeper, lease)  # the lock goes with it: the next run may start
    return EXIT_OPTION_REFUSED if refusal else exit_code


def _abort(run_id: str, keeper, lease: RunLease | None = None):
    if lease is not None:
        yield from _end_lease(keeper, lease)
    yield Note(RunAborted(run_id), "error")
    return EXIT_TEMPFAIL


def _end_lease(keeper, lease: RunLease):
    yield Cancel(keeper)
    yield from revoke_quietly(lease.id)


def retrying(make: Callable[[float], Call], what: str, policy: RunPolicy = RUN):
    """A store step tried `policy.attempts` times while etcd is unreachable; None if never."""
    for attempt in range(policy.attempts):
        now = yield NOW
        try:
            return (yield make(now))
        except UnavailableError as exc:
            yield Note(f"{what}: {exc}", "warning")
            yield Sleep(policy.delay(attempt))
    return None


def keep_run_lease(lease: RunLease, run_id: str, policy: RunPolicy = RUN):
    """Renew every ttl / 3. Renewals failing for `stop_after()` seconds (or
    the lease gone) stop the command before etcd can end the lease, so the
    run never goes on beside the next one.

    On the monotonic clock (a stepped wall clock moves nothing), counted
    from when a renewal was sent (etcd renews on receipt, not on our reading
    of its answer), and each renewal is given only the time left before
    `stop_after()` (all endpoints together): a store that never answers
    cannot hold the stop back."""
    last_renewed = yield ELAPSED
    least = policy.stop_margin / 4
    while True:
        now = yield ELAPSED
        stop_at = last_renewed + policy.stop_after()
        yield Sleep(max(min(lease.ttl / BEATS_PER_TTL, stop_at - now), least))
        sent = yield ELAPSED
        try:
            yield Call(_refresh, (lease.id,), within=max(stop_at - sent, least))
            last_renewed = sent
            continue
        except UnavailableError:
            if (yield ELAPSED) < stop_at - least:  # else too little left to try again
                continue
        except StoreError:
            pass  # the lease is gone
        lease.expired = True
        yield Note(f"{run_id}: lease not renewed for {policy.stop_after():g} s; stopping the command "
                   f"if it still runs (SIGTERM, SIGKILL after {policy.stop_grace:g} s)", "warning")
        yield StopCommand(policy.stop_grace)
        return


def wait_for_run_lock(layout: Layout, host: str, run_id: str, lease: RunLease,
                      policy: RunPolicy = RUN):
    """Hold the host's run lock; False if etcd stayed away or the lease ended first.

    The lock is watched only once another run holds it (from the revision it
    was seen held at, so its release is not missed): a free lock costs one
    request, not a watch stream."""
    key = layout.run_lock_key(host)
    ours = lock_value(run_id, execution_of(lease.id))
    told = watching = False
    while not lease.expired:
        try:
            held = yield Call(take_run_lock, (layout, host, run_id, lease.id))
        except UnavailableError:
            held = yield from retrying(
                lambda now: Call(take_run_lock, (layout, host, run_id, lease.id)),
                f"{run_id} cannot take the run lock", policy)
            if held is None:  # taken, or etcd stayed away: the lock says which
                try:
                    mine = (yield Call(_lock_holder, (key,))) == ours
                except StoreError:  # still away: not known to be ours (our lease's end frees it if so)
                    mine = False
                if not mine:
                    break
        if held is None:
            yield UNWATCH
            return True
        holder, since = held
        if not holder:
            continue  # a stale lock went: try again
        if not told:
            yield Note(f"{run_id} waits for run {holder} to end (one run at a time)")
            told = True
        if not watching:
            try:
                yield Watch(key, since)
            except UnavailableError:
                continue  # etcd went away just now: ask for the lock again (that retries)
            watching = True
        try:
            yield NextChange(lease.ttl)
        except StoreError:  # the watch died: ask again, and watch anew from what is seen then
            watching = False
    yield UNWATCH
    return False


def _lock_holder(store, key: str) -> bytes | None:
    held = store.get(key)
    return None if held is None else held.value


# -- slots ----------------------------------------------------------------------------------


@dataclass
class HeldSlot:
    """A run's place under a limited trigger's slot prefix, on the run's lease."""

    prefix: str
    key: str
    limit: int
    lease: int | None = None

    @classmethod
    def of(cls, layout: Layout, trigger: str, limit: int, holder: str):
        prefix = layout.slots_prefix(key_part(trigger))
        return cls(prefix, prefix + holder, limit)


def take_slots(layout: Layout, limits: dict[str, int], holder: str, run_id: str, lease: RunLease):
    """A slot of every limited trigger, in name order (one order for every
    host, so two runs never wait on each other). On a store error, or when
    the run's lease ended meanwhile, the slots taken so far go back and None
    is returned: nothing was claimed."""
    slots: list[HeldSlot] = []
    for trigger, limit in sorted(limits.items()):
        slot = HeldSlot.of(layout, trigger, limit, holder)
        slots.append(slot)
        try:
            waited = yield from acquire_slot(slot, lease.id, lease.ttl)
        except (StoreError, SlotLost) as exc:
            yield UNWATCH
            yield from release_slots(slots)
            yield Note(f"{run_id} could not take a slot of {trigger!r}: {exc}", "error")
            return None
        yield Note(SlotWaited(run_id, trigger, limit, waited),
                   "info" if waited > RUN.slow_slot_note else "debug")
    return slots


class SlotLost(Exception):
    """The key a run queued under went away: its lease ended while it waited."""


def acquire_slot(slot: HeldSlot, lease: int, ttl: int, timeout: float | None = None):
    """Wait for the slot, queued under `lease`; returns the seconds waited.

    TimeoutError after `timeout`; SlotLost if the key goes (the lease ended).
    """
    start = yield ELAPSED  # a wait and its timeout: the monotonic clock
    slot.lease = lease
    yield Call(_put, (slot.key, b"", lease))
    yield Watch(slot.prefix, 0)
    while True:
        keys = [kv.key for kv in (yield Call(ranked, (slot.prefix,)))]
        if slot.key not in keys:
            yield UNWATCH
            slot.lease = None
            raise SlotLost(f"its lease ended while it waited for a slot of {slot.limit}")
        now = yield ELAPSED
        if keys.index(slot.key) < slot.limit:
            yield UNWATCH
            return now - start
        left = None if timeout is None else timeout - (now - start)
        if left is not None and left <= 0:
            yield UNWATCH
            yield from release_slots([slot])
            raise TimeoutError(f"no slot of {slot.limit} free within {timeout}s")
        try:
            yield NextChange(ttl if left is None else min(left, ttl))
        except StoreError:
            yield Watch(slot.prefix, 0)  # the watch died: a new one, then look again


def release_slots(slots):
    """Give the slots back now (the run's lease would take them later)."""
    for slot in slots or ():
        if slot.lease is not None:
            slot.lease = None
            try:
                yield Call(_delete, (slot.key,))
            except StoreError:
                pass  # they go when the run's lease ends


def revoke_quietly(lease: int):
    """Revoke a lease; if etcd is away, the lease ends by itself within its TTL."""
    try:
        yield Call(_revoke, (lease,))
    except StoreError:
        pass


def keep_lease(lease: int, ttl: int):
    """Refresh every ttl / 3; a failed refresh is ignored (holders re-check their rank)."""
    while True:
        yield Sleep(ttl / BEATS_PER_TTL)
        try:
            yield Call(_refresh, (lease,))
        except StoreError:
            pass


# -- membership --------------------------------------------------------------------------------


@dataclass
class Registration:
    """What a watcher stands for, and the lease its keys live on."""

    layout: Layout
    host: str
    roles: tuple[str, ...] = ()
    elections: tuple[str, ...] = ()
    config_dir: str | None = None
    ttl: int = MEMBER_TTL
    process: str = ""  # "PID@BOOT-ID", so a restarted watcher can tell its dead self
    lease: int | None = None
    registered: Member | None = field(default=None, repr=False)
    beats: int = field(default=0, repr=False)  # refreshes of this lease so far


class HostTaken(Exception):
    """Another live watcher serves this host now: this one must stop."""


def _wanted(reg: Registration):
    roles, elections = yield ReadConfig(reg.config_dir)
    since = reg.registered.since if reg.registered else (yield NOW)
    return Member(reg.host, tuple(sorted({*reg.roles, *roles})), since,
                  tuple(sorted({*reg.elections, *elections})), reg.process)


def claim_host(reg: Registration):
    """One watcher per host: register only once no other live watcher holds
    the host's member key, waiting as a standby meanwhile. A key left by this
    machine's dead watcher (its process gone) is taken over at once."""
    key = reg.layout.member_key(reg.host)
    told = False
    while True:
        held = yield Call(_get, (key,))
        if held is not None:
            other = member_at(reg.layout, key, held.value)
            dead = other is not None and other.process and (yield ProcessAlive(other.process)) is False
            if dead or (other is not None and other.process == reg.process):
                yield Call(_txn, ([DeleteOp(key)], ((key, held.mod_revision),)))
                continue
            if not told:
                owner = other.process if other is not None and other.process else "unknown"
                yield Note(f"standby: another trigger watch serves {reg.host} (process {owner}); "
                           f"taking over when its key goes", "warning")
                told = True
            yield Sleep(reg.ttl / BEATS_PER_TTL)
            continue
        wanted = yield from _wanted(reg)
        lease = yield Call(_grant, (reg.ttl,))
        if (yield Call(register, (reg.layout, wanted, lease, True))):
            reg.lease, reg.registered = lease, wanted
            if told:
                yield Note(f"no longer standby: serving {reg.host}", "warning")
            return
        yield from revoke_quietly(lease)


def beat(reg: Registration):
    """One refresh. Registers anew (as a claim) when the lease or the key is
    gone, and again when what the watcher stands for changed; raises
    HostTaken when another watcher holds the host's key.

    While the lease lives the key goes only if someone deletes it, so it is
    read once a TTL (and before writing it again), not on every refresh: an
    idle watcher's wake-ups are mostly its refreshes."""
    key = reg.layout.member_key(reg.host)
    try:
        wanted = None
        if reg.lease is not None:
            yield Call(_refresh, (reg.lease,))
            reg.beats += 1
            wanted = yield from _wanted(reg)
            if wanted != reg.registered or reg.beats % BEATS_PER_TTL == 0:
                held = yield Call(_get, (key,))
                if held is not None and held.lease != reg.lease:
                    raise HostTaken(f"another trigger watch took over {reg.host}")
                if held is None:  # deleted under us: register again, as a claim
                    yield from revoke_quietly(reg.lease)
                    reg.lease = None
        if reg.lease is None:
            yield from claim_host(reg)
            return
        if wanted != reg.registered:
            for election in sorted(set(reg.registered.elections) - set(wanted.elections)):
                yield Call(_delete, (reg.layout.candidate_key(key_part(election), reg.host),))
            yield Call(register, (reg.layout, wanted, reg.lease))
            reg.registered = wanted
    except (UnavailableError, HostTaken):
        raise  # etcd away: keep the lease, a refresh within its TTL still saves it
    except StoreError:
        reg.lease = None  # the lease ended: claim the host again next time


def keep_membership(reg: Registration):
    """Beat every ttl / 3 (every second while etcd is away), forever; ends
    with HostTaken when another watcher took the host over."""
    while True:
        had_lease = reg.lease is not None
        unreachable = False
        try:
            yield from beat(reg)
        except UnavailableError:
            unreachable = True
        if had_lease and reg.lease is None:
            yield Note("membership: lease ended while etcd was away; registering anew", "warning")
        yield Sleep(RETRY_AFTER_STORE_ERROR if unreachable or reg.lease is None
                    else reg.ttl / BEATS_PER_TTL)


def serve_host(reg: Registration, core: WatcherCore, policy: WatchPolicy = WATCH):
    """`trigger watch`: claim the host (a standby until it is free), keep the
    membership beside, follow the inbox. Ends with HostTaken when another
    watcher took the host over. An unreachable etcd is waited for, as
    `follow_inbox` waits for it, not an end: a watcher started during an
    outage must still serve its host once etcd answers."""
    delay = policy.reconnect_delay
    while True:
        try:
            yield from claim_host(reg)
            break
        except UnavailableError as exc:
            yield Note(WatchLost(f"store: {exc}; claiming {reg.host} again in {delay:.1f}s"), "warning")
            yield Sleep(delay)
            delay = policy.next_reconnect_delay(delay)
    yield Spawn(keep_membership(reg))
    yield from follow_inbox(core, policy)


def leave(reg: Registration):
    """The watcher stops: its lease goes, and with it every key it owns."""
    if reg.lease is not None:
        lease, reg.lease = reg.lease, None
        yield from revoke_quietly(lease)


# -- the standby's decisions ------------------------------------------------------------
#
# A standby is a `trigger run` started ahead of its runs (trigger/queue/standby.py carries
# them out for real, simulator/standby.py on SimPy time): the watcher queues each run as a
# job that opens a link of the standby's FIFO named after the run, and the standby serves
# whichever job opened it. What it decides is here, once, without IO.


def standby_run_id(link_run_id: str | None, served, running: Callable[[], list[str]]) -> str | None:
    """Which run a job that opened the FIFO is: the run its link names, unless this standby
    served that one already (a job of a run served is on its way out); else the oldest of
    the run ids of this FIFO's running jobs (`running()`, oldest first, asked only then) not
    served yet; None: no job of ours."""
    if link_run_id is not None and link_run_id not in served:
        return link_run_id
    return next((run_id for run_id in running() if run_id not in served), None)


STANDBY, REMAKE, COLD = "standby", "remake", "cold"


def standby_route(alive: bool, fifo_there: bool) -> str:
    """How to queue a run: through the standby (STANDBY); make its FIFO again with a new
    standby, then ask again (REMAKE: a /tmp cleaner or an operator removed it, and the
    standby waits on a pipe nobody can open); or cold, starting a standby for the next
    run (COLD)."""
    if not alive:
        return COLD
    return STANDBY if fifo_there else REMAKE


@dataclass(frozen=True)
class LinkSweep:
    """What a look at the queue does to run links, and whether a standby starts."""

    unlink: tuple[str, ...] = ()  # run ids whose link goes: the run is neither queued nor running
    relink: tuple[str, ...] = ()  # run ids whose link is made a link of the FIFO there is now
    start: bool = False  # start a standby: a job of ours may wait for one
    let_go: tuple[str, ...] = ()  # run ids of our queue waiting on another FIFO no standby serves


def sweep_links(links: dict[str, bool], live, alive: bool,
                foreign: dict[str, bool] | None = None) -> LinkSweep:
    """`links`: run id -> whether its link is a link of the FIFO there is now; `live`: the
    queue's live run ids; `alive`: a standby lives. A link is kept while its run is live
    (its job opens it), and mended if it points at a FIFO made anew since (a job on the old
    one would wait for ever). `foreign`: links of other FIFOs in the folder, run id -> whether
    a standby serves that FIFO. A live run of our queue on one no standby serves (queued
    before the FIFO's name changed: a watcher restarted with another run command, other
    endpoints, a new version) would wait for ever: its job is let go, and the run, no longer
    live, is judged lost and queued again."""
    return LinkSweep(
        unlink=tuple(r for r in links if r not in live),
        relink=tuple(r for r, current in links.items() if r in live and not current),
        start=bool(live) and not alive,
        let_go=tuple(r for r, served in (foreign or {}).items() if r in live and not served))


def standby_linger_left(now: float, used: float, linger: float, busy: Callable[[], bool]) -> float | None:
    """Seconds until the next look at an unused standby, or None: let it go now. Not before
    `linger` since a run last went through it (monotonic clock), and never while a run of
    ours is queued or running (`busy()`, asked only then; True when the queue cannot tell):
    its job may come."""
    left = used + linger - now
    if left > 0:
        return left
    return linger if busy() else None
