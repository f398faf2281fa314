import math
import statistics

import pytest

from benchmark.table.seed_stats import mean_and_se


def test_mean_and_se_are_the_sample_mean_and_its_standard_error() -> None:
    values = [-103.1, -103.5, -103.2, -103.9, -103.4]
    mean, se = mean_and_se(values)
    assert mean == pytest.approx(statistics.fmean(values), abs=1e-12)
    assert se == pytest.approx(statistics.stdev(values) / math.sqrt(5), rel=1e-12)
    assert mean_and_se([-95.0]) == (-95.0, None)
    with pytest.raises(ValueError, match="at least one value"):
        mean_and_se([])


def test_sums_are_correctly_rounded_whatever_the_python_release() -> None:
    # A plain left-to-right float sum gives 0 here (Python 3.11's sum); the exact sum is 1.
    values = [1e16, 1.0, -1e16]
    assert mean_and_se(values)[0] == 1.0 / 3
    mean, se = mean_and_se([0.1] * 10)
    assert mean == 0.1 and se == 0.0
