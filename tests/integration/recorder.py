"""A stand-in for `puppet agent --test` that records when it ran.

usage: recorder.py LOGFILE SECONDS [EXIT]
Appends one JSON line per run that ran to its end to LOGFILE: start and end
time (epoch seconds), the hop and chain `trigger run` passed in, and the run
id. Every run also appends its start (with its pid, parent and process group) to
LOGFILE.starts when it begins, and a run stopped by SIGTERM appends its end
to LOGFILE.stopped: so a run killed midway is seen too, and when it stopped.
"""

import json
import os
import signal
import sys
import time

log, seconds = sys.argv[1], float(sys.argv[2])
exit_code = int(sys.argv[3]) if len(sys.argv) > 3 else 0
start = time.time()
line = {
    "start": start,
    "hop": os.environ.get("TRIGGER_HOP"),
    "chain": os.environ.get("TRIGGER_CHAIN"),
    "run_id": os.environ.get("TRIGGER_RUN_ID"),
}


def append(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def stopped(signum, _frame):
    append(log + ".stopped", {**line, "end": time.time(), "signal": signum})
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, stopped)
append(log + ".starts", {**line, "pid": os.getpid(), "pgid": os.getpgid(0), "ppid": os.getppid()})
time.sleep(seconds)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
append(log, {**line, "end": time.time()})
sys.exit(exit_code)
