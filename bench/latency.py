"""Item 1: latency from a fire to the start of the run it causes.

Three sides, sampled round-robin in the same run on the same etcd (started
with --enable-v2 so the seed's v2 keys live beside our v3 ones):

* etcd's floor: a raw put -> watch event, both on one gRPC channel in
  this process; no watcher, no queue, no process start.
* ours: trigger's fire path (in this process) -> the real `trigger watch`
  -> the real task-spooler -> `trigger run` (its start-up and its etcd round
  trips) -> recorder.sh, which writes the timestamp.
* the seed: a v2 set over HTTP (what `etcdctl set` sends, without its
  process start, so both sides are timed from the write) -> the bash loop
  (bench/seed/watch-loop.sh) -> task-spooler -> recorder.sh.

Each sample waits until the queue is empty again and a short gap has passed,
so a sample never queues behind the previous run. Our run records say when
the watcher decided (queued_at) and when `trigger run` began (started_at),
which splits our latency into its phases.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from urllib.parse import urlsplit

from .harness import OursNode, SeedNode, V2Client, wait_for, warm_up
from .report import Row, verdict
from .stats import summarize

GAP = 0.15  # s between samples, after the queue emptied


class Floor:
    """etcd's own put -> watch event latency: raw gRPC Put and Watch calls
    on one channel (the stubs trigger.store.etcd uses), the stream read by a
    thread of ours; none of trigger's code on the way."""

    def __init__(self, endpoint: str, key: str = "/bench/floor"):
        import grpc
        from trigger.store.etcd import rpc

        parts = urlsplit(endpoint)
        self.channel = grpc.insecure_channel(f"{parts.hostname}:{parts.port}")
        self.kv = rpc.KVStub(self.channel)
        self._put_request = rpc.PutRequest
        self.key = key
        self.events: queue.Queue = queue.Queue()
        self._requests: queue.Queue = queue.Queue()
        self._requests.put(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(key=key.encode())))
        self._stream = rpc.WatchStub(self.channel).Watch(iter(self._requests.get, None))
        self._created = threading.Event()
        self._thread = threading.Thread(target=self._read, name="floor-watch", daemon=True)
        self._thread.start()
        if not self._created.wait(10):
            raise RuntimeError("etcd did not create the floor's watch within 10 s")

    def _read(self) -> None:
        try:
            for response in self._stream:
                t = time.time()
                if response.created:
                    self._created.set()
                for _ in response.events:
                    self.events.put(t)
        except Exception:  # cancelled on close, or etcd went away: samples time out
            pass

    def sample(self) -> float | None:
        while not self.events.empty():
            self.events.get_nowait()
        t0 = time.time()
        self.kv.Put(self._put_request(key=self.key.encode(), value=f"{t0:.6f}".encode()), timeout=5)
        try:
            return self.events.get(timeout=5) - t0
        except queue.Empty:
            return None

    def close(self) -> None:
        self._requests.put(None)
        self._stream.cancel()
        self._thread.join(5)
        self.channel.close()


def _within(ours, baseline, factor: float):
    """ours ≤ factor × baseline, or None when a side has no number."""
    return None if ours is None or baseline is None else ours <= factor * baseline


def _sample_node(node, timeout: float = 15.0) -> float | None:
    t0 = node.fire()
    start = node.wait_run_after(t0, timeout)
    wait_for(node.tsp_idle, timeout, 0.01)
    time.sleep(GAP)
    return None if start is None else start - t0


def _phases(node: OursNode) -> dict[str, list[float]]:
    """fire -> watcher decided -> `trigger run` began -> command began, per run."""
    from trigger.layout import Layout
    from trigger.results import list_runs

    runs = {r.run_id: r for r in list_runs(node.store, Layout(), node.host)[0]}
    out: dict[str, list[float]] = {"watch+decide": [], "enqueue+tsp+run start-up": [], "ack+exec": []}
    fires = sorted(node.fires)
    for start, run_id in node.log.entries():
        run = runs.get(run_id)
        earlier = [f for f in fires if f < start]
        if run is None or not earlier or run.queued_at is None or run.started_at is None:
            continue
        fire = earlier[-1]
        out["watch+decide"].append(run.queued_at - fire)
        out["enqueue+tsp+run start-up"].append(run.started_at - run.queued_at)
        out["ack+exec"].append(start - run.started_at)
    return out


def run(session, etcd, store, samples: int, before=None) -> tuple[list[Row], dict]:
    """`before`: a harness.Code of older trigger, sampled as a fourth side."""
    v2 = V2Client(etcd.endpoint)
    session.on_close(v2.close)
    floor = Floor(etcd.endpoint)
    session.on_close(floor.close)
    ours = OursNode(session, etcd.endpoint, "latency-ours", store).start()
    # the opt-in standby (issue 21 made the cold path the default): what it saves, side by side
    standby = OursNode(session, etcd.endpoint, "latency-standby", store, extra=("--standby",)).start()
    seed = SeedNode(session, etcd.endpoint, "latency-seed", v2).start()
    old = OursNode(session, etcd.endpoint, "latency-before", store, code=before).start() if before else None
    ready = {"ours": warm_up(ours), "standby": warm_up(standby), "seed": warm_up(seed)}
    if old is not None:
        ready["before"] = warm_up(old)
    for _ in range(5):
        floor.sample()

    sides = {"floor": floor.sample, "ours": lambda: _sample_node(ours), "standby": lambda: _sample_node(standby),
             "seed": lambda: _sample_node(seed)}
    if old is not None:
        sides["before"] = lambda: _sample_node(old)
    got: dict[str, list[float]] = {k: [] for k in sides}
    missing = {k: 0 for k in sides}
    rng = random.Random(6)
    for _ in range(samples):
        order = list(sides)
        rng.shuffle(order)  # no side always goes first after a quiet gap
        for name in order:
            value = sides[name]()
            if value is None:
                missing[name] += 1
            else:
                got[name].append(value * 1000)
    phases = {k: summarize([v * 1000 for v in vs]) for k, vs in _phases(ours).items()}
    ours.stop()
    standby.stop()
    seed.stop()
    if old is not None:
        old.stop()

    s = {k: summarize(v) for k, v in got.items()}
    p99_ok = None if s["ours"]["p99"] is None or s["floor"]["p99"] is None \
        else s["ours"]["p99"] <= s["floor"]["p99"] + 10
    note = f"n={samples}" + (f", no run: {missing}" if any(missing.values()) else "")
    rows = [
        Row("1 latency", "fire→run start p50", s["ours"]["p50"], "ms", s["floor"]["p50"], "etcd floor", note=note),
        Row("1 latency", "fire→run start p99", s["ours"]["p99"], "ms", s["floor"]["p99"], "etcd floor",
            target="≤ floor + 10 ms", verdict=verdict(p99_ok)),
        Row("1 latency", "fire→run start p50", s["ours"]["p50"], "ms", s["seed"]["p50"], "seed loop",
            target="≤ 3× seed", verdict=verdict(_within(s["ours"]["p50"], s["seed"]["p50"], 3))),
        Row("1 latency", "fire→run start p99", s["ours"]["p99"], "ms", s["seed"]["p99"], "seed loop",
            target="≤ 5× seed", verdict=verdict(_within(s["ours"]["p99"], s["seed"]["p99"], 5))),
        Row("1 latency", "fire→run start p50, the default (cold) / --standby", s["ours"]["p50"], "ms",
            s["standby"]["p50"], "--standby"),
        Row("1 latency", "fire→run start p99, the default (cold) / --standby", s["ours"]["p99"], "ms",
            s["standby"]["p99"], "--standby"),
    ]
    if old is not None:
        rows += [
            Row("1 latency", "fire→run start p50, after / before", s["ours"]["p50"], "ms",
                s["before"]["p50"], "before"),
            Row("1 latency", "fire→run start p99, after / before", s["ours"]["p99"], "ms",
                s["before"]["p99"], "before"),
            Row("1 latency", "before: fire→run start p50", s["before"]["p50"], "ms", s["seed"]["p50"], "seed loop"),
            Row("1 latency", "before: fire→run start p99", s["before"]["p99"], "ms", s["seed"]["p99"], "seed loop"),
        ]
    for phase, summary in phases.items():
        rows.append(Row("1 latency", f"ours, phase {phase} p50", summary["p50"], "ms",
                        note=f"p99 {summary['p99']:.0f} ms" if summary["p99"] is not None else ""))
    details = {"samples_ms": got, "summary_ms": s, "missing": missing, "ready": ready,
               "ours_phases_ms": phases, "gap_s": GAP}
    return rows, details
