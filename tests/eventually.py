"""One poll helper for every test that waits for something another process does."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def eventually(predicate: Callable[[], T], timeout: float = 20.0,
               what: str | Callable[[], str] = "the condition", interval: float = 0.05) -> T:
    """Poll `predicate()` until it returns something true, and return that.

    After `timeout` seconds, fail naming `what` (a callable is asked only
    then, so it can describe the state at that moment).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:g}s: {what() if callable(what) else what}")
        time.sleep(interval)
