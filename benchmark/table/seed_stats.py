"""Mean and standard error over seeds, the same to the last bit on every Python release."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_and_se(values: Sequence[float]) -> tuple[float, float | None]:
    """``mean = sum(v) / n`` and ``se = sqrt(sum((v - mean)^2) / (n - 1) / n)`` (sample std,
    ddof = 1, over sqrt(n); None for n < 2). Sums are ``math.fsum``, correctly rounded:
    the builtin ``sum`` of floats compensates from Python 3.12 on and not before, so with it
    the tables' last digits would depend on the Python release."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_and_se needs at least one value")
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)
