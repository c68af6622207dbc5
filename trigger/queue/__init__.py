"""Run queues, chosen by name: `tsp` (task-spooler), `standby` (task-spooler with a
`trigger run` started ahead, trigger/queue/standby.py) or `inline` (in-process)."""

from __future__ import annotations

from typing import Protocol


class QueueError(Exception):
    """The queue could not take a run or could not be asked; the message says why."""


class RunQueue(Protocol):
    def enqueue(self, run_id: str, argv: list[str]) -> None:
        """Queue `argv` (never through a shell) under the given run id."""

    def live_run_ids(self) -> frozenset[str]:
        """Run ids the queue holds, queued or running."""


def open_queue(name: str, standby=None) -> RunQueue:
    """The queue called `name`; `standby` is the standby's settings (StandbySettings), for
    `standby` only. A standby that cannot be had (its FIFO's folder not ours) is
    `standby.NoStandby` saying what: the caller may queue cold instead."""
    if name == "tsp":
        from .tsp import TspQueue

        return TspQueue()
    if name == "standby":
        from .standby import open_standby
        from .tsp import TspQueue

        return open_standby(TspQueue(), standby)
    if name == "inline":
        from .inline import InlineQueue

        return InlineQueue()
    raise ValueError(f"unknown queue {name!r}: use tsp, standby or inline")
