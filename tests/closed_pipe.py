"""Run a command with its stdout a pipe whose reader is gone, as after `| head -1` has read its line."""

from __future__ import annotations

import subprocess


def with_closed_stdout(argv: list[str], timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    """`argv`'s exit status and stderr (text), its stdout closed before it writes: its first
    write meets a closed pipe. Killed if it outlives `timeout`."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    proc.stdout.close()
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err.decode())
