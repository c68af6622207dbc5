"""Item 6: what a watcher costs, idle and busy, and what a cold `trigger fire` costs.

Idle: our `trigger watch` once it has let its standby `trigger run` go
(--standby-linger, shortened here from 300 s to LINGER; the pair is
sampled before that), and the seed's loop (bash and its `etcdctl watch`),
both warmed up and then left alone, measured over the same window:
CPU (their own and their waited-for children's), resident memory, and
context switches per second, where a poll loop would show even when its
CPU rounds to zero. The tsp servers (one per node on both sides, the same
C program) are not counted.

Busy: 100 fires/s for a while, one side after the other (measuring CPU
while the other side burns it would be unfair). The watcher's own CPU and
peak RSS, and the CPU of the runs it caused (taken from its tsp server's
waited-for children: `trigger run` and the command for us, the command for
the seed; and for us the standby's CPU, its commands' included).

Cold start: `trigger fire` to one host, against the seed's provider (an
`etcdctl set` process), interleaved; and what `trigger run` adds before
a run's command starts, against the interpreter's own start.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
import sys
import time

from .harness import (
    SEED_FIRE,
    OursNode,
    SeedNode,
    V2Client,
    base_env,
    group_pids,
    proc_cpu,
    proc_pss_mb,
    proc_rss_mb,
    proc_switches,
    wait_for,
    warm_up,
)
from .report import Row, verdict

WHATIF_ACK = Path(__file__).with_name("whatif_ack.py")
from .stats import cpu_percent, summarize

IDLE_CPU_TARGET = 0.5  # % of one core: "about zero"
LINGER = 4.0  # s: ours lets its standby go this long after the warm-up's last run
RSS_TARGET = 60.0  # MB


class Meter:
    """CPU, RSS and context switches of a set of processes over a window."""

    def __init__(self, pids_fn):
        self.pids_fn = pids_fn
        self.peak_rss = self.peak_pss = 0.0
        self._cpu0 = self._cpu()
        self._sw0 = self._switches()
        self._t0 = time.monotonic()

    def _cpu(self) -> float:
        total = 0.0
        for pid in self.pids_fn():
            try:
                total += proc_cpu(pid)
            except OSError:
                continue
        return total

    def _switches(self) -> int:
        return sum(proc_switches(pid) for pid in self.pids_fn())

    def sample(self) -> None:
        rss = pss = 0.0
        for pid in self.pids_fn():
            try:
                rss += proc_rss_mb(pid)
                pss += proc_pss_mb(pid)
            except OSError:
                continue
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)

    def result(self) -> dict:
        wall = time.monotonic() - self._t0
        cpu = self._cpu() - self._cpu0
        return {"wall_s": wall, "cpu_s": cpu, "cpu_percent": cpu_percent(cpu, wall),
                "peak_rss_mb": self.peak_rss, "peak_pss_mb": self.peak_pss,
                "switches_per_s": (self._switches() - self._sw0) / wall}


def _watch(meters: list[Meter], seconds: float, while_fn=None) -> None:
    deadline = time.monotonic() + seconds
    next_sample = 0.0
    while time.monotonic() < deadline:
        if while_fn is not None:
            while_fn()
        if time.monotonic() >= next_sample:
            for m in meters:
                m.sample()
            next_sample = time.monotonic() + 0.25
        if while_fn is None:
            time.sleep(0.25)


def _busy(node, pids_fn, seconds: float, rate: float, standby_fn=lambda: []) -> dict:
    # reaper.py: the runs' CPU is its children's (tsp's jobs), and the standby's that ran them
    runs_meter = Meter(lambda: [node.proc.pid, *standby_fn()])
    meter = Meter(pids_fn)
    runs_before = len(node.log.entries())
    t0 = time.monotonic()
    fired = [0]

    def fire_on_schedule():
        due = int((time.monotonic() - t0) * rate)
        while fired[0] < due:
            node.fire()
            fired[0] += 1
        time.sleep(max(0.0, t0 + (fired[0] + 1) / rate - time.monotonic()))

    _watch([meter, runs_meter], seconds, fire_on_schedule)
    result = meter.result()
    # Runs started in the window; the CPU of those still running is counted
    # when they end, so let them end first.
    wait_for(node.tsp_idle, 30, 0.05)
    runs = runs_meter.result()
    count = len(node.log.entries()) - runs_before
    result.update({"fires": fired[0], "fire_rate": fired[0] / result["wall_s"],
                   "runs_cpu_percent": runs["cpu_percent"] * runs["wall_s"] / result["wall_s"],
                   "runs": count, "runs_cpu_ms_per_run": runs["cpu_s"] * 1000 / count if count else None})
    return result


def _cold(argv: list[str], env: dict) -> tuple[float, float]:
    """Wall and CPU seconds of one process (and what it waited for). CPU
    moves far less than wall time on a loaded machine. Waited for with
    wait4, which returns when the process ends: `subprocess.run(timeout=)`
    polls with sleeps of up to 50 ms, and rounded every time up to its next
    poll (16, 64, 114 ms in runs 5 and 6)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    timer = threading.Timer(60, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv)
    return wall, usage.ru_utime + usage.ru_stime


def cold_starts(endpoint: str, reps: int, tsp_env: dict, before=None) -> tuple[dict, dict]:
    """({command: wall seconds per start}, {command: CPU seconds per start})."""
    env = base_env()
    py = sys.executable
    commands = {
        "tsp /bin/true (queue one job)": ["tsp", "/bin/true"],
        "trigger fire": [py, "-m", "trigger", "fire", "bench-cold", "--hosts", "cold1",
                         "--endpoints", endpoint, "--prefix", "/bench/cold"],
        "etcdctl set": [str(SEED_FIRE), endpoint, "/puppet_trigger/cold1", "x"],
        "trigger run -- true": [py, "-m", "trigger", "run", "--host", "cold1", "--run-id", "RUNID",
                                "--endpoints", endpoint, "--prefix", "/bench/cold", "--", "/bin/true"],
        "what-if: ack over the JSON gateway": [py, "-I", str(WHATIF_ACK), endpoint, "/bench/cold/hosts/cold1/",
                                               "/bench/cold/hosts/cold1/runs/RUNID", "/bin/true"],
        "python -c pass": [py, "-c", "pass"],
        "python -c 'import trigger.store.etcd'": [py, "-c", "import trigger.store.etcd"],
        "python -c 'import trigger.store.etcd_json'": [py, "-c", "import trigger.store.etcd_json"],
    }
    envs = {name: env for name in commands}
    if before is not None:
        old = {
            "before: trigger fire": [before.python, "-m", "trigger", "fire", "bench-cold", "--hosts", "cold2",
                                     "--endpoints", endpoint, "--prefix", "/bench/cold"],
            "before: trigger run -- true": [before.python, "-m", "trigger", "run", "--host", "cold2",
                                            "--run-id", "RUNID", "--endpoints", endpoint, "--prefix",
                                            "/bench/cold", "--", "/bin/true"],
            "before: python -c 'import trigger.store.etcd'": [before.python, "-c", "import trigger.store.etcd"],
            "before: python -c pass": [before.python, "-c", "pass"],
        }
        commands.update(old)
        envs.update({name: base_env(before) for name in old})
    times: dict[str, list[float]] = {k: [] for k in commands}
    cpu: dict[str, list[float]] = {k: [] for k in commands}
    for i in range(reps + 1):  # the first round warms the page cache and is dropped
        for name, argv in commands.items():
            argv = [a.replace("RUNID", f"cold-{i}") for a in argv]
            seconds, cpu_seconds = _cold(argv, tsp_env if argv[0] == "tsp" else envs[name])
            if i:
                times[name].append(seconds)
                cpu[name].append(cpu_seconds)
    return times, cpu


def run(session, etcd, store, seconds: float, cold_reps: int, before=None) -> tuple[list[Row], dict]:
    """`before`: a harness.Code of older trigger, measured as a third side."""
    v2 = V2Client(etcd.endpoint)
    session.on_close(v2.close)
    ours = OursNode(session, etcd.endpoint, "foot-ours", store, extra=("--standby", "--standby-linger", f"{LINGER:g}")).start()
    seed = SeedNode(session, etcd.endpoint, "foot-seed", v2).start()
    old = OursNode(session, etcd.endpoint, "foot-before", store, code=before).start() if before else None
    ready = {"ours": warm_up(ours), "seed": warm_up(seed)}
    if old is not None:
        ready["before"] = warm_up(old)
    time.sleep(1.0)  # let the last run's finish reach the watcher

    # the watcher (its tsp calls are waited-for children) and the standby it keeps
    ours_pids = lambda: [ours.pid, *ours.standby_pids()]  # noqa: E731
    lingering = Meter(ours_pids)  # the pair, before the watcher lets the standby go
    lingering.sample()
    standby_seen = bool(ours.standby_pids())
    if not wait_for(lambda: not ours.standby_pids(), LINGER + 15, 0.1):
        raise RuntimeError(f"the standby was not let go within {LINGER + 15:g} s of --standby-linger {LINGER:g}")
    time.sleep(1.0)  # and the watcher's thread that let it go ended (its switches would leave the count)
    # bash and its etcdctl watch: the node's process group but for reaper.py
    seed_pids = lambda: [p for p in group_pids(seed.proc.pid) if p != seed.proc.pid]  # noqa: E731
    meters = {"ours": Meter(ours_pids), "seed": Meter(seed_pids)}
    if old is not None:
        meters["before"] = Meter(lambda: [old.pid])
    _watch(list(meters.values()), seconds)
    idle = {name: meter.result() for name, meter in meters.items()}

    busy = {"ours": _busy(ours, lambda: [ours.pid], seconds, 100.0, ours.standby_pids)}
    wait_for(lambda: not ours.unserved(), 30, 0.05)
    busy["seed"] = _busy(seed, seed_pids, seconds, 100.0)
    busy["ours_unserved_after"] = len(ours.unserved())
    if old is not None:
        busy["before"] = _busy(old, lambda: [old.pid], seconds, 100.0)
        old.stop()
    ours.stop()
    seed.stop()

    tsp_dir = session.dir("tsp-cold")
    tsp_env = {**base_env(), "TS_SOCKET": str(tsp_dir / "tsp.sock"), "TMPDIR": str(tsp_dir)}
    session.uses_tsp(tsp_env)
    cold, cold_cpu = cold_starts(etcd.endpoint, cold_reps, tsp_env, before)
    cs = {k: summarize([x * 1000 for x in v]) for k, v in cold.items()}  # ms
    cc = {k: summarize([x * 1000 for x in v]) for k, v in cold_cpu.items()}  # ms of CPU

    i, o, s = idle["ours"], idle["seed"], busy
    per_run = {k: s[k]["runs_cpu_ms_per_run"] for k in ("ours", "seed", "before") if k in s}
    rows = [
        Row("6 footprint", "idle watcher CPU", i["cpu_percent"], "%", o["cpu_percent"], "seed loop",
            target=f"≈ 0 (< {IDLE_CPU_TARGET} %)", verdict=verdict(i["cpu_percent"] < IDLE_CPU_TARGET),
            note=f"{i['wall_s']:.0f} s"),
        Row("6 footprint", "idle watcher wake-ups", i["switches_per_s"], "/s", o["switches_per_s"], "seed loop",
            target="≤ 1 /s", verdict=verdict(i["switches_per_s"] <= 1.0), note="context switches of all threads"),
        Row("6 footprint", "idle watcher RSS", i["peak_rss_mb"], "MB", o["peak_rss_mb"], "seed loop",
            target="≤ 1.3× seed", verdict=verdict(i["peak_rss_mb"] <= 1.3 * o["peak_rss_mb"])),
        Row("6 footprint", "idle watcher PSS", i["peak_pss_mb"], "MB", o["peak_pss_mb"], "seed loop",
            note="RSS with shared pages (libpython, libc) split among the processes that map them"),
        Row("6 footprint", "RSS while the standby lingers (watcher and standby)", lingering.peak_rss, "MB",
            o["peak_rss_mb"], "seed loop", note=f"PSS {lingering.peak_pss:.1f} MB; after a run, for "
            f"--standby-linger (300 s by default){'' if standby_seen else '; NO STANDBY SEEN'}"),
        Row("6 footprint", "100 fires/s: watcher CPU", s["ours"]["cpu_percent"], "%",
            s["seed"]["cpu_percent"], "seed loop",
            note=f"{s['ours']['fire_rate']:.0f} vs {s['seed']['fire_rate']:.0f} fires/s reached"),
        Row("6 footprint", "100 fires/s: watcher peak RSS", s["ours"]["peak_rss_mb"], "MB",
            s["seed"]["peak_rss_mb"], "seed loop", target=f"< {RSS_TARGET:.0f} MB",
            verdict=verdict(s["ours"]["peak_rss_mb"] < RSS_TARGET)),
        Row("6 footprint", "100 fires/s: CPU of the runs caused", s["ours"]["runs_cpu_percent"], "%",
            s["seed"]["runs_cpu_percent"], "seed loop", note="tsp job runners, reaped by bench/reaper.py"),
        Row("6 footprint", "100 fires/s: CPU per triggered run", per_run["ours"], "ms", per_run["seed"],
            "seed loop", target="≤ 3× seed",
            verdict=verdict(None if None in (per_run["ours"], per_run["seed"]) else
                            per_run["ours"] <= 3 * per_run["seed"]),
            note=f"runs: ours {s['ours']['runs']}, seed {s['seed']['runs']}"),
        Row("6 footprint", "trigger fire cold start p50", cs["trigger fire"]["p50"], "ms",
            cs["etcdctl set"]["p50"], "etcdctl set", target="≤ 3× etcdctl",
            verdict=verdict(cs["trigger fire"]["p50"] <= 3 * cs["etcdctl set"]["p50"]),
            note=f"n={cold_reps}, p90 {cs['trigger fire']['p90']:.0f} ms"),
        Row("6 footprint", "trigger run -- true cold p50", cs["trigger run -- true"]["p50"], "ms",
            cs["python -c pass"]["p50"], "python -c pass"),
        Row("6 footprint", "CPU of one cold trigger run -- true p50", cc["trigger run -- true"]["p50"], "ms",
            cc["python -c pass"]["p50"], "python -c pass", note="the floor of any run: the interpreter"),
        Row("6 footprint", "CPU of one cold trigger fire p50", cc["trigger fire"]["p50"], "ms",
            cc["etcdctl set"]["p50"], "etcdctl set"),
        Row("6 footprint", "import trigger.store.etcd_json p50 (the default store)",
            cs["python -c 'import trigger.store.etcd_json'"]["p50"], "ms", cs["python -c pass"]["p50"],
            "python -c pass"),
        Row("6 footprint", "what-if: the ack over etcd's JSON gateway, no grpc p50",
            cs["what-if: ack over the JSON gateway"]["p50"], "ms", cs["trigger run -- true"]["p50"],
            "trigger run -- true", note="bench/whatif_ack.py"),
        Row("6 footprint", "queueing a job: tsp /bin/true p50", cs["tsp /bin/true (queue one job)"]["p50"], "ms",
            cs["python -c pass"]["p50"], "python -c pass", note="the watcher's enqueue calls tsp once"),
        Row("6 footprint", "import trigger.store.etcd p50", cs["python -c 'import trigger.store.etcd'"]["p50"],
            "ms", cs["python -c pass"]["p50"], "python -c pass"),
    ]
    if before is not None:
        b, bs = idle["before"], busy["before"]
        rows += [
            Row("6 footprint", "idle watcher wake-ups, after / before", i["switches_per_s"], "/s",
                b["switches_per_s"], "before"),
            Row("6 footprint", "idle watcher RSS, after / before", i["peak_rss_mb"], "MB", b["peak_rss_mb"], "before"),
            Row("6 footprint", "idle watcher CPU, after / before", i["cpu_percent"], "%", b["cpu_percent"], "before"),
            Row("6 footprint", "100 fires/s: watcher CPU, after / before", s["ours"]["cpu_percent"], "%",
                bs["cpu_percent"], "before"),
            Row("6 footprint", "100 fires/s: CPU per triggered run, after / before", per_run["ours"], "ms",
                per_run["before"], "before", note=f"runs before: {bs['runs']}"),
            Row("6 footprint", "before: CPU per triggered run", per_run["before"], "ms", per_run["seed"], "seed loop"),
            Row("6 footprint", "trigger fire cold start p50, after / before", cs["trigger fire"]["p50"], "ms",
                cs["before: trigger fire"]["p50"], "before"),
            Row("6 footprint", "trigger run -- true cold p50, after / before", cs["trigger run -- true"]["p50"], "ms",
                cs["before: trigger run -- true"]["p50"], "before"),
            Row("6 footprint", "CPU of one cold trigger run -- true p50, after / before",
                cc["trigger run -- true"]["p50"], "ms", cc["before: trigger run -- true"]["p50"], "before"),
            Row("6 footprint", "CPU of one cold trigger fire p50, after / before", cc["trigger fire"]["p50"], "ms",
                cc["before: trigger fire"]["p50"], "before"),
            Row("6 footprint", "import trigger.store.etcd p50, after / before",
                cs["python -c 'import trigger.store.etcd'"]["p50"], "ms",
                cs["before: python -c 'import trigger.store.etcd'"]["p50"], "before"),
            Row("6 footprint", "before: trigger fire cold start p50", cs["before: trigger fire"]["p50"], "ms",
                cs["etcdctl set"]["p50"], "etcdctl set"),
        ]
    return rows, {"idle": idle, "busy": busy, "cold_s": cold, "cold_summary_ms": cs, "cold_cpu_s": cold_cpu,
                  "cold_cpu_summary_ms": cc, "ready": ready}
