"""The command dies with its run: a watchdog that outlives a `trigger run` killed with SIGKILL.

usage: python -I -S watchdog.py PGID GRACE   (stdin: a pipe whose write end the run holds)

A run that dies by SIGKILL (an OOM kill, `kill -9`) cannot stop its
command, and `prctl(PR_SET_PDEATHSIG)` would reach the command's first
process only, not Puppet's children. So `trigger run` starts this beside
the command, in a session of its own (a signal to the run's group leaves it
alone), holding the write end of its stdin. When the run ends the command
itself, it writes `done` first; when the pipe closes without it, the run
died: the command's whole process group gets SIGTERM, then SIGKILL after
GRACE seconds. Standard library only, and run as a file: it starts in
about 10 ms and loads nothing of trigger.
"""

import os
import signal
import sys
import time

DONE = b"done"


def main(argv: list[str]) -> int:
    pgid, grace = int(argv[1]), float(argv[2])
    told = b""
    while True:  # until the write end closes: the run ended, or died
        chunk = os.read(0, 64)
        if not chunk:
            break
        told += chunk
    if told.startswith(DONE) or pgid <= 1:
        return 0
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            return 0  # the group is gone
        time.sleep(wait)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
