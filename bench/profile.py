"""Where the time goes, for the targets the benchmarks miss.

usage: python -m bench.profile [--out DIR] [--skip-simulator]

On a fresh etcd it profiles, each in a process of its own:

* `trigger run -- /bin/true` (what stands between tsp starting a job and
  the command starting): `-X importtime` (the slowest imports) and a
  profile of the whole run;
* `trigger fire` to 10,000 hosts;
* the simulator on scenarios/fleet.yaml.

Profiles come from pyinstrument when it is installed in the venv (a call
tree; `pip install pyinstrument`, for profiling only), else from cProfile
(the standard library; functions by cumulative time). Text reports go to
DIR (default bench/results/profile-TIME/); docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

from .fanout import hosts
from .harness import Session, base_env, start_etcd


def _profiled(module_args: list[str], out: Path, interval: float = 0.0005) -> list[str]:
    """argv running `python -m MODULE ARGS` under the best profiler at hand."""
    if importlib.util.find_spec("pyinstrument") is not None:
        return [sys.executable, "-m", "pyinstrument", "-i", str(interval), "-r", "text",
                "-o", str(out), "-m", *module_args]
    return [sys.executable, "-m", "cProfile", "-o", str(out) + ".pstats", "-m", *module_args]


def _cprofile_text(out: Path, top: int = 30) -> None:
    """Turn a .pstats file (when cProfile was used) into text beside it."""
    stats_file = Path(str(out) + ".pstats")
    if not stats_file.exists():
        return
    import io
    import pstats

    buffer = io.StringIO()
    pstats.Stats(str(stats_file), stream=buffer).sort_stats("cumulative").print_stats(top)
    out.write_text(buffer.getvalue())


def importtime(argv: list[str], top: int = 15) -> str:
    """The `top` slowest imports (cumulative) of a command, as text."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], env=base_env(),
                          capture_output=True, text=True, timeout=120)
    rows = []
    for line in done.stderr.splitlines():  # "import time: SELF | CUMULATIVE | NAME", in µs
        if not line.startswith("import time:"):
            continue
        parts = [p.strip() for p in line.split(":", 1)[1].split("|")]
        if len(parts) == 3 and parts[0].isdigit():
            rows.append((int(parts[1]), int(parts[0]), parts[2]))
    rows.sort(reverse=True)
    return "\n".join(f"{c / 1000:8.1f} ms cumulative {s / 1000:7.1f} ms self  {n}" for c, s, n in rows[:top])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="directory for the reports")
    parser.add_argument("--skip-simulator", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else \
        Path(__file__).parent / "results" / time.strftime("profile-%Y%m%dT%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    env = base_env()
    with Session() as session:
        etcd = start_etcd(session, "etcd")
        run_args = ["trigger", "run", "--host", "prof1", "--run-id", "RUNID", "--endpoints", etcd.endpoint,
                    "--prefix", "/bench/profile", "--", "/bin/true"]
        subprocess.run([sys.executable, "-m", *[a.replace("RUNID", "warm") for a in run_args]], env=env,
                       check=True, timeout=60)  # warms the page cache and the .pyc files
        (out / "trigger-run-imports.txt").write_text(
            importtime(["-m", *[a.replace("RUNID", "imports") for a in run_args]]) + "\n")
        report = out / "trigger-run.txt"
        subprocess.run(_profiled([a.replace("RUNID", "profiled") for a in run_args], report), env=env,
                       check=True, timeout=120)
        _cprofile_text(report)

        report = out / "trigger-fire-10000.txt"
        subprocess.run(_profiled(["trigger", "fire", "bench-profile", "--hosts", ",".join(hosts(10000)),
                                  "--endpoints", etcd.endpoint, "--prefix", "/bench/profile"], report),
                       env=env, check=True, timeout=300, stdout=subprocess.DEVNULL)
        _cprofile_text(report)

    if not args.skip_simulator:
        report = out / "simulator-fleet.txt"
        subprocess.run(_profiled(["bench.simulation", "scenario", "fleet.yaml"], report, interval=0.005),
                       env=env, check=True, timeout=1200, stdout=subprocess.DEVNULL)
        _cprofile_text(report)
    for path in sorted(out.glob("*.txt")):
        print(f"== {path}")
        print("\n".join(path.read_text().splitlines()[:40]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
