"""Fuzzing knobs. Every property here runs a few dozen examples in the quick
suite; with TRIGGER_FUZZ=1 each runs FUZZ_EXAMPLES (default 10,000, or
$TRIGGER_FUZZ_EXAMPLES). The fuzz run:

    TRIGGER_FUZZ=1 .venv/bin/python -m pytest tests/unit/security -m fuzz -q

`fuzz` marks the fuzzed properties so they can be selected alone."""

from __future__ import annotations

import os
import tracemalloc
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, settings

FUZZ = os.environ.get("TRIGGER_FUZZ", "") not in ("", "0")
FUZZ_EXAMPLES = int(os.environ.get("TRIGGER_FUZZ_EXAMPLES", "10000"))


# Memory one input may take in the code under test, measured with
# tracemalloc around the call (hypothesis's own bookkeeping, which grows with
# the number of examples, is outside it).
MEMORY_LIMIT = 32 << 20
PEAKS: dict[str, int] = {}


@contextmanager
def bounded_memory(name: str, limit: int = MEMORY_LIMIT):
    """Trace Python allocations inside the block; fail if one input took more than `limit`."""
    tracemalloc.start()
    try:
        yield
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        PEAKS[name] = max(PEAKS.get(name, 0), peak)
    assert peak <= limit, f"{name}: one input took {peak / 1e6:.1f} MB"


def pytest_terminal_summary(terminalreporter):
    if PEAKS:
        terminalreporter.write_line("most memory one fuzzed input took (tracemalloc peak): " + ", ".join(
            f"{name} {peak / 1e6:.2f} MB" for name, peak in sorted(PEAKS.items())))


def pytest_configure(config):
    config.addinivalue_line("markers", "fuzz: hypothesis fuzzing; TRIGGER_FUZZ=1 runs 10,000 examples each")


def pytest_collection_modifyitems(items):
    """A hang in a fuzzed property is caught by hypothesis as a failure and
    shrunk (each smaller example hanging again): the thread method ends the
    session instead. These tests start no process that would be left over.
    The fuzz run (10,000 examples) takes its hours."""
    for item in items:
        if item.get_closest_marker("fuzz") and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(6 * 3600 if FUZZ else 300, method="thread"))


def fuzz_settings(quick: int):
    """`quick` examples in the quick suite, FUZZ_EXAMPLES under TRIGGER_FUZZ=1."""
    return settings(
        max_examples=FUZZ_EXAMPLES if FUZZ else quick,
        deadline=None,  # a loaded 2-core machine must not turn slowness into failures
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.function_scoped_fixture],
        derandomize=not FUZZ,  # the quick suite is the same every run; the fuzz run explores
        database=None if not FUZZ else settings.default.database,
    )
