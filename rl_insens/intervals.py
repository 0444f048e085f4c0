"""The confidence interval every report gives for a mean: Student's t, from ``scipy.stats``."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy import stats


def confidence_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float]:
    """The ``level`` interval for the mean of ``values``: mean ± t((1 + level) / 2, n − 1) · s / √n.

    Args:
        values: independent measurements (episode returns, per-frame scores, seeds' results).
        level: the interval's coverage.

    Returns:
        ``(low, high)``; ``(mean, mean)`` for one value or values all equal (no spread to
        measure), ``(nan, nan)`` for none.
    """
    values = np.fromiter(values, dtype=float)
    if len(values) == 0:
        return math.nan, math.nan
    mean = float(values.mean())
    if len(values) == 1 or np.all(values == values[0]):
        return mean, mean
    low, high = stats.t.interval(level, len(values) - 1, loc=mean, scale=stats.sem(values))
    return float(low), float(high)
