"""A stand-in for `puppet agent --test` that records when it ran.

usage: recorder.py LOGFILE SECONDS [EXIT]
Appends one JSON line per run: start and end time (epoch seconds), the hop
and chain `trigger run` passed in, and the run id.
"""

import json
import os
import sys
import time

log, seconds = sys.argv[1], float(sys.argv[2])
exit_code = int(sys.argv[3]) if len(sys.argv) > 3 else 0
start = time.time()
time.sleep(seconds)
line = {
    "start": start,
    "end": time.time(),
    "hop": os.environ.get("TRIGGER_HOP"),
    "chain": os.environ.get("TRIGGER_CHAIN"),
    "run_id": os.environ.get("TRIGGER_RUN_ID"),
}
with open(log, "a") as f:
    f.write(json.dumps(line) + "\n")
sys.exit(exit_code)
