"""Pure arithmetic of the benchmarks: percentiles, summaries, ratios, matching
fires to runs. No IO, so tests/unit/bench can check it on made-up numbers."""

from __future__ import annotations

import bisect
import math
from typing import Iterable, Sequence


def percentile(samples: Iterable[float], p: float) -> float | None:
    """The p-th percentile (0-100) by linear interpolation between closest
    ranks (numpy's default); None for no samples. With n samples, p99 is
    close to the maximum unless n is in the hundreds."""
    values = sorted(samples)
    if not values:
        return None
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    rank = (len(values) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return values[low] + (values[high] - values[low]) * (rank - low)


def summarize(samples: Sequence[float]) -> dict:
    """n, p50, p90, p99, mean, min and max of samples (None where empty)."""
    values = list(samples)
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "mean": sum(values) / len(values) if values else None,
        "min": min(values) if values else None,
        "max": max(values) if values else None,
    }


def ratio(ours: float | None, other: float | None) -> float | None:
    """ours / other; None when either is missing or the division means nothing
    (other is 0 and ours is not). 0 / 0 is 1: both sides equal."""
    if ours is None or other is None:
        return None
    if other == 0:
        return 1.0 if ours == 0 else None
    return ours / other


def first_after(starts: Sequence[float], t: float) -> float | None:
    """The earliest run start strictly after t; `starts` must be sorted."""
    i = bisect.bisect_right(starts, t)
    return starts[i] if i < len(starts) else None


def fire_to_run(fires: Sequence[float], starts: Iterable[float]) -> tuple[list[float], list[float]]:
    """For each fire, the delay to the first run that started after it.

    Returns (delays, unserved): unserved are the fires no run started after,
    which is what "lost" means for trigger's delivery rule.
    """
    ordered = sorted(starts)
    delays, unserved = [], []
    for fire in fires:
        start = first_after(ordered, fire)
        if start is None:
            unserved.append(fire)
        else:
            delays.append(start - fire)
    return delays, unserved


def cpu_percent(cpu_seconds: float, wall_seconds: float) -> float:
    """CPU time over wall time, in percent of one core."""
    return 100.0 * cpu_seconds / wall_seconds if wall_seconds > 0 else 0.0


def extrapolate(sample_seconds: float, sample_size: int, total: int) -> float:
    """Linear extrapolation of the time of `total` like operations."""
    if sample_size <= 0:
        raise ValueError("cannot extrapolate from an empty sample")
    return sample_seconds * total / sample_size
