"""A standby loop (trigger.queue.standby_runner.serve) with a stand-in for the run (it exits 5)
and for task-spooler: `python standby_server.py FIFO LOG OLD_RUN_ID`. It notes each run, and
each time it asks the queue, in LOG (JSON lines); it runs while its parent lives and leaves on
SIGTERM. OLD_RUN_ID `tsp`: it asks the real task-spooler, as `trigger run --standby` does."""

import json
import os
import sys
from pathlib import Path

from trigger.queue.standby_runner import jobs_running, serve

fifo, log, old_run_id = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]


def note(**fields) -> None:
    with open(log, "a") as f:
        f.write(json.dumps(fields) + "\n")


def run(run_id: str, fd: int) -> int:
    os.write(fd, f"ran {run_id}\n".encode())
    note(ran=run_id)
    return 5


def running() -> list[str]:
    note(asked="running")
    return [old_run_id]


note(ready=os.getpid())
serve(fifo, run, jobs_running(fifo) if old_run_id == "tsp" else running, os.getppid())
