"""What the benchmarks ran on: CPUs, memory, kernel, load, and the versions
of every part measured. Numbers mean little without this."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata


def _first_line(argv: list[str], env: dict | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else "?"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "?"


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def describe() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    tsp_help = _first_line(["sh", "-c", "tsp -h 2>&1 | head -1"])
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory": _memory(),
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "etcd": _first_line(["etcd", "--version"], env),
        "etcdctl": _first_line(["etcdctl", "version"], env),
        "task-spooler": tsp_help,
        "bash": _first_line(["bash", "--version"]),
        "etcd-sdk-python (pyetcd)": _package("etcd-sdk-python"),
        "grpcio": _package("grpcio"),
        "protobuf": _package("protobuf") + f" ({_protobuf_backend()} backend)",
        "load average at start": load_average(),
    }


def _protobuf_backend() -> str:
    """The backend protobuf loads with in a fresh interpreter (upb, python)."""
    code = "from google.protobuf.internal import api_implementation as a; print(a.Type())"
    return _first_line([sys.executable, "-c", code]) or "unknown"
