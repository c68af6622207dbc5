"""Item 7: 1,000 hosts' watch streams on one etcd, 100 fires a second.

The hosts' watchers (trigger's `WatchDaemon` + `WatcherCore` on the etcd
store, one watch stream each) run in a few worker processes
(bench/scale_worker.py); runs are carried out in those processes by
trigger's `start_run` / `finish_run`, without a process per run. This
process fires at `rate` a second, each fire to one host drawn at random,
through trigger's fire path.

Side by side from the same fires: the moment the hosts' watch streams
delivered each entry (etcd's floor at this scale, in the same processes)
and the moment a run serving it had started (acknowledged in etcd). A fire
"without a run" is one no run's served list names once the fires stop and
the drain has waited for them.
"""

from __future__ import annotations

import json
import random
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .harness import proc_cpu, proc_rss_mb, start_etcd, wait_for
from .report import Row, verdict
from .stats import cpu_percent, summarize

DRAIN = 20.0  # s to wait for the last fires' runs
MEMBER_TTL = 10  # s, trigger watch's default --member-ttl: the keep-alives measured


def etcd_metrics(endpoint: str) -> dict[str, float]:
    """etcd's Prometheus metrics (GET /metrics on the client port), summed per
    name and, for gRPC calls, per method: {"name" or "name{method}": value}."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name, _, labels = name_labels.partition("{")
        method = ""
        for label in labels.rstrip("}").split(","):
            if label.startswith("grpc_method="):
                method = "{" + label.split("=", 1)[1].strip('"') + "}"
        try:
            out[name + method] = out.get(name + method, 0.0) + float(value)
        except ValueError:
            continue
    return out


def _calls(before: dict, after: dict, method: str | None = None) -> float:
    """gRPC calls etcd handled between two snapshots: streams' messages
    for a method, else every unary call and stream message."""
    if method:
        return after.get(f"grpc_server_msg_received_total{{{method}}}", 0) - \
            before.get(f"grpc_server_msg_received_total{{{method}}}", 0)
    return sum(v - before.get(k, 0) for k, v in after.items() if k.startswith("grpc_server_msg_received_total{"))
READY_TIMEOUT = 120.0  # s for all the watches to open


def _read_journals(paths) -> tuple[dict, dict]:
    """({(host, event id): seen at}, {(host, event id): run started at})."""
    seen, served = {}, {}
    for path in paths:
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # being written
            if "w" in rec:
                seen.setdefault((rec["w"], rec["e"]), rec["t"])
            else:
                for event_id in rec["s"]:
                    served.setdefault((rec["r"], event_id), rec["t"])
    return seen, served


def run(session, n_hosts: int, n_procs: int, seconds: float, rate: float,
        idle_seconds: float = 10.0, store_name: str = "etcd") -> tuple[list[Row], dict]:
    """The watchers use the store `store_name` (etcd: the JSON gateway; etcd-grpc)."""
    group = "7 scale" if store_name == "etcd" else f"7 scale, {store_name}"
    from trigger.fire import Lineage, fire
    from trigger.layout import Layout
    from trigger.store import open_store

    etcd = start_etcd(session, f"etcd-scale-{store_name}")
    store = open_store("etcd", endpoints=[etcd.endpoint])
    session.on_close(store.close)
    work = session.dir(f"scale-{store_name}")
    hosts = [f"s{i:04d}.bench" for i in range(n_hosts)]
    etcd_rss0 = proc_rss_mb(etcd.proc.pid)
    workers, journals = [], []
    t_start = time.monotonic()
    for i in range(n_procs):
        hosts_file = work / f"hosts-{i}.txt"
        hosts_file.write_text("\n".join(hosts[i::n_procs]) + "\n")
        journals.append(work / f"journal-{i}.jsonl")
        workers.append(session.spawn([sys.executable, "-m", "bench.scale_worker", etcd.endpoint,
                                      str(hosts_file), str(journals[-1]), str(MEMBER_TTL), store_name],
                                     stdout=subprocess.PIPE, stderr=open(work / f"worker-{i}.log", "ab")))
    ready = []
    for w in workers:  # each says "ready" once all its hosts' watches are open
        remaining = READY_TIMEOUT - (time.monotonic() - t_start)
        if remaining > 0 and select.select([w.stdout], [], [], remaining)[0]:
            ready.append(w.stdout.readline().decode().strip() == "ready")
        else:
            ready.append(False)
    startup = time.monotonic() - t_start
    for i, ok in enumerate(ready):
        if not ok:  # its log says why; measuring without it would report nonsense
            lines = (work / f"worker-{i}.log").read_text(errors="replace").strip().splitlines()
            raise RuntimeError(f"scale worker {i} did not get ready: {lines[-1] if lines else 'no output'}")

    pids = [w.pid for w in workers]
    # Idle: every watch open, every member lease kept alive, no fire.
    time.sleep(MEMBER_TTL / 3 + 1)  # the first grants and registrations are done
    m0, idle_cpu0, t_idle = etcd_metrics(etcd.endpoint), proc_cpu(etcd.proc.pid), time.monotonic()
    idle_workers0 = sum(proc_cpu(p) for p in pids)
    time.sleep(idle_seconds)
    m1, idle_cpu1, idle_wall = etcd_metrics(etcd.endpoint), proc_cpu(etcd.proc.pid), time.monotonic() - t_idle
    idle = {
        "seconds": idle_wall,
        "etcd_cpu_percent": cpu_percent(idle_cpu1 - idle_cpu0, idle_wall),
        "workers_cpu_percent": cpu_percent(sum(proc_cpu(p) for p in pids) - idle_workers0, idle_wall),
        "etcd_rss_mb": proc_rss_mb(etcd.proc.pid), "etcd_rss_mb_before": etcd_rss0,
        "watch_streams": m1.get("etcd_debugging_mvcc_watch_stream_total", 0),
        "watchers": m1.get("etcd_debugging_mvcc_watcher_total", 0),
        "keepalives_per_s": _calls(m0, m1, "LeaseKeepAlive") / idle_wall,
        "grpc_messages_per_s": _calls(m0, m1) / idle_wall,
        "member_ttl": MEMBER_TTL,
    }
    cpu0 = {"workers": sum(proc_cpu(p) for p in pids), "etcd": proc_cpu(etcd.proc.pid)}
    layout, rng = Layout(), random.Random(7)
    fires: list[tuple[str, str, float]] = []
    fires_lock = threading.Lock()
    errors: list[str] = []

    def one(host: str) -> None:
        try:
            entry = fire(store, layout, "bench-scale", [host], Lineage(), "bench")
        except Exception as exc:
            errors.append(repr(exc))
            return
        with fires_lock:
            fires.append((host, entry.id, entry.fired_at))

    t0 = time.monotonic()
    total = int(seconds * rate)
    with ThreadPoolExecutor(4) as pool:
        for i in range(total):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, rng.choice(hosts))
    fire_wall = time.monotonic() - t0
    cpu1 = {"workers": sum(proc_cpu(p) for p in pids), "etcd": proc_cpu(etcd.proc.pid)}

    def all_served() -> bool:
        _, served = _read_journals(journals)
        return all((h, e) in served for h, e, _ in fires)

    drained = wait_for(all_served, DRAIN, 0.5)
    for w in workers:
        session.stop(w, grace=5.0)
    seen, served = _read_journals(journals)

    to_run = [served[(h, e)] - t for h, e, t in fires if (h, e) in served]
    to_watch = [seen[(h, e)] - t for h, e, t in fires if (h, e) in seen]
    without = [(h, e) for h, e, _ in fires if (h, e) not in served]
    run_s = summarize([v * 1000 for v in to_run])
    watch_s = summarize([v * 1000 for v in to_watch])
    cpu = {k: cpu_percent(cpu1[k] - cpu0[k], fire_wall) for k in cpu0}
    achieved = len(fires) / fire_wall
    note = (f"{n_hosts:,} hosts in {n_procs} processes, {len(fires):,} fires in {fire_wall:.0f} s "
            f"({achieved:.0f}/s); run = in-process start_run, no process start")
    rows = [
        Row(group, "fire→run start p50", run_s["p50"], "ms", watch_s["p50"], "watch delivery", note=note),
        Row(group, "fire→run start p99", run_s["p99"], "ms", watch_s["p99"], "watch delivery",
            target="≤ delivery + 10 ms", note="item 1's target, without the process start",
            verdict=verdict(None if run_s["p99"] is None or watch_s["p99"] is None
                            else run_s["p99"] <= watch_s["p99"] + 10)),
        Row(group, "fires without a run", len(without), "", target="0", verdict=verdict(not without),
            note=f"drained: {drained}" + (f"; fire errors: {len(errors)}" if errors else "")),
        Row(group, "CPU: watcher processes", cpu["workers"], "%", cpu["etcd"], "etcd",
            note=f"startup of all watches {startup:.1f} s"),
    ]
    per = 1000 / n_hosts
    rows += [
        Row(group, "etcd, idle: watch streams per 1,000 watchers", idle["watch_streams"] * per, "",
            note=f"etcd's watchers: {idle['watchers'] * per:.0f}"),
        Row(group, "etcd, idle: lease keep-alives per 1,000 watchers", idle["keepalives_per_s"] * per, "/s",
            1000 * 3 / MEMBER_TTL, f"1,000 × 3 / ttl {MEMBER_TTL} s",
            note=f"all gRPC messages {idle['grpc_messages_per_s'] * per:.0f}/s"),
        Row(group, "etcd, idle: CPU per 1,000 watchers", idle["etcd_cpu_percent"] * per, "%",
            note=f"watcher processes {idle['workers_cpu_percent'] * per:.1f} %"),
        Row(group, "etcd, idle: memory per 1,000 watchers", (idle["etcd_rss_mb"] - etcd_rss0) * per, "MB",
            note=f"RSS {etcd_rss0:.0f} → {idle['etcd_rss_mb']:.0f} MB"),
        Row(group, "etcd CPU at 100 fires/s per 1,000 watchers", cpu["etcd"] * per, "%"),
    ]
    return rows, {"hosts": n_hosts, "processes": n_procs, "seconds": seconds, "rate": rate,
                  "achieved_rate": achieved, "fires": len(fires), "fire_errors": errors[:10],
                  "startup_s": startup, "ready": ready, "drained": drained,
                  "fire_to_run_ms": run_s, "fire_to_watch_ms": watch_s, "without_run": without[:50],
                  "cpu_percent": cpu, "idle": idle}
