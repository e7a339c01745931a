"""The interval methods of bench/metrics/bootstrap.py against their textbook definitions and published values."""

from __future__ import annotations

import numpy as np
import pytest

from bench.errors import BenchError
from bench.metrics.bootstrap import (
    bias_shifted_interval,
    bootstrap_means,
    check_confidence,
    check_resamples,
    normal_interval,
    percentile_interval,
    wilson_interval,
)


def test_confidence_must_lie_strictly_between_0_and_1():
    assert check_confidence(0.95) == 0.95 and isinstance(check_confidence(1 / 2), float)
    for bad in (0, 1, -0.1, 1.5):
        with pytest.raises(BenchError, match=rf"confidence must be in \(0, 1\), got {bad!r}"):
            check_confidence(bad)


def test_resamples_are_0_or_at_least_2_and_an_integer():
    assert check_resamples(0) == 0 and check_resamples(2) == 2 and check_resamples(1000) == 1000
    for bad in (-1, 2.0, True, "10", None):
        with pytest.raises(BenchError, match=r"bootstrap must be a non-negative integer .*got"):
            check_resamples(bad)
    with pytest.raises(BenchError, match="bootstrap must be 0 \\(off\\) or at least 2 resamples"):
        check_resamples(1)


def test_percentile_interval_takes_the_two_tail_quantiles():
    reps = np.arange(101.0)  # quantile q of 0..100 is 100 q
    iv = percentile_interval(reps, 0.9)
    assert (iv.low, iv.high) == (pytest.approx(5.0), pytest.approx(95.0))
    assert iv.method == "percentile bootstrap, 101 resamples"
    assert percentile_interval(reps, 0.5).low == pytest.approx(25.0)


def test_bias_shifted_interval_recentres_the_percentiles_on_the_estimate():
    """Efron & Tibshirani ch. 10: bias = mean(θ*) - θ̂, interval = percentiles - bias, floored (FD >= 0)."""
    reps = np.arange(101.0) + 10.0  # mean 60
    iv, bias = bias_shifted_interval(reps, 50.0, 0.9)
    assert bias == pytest.approx(10.0)
    assert (iv.low, iv.high) == (pytest.approx(5.0), pytest.approx(95.0))
    assert iv.method == "percentile bootstrap shifted by the bootstrap bias estimate, 101 resamples"
    low = np.arange(101.0) - 45.0  # mean 5, estimate 0: bias 5, percentiles (-40, 50) - 5 = (-45, 45)
    assert bias_shifted_interval(low, 0.0, 0.9)[0].low == 0.0  # the default floor: an FD is never negative
    free, _ = bias_shifted_interval(low, 0.0, 0.9, floor=None)
    assert (free.low, free.high) == (pytest.approx(-45.0), pytest.approx(45.0))
    floored, _ = bias_shifted_interval(low, 0.0, 0.9, floor=50.0)
    assert (floored.low, floored.high) == (50.0, 50.0)


def test_bootstrap_means_are_seeded_and_fill_every_resample():
    rng = np.random.default_rng(0)
    values = rng.normal(size=200_000) + 3.0  # large: the resamples are drawn in several blocks
    means = bootstrap_means(values, 50, seed=(1, 2))
    assert means.shape == (50,)
    se = values.std() / np.sqrt(values.size)
    assert np.all(np.abs(means - values.mean()) < 6 * se)  # no block left unfilled or drawn from another array
    assert means.std() == pytest.approx(se, rel=0.35)  # the bootstrap spread of a mean is sd / sqrt(n)
    np.testing.assert_array_equal(means, bootstrap_means(values, 50, seed=(1, 2)))
    assert not np.array_equal(means, bootstrap_means(values, 50, seed=(1, 3)))
    const = bootstrap_means(np.full(7, 2.5), 9, seed=0)
    np.testing.assert_array_equal(const, np.full(9, 2.5))
    small = bootstrap_means(np.array([0.0, 1.0]), 2000, seed=0)
    assert set(np.unique(small)) <= {0.0, 0.5, 1.0} and small.mean() == pytest.approx(0.5, abs=0.05)


def test_wilson_interval_matches_published_values():
    # Wilson (1927); e.g. Newcombe (1998), table I: 50/100 -> 0.4038-0.5962, 0/10 -> 0-0.2775, 1/10 -> 0.0179-0.4042
    iv = wilson_interval(0.5, 100, 0.95)
    assert (iv.low, iv.high) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    assert iv.method == "Wilson score interval"
    zero = wilson_interval(0.0, 10, 0.95)
    assert (zero.low, zero.high) == (pytest.approx(0.0, abs=1e-12), pytest.approx(0.2775, abs=1e-4))
    assert zero.low >= 0.0
    one = wilson_interval(0.1, 10, 0.95)
    assert (one.low, one.high) == (pytest.approx(0.0179, abs=1e-4), pytest.approx(0.4042, abs=1e-4))
    full = wilson_interval(1.0, 10, 0.95)
    assert (full.low, full.high) == (pytest.approx(0.7225, abs=1e-4), 1.0)


def test_normal_interval_is_estimate_plus_minus_z_stderr():
    iv = normal_interval(10.0, 2.0, 0.95, "delta method")
    assert (iv.low, iv.high, iv.method) == (pytest.approx(10 - 1.959964 * 2, abs=1e-5),
                                            pytest.approx(10 + 1.959964 * 2, abs=1e-5), "delta method")
    assert normal_interval(0.0, 1.0, 0.6827, "m").high == pytest.approx(1.0, abs=1e-4)
