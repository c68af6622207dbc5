"""Fuzzing knobs. Every property here runs a few dozen examples in the quick
suite; with TRIGGER_FUZZ=1 each runs FUZZ_EXAMPLES (default 10,000, or
$TRIGGER_FUZZ_EXAMPLES). The fuzz run:

    TRIGGER_FUZZ=1 .venv/bin/python -m pytest tests/unit/security -m fuzz -q

`fuzz` marks the fuzzed properties so they can be selected alone."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ = os.environ.get("TRIGGER_FUZZ", "") not in ("", "0")
FUZZ_EXAMPLES = int(os.environ.get("TRIGGER_FUZZ_EXAMPLES", "10000"))


def pytest_configure(config):
    config.addinivalue_line("markers", "fuzz: hypothesis fuzzing; TRIGGER_FUZZ=1 runs 10,000 examples each")


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
