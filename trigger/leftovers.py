"""What a run's command leaves behind: found, named and stopped with its run.

A command that puts a process in the background (`sleep 60 &`) or
daemonizes (`puppet agent` without `--onetime --no-daemonize`: it forks,
takes a session of its own and its first process exits 0) would outlive its
run, and holds what the run held. So `trigger run` asks the kernel to be its
descendants' reaper (PR_SET_CHILD_SUBREAPER): an orphan becomes its child,
not init's, even when it left the command's process group. Once the
command's first process has exited, whatever is left of its descendants is
named in one line and stopped like the command: SIGTERM, then SIGKILL after
the grace. Of the living orphans, only those whose environment holds the
run's id (`TRIGGER_RUN_ID`, which every descendant inherits) are taken for
the run's: a process that reaps more than its commands' (a test's pytest)
keeps the rest. Linux only; elsewhere nothing is found, and the group kill of
`trigger.driver.Command` is all there is.
"""

from __future__ import annotations

import os
import signal
import time

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
_reaper: bool | None = None


def become_reaper() -> bool:
    """Orphaned descendants become this process's children (once per process)."""
    global _reaper
    if _reaper is None:
        try:
            import ctypes  # here: 2 ms of a run, paid only by the process that runs commands

            _reaper = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        except (OSError, AttributeError):
            _reaper = False
    return _reaper


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
        except OSError:
            pass  # the task ended, or the kernel has no children file
    return found


def _state(pid: int) -> str:
    """Its state letter (`Z`: a zombie), or "" once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not ours, or reaped already


def _of_run(pid: int, marker: bytes) -> bool | None:
    """Whether the process carries `marker` in its environment; None while it is exiting
    (its memory, environment with it, already gone; not yet a zombie)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except PermissionError:
        return False  # not ours to read (a setuid program): not taken for the run's
    except OSError:
        return None  # gone, or going
    return marker in environ.split(b"\0") if environ else None


def left_behind(run_id: str, keep: frozenset[int] = frozenset()) -> list[int]:
    """The processes of run `run_id` this one reaped (its children but `keep`), and their
    descendants. A dead child is reaped (an orphan that ended: in `trigger run` every child
    but `keep` is one) and the children are read again: the kernel gave the dead one's
    children to us as it died, maybe after our read (a daemon between its two forks). One
    caught exiting is looked at again."""
    marker = f"TRIGGER_RUN_ID={run_id}".encode()
    found, seen = [], set(keep)
    for _ in range(200):  # 1 s at most of children caught exiting
        again = False
        for pid in [p for p in _children(os.getpid()) if p not in seen]:
            if _state(pid) in ("", "Z"):  # dead: reaped, and its children, ours now, read next
                _reap(pid)
                seen.add(pid)
                again = True
                continue
            ours = _of_run(pid, marker)
            if ours is None:  # exiting: looked at again, as a zombie
                again = True
            else:
                seen.add(pid)
                found += _tree(pid) if ours else []
        if not again:
            break
        time.sleep(0.005)
    return found


def _tree(pid: int) -> list[int]:
    """`pid` and its living descendants."""
    tree, todo = [pid], _children(pid)
    while todo:
        child = todo.pop()
        if child not in tree and _state(child) not in ("", "Z"):
            tree.append(child)
            todo += _children(child)
    return tree


def name(pids: list[int], shown: int = 3) -> str:
    """`pid 12 (sleep), pid 14 (puppet)`, at most `shown` of them."""
    names = []
    for pid in pids[:shown]:
        try:
            with open(f"/proc/{pid}/comm") as f:
                names.append(f"pid {pid} ({f.read().strip()})")
        except OSError:
            names.append(f"pid {pid}")
    more = f" +{len(pids) - shown}" if len(pids) > shown else ""
    return ", ".join(names) + more


def stop(pids: list[int], grace: float) -> None:
    """SIGTERM each, SIGKILL what is left after `grace`; the ones that were our children are reaped."""
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        for pid in pids:
            try:
                os.kill(pid, signum)
            except OSError:
                pass  # gone already
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            for pid in pids:
                _reap(pid)
            pids = [pid for pid in pids if _state(pid) not in ("", "Z")]
            time.sleep(0.02)
        if not pids:
            return


def stop_left_behind(run_id: str, grace: float, keep: frozenset[int] = frozenset()) -> str:
    """Stop what run `run_id`'s command left behind; the line that says what ("" for nothing).
    Looked for again after each stop: a daemon caught between its two forks leaves a
    grandchild that is reaped only as its parent dies."""
    stopped: list[int] = []
    named = ""
    for _ in range(5):
        pids = [pid for pid in left_behind(run_id, keep) if pid not in stopped]
        if not pids:
            break
        named = named or name(pids)  # before they go; the first found are what the command left
        stop(pids, grace)
        stopped += pids
    if not stopped:
        return ""
    return remark(len(stopped), named)


def remark(count: int, named: str) -> str:
    """What the run's record and the watcher's log say of `count` processes left behind."""
    what = "process" if count == 1 else "processes"
    return (f"the command left {count} {what} behind ({named}): stopped with its run "
            f"(a run command must not daemonize or leave children running)")
