"""task-spooler as the run queue: one `tsp` server per TS_SOCKET.

Each run is labelled `trigger:<run-id>`, so `tsp -l` tells which of our
runs the server still holds. A server that died takes its queue with it;
the next `tsp` call starts a new, empty one, and the watcher re-queues.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

from . import QueueError

LABEL_PREFIX = "trigger:"
LIVE_STATES = ("queued", "running", "allocating")

_ROW = re.compile(
    r"^(?P<id>\d+)\s+(?P<state>\S+)\s+(?P<output>\S+)\s+"
    r"(?:(?P<exit>-?\d+)\s+(?P<times>[\d.]+/[\d.]+/[\d.]+)\s+)?(?P<command>.*)$"
)


@dataclass(frozen=True)
class TspJob:
    id: int
    state: str
    exit_code: int | None
    label: str
    command: str

    @property
    def run_id(self) -> str | None:
        return self.label[len(LABEL_PREFIX):] if self.label.startswith(LABEL_PREFIX) else None


def parse_tsp_list(text: str, states: tuple[str, ...] | None = None) -> list[TspJob]:
    """Parse the output of `tsp -l` (task-spooler 1.0); only the jobs in `states` if given."""
    jobs = []
    for line in text.splitlines():
        fields = line.split(None, 2)
        if states is not None and (len(fields) < 2 or fields[1] not in states):
            continue  # tsp lists every finished job: hundreds a run would parse for nothing
        match = _ROW.match(line)
        if not match:
            continue  # the header, or a blank line
        command, label = match["command"], ""
        if command.startswith("[") and "]" in command:
            label, command = command[1:].split("]", 1)
        jobs.append(TspJob(
            id=int(match["id"]),
            state=match["state"],
            exit_code=int(match["exit"]) if match["exit"] is not None else None,
            label=label,
            command=command,
        ))
    return jobs


class TspQueue:
    def __init__(self, tsp: str = "tsp", timeout: float = 10.0):
        self.tsp = shutil.which(tsp)
        if self.tsp is None:
            raise QueueError(f"{tsp} not found: install the Debian package task-spooler")
        self.timeout = timeout

    def _call(self, args: list[str], env: dict[str, str] | None = None) -> str:
        try:
            done = subprocess.run([self.tsp, *args], capture_output=True, text=True,
                                  timeout=self.timeout, stdin=subprocess.DEVNULL, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise QueueError(f"tsp {args[0]} failed: {exc}") from None
        if done.returncode != 0:
            raise QueueError(f"tsp {args[0]} exited {done.returncode}: {done.stderr.strip()[:200]}")
        return done.stdout

    def enqueue(self, run_id: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Queue `argv`; its job gets our environment (tsp passes it on), `env` added."""
        self._call(["-L", LABEL_PREFIX + run_id, *argv], {**os.environ, **env} if env else None)

    def running_run_ids(self, mark: str = "") -> list[str]:
        """Our runs whose jobs task-spooler is running now, oldest job first; only those whose
        command contains `mark` (a standby's FIFO: a cold run beside it, `tsp -S 2`, is not
        one of its jobs)."""
        jobs = parse_tsp_list(self._call(["-l"]), ("running",))
        return [j.run_id for j in sorted(jobs, key=lambda j: j.id) if j.run_id and mark in j.command]

    def live_run_ids(self) -> frozenset[str]:
        # A server that is dying, or being started by a concurrent call,
        # refuses a client for a moment; asking is harmless, so ask again.
        for attempt in range(3):
            try:
                text = self._call(["-l"])
                break
            except QueueError:
                if attempt == 2:
                    raise
                time.sleep(0.1)
        return frozenset(j.run_id for j in parse_tsp_list(text, LIVE_STATES) if j.run_id)
