"""A standby loop (trigger.queue.standby_runner.serve) with stand-ins for the run and for task-spooler:
`python standby_server.py FIFO LOG OLD_RUN_ID`. It notes each run, and each time it asks the
queue, in LOG (JSON lines); it runs while its parent lives and leaves on SIGTERM."""

import json
import os
import sys
from pathlib import Path

from trigger.queue.standby_runner import serve

fifo, log, old_run_id = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]


def note(**fields) -> None:
    with open(log, "a") as f:
        f.write(json.dumps(fields) + "\n")


def run(run_id: str, fd: int) -> int:
    os.write(fd, f"ran {run_id}\n".encode())
    note(ran=run_id)
    return 0


def running() -> list[str]:
    note(asked="running")
    return [old_run_id]


note(ready=os.getpid())
serve(fifo, run, running, os.getppid())
