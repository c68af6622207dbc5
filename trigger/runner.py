"""The store steps of a triggered run: take the host's run lock, claim, finish, give back.

`procedures.triggered_run` calls these in order, each a function of the
store so both drivers run them:

* `take_run_lock`: one run at a time per host, whatever happens to
  task-spooler: the key `P/hosts/<host>/lock/run` names the run holding it,
  on that run's lease. A run waits for it before anything else.
* `start_run` claims the inbox: it writes the started run record listing
  the entries present (a batch of at most MAX_CLAIM_BYTES of ids, so a
  record always fits etcd's request limit; the rest get the next run).
  Entries stay in the inbox while the command runs.
* `finish_run` removes the claimed entries and writes the finished record,
  moved to P/done/ so the host's prefix stays a short read; the last batch
  of removals and the move are one transaction. An entry
  therefore goes only when a run that started after its fire has run its
  command to the end. A run that dies first leaves its entries, and the
  watcher, seeing its lock go while the record says started, marks it lost:
  they get a new run.
* `give_back`: a run whose command was stopped records itself lost and
  leaves its entries for the next run.
* `start_command` runs the command (an argv, never a shell), with the run's
  options appended as argv (`option_argv`) only when the watcher allows them
  (`refused_options`), its output teed: on to where it went before
  (task-spooler's output file), and its last OUTPUT_TAIL_BYTES kept for the
  finished record.

A run id is carried out at most once, whatever restarts: the lock and the
started record name the execution (`execution_of` its lease, which etcd
never grants twice). A start needs a queued record (or none, for a run
queued by hand) or the same execution's started one; a second execution of
a started, finished or lost run gets `RunRefused` and runs nothing.

Every step can be retried after an answer was lost: `start_run` returns the
record an earlier try wrote, `finish_run` repeats deletions of gone keys.
"""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass

from .core import can_join, run_class
from .fire import TXN_OPS, Lineage
from .layout import Layout
from .leftovers import become_reaper
from .policy import OUTPUT_DRAIN_WAIT
from .records import MAX_CLAIM_BYTES, MAX_SERVED, OUTPUT_TAIL_BYTES, REFUSED_OPTION, BadRecord, \
    RunRecord, check_id, lock_value, parse_entry, parse_lock, parse_run
from .store.base import DeleteOp, PutOp, Store


def _inbox(store: Store, layout: Layout, host: str, run_id: str):
    """The usable inbox entries as (key, name, entry), and this run's own record."""
    items, _ = store.get_prefix(layout.host_prefix(host))
    own, entries = None, []
    for kv in items:
        kind, name = layout.classify(host, kv.key)
        try:
            if kind == "run" and name == run_id:
                own = parse_run(kv.value)
            elif kind == "entry":
                check_id(name, "event id in the key")  # else our own record could not list it
                entries.append((kv.key, name, parse_entry(kv.value)))
        except BadRecord:
            continue  # the watcher quarantines it; a run cannot serve it
    return entries, own


def _limits(entries) -> dict[str, int]:
    """{trigger: max_concurrent} of the limited triggers among the entries."""
    limits: dict[str, int] = {}
    for _, _, entry in entries:
        if entry.max_concurrent:
            limits[entry.trigger] = min(limits.get(entry.trigger, entry.max_concurrent), entry.max_concurrent)
    return limits


def execution_of(lease: int) -> str:
    """The name of one execution of a run: the lease it holds its lock on."""
    return f"{lease:x}"


@dataclass(frozen=True)
class RunRefused:
    """This execution may not start the run: another one did, or it ended (told)."""

    run_id: str
    reason: str

    def describe(self) -> str:
        return f"{self.run_id} runs nothing: {self.reason} (a run is carried out at most once)"


def take_run_lock(store: Store, layout: Layout, host: str, run_id: str,
                  lease: int) -> tuple[str, int] | None:
    """Take the host's run lock on `lease` for this execution; None once
    held, else who holds it (run id and execution) and the revision from
    which a watch sees it go.

    A lock whose run finished (its lease not yet revoked: etcd was away when
    it tried) is stale and taken over; a holder of "" asks the caller to try
    again at once. Another execution of the same run is waited for like any
    other run.
    """
    key = layout.run_lock_key(host)
    ours = lock_value(run_id, execution_of(lease))
    if store.txn([PutOp(key, ours, lease)], expect_missing=(key,)) is not None:
        return None
    held = store.get(key)
    if held is None:
        return "", 0  # it went meanwhile: try again
    if held.value == ours:
        return None  # an earlier try's answer was lost
    holder, execution = parse_lock(held.value)
    if _finished(store, layout, host, holder):
        store.txn([DeleteOp(key)], expect_revisions=((key, held.mod_revision),))
        return "", 0
    if holder == run_id:
        holder = f"{holder} (another execution of it, {execution or 'unnamed'})"
    return holder, held.mod_revision + 1


def _finished(store: Store, layout: Layout, host: str, run_id: str) -> bool:
    try:
        check_id(run_id, "run id")
        kv = store.get(layout.done_key(host, run_id))
        return kv is not None and parse_run(kv.value).state == "finished"
    except BadRecord:
        return False


def start_run(store: Store, layout: Layout, host: str, run_id: str, now: float,
              held: dict[str, int] | None = None,
              execution: str = "") -> RunRecord | dict[str, int] | RunRefused:
    """Claim the inbox for `execution`: the started record lists a batch of the entries present.

    Without `held`, while a limited trigger waits, nothing is claimed: the
    answer is {trigger: max_concurrent} of those waiting, the slots to take
    first. With `held` (the slots the run holds), only entries of the same
    trigger and the same limit as a held slot are served; the others stay
    for the next run. (One read of the inbox for the run of no limited
    trigger.) RunRefused when another execution started the run, or it ended.
    """
    entries, own = _inbox(store, layout, host, run_id)
    refused = _refusal(store, layout, host, run_id, own, execution)
    if refused is not None:
        return refused
    again = own is not None and own.state == "started"  # an earlier try was applied, its answer lost
    if again:
        if held is None and own.limits:
            return dict(own.limits)  # the same slots as that try
        return own  # the same claim
    options = run_class(e for _, _, e in entries)  # one class: the oldest entry's options
    entries = [e for e in entries if can_join(e[2], options, held)]
    if held is None:
        limits = _limits(entries)
        if limits:
            return limits
    claimed, size = [], 0
    for _, name, entry in entries:  # oldest first: event ids sort by time
        size += len(name) + 3
        if size > MAX_CLAIM_BYTES or len(claimed) >= MAX_SERVED:
            break
        claimed.append((name, entry))
    best = max((e for _, e in claimed), key=lambda e: e.hop, default=None)
    lineage = Lineage(best.hop, best.chain) if best else Lineage()
    record = RunRecord(
        run_id=run_id, host=host, state="started",
        queued_at=own.queued_at if own is not None else None,
        started_at=now, served=tuple(name for name, _ in claimed),
        hop=lineage.hop, chain=lineage.chain, limits=tuple(sorted((held or {}).items())),
        noop=options[0] if options else False, tags=options[1] if options else (),
        execution=execution,
    )
    store.put(layout.run_key(host, run_id), record.encode())
    return record


def _refusal(store: Store, layout: Layout, host: str, run_id: str, own: RunRecord | None,
             execution: str) -> RunRefused | None:
    """Why this execution may not start the run, if it may not."""
    if own is None:  # never queued (a run started by hand), or finished: moved to P/done/
        if store.get(layout.done_key(host, run_id)) is not None:
            return RunRefused(run_id, "it finished already")
        return None
    if own.state == "started" and own.execution != execution:
        return RunRefused(run_id, f"execution {own.execution or '(unnamed)'} started it")
    if own.state not in ("queued", "started"):
        return RunRefused(run_id, f"it is {own.state}" + (f" ({own.reason})" if own.reason else ""))
    return None


def finish_run(store: Store, layout: Layout, record: RunRecord, exit_code: int | None,
               now: float, lease: int = 0, output: str = "", reason: str = "") -> RunRecord:
    """Remove the claimed entries; the last batch goes with the finished
    record (with the tail of the command's `output`; `reason`: why it ran nothing, or what
    it left behind),
    moved to P/done/ (with the retention's `lease`). Repeating it is
    harmless: a write that timed out is retried."""
    done = record._replace(state="finished", finished_at=now, exit_code=exit_code,
                           output=output[-OUTPUT_TAIL_BYTES:], reason=reason)
    deletes = [DeleteOp(layout.entry_key(record.host, name)) for name in record.served]
    room = TXN_OPS - 2  # the last transaction also moves the record
    tail = len(deletes) % room or min(len(deletes), room)
    head = deletes[: len(deletes) - tail]
    for i in range(0, len(head), TXN_OPS):
        store.txn(head[i : i + TXN_OPS])
    store.txn([*deletes[len(head):],
               PutOp(layout.done_key(record.host, record.run_id), done.encode(), lease=lease),
               DeleteOp(layout.run_key(record.host, record.run_id))])
    return done


def give_back(store: Store, layout: Layout, record: RunRecord, reason: str, now: float,
              exit_code: int | None, lease: int = 0) -> RunRecord:
    """The command did not run to its end: record the run lost; its entries stay."""
    lost = record._replace(state="lost", finished_at=now, exit_code=exit_code, reason=reason)
    store.put(layout.run_key(record.host, record.run_id), lost.encode(), lease)
    return lost


# -- run options: what a fire may add to the command ---------------------------------

def refused_options(record: RunRecord, allowed) -> str:
    """Why this run may not run its command with its options ("" if it may)."""
    asked = [name for name, on in (("noop", record.noop), ("tags", bool(record.tags))) if on]
    refused = [name for name in asked if name not in allowed]
    if not refused:
        return ""
    return (f"{REFUSED_OPTION}: this watcher does not allow {', '.join('--' + n for n in refused)} "
            f"(it allows: {', '.join('--' + n for n in allowed) or 'none'})")


def option_argv(record: RunRecord) -> list[str]:
    """The run's options as Puppet's arguments, appended to the command's argv."""
    return (["--noop"] if record.noop else []) + (["--tags", ",".join(record.tags)] if record.tags else [])


# -- the command ------------------------------------------------------------------------


class OutputTail:
    """Copies a command's output from a pipe on to `out` and keeps its last `size` bytes."""

    def __init__(self, pipe, out: int, size: int = OUTPUT_TAIL_BYTES):
        # Our own copy of `out`: a child of the command may keep the pipe open
        # after the run, and the run's `out` (a standby's FIFO) is closed then.
        self.pipe, self.out, self.size = pipe, os.dup(out), size
        self.kept = bytearray()
        self.thread = threading.Thread(target=self._copy, daemon=True, name="trigger-output")
        self.thread.start()

    def _copy(self) -> None:
        try:
            while chunk := self.pipe.read1(65536):
                try:
                    os.write(self.out, chunk)  # on as before; a gone reader must not stop the run
                except OSError:
                    pass
                self.kept += chunk
                if len(self.kept) > 2 * self.size:
                    del self.kept[: len(self.kept) - self.size]
        finally:
            self.pipe.close()
            os.close(self.out)

    def text(self, wait: float = OUTPUT_DRAIN_WAIT) -> str:
        """The tail, once the pipe closed (or after `wait` s: a child of the command may hold it)."""
        self.thread.join(wait)
        tail = bytes(self.kept[-self.size:])
        return tail.decode("utf-8", "replace").lstrip("\ufffd")  # a character cut at the start


def start_command(argv: list[str], record: RunRecord, out: int | None = None) -> subprocess.Popen:
    """Start the configured command (an argv, never a shell) with the lineage, in a session
    and process group of its own (stopping the run ends the group); its output (stdout and
    stderr) teed to `out` (a file descriptor; default: our stdout) and its tail kept in
    `process.tail` (an OutputTail)."""
    env = dict(os.environ)
    env.update(Lineage(record.hop, record.chain).to_env())
    env["TRIGGER_RUN_ID"] = record.run_id
    env["TRIGGER_HOST"] = record.host
    become_reaper()  # what the command leaves behind becomes ours to stop
    try:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    except OSError as exc:
        raise BadRecord(f"cannot run {argv[0]!r}: {exc.strerror}") from None
    process.tail = OutputTail(process.stdout, 1 if out is None else out)
    process.run_id = record.run_id  # its processes carry it: what it leaves behind is found by it
    return process
