"""An in-process FIFO queue with one worker thread, for hosts without tsp."""

from __future__ import annotations

import subprocess
import threading
from collections import deque


class InlineQueue:
    def __init__(self):
        self._lock = threading.Condition()
        self._jobs: deque[tuple[str, list[str]]] = deque()
        self._running: str | None = None
        threading.Thread(target=self._work, name="inline-queue", daemon=True).start()

    def enqueue(self, run_id: str, argv: list[str]) -> None:
        with self._lock:
            self._jobs.append((run_id, argv))
            self._lock.notify()

    def live_run_ids(self) -> frozenset[str]:
        with self._lock:
            live = {run_id for run_id, _ in self._jobs}
            if self._running:
                live.add(self._running)
            return frozenset(live)

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._jobs:
                    self._lock.wait()
                self._running, argv = self._jobs.popleft()
            try:
                subprocess.call(argv, stdin=subprocess.DEVNULL)
            except OSError:
                pass  # the run records its own failure; the watcher sees it lost
            finally:
                with self._lock:
                    self._running = None
