"""Item 2: fan-out, one fire to 100, 1,000 and 10,000 hosts.

Ours: one cold `trigger fire NAME --hosts h1,...,hN` process (start-up,
imports, 128-key transactions), wall time. Side by side: the seed's
provider shape, one `etcdctl put` process per host, run one after the
other; above `etcdctl_sample` processes, that many are timed and the time
extrapolated linearly to N (the rows say so).

Two what-ifs, to show where our time goes: the same fire from inside a
process (no start-up, transactions one after the other) and with 8
transactions in flight at once (etcd commits concurrent writes in one
fsync). And one check: `--hosts` is one argv string, which Linux caps at
128 KiB (MAX_ARG_STRLEN), so 10,000 long host names cannot be passed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from .harness import base_env
from .report import Row, verdict
from .stats import extrapolate

SIZES = (100, 1000, 10000)
IN_FLIGHT = 8


def hosts(n: int, width: int = 5) -> list[str]:
    return [f"h{i:0{width}d}" for i in range(n)]


def _trigger_fire(endpoint: str, prefix: str, names: list[str],
                  per_arg: int = 0) -> tuple[float, int, str]:
    """A cold `trigger fire`; with `per_arg`, that many names per --hosts,
    as the Puppet module passes them."""
    groups = [names[i : i + per_arg] for i in range(0, len(names), per_arg)] if per_arg else [names]
    host_args = [arg for group in groups for arg in ("--hosts", ",".join(group))]
    argv = [sys.executable, "-m", "trigger", "fire", "bench-fanout", *host_args,
            "--endpoints", endpoint, "--prefix", prefix]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(argv, env=base_env(), capture_output=True, text=True, timeout=120)
    except OSError as exc:  # E2BIG: the argument list is too long
        return time.perf_counter() - t0, -exc.errno, exc.strerror
    return time.perf_counter() - t0, done.returncode, done.stderr.strip()[-300:]


def _etcdctl_puts(endpoint: str, prefix: str, names: list[str]) -> float:
    env = {**base_env(), "ETCDCTL_API": "3"}
    t0 = time.perf_counter()
    for name in names:
        subprocess.run(["etcdctl", "--endpoints", endpoint, "put", f"{prefix}/hosts/{name}/fire", "1"],
                       env=env, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, check=True, timeout=30)
    return time.perf_counter() - t0


def _in_process(store, prefix: str, names: list[str], in_flight: int) -> float:
    from trigger.fire import TXN_OPS, Lineage, make_entry
    from trigger.layout import Layout
    from trigger.store.base import PutOp

    layout = Layout(prefix)
    t0 = time.perf_counter()
    entry = make_entry("bench-fanout", Lineage(), "bench")
    value = entry.encode()
    ops = [PutOp(layout.entry_key(h, entry.id), value) for h in names]
    batches = [ops[i:i + TXN_OPS] for i in range(0, len(ops), TXN_OPS)]
    if in_flight <= 1:
        for batch in batches:
            store.txn(batch)
    else:
        with ThreadPoolExecutor(in_flight) as pool:
            list(pool.map(store.txn, batches))
    return time.perf_counter() - t0


def _count(store, prefix: str) -> int:
    items, _ = store.get_prefix(prefix + "/hosts/")
    return len(items)


def run(session, etcd, store, reps: int, etcdctl_sample: int) -> tuple[list[Row], dict]:
    rows: list[Row] = []
    details: dict = {"sizes": {}, "in_flight": IN_FLIGHT}
    seq = 0
    for n in SIZES:
        names = hosts(n)
        cold, codes = [], []
        for _ in range(reps):
            seq += 1
            prefix = f"/bench/fanout/{seq}"
            seconds, code, err = _trigger_fire(etcd.endpoint, prefix, names)
            written = _count(store, prefix)
            codes.append((code, written, err if code else ""))
            if code == 0 and written == n:
                cold.append(seconds)
        sample = names[: min(n, etcdctl_sample)]
        seq += 1
        sample_seconds = _etcdctl_puts(etcd.endpoint, f"/bench/fanout/{seq}", sample)
        etcdctl_total = extrapolate(sample_seconds, len(sample), n)
        measured = len(sample) == n
        ours = min(cold) if cold else None
        note = f"best of {len(cold)} cold runs" if reps > 1 else "one cold run"
        base_name = "etcdctl put ×N" + ("" if measured else f" (extrapolated from {len(sample)})")
        target = "< 1 s" if n == 10000 else ""
        rows.append(Row("2 fan-out", f"trigger fire to {n:,} hosts", ours, "s", etcdctl_total, base_name,
                        target=target, verdict=verdict(ours < 1.0 if ours is not None and target else None),
                        note=note))
        details["sizes"][n] = {"trigger_fire_s": cold, "exit_codes": codes,
                               "etcdctl_sample": len(sample), "etcdctl_sample_s": sample_seconds,
                               "etcdctl_total_s": etcdctl_total, "etcdctl_measured_all": measured,
                               "hosts_arg_bytes": len(",".join(names))}

    names = hosts(10000)
    seq += 1
    sequential = _in_process(store, f"/bench/fanout/{seq}", names, 1)
    seq += 1
    concurrent = _in_process(store, f"/bench/fanout/{seq}", names, IN_FLIGHT)
    cold_10k = rows[-1].ours
    rows.append(Row("2 fan-out", "what-if: 10,000 hosts in-process, txns one by one", sequential, "s",
                    cold_10k, "trigger fire cold"))
    rows.append(Row("2 fan-out", f"what-if: 10,000 hosts in-process, {IN_FLIGHT} txns in flight", concurrent,
                    "s", cold_10k, "trigger fire cold"))

    long_names = [f"node-{i:05d}.dc1.example.com" for i in range(10000)]
    arg_bytes = len(",".join(long_names))
    results = {}
    for per_arg in (0, 400):  # one --hosts (the kernel refuses it), then as the Puppet module
        seq += 1
        seconds, code, err = _trigger_fire(etcd.endpoint, f"/bench/fanout/{seq}", long_names, per_arg)
        results[per_arg] = [seconds, code, err]
        e2big = code == -7  # errno 7 is E2BIG on Linux
        shape = "--hosts of 400 names each" if per_arg else "one --hosts"
        rows.append(Row("2 fan-out", f"trigger fire to 10,000 FQDNs ({arg_bytes // 1024} KiB, {shape})",
                        None if e2big else seconds, "s",
                        note="refused by the kernel: argument list too long (E2BIG)" if e2big
                        else f"exit {code}"))
    details.update({"inprocess_sequential_s": sequential, "inprocess_concurrent_s": concurrent,
                    "fqdn_hosts_arg_bytes": arg_bytes, "fqdn_results": results,
                    "arg_max": os.sysconf("SC_ARG_MAX")})
    return rows, details
