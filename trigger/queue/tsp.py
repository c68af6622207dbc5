"""task-spooler as the run queue: one `tsp` server per TS_SOCKET.

Each run is labelled `trigger:<run-id>`, so `tsp -l` tells which of our
runs the server still holds. A server that died takes its queue with it;
the next `tsp` call starts a new, empty one, and the watcher re-queues.
"""

from __future__ import annotations

import logging
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


log = logging.getLogger("trigger.watch")


def own_socket(environ) -> dict[str, str]:
    """`environ`, with a TS_SOCKET of this user's: another user's task-spooler would run our
    runs as that user (and theirs would hold ours up), so a socket that is not ours is
    replaced by one in a folder only we can use, and the log says so."""
    socket = environ.get("TS_SOCKET")
    try:
        owner = os.stat(socket).st_uid if socket else os.getuid()
    except OSError:
        owner = os.getuid()  # not there yet: the tsp we start makes it, ours
    if owner == os.getuid():
        return dict(environ)
    import tempfile

    folder = os.path.join(tempfile.gettempdir(), f"trigger-tsp-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    ours = os.path.join(folder, "socket")
    log.warning("TS_SOCKET %s belongs to uid %d, whose task-spooler would run our runs as that user: "
                "runs are queued on %s instead (TS_SOCKET=%s tsp -l lists them)", socket, owner, ours, ours,
                extra={"fields": {"event": "tsp_socket_not_ours", "socket": socket, "uid": owner}})
    return {**environ, "TS_SOCKET": ours}


class TspQueue:
    def __init__(self, tsp: str = "tsp", timeout: float = 10.0):
        self.tsp = shutil.which(tsp)
        if self.tsp is None:
            raise QueueError(f"{tsp} not found: install the Debian package task-spooler")
        self.timeout = timeout
        self.env = own_socket(os.environ)
        self._foreign: frozenset[int] = frozenset()  # jobs not ours last seen in the queue

    def _call(self, args: list[str], env: dict[str, str] | None = None) -> str:
        try:
            done = subprocess.run([self.tsp, *args], capture_output=True, text=True,
                                  timeout=self.timeout, stdin=subprocess.DEVNULL, env=env or self.env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise QueueError(f"tsp {args[0]} failed: {exc}") from None
        if done.returncode != 0:
            raise QueueError(f"tsp {args[0]} exited {done.returncode}: {done.stderr.strip()[:200]}")
        return done.stdout

    def enqueue(self, run_id: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Queue `argv`; its job gets our environment (tsp passes it on), `env` added."""
        self._call(["-L", LABEL_PREFIX + run_id, *argv], {**self.env, **env} if env else None)

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
        jobs = parse_tsp_list(text, LIVE_STATES)
        self._tell_foreign([j for j in jobs if not j.run_id])
        return frozenset(j.run_id for j in jobs if j.run_id)

    def _tell_foreign(self, jobs: list[TspJob]) -> None:
        """Jobs that are not trigger's (a TS_SOCKET shared with other work) hold our runs up:
        said once for each new set of them."""
        ids = frozenset(j.id for j in jobs)
        if ids and not ids <= self._foreign:
            named = ", ".join(f"job {j.id} ({j.command.strip()[:60]})" for j in jobs[:3])
            log.warning("task-spooler's queue holds %d job(s) that are not trigger's: %s%s; our runs wait "
                        "behind them (give trigger a TS_SOCKET of its own)", len(jobs), named,
                        " ..." if len(jobs) > 3 else "",
                        extra={"fields": {"event": "tsp_foreign_jobs", "jobs": sorted(ids)}})
        self._foreign = ids
