"""Seeded, vectorised confidence intervals: bootstrap percentiles, bias-shifted percentiles, Wilson, normal."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from bench.errors import BenchError


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str


def check_confidence(confidence: float) -> float:
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise BenchError(f"confidence must be in (0, 1), got {confidence!r}")
    return c


def check_resamples(resamples: object) -> int:
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 0:
        raise BenchError(f"bootstrap must be a non-negative integer (number of resamples), got {resamples!r}")
    if resamples == 1:
        raise BenchError("bootstrap must be 0 (off) or at least 2 resamples")
    return resamples


def percentile_interval(replicates: np.ndarray, confidence: float) -> Interval:
    """Plain percentile bootstrap interval (for statistics without finite-sample bias, e.g. a mean)."""
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(replicates, [alpha, 1 - alpha])
    return Interval(float(lo), float(hi), f"percentile bootstrap, {len(replicates)} resamples")


def bias_shifted_interval(replicates: np.ndarray, estimate: float, confidence: float,
                          floor: float | None = 0.0) -> tuple[Interval, float]:
    """Percentile interval shifted by the bootstrap bias estimate mean(θ*) - θ̂ (Efron & Tibshirani, ch. 10).

    FD is biased upward at finite N and a resample (with duplicated rows) is more so, so plain percentiles of
    resampled FDs sit above the estimate; the shift re-centres them on it. Returns (interval, bias).
    """
    bias = float(np.mean(replicates) - estimate)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(replicates, [alpha, 1 - alpha]) - bias
    if floor is not None:
        lo, hi = max(lo, floor), max(hi, floor)
    return Interval(float(lo), float(hi),
                    f"percentile bootstrap shifted by the bootstrap bias estimate, {len(replicates)} resamples"), bias


def bootstrap_means(values: np.ndarray, resamples: int, seed: int | tuple[int, ...]) -> np.ndarray:
    """Means of `resamples` seeded bootstrap resamples of a 1-D array, vectorised in blocks."""
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[0]
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    block = max(1, (32 * 2**20) // max(1, n * 8))
    for start in range(0, resamples, block):
        b = min(block, resamples - start)
        out[start:start + b] = v[rng.integers(0, n, size=(b, n))].mean(1)
    return out


def wilson_interval(p: float, n: int, confidence: float) -> Interval:
    """Wilson score interval for a proportion p observed on n trials."""
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(max(0.0, centre - half), min(1.0, centre + half), "Wilson score interval")


def normal_interval(estimate: float, stderr: float, confidence: float, method: str) -> Interval:
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    return Interval(estimate - z * stderr, estimate + z * stderr, method)
