"""What became of a fire: each host's run that served it, found by event id.

A run record lists the inbox entries it served, so the run that answers a
fire is known exactly, with no clock comparison between hosts. Run records
live in two places (active ones in the host's prefix, finished ones under
P/done/); `list_runs` and `runs_in` are the one way every reader finds them.
"""

from __future__ import annotations

import json
import queue as queue_module
import time
from dataclasses import dataclass, replace
from typing import Callable

from .layout import Layout
from .records import MAX_SERVED, REFUSED_OPTION, BadRecord, RunRecord, check_host, parse_run
from .store.base import Put, Store, StoreError

PUPPET_OK = (0, 2)  # `puppet agent --test`: 0 no changes, 2 changes applied


NO_WATCHER = "no watcher"  # waiting, and the host had no live watcher (member key)
REFUSED = "refused"  # the loop TTL stopped it: a refused fire, or a run that failed because its fire was
STATES = ("ok", "failed", "refused", "lost", "running", "waiting", NO_WATCHER, REFUSED_OPTION)


@dataclass(frozen=True)
class HostResult:
    host: str
    state: str  # one of STATES
    exit_code: int | None = None
    duration: float | None = None
    run_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    noop: bool = False  # a noop run: exit 2 under --detailed-exitcodes means "would change"
    output: str = ""  # the tail of the run's output, or why it ran nothing

    @property
    def done(self) -> bool:
        return self.state in ("ok", "failed", REFUSED, REFUSED_OPTION)  # a lost run gives its fires to the next


def result_of(host: str, run: RunRecord | None, ok_codes=PUPPET_OK) -> HostResult:
    if run is None:
        return HostResult(host, "waiting")
    if run.state == "lost":
        return HostResult(host, "lost", run_id=run.run_id)
    if run.state != "finished":
        return HostResult(host, "running", run_id=run.run_id, started_at=run.started_at)
    duration = (run.finished_at - run.started_at) if run.started_at and run.finished_at else None
    if run.reason.startswith(REFUSED_OPTION):
        state, output = REFUSED_OPTION, run.reason
    else:
        state, output = "ok" if run.exit_code in ok_codes else "failed", run.output
    return HostResult(host, state, run.exit_code, duration, run.run_id, run.started_at, run.finished_at,
                      run.noop, output)


def wait_over(results: dict[str, HostResult]) -> bool:
    """`trigger fire --wait` stops waiting: every host has a finished run serving the fire
    (a lost one gives its fires to the next), or no watcher."""
    return all(r.done or r.state == NO_WATCHER for r in results.values())


def wait_succeeded(results: dict[str, HostResult]) -> bool:
    """`trigger fire --wait` exits 0: every host's run ended ok."""
    return all(r.state == "ok" for r in results.values())


def serving_results(runs, event_id: str, hosts, ok_codes=PUPPET_OK) -> dict[str, HostResult]:
    """Each host's result for the fire, from the run records `runs`."""
    serving = runs_serving(runs).get(event_id, {})
    return {h: result_of(h, serving.get(h), ok_codes) for h in hosts}


def without_watcher(results: dict[str, HostResult], unwatched) -> dict[str, HostResult]:
    """The results with hosts still waiting that have no live watcher marked `no watcher`."""
    return {h: replace(r, state=NO_WATCHER) if r.state == "waiting" and h in unwatched else r
            for h, r in results.items()}


def counts(results) -> dict[str, int]:
    """How many hosts are in each state, every state named."""
    found = {state: 0 for state in STATES}
    for r in results:
        found[r.state] = found.get(r.state, 0) + 1
    return found


def list_runs(store: Store, layout: Layout, host: str | None = None) -> tuple[list[RunRecord], int]:
    """The run records of one host (or of every host), active and finished,
    and a revision to watch from (+1) without missing a change.

    The active ones are read first: a run that finishes between the two
    reads is then found under P/done/ rather than in neither. A record
    found in both is the finished one."""
    active_prefix = layout.runs_prefix(host) if host is not None else f"{layout.prefix}/hosts/"
    active, revision = store.get_prefix(active_prefix)
    done, _ = store.get_prefix(layout.done_prefix(host))
    return runs_in([*active, *done], layout), revision


def runs_in(store_items, layout: Layout) -> list[RunRecord]:
    """The valid run records among keys read from the store, one per run
    (a finished record wins over an active one of the same run)."""
    runs: dict[tuple[str, str], RunRecord] = {}
    for kv in store_items:
        run = _run_of(layout, kv.key, kv.value)
        if run is not None and (runs.get((run.host, run.run_id)) is None or run.state == "finished"):
            runs[(run.host, run.run_id)] = run
    return list(runs.values())


def runs_serving(runs) -> dict[str, dict[str, RunRecord]]:
    """{event id: {host: the run that served it}}.

    Several runs may have claimed one fire (one died and gave it back): a
    finished one is the answer, else the one that started last.
    """
    served: dict[str, dict[str, RunRecord]] = {}
    for run in runs:
        for event_id in run.served:
            hosts = served.setdefault(event_id, {})
            if _rank(run) >= _rank(hosts.get(run.host)):
                hosts[run.host] = run
    return served


def _rank(run: RunRecord | None) -> tuple:
    if run is None:
        return (-1, 0.0)
    return (run.state == "finished", run.started_at or 0.0)


def _run_of(layout: Layout, key: str, value: bytes) -> RunRecord | None:
    where = layout.run_at(key)
    if where is None:
        return None
    try:
        run = parse_run(value)
    except BadRecord:
        return None
    # Only the key says who wrote it (etcd's permissions are per key).
    return run if (run.host, run.run_id) == where else None


def wait_for_fire(store: Store, layout: Layout, event_id: str, hosts: list[str], revision: int | None,
                  timeout: float, ok_codes=PUPPET_OK,
                  on_change: Callable[[dict[str, HostResult]], None] | None = None,
                  absent_grace: float | None = None, unwatched=()) -> dict[str, HostResult]:
    """Follow run records from `revision` until every host has finished a run
    that served the fire, or the timeout; returns each host's result.

    One watch on the whole prefix sees a run start in the host's prefix
    and its finished record arrive under P/done/, in that order. With
    `revision` None (re-attaching to an older fire) the runs already
    recorded are read first. `on_change` gets the results whenever one
    changes (and once at the start): what a progress display or an
    interrupted wait shows.

    With `absent_grace`, a host still waiting that has had no live watcher
    (member key; `unwatched` at the start) for that many seconds is
    `no watcher` and no longer waited for; its watcher coming back within
    the grace makes it waited for again.
    """
    results = {h: HostResult(h, "waiting") for h in hosts}
    best: dict[str, RunRecord] = {}
    prefix = f"{layout.prefix}/"
    report = on_change or (lambda _: None)
    now = time.monotonic()
    # host -> since when it has had no watcher, for the hosts the grace applies to
    absent_since = {h: now for h in unwatched if h in results} if absent_grace is not None else {}
    members = layout.members_prefix()

    def read_all() -> int:
        runs, read_at = list_runs(store, layout)
        for host, run in runs_serving(runs).get(event_id, {}).items():
            if host in results:
                best[host] = run
                results[host] = result_of(host, run, ok_codes)
        return read_at

    def membership(change) -> None:
        host = change.key[len(members):]
        if absent_grace is None or host not in results:
            return
        if isinstance(change, Put):
            absent_since.pop(host, None)
            if results[host].state == NO_WATCHER:
                results[host] = HostResult(host, "waiting")
        else:
            absent_since.setdefault(host, time.monotonic())

    def given_up() -> bool:
        """Mark the hosts absent past the grace; True if one changed."""
        changed = False
        for host, since in absent_since.items():
            if results[host].state == "waiting" and time.monotonic() - since >= absent_grace:
                results[host] = replace(results[host], state=NO_WATCHER)
                changed = True
        return changed

    if revision is None:
        revision = read_all()
    report(results)
    deadline = now + timeout
    changes: queue_module.Queue = queue_module.Queue()
    watch = store.watch_prefix(prefix, revision + 1, changes.put)
    try:
        while not wait_over(results):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            waiting_absent = [s for h, s in absent_since.items() if results[h].state == "waiting"]
            if waiting_absent:
                left = min(left, max(min(waiting_absent) + absent_grace - time.monotonic(), 0.0))
            try:
                item = changes.get(timeout=left)
            except queue_module.Empty:
                if given_up():
                    report(results)
                continue
            if isinstance(item, StoreError):
                revision = read_all()  # what the lost watch may have missed; then follow again
                report(results)
                watch = store.watch_prefix(prefix, revision + 1, changes.put)
                continue
            changed = False
            for change in item:
                if change.key.startswith(members):
                    membership(change)
                    changed = True
                elif isinstance(change, Put):
                    run = _run_of(layout, change.key, change.value)
                    if run is not None and run.host in results and event_id in run.served \
                            and _rank(run) >= _rank(best.get(run.host)):
                        best[run.host] = run
                        results[run.host] = result_of(run.host, run, ok_codes)
                        changed = True
            if given_up() or changed:
                report(results)
    finally:
        watch.cancel()
    return results


@dataclass(frozen=True)
class FireHistory:
    event_id: str
    trigger: str
    fired_at: float
    origin: str
    results: tuple[HostResult, ...]
    ok_codes: tuple[int, ...] = PUPPET_OK  # what the results were judged by
    chain: tuple[str, ...] = ()  # the hosts whose runs fired it, in order
    refused: str | None = None  # a fire the loop TTL refused: why (it reached no host)


def history(store: Store, layout: Layout, limit: int = 20, ok_codes=None,
            event_id: str | None = None) -> list[FireHistory]:
    """The newest fires still kept (or the one fire `event_id`), with what
    each host's run made of them, judged by the exit codes the fire was made
    with (`ok_codes` overrides them); fires the loop TTL refused among them.

    A failed run that made a fire the TTL refused (its host is the last of
    the refusal's chain, the refusal within the run) is `refused`, not
    `failed`: the loop protection stopped it, as it should.
    """
    if event_id is not None:
        found = [store.get(layout.fire_key(event_id)), store.get(layout.refused_key(event_id))]
        fires = [kv for kv in found[:1] if kv is not None]
        refused_items = [kv for kv in found[1:] if kv is not None]
    else:
        fires, _ = store.get_prefix(layout.fires_prefix())
        refused_items, _ = store.get_prefix(layout.refused_key(""))  # P/refused/
    records = [r for r in (fire_record(kv.value) for kv in fires) if r is not None]
    refusals = [r for r in (refusal_record(kv.value) for kv in refused_items) if r is not None]
    if not records and not refusals:
        return []
    served = runs_serving(list_runs(store, layout)[0]) if records else {}
    out = list(refusals)
    for r in records:
        runs = served.get(r.event_id, {})
        judged_by = tuple(ok_codes) if ok_codes is not None else r.ok_codes
        results = tuple(_refused_or(result_of(h, runs.get(h), judged_by), refusals) for h in r.hosts)
        out.append(FireHistory(r.event_id, r.trigger, r.fired_at, r.origin, results, judged_by))
    out.sort(key=lambda f: f.fired_at, reverse=True)
    return out[:limit]


def _refused_or(result: HostResult, refusals: list[FireHistory]) -> HostResult:
    """A failed result `refused` if its run made a fire the loop TTL refused."""
    if result.state != "failed" or result.started_at is None or result.finished_at is None:
        return result
    for r in refusals:
        if r.origin == result.host and result.started_at <= r.fired_at <= result.finished_at:
            return replace(result, state=REFUSED)
    return result


def refusal_record(value: bytes) -> FireHistory | None:
    """A refused fire as `trigger.fire` keeps it under P/refused/ (hosts, chain, reason), with
    no results yet; None if it is not one (any firer can write there)."""
    try:
        data = json.loads(value)
        hosts = tuple(check_host(h) for h in data["hosts"][:MAX_SERVED])
        chain = tuple(str(h)[:256] for h in data["chain"][:256])
        if not (isinstance(data["id"], str) and isinstance(data["trigger"], str)):
            return None
        return FireHistory(data["id"][:128], data["trigger"][:256], float(data["refused_at"]),
                           chain[-1] if chain else "", tuple(HostResult(h, REFUSED) for h in hosts),
                           (), chain, str(data.get("reason", "refused"))[:1024])
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError, BadRecord):
        return None


def kept_event_ids(store: Store, layout: Layout, with_refused: bool = False) -> list[str]:
    """The ids of the fires kept for `history` and `wait` (and of the refused ones), newest first."""
    kept: list[tuple[float, str]] = []
    for prefix, parse in ((layout.fires_prefix(), fire_record), (layout.refused_key(""), refusal_record)):
        if parse is refusal_record and not with_refused:
            continue
        items, _ = store.get_prefix(prefix)
        for kv in items:
            record = parse(kv.value)
            if record is not None:
                kept.append((record.fired_at, kv.key[len(prefix):]))
    return [event_id for _, event_id in sorted(kept, reverse=True)]


@dataclass(frozen=True)
class FireRecord:
    """A fire as kept under P/fires/ for history and for re-attaching."""

    event_id: str
    trigger: str
    fired_at: float
    origin: str
    hosts: tuple[str, ...]
    ok_codes: tuple[int, ...] = PUPPET_OK


def fire_record(value: bytes) -> FireRecord | None:
    """A fire record, or None if it is not one: any firer can write there,
    so it is checked like an inbox entry."""
    try:
        data = json.loads(value)
        hosts = tuple(check_host(h) for h in data["hosts"][:MAX_SERVED])
        fired_at = float(data["fired_at"])
        if not (isinstance(data["id"], str) and isinstance(data["trigger"], str)):
            return None
        codes = data.get("ok_codes", list(PUPPET_OK))
        if not (isinstance(codes, list) and codes and len(codes) <= 256
                and all(isinstance(c, int) and not isinstance(c, bool) for c in codes)):
            return None
        return FireRecord(data["id"][:128], data["trigger"][:256], fired_at,
                          str(data.get("origin", ""))[:256], hosts, tuple(codes))
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError, BadRecord):
        return None


@dataclass(frozen=True)
class HostStatus:
    host: str
    alive: bool
    roles: tuple[str, ...]
    pending: int
    queued: int
    running: int
    quarantined: int
    last: RunRecord | None


def status(store: Store, layout: Layout) -> list[HostStatus]:
    """Per host: watcher alive (its member key), inbox, active runs, last result."""
    from .coordination import member_at
    from .records import parse_entry

    items, _ = store.get_prefix(f"{layout.prefix}/")
    seen: dict[str, dict] = {}
    runs = runs_in(items, layout)

    def host(name):
        return seen.setdefault(name, {"alive": False, "roles": (), "pending": 0, "runs": [],
                                      "quarantined": 0})

    for kv in items:
        parts = kv.key[len(layout.prefix) + 1:].split("/")
        if len(parts) < 2:
            continue
        if parts[0] == "members" and len(parts) == 2:
            member = member_at(layout, kv.key, kv.value)
            if member is None:
                continue
            host(member.host).update(alive=True, roles=member.roles)
        elif parts[0] == "quarantine":
            host(parts[1])["quarantined"] += 1
        elif parts[0] == "hosts" and len(parts) >= 3:
            kind, _ = layout.classify(parts[1], kv.key)
            try:
                if kind == "entry":
                    parse_entry(kv.value)
                    host(parts[1])["pending"] += 1
                elif kind == "run":
                    parse_run(kv.value)
            except BadRecord:
                host(parts[1])["quarantined"] += 1  # the watcher moves it aside soon
    for run in runs:
        host(run.host)["runs"].append(run)
    out = []
    for name in sorted(seen):
        h = seen[name]
        runs = sorted(h["runs"], key=lambda r: r.started_at or r.queued_at or 0)
        finished = [r for r in runs if r.state in ("finished", "lost")]
        out.append(HostStatus(
            name, h["alive"], h["roles"], h["pending"],
            sum(r.state == "queued" for r in runs), sum(r.state == "started" for r in runs),
            h["quarantined"], finished[-1] if finished else None))
    return out
