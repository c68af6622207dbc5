"""What a queued run does around its command: mark start, run, mark finish.

A run serving a trigger with `max_concurrent` first takes a slot of it
(trigger.coordination.Slot), and only then acknowledges: a run that dies
waiting for a slot leaves its fires in the inbox for the next run.

`start_run` is the acknowledgement: one transaction writes the started run
record, listing every inbox entry present, and removes those entries (a
large inbox needs more transactions; the record comes first, so a crash in
between leaves entries that merely get one more run). An entry therefore
goes only when a run that started after its fire has begun.

`finish_run` moves the record out of the host's prefix, to P/done/, in one
transaction: the inbox and the active runs stay a short read however many
finished runs the retention keeps.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace

from .fire import TXN_OPS, Lineage
from .layout import Layout
from .records import MAX_SERVED, BadRecord, RunRecord, check_id, parse_entry, parse_run
from .store.base import DeleteOp, PutOp, Store


def _inbox(store: Store, layout: Layout, host: str, run_id: str):
    """The usable inbox entries as (key, name, entry), and the run's queued time."""
    items, _ = store.get_prefix(layout.host_prefix(host))
    queued_at, entries = None, []
    for kv in items:
        kind, name = layout.classify(host, kv.key)
        try:
            if kind == "run" and name == run_id:
                queued_at = parse_run(kv.value).queued_at
            elif kind == "entry" and len(entries) < MAX_SERVED:
                check_id(name, "event id in the key")  # else our own record could not list it
                entries.append((kv.key, name, parse_entry(kv.value)))
        except BadRecord:
            continue  # the watcher quarantines it; a run cannot serve it
    return entries, queued_at


def pending_limits(store: Store, layout: Layout, host: str) -> dict[str, int]:
    """{trigger: max_concurrent} of the limited triggers waiting in the inbox."""
    limits: dict[str, int] = {}
    for _, _, entry in _inbox(store, layout, host, "")[0]:
        if entry.max_concurrent:
            limits[entry.trigger] = min(limits.get(entry.trigger, entry.max_concurrent),
                                        entry.max_concurrent)
    return limits


def start_run(store: Store, layout: Layout, host: str, run_id: str, now: float,
              held: dict[str, int] | None = None) -> RunRecord:
    """Acknowledge the inbox. With `held` (the slots the run holds), entries
    of a limited trigger without a slot stay for the next run."""
    entries, queued_at = _inbox(store, layout, host, run_id)
    if held is not None:
        entries = [e for e in entries if not e[2].max_concurrent or e[2].trigger in held]
    best = max((e for _, _, e in entries), key=lambda e: e.hop, default=None)
    lineage = Lineage(best.hop, best.chain) if best else Lineage()
    record = RunRecord(
        run_id=run_id, host=host, state="started", queued_at=queued_at,
        started_at=now, served=tuple(name for _, name, _ in entries),
        hop=lineage.hop, chain=lineage.chain, limits=tuple(sorted((held or {}).items())),
    )
    deletes = [DeleteOp(key) for key, _, _ in entries]
    store.txn([PutOp(layout.run_key(host, run_id), record.encode()), *deletes[: TXN_OPS - 1]])
    rest = deletes[TXN_OPS - 1 :]
    for i in range(0, len(rest), TXN_OPS):
        store.txn(rest[i : i + TXN_OPS])
    return record


def finish_run(store: Store, layout: Layout, record: RunRecord, exit_code: int,
               now: float, lease: int = 0) -> RunRecord:
    """Record the end, moving the record to P/done/ (with the retention's
    `lease`). Repeating it is harmless: a write that timed out is retried."""
    done = replace(record, state="finished", finished_at=now, exit_code=exit_code)
    store.txn([PutOp(layout.done_key(record.host, record.run_id), done.encode(), lease=lease),
               DeleteOp(layout.run_key(record.host, record.run_id))])
    return done


def run_command(argv: list[str], record: RunRecord) -> int:
    """Run the configured command (an argv, never a shell) with the lineage."""
    env = dict(os.environ)
    env.update(Lineage(record.hop, record.chain).to_env())
    env["TRIGGER_RUN_ID"] = record.run_id
    env["TRIGGER_HOST"] = record.host
    try:
        return subprocess.call(argv, env=env)
    except OSError as exc:
        raise BadRecord(f"cannot run {argv[0]!r}: {exc.strerror}") from None
