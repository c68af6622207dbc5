"""A node's fake task-spooler: queued runs in FIFO order, one slot running them.

Like `tsp`, it runs one job at a time in the order they were queued. A
killed server loses its queued jobs; the job it was running goes on (it is
a separate process) and still marks its finish, but the next `tsp` call
starts an empty server that neither lists it nor waits for it. While the
queue is down (`kill_tsp` with `for`), pushes are refused, which the
watcher reports to the core as `EnqueueFailed`.
"""

from __future__ import annotations

from collections import deque
from typing import Callable


_NOTHING: frozenset[str] = frozenset()


class FakeTaskSpooler:
    __slots__ = ("env", "start_job", "stats", "queue", "running", "process", "down_until", "jobs", "_server")

    def __init__(self, env, start_job: Callable, stats):
        """`start_job(run_id)` is the SimPy generator of `trigger run RUN_ID`."""
        self.env = env
        self.start_job = start_job
        self.stats = stats
        self.queue: deque[str] = deque()
        self.running: str | None = None
        self.process = None  # the running job's SimPy process (what `tsp -k` signals)
        self.down_until = -1.0
        self.jobs: dict[str, Callable] = {}  # run id -> its job, where not `start_job` (simulator/standby.py)
        self._server = 0  # which server runs the jobs: an orphan's end must not start the next

    @property
    def up(self) -> bool:
        return self.env.now >= self.down_until

    @property
    def depth(self) -> int:
        return len(self.queue) + (self.running is not None)

    def push(self, run_id: str) -> str | None:
        """Queue `trigger run` for run_id; the reason if the queue refuses it."""
        if not self.up:
            return "task-spooler server is not running"
        self.queue.append(run_id)
        self.stats.max_queue_depth = max(self.stats.max_queue_depth, self.depth)
        if self.running is None:
            self._next()
        return None

    def live_run_ids(self) -> frozenset[str] | None:
        """What `tsp -l` would list, or None when the server cannot be asked."""
        if not self.up:
            return None
        if self.running is None and not self.queue:
            return _NOTHING  # an idle node's re-read, most of them
        live = set(self.queue)
        if self.running is not None:
            live.add(self.running)
        return frozenset(live)

    def kill(self, down_for: float = 0.0) -> list[str]:
        """The server dies: queued jobs vanish. Returns their run ids."""
        lost = list(self.queue)
        self.queue.clear()
        for run_id in lost:
            self.jobs.pop(run_id, None)
        self.running = self.process = None  # an orphan now: it runs on, unlisted
        self._server += 1
        self.down_until = self.env.now + down_for
        return lost

    def _next(self) -> None:
        if not self.queue:
            self.running = self.process = None
            return
        self.running = self.queue.popleft()
        process = self.process = self.env.process(self.jobs.pop(self.running, self.start_job)(self.running))
        server = self._server
        process.callbacks.append(lambda _e: self._next() if self._server == server else None)
