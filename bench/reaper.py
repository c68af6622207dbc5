"""Run a command as a child subreaper, so the CPU of what it leaves behind is counted.

usage: python reaper.py PIDFILE COMMAND...

task-spooler forks a runner per job and lets it go; the runner (and the run
it waits for) would be reparented to init and their CPU lost to any
accounting. Under this wrapper they are reparented here instead and reaped
here, so this process's waited-for children's CPU (cutime + cstime in
/proc/PID/stat) is the CPU of the runs a node caused. The command's pid is
written to PIDFILE; this process exits with the command's status.
"""

import ctypes
import os
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def main() -> int:
    pidfile, argv = sys.argv[1], sys.argv[2:]
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"reaper: prctl failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
    child = subprocess.Popen(argv)
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(child.pid))
    os.rename(pidfile + ".tmp", pidfile)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        except KeyboardInterrupt:
            continue  # the command gets the signal too; wait for it
        if pid == child.pid:
            return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
