"""The processes a test started, found by a mark in their environment
(e.g. its own TS_SOCKET): also those that outlive their parent, such as
the job task-spooler was running when `tsp -K` killed the server."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def started_with(name: str, value: str) -> list[int]:
    """Pids of the processes (other than this one) whose environment has name=value."""
    mark = f"{name}={value}".encode()
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            pid = int(environ.parent.name)
            if pid != os.getpid() and mark in environ.read_bytes().split(b"\0"):
                pids.append(pid)
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return pids


def kill_started_with(name: str, value: str) -> None:
    """SIGKILL every process whose environment has name=value."""
    for pid in started_with(name, value):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def still_running(name: str, value: str, grace: float) -> list[int]:
    """The processes with name=value in their environment that are still there after `grace`
    seconds (one being stopped is given the time to end)."""
    deadline = time.monotonic() + grace
    while (pids := started_with(name, value)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pids
