"""One side of item 8, run as a script by the python of the code measured
(this checkout, or the one given with --before), so it uses that code's
own store, layout, start_run and finish_run.

usage: python bench/retention_worker.py ENDPOINT PREFIX populate N
       python bench/retention_worker.py ENDPOINT PREFIX measure ROUNDS

populate: host `full` gets N finished runs, written where this code's
finish_run leaves a finished record (found by finishing one run and
looking), in transactions of 128; host `empty` gets none.
measure: ROUNDS times for each host, in turns: one fire, then the run
start (`start_run`: the read and the transaction of `trigger run`
before its command) and the watcher's re-read (a range of the
host's prefix), both timed; then the run is finished (not timed).
Prints JSON: {"start_ms": {host: [...]}, "reread_ms": {host: [...]}, "keys": {host: n}}.
"""

import json
import sys
import time


def main() -> None:
    endpoint, prefix, mode, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    from trigger.fire import Lineage, fire
    from trigger.layout import Layout
    from trigger.runner import finish_run, start_run
    from trigger.store import PutOp, open_store

    store = open_store("etcd", endpoints=[endpoint])
    layout = Layout(prefix)
    if mode == "populate":
        record = finish_run(store, layout, start_run(store, layout, "full", "probe-run", time.time()), 0, time.time())
        items, _ = store.get_prefix(prefix + "/")
        (template,) = [kv for kv in items if kv.key.endswith("/probe-run")]
        ops = []
        for i in range(count):
            run_id = f"old-{i:06d}"
            value = template.value.replace(b"probe-run", run_id.encode())
            ops.append(PutOp(template.key.replace("probe-run", run_id), value))
            if len(ops) == 128:
                store.txn(ops)
                ops = []
        if ops:
            store.txn(ops)
        print(json.dumps({"finished_record_at": template.key, "record": record.run_id}))
        return
    out = {"start_ms": {"empty": [], "full": []}, "reread_ms": {"empty": [], "full": []}, "keys": {}}
    for i in range(count):
        for host in ("empty", "full"):
            fire(store, layout, "bench-retention", [host], Lineage(), "bench")
            t0 = time.perf_counter()
            record = start_run(store, layout, host, f"r-{time.time_ns()}", time.time())
            t1 = time.perf_counter()
            items, _ = store.get_prefix(layout.host_prefix(host))
            t2 = time.perf_counter()
            out["start_ms"][host].append((t1 - t0) * 1000)
            out["reread_ms"][host].append((t2 - t1) * 1000)
            out["keys"][host] = len(items)
            finish_run(store, layout, record, 0, time.time())
    store.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
