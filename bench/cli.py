"""`python -m bench [--quick|--full] [--out FILE.json] [--only ITEMS]`

Runs the items of issue 6 in order, prints one table, writes JSON. Quick
mode takes under 3 minutes; full mode takes about 15 and is what
docs/benchmarks.md reports. Ctrl-C stops at once and still cleans up every
process, task-spooler server and temporary directory.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ITEMS = ("latency", "fanout", "storm", "lost", "simulator", "plan", "footprint", "scale", "retention")


@dataclass(frozen=True)
class Settings:
    latency_samples: int
    fanout_reps: int
    etcdctl_sample: int  # most `etcdctl put` processes timed per fan-out size
    storm_spread: float  # seconds over which the 300 fires of the long storm are spread
    footprint_seconds: float
    cold_reps: int
    scale_hosts: int
    scale_procs: int
    scale_seconds: float
    scale_rate: float
    retention_rounds: int


QUICK = Settings(latency_samples=20, fanout_reps=1, etcdctl_sample=100, storm_spread=10.0,
                 footprint_seconds=5.0, cold_reps=5, scale_hosts=1000, scale_procs=4,
                 scale_seconds=12.0, scale_rate=100.0, retention_rounds=10)
FULL = Settings(latency_samples=200, fanout_reps=3, etcdctl_sample=1000, storm_spread=10.0,
                footprint_seconds=10.0, cold_reps=20, scale_hosts=1000, scale_procs=4,
                scale_seconds=60.0, scale_rate=100.0, retention_rounds=40)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="under 3 minutes (the default)")
    mode.add_argument("--full", action="store_true", help="the numbers for docs/benchmarks.md")
    parser.add_argument("--out", help="results file (default bench/results/MODE-TIME.json)")
    parser.add_argument("--only", help=f"comma-separated subset of: {','.join(ITEMS)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("--before", metavar="DIR",
                        help="another checkout of trigger (with its .venv), measured side by side as 'before' "
                             "(e.g. git worktree add /tmp/base COMMIT; scripts/setup.sh there)")
    args = parser.parse_args(argv)
    mode_name = "full" if args.full else "quick"
    settings = FULL if args.full else QUICK
    only = ITEMS if not args.only else tuple(i.strip() for i in args.only.split(",") if i.strip())
    unknown = [i for i in only if i not in ITEMS]
    if unknown:
        parser.error(f"unknown item(s) {', '.join(unknown)}; choose from {', '.join(ITEMS)}")
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out = Path(args.out) if args.out else \
        Path(__file__).parent / "results" / f"{mode_name}-{started.replace(':', '')}.json"

    signal.signal(signal.SIGTERM, _interrupt)
    # Interruptible even when started from a shell that ignores SIGINT in
    # background jobs: a half-done run must still clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    from rich.console import Console

    from . import machine
    from .harness import THIS, Session, before_code, byte_compile, start_etcd

    before = before_code(args.before) if args.before else None
    for code in (THIS, before):
        if code is not None:
            byte_compile(code)
    from .report import rich_table, to_json

    # Wide enough for the table even when stdout is a file or a pipe.
    console = Console(width=None if sys.stdout.isatty() else 150)
    rows, details, errors, info = [], {}, {}, {}
    t_start = time.monotonic()
    interrupted = False
    session = Session(keep=args.keep)
    try:
        info = machine.describe()
        console.print(f"[bold]trigger bench[/] {mode_name} mode; {info['nproc']} CPUs, {info['cpu']}, "
                      f"load {info['load average at start']}; temp dir {session.root}")
        etcd = store = None
        if set(only) & {"latency", "fanout", "storm", "lost", "footprint"}:
            from trigger.store import open_store

            etcd = start_etcd(session, "etcd", v2=True)
            store = open_store("etcd", endpoints=[etcd.endpoint])
            session.on_close(store.close)
        for item in only:
            t0 = time.monotonic()
            console.print(f"[dim]{time.monotonic() - t_start:6.1f}s[/] {item} ...")
            try:
                item_rows, item_details = _run_item(item, session, etcd, store, settings, before)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                errors[item] = "".join(traceback.format_exception(exc))
                console.print(f"[red]{item} failed:[/] {exc!r}")
                continue
            item_details["seconds"] = round(time.monotonic() - t0, 2)
            rows += item_rows
            details[item] = item_details
            console.print(rich_table(item_rows, f"{item} ({item_details['seconds']:.0f} s)"))
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]interrupted; cleaning up[/]")
    finally:
        # Cleaning up must not be cut short by a second Ctrl-C.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            session.close()
        finally:
            signal.signal(signal.SIGINT, old)
    seconds = time.monotonic() - t_start
    info["load average at end"] = machine.load_average()
    if before is not None:
        info["before"] = f"{before.repo} ({_commit(before.repo)})"
    info["after"] = f"{REPO_DIR} ({_commit(REPO_DIR)})"
    meta = {"mode": mode_name, "started": started, "seconds": round(seconds, 1), "items": list(only),
            "interrupted": interrupted, "errors": errors, "settings": settings.__dict__}
    console.print(rich_table(rows, f"trigger bench, {mode_name} mode, {seconds:.0f} s "
                                   f"(ratio = ours / baseline; machine shared and loaded)"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_json(rows, info, details, meta))
    console.print(f"results: {out}")
    if interrupted:
        return 130
    return 1 if errors else 0


REPO_DIR = Path(__file__).resolve().parent.parent


def _commit(repo: Path) -> str:
    import subprocess

    done = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (done.stdout.strip()[:70] or "unknown") + (" + uncommitted changes" if dirty else "")


def _run_item(item, session, etcd, store, settings: Settings, before=None):
    if item == "latency":
        from . import latency

        return latency.run(session, etcd, store, settings.latency_samples, before)
    if item == "fanout":
        from . import fanout

        return fanout.run(session, etcd, store, settings.fanout_reps, settings.etcdctl_sample)
    if item == "storm":
        from . import storm

        return storm.run_storms(session, etcd, store, settings.storm_spread)
    if item == "lost":
        from . import storm

        return storm.run_lost(session, etcd, store)
    if item == "simulator":
        from . import simulation

        return simulation.run()
    if item == "plan":
        from . import plan

        return plan.run()
    if item == "footprint":
        from . import footprint

        return footprint.run(session, etcd, store, settings.footprint_seconds, settings.cold_reps, before)
    if item == "scale":
        from . import scale

        rows, details = [], {}
        for store_name in ("etcd", "etcd-grpc"):  # the watchers' adapter: etcd's load from each
            r, d = scale.run(session, settings.scale_hosts, settings.scale_procs, settings.scale_seconds,
                             settings.scale_rate, settings.footprint_seconds * 2, store_name)
            rows += r
            details[store_name] = d
        return rows, details
    if item == "retention":
        from . import retention

        return retention.run(session, settings.retention_rounds, before)
    raise ValueError(item)


if __name__ == "__main__":
    sys.exit(main())
