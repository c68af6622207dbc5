"""Item 8: a busy host costs what an idle one does.

A host with 10,000 finished runs kept (seven days of a busy host) against
an empty one, on the same etcd: the run start (`start_run`,
what `trigger run` does before its command) and the watcher's
re-read of the host's prefix. bench/retention_worker.py does the work with
the python and the code of each side (this checkout, and --before), each
on its own prefix; the sides take turns, a few rounds at a time.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .harness import THIS, base_env, start_etcd
from .report import Row, verdict
from .stats import summarize

WORKER = Path(__file__).with_name("retention_worker.py")
FINISHED = 10_000


def _worker(code, endpoint: str, prefix: str, *args: str) -> dict:
    done = subprocess.run([code.python, str(WORKER), endpoint, prefix, *args], env=base_env(code),
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"retention worker ({code.label}) failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def run(session, rounds: int, before=None) -> tuple[list[Row], dict]:
    etcd = start_etcd(session, "etcd-retention")
    sides = {"ours": THIS} if before is None else {"ours": THIS, "before": before}
    where = {name: _worker(code, etcd.endpoint, f"/bench/ret-{name}", "populate", str(FINISHED))
             for name, code in sides.items()}
    got = {name: {"start_ms": {"empty": [], "full": []}, "reread_ms": {"empty": [], "full": []}}
           for name in sides}
    keys = {}
    chunk = 5
    for _ in range(max(1, rounds // chunk)):
        for name, code in sides.items():
            out = _worker(code, etcd.endpoint, f"/bench/ret-{name}", "measure", str(chunk))
            for what in ("start_ms", "reread_ms"):
                for host in ("empty", "full"):
                    got[name][what][host] += out[what][host]
            keys[name] = out["keys"]
    s = {name: {what: {host: summarize(v) for host, v in hosts.items()} for what, hosts in side.items()}
         for name, side in got.items()}
    rows = []
    for what, label in (("start_ms", "run start (reads + ack txn)"), ("reread_ms", "watcher re-read")):
        full, empty = s["ours"][what]["full"]["p50"], s["ours"][what]["empty"]["p50"]
        rows.append(Row("8 retention", f"{label} p50, 10,000 finished runs kept", full, "ms", empty,
                        "empty host", target="within 10 %",
                        verdict=verdict(None if None in (full, empty) else full <= 1.1 * empty),
                        note=f"host prefix keys: {keys['ours']['full']} vs {keys['ours']['empty']}"))
        if before is not None:
            old_full, old_empty = s["before"][what]["full"]["p50"], s["before"][what]["empty"]["p50"]
            rows.append(Row("8 retention", f"before: {label} p50, 10,000 finished runs kept", old_full, "ms",
                            old_empty, "empty host",
                            note=f"host prefix keys: {keys['before']['full']} vs {keys['before']['empty']}"))
            rows.append(Row("8 retention", f"{label} p50 with 10,000 kept, after / before", full, "ms",
                            old_full, "before"))
    return rows, {"summary": s, "samples": got, "keys": keys, "finished_records_at": where}
