"""The real-time driver: how it carries out effects, not what the procedures decide."""

from __future__ import annotations

import os
import subprocess
import threading
import time

from tests.eventually import eventually
from trigger.driver import BOOT_ID, PID_NAMESPACE, Command, RealDriver, process_alive
from trigger.effects import NOW, Call, Cancel, CommandStopped, NextChange, Note, Sleep, Spawn, Watch
from trigger.store.base import Put, UnavailableError
from trigger.store.memory import MemoryStore


def test_a_store_error_is_raised_inside_the_procedure_at_its_yield():
    def failing(store):
        raise UnavailableError("no endpoint answered")

    def procedure():
        try:
            yield Call(failing)
        except UnavailableError as exc:
            return f"caught: {exc}"

    assert RealDriver(MemoryStore()).run(procedure()) == "caught: no endpoint answered"


def test_deliveries_come_in_order_and_a_quiet_watch_times_out():
    store = MemoryStore()

    def procedure():
        yield Watch("/p/", 0)
        store.put("/p/a", b"1")
        first = yield NextChange(5)
        quiet = yield NextChange(0.05)
        return first, quiet

    first, quiet = RealDriver(store).run(procedure())
    assert [(c.key, c.value) for c in first if isinstance(c, Put)] == [("/p/a", b"1")]
    assert quiet is None
    assert store._watches == []  # the driver cancelled the watch when the procedure ended


def test_stop_wakes_a_long_wait_at_once_and_ends_the_procedure():
    store = MemoryStore()
    driver = RealDriver(store)
    reached = []

    def procedure():
        yield Watch("/p/", 0)
        yield NextChange(300)
        reached.append("after the wait")  # never: stopped procedures end where they wait

    thread = threading.Thread(target=driver.run, args=(procedure(),))
    started = time.monotonic()
    thread.start()
    time.sleep(0.1)
    driver.stop()
    thread.join(60)
    assert not thread.is_alive() and time.monotonic() - started < 60  # the wait was 300 s
    assert reached == [] and store._watches == []


def test_a_spawned_procedure_runs_beside_until_cancelled():
    ticks = []

    def ticker():
        while True:
            ticks.append((yield NOW))
            yield Sleep(0.01)

    def procedure():
        handle = yield Spawn(ticker())
        yield Sleep(0.2)
        yield Cancel(handle)
        seen = len(ticks)
        yield Sleep(0.1)
        return seen

    seen = RealDriver(MemoryStore()).run(procedure())
    assert seen >= 3 and len(ticks) <= seen + 1


def test_notes_are_told_as_they_come():
    told = []

    def procedure():
        yield Note("first")
        yield Note("second", "warning")

    RealDriver(MemoryStore(), tell=told.append).run(procedure())
    assert [(n.what, n.level) for n in told] == [("first", "info"), ("second", "warning")]


def test_a_process_is_judged_alive_or_dead_only_on_this_boot_of_this_machine():
    """A pid names a process only on the machine and boot that wrote it: a
    watcher elsewhere is neither alive nor dead to us (a dead verdict would
    let us take its host's key while it runs)."""
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid names no process here now
    here = f"{BOOT_ID}/{PID_NAMESPACE}"
    assert process_alive(f"{os.getpid()}@{here}") is True
    assert process_alive(f"{gone.pid}@{here}") is False
    other_boot = "00000000-0000-0000-0000-000000000000"
    assert BOOT_ID and BOOT_ID != other_boot
    assert process_alive(f"{os.getpid()}@{other_boot}/{PID_NAMESPACE}") is None
    assert process_alive(f"{gone.pid}@{other_boot}/{PID_NAMESPACE}") is None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # a member that is only a zombie (ours, not yet waited for) counts as gone
    return any(open(f"/proc/{p}/stat").read().split(") ", 1)[1][0] != "Z"
               for p in os.listdir("/proc") if p.isdigit() and _pgid_of(p) == pgid)


def _pgid_of(pid: str) -> int | None:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def test_the_watchdog_ends_the_command_s_whole_group_when_its_run_dies_and_leaves_it_when_told():
    """The command dies with its run: a run killed with SIGKILL closes the watchdog's pipe
    without `done`, and the group (a child that ignores SIGTERM too) is ended."""
    from trigger.driver import _dismiss, _watch_over

    for dies in (True, False):
        group = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 60 & sleep 60"], start_new_session=True)
        try:
            time.sleep(0.2)  # its background child started
            watchdog = _watch_over(group.pid, 0.3)
            if dies:
                watchdog.stdin.close()  # what the kernel does to a run killed with SIGKILL
                watchdog.wait(5)
                group.wait(5)
                assert eventually(lambda: not _group_alive(group.pid), 5, "the group to end")
            else:
                _dismiss(watchdog)
                assert group.poll() is None and _group_alive(group.pid)
        finally:
            try:
                os.killpg(group.pid, 9)
            except ProcessLookupError:
                pass
            group.wait()


def test_a_stop_asked_before_the_command_started_stops_it_as_it_starts():
    """The lease can end just before the command starts (the keeper's one stop
    then found no process): the command must not run on without a lease."""
    command = Command(grace=0.5)
    command.stop(0.5)
    started = time.monotonic()
    code = command.wait(subprocess.Popen(["sleep", "30"], start_new_session=True))
    assert code == 128 + 15 and time.monotonic() - started < 10
    job_gone = Command(grace=0.5)
    job_gone.stop(0.5, "its queue job is gone")  # a reason: the fires go back
    ended = job_gone.wait(subprocess.Popen(["sleep", "30"], start_new_session=True))
    assert ended == CommandStopped(128 + 15, "its queue job is gone")
