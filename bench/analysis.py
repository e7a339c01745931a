"""Verdicts from paired evidence: the one place that decides "A better than B", "run worse than baseline",
"tie" and "best within budget". The gate, the report, `bench report --compare` and scripts/ all call it.

Quality. Every sampler of a suite draws image i from seed base_seed + i and is scored against the same
reference, so two cells' numbers are *paired*: the right interval for "does A differ from B" is the bootstrap
interval of the difference when the image indices are resampled jointly (the same multinomial counts for both
cells; the reference statistics held fixed). Unpaired intervals of each cell are far wider (they include the
image-to-image spread that both cells share) and call real regressions ties. Two identically sampled cells give
a zero difference with a zero-width interval.

Latency. Two latencies differ only when their interquartile ranges separate; a latency flagged `unstable`
(too few timed runs, or too wide an IQR: bench.metrics.latency) takes part in no verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.evidence import Evidence
from bench.metrics.frechet import (
    FeatureStats,
    bootstrap_counts,
    frechet_distance_from_stats,
    frechet_of_resamples,
)
from bench.numbers import finite as _finite

DEFAULT_RESAMPLES = 500
DEFAULT_CONFIDENCE = 0.95
PAIRED_SEED = (14, 0)  # one fixed stream: every comparison resamples the same index sets for a given N
MIN_STRATUM = 5  # resample within conditions only when every condition has at least this many images


class NotPaired(BenchError):
    """The two cells' evidence cannot be paired (other seeds, other sizes, other kinds, no evidence)."""


@dataclass(frozen=True)
class Paired:
    """B compared with A on one metric: `delta` = value_b - value_a with its paired bootstrap interval."""

    metric: str
    higher_is_better: bool
    value_a: float
    value_b: float
    delta: float
    ci_low: float
    ci_high: float
    confidence: float
    resamples: int
    n: int
    method: str = "paired bootstrap"

    def worsening(self) -> tuple[float, float, float]:
        """(estimate, low, high) of how much worse B is than A, in the metric's unit (negative: better)."""
        if self.higher_is_better:
            return -self.delta, -self.ci_high, -self.ci_low
        return self.delta, self.ci_low, self.ci_high

    def verdict(self, tolerance: float = 0.0) -> str:
        """'worse' when B is worse than A by more than `tolerance` with the interval's confidence, 'better' when
        better by more than it, else 'tie'."""
        _, low, high = self.worsening()
        if low > tolerance:
            return "worse"
        if high < -tolerance:
            return "better"
        return "tie"

    def describe(self) -> str:
        rel = f" ({100 * self.delta / abs(self.value_a):+.1f}%)" if self.value_a else ""
        return (f"{self.delta:+.4g}{rel}, paired {100 * self.confidence:g}% CI "
                f"[{self.ci_low:+.4g}, {self.ci_high:+.4g}]")


def stratified_counts(strata: np.ndarray, resamples: int, seed: tuple[int, ...]) -> np.ndarray:
    """(resamples, N) counts drawn with replacement *within* each stratum, so every condition keeps its count."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((resamples, strata.shape[0]))
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        counts[:, members] = rng.multinomial(members.size, np.full(members.size, 1.0 / members.size),
                                             size=resamples)
    return counts


def resampling_plan(a: Evidence, b: Evidence) -> np.ndarray | None:
    """The strata both cells share when every condition has >= MIN_STRATUM images, else None (plain bootstrap).

    Image i's condition comes from its dataset index, not its seed: across seed sets the label mix is fixed, so
    resampling it too (a plain bootstrap) adds spread no rerun would show. With one image per prompt there is
    no within-condition spread to resample, and the plain bootstrap is kept (conservative)."""
    if a.strata is None or b.strata is None or not np.array_equal(a.strata, b.strata):
        return None
    _, sizes = np.unique(a.strata, return_counts=True)
    return np.asarray(a.strata) if sizes.min() >= MIN_STRATUM else None


def _replicates(ev: Evidence, counts: np.ndarray, ref: FeatureStats | None) -> np.ndarray:
    if ev.kind == "features":
        assert ref is not None
        return frechet_of_resamples(np.asarray(ev.rows, np.float64), ref, counts)
    return counts @ np.asarray(ev.rows, np.float64) / ev.n


def _point(ev: Evidence, ref: FeatureStats | None) -> float:
    if ev.kind == "features":
        assert ref is not None
        return frechet_distance_from_stats(FeatureStats.from_features(np.asarray(ev.rows, np.float64)), ref)
    return float(np.mean(np.asarray(ev.rows, np.float64)))


def check_pairable(a: Evidence, b: Evidence) -> None:
    """Raise NotPaired unless image i of both cells came from the same seed and the metric is the same kind."""
    if a.kind != b.kind:
        raise NotPaired(f"evidence kinds differ ({a.kind} vs {b.kind})")
    if a.n != b.n:
        raise NotPaired(f"sample counts differ ({a.n} vs {b.n})")
    if a.seeds_sha256 != b.seeds_sha256:
        raise NotPaired("the cells' images come from different seeds")
    if a.kind == "features" and a.rows.shape[1:] != b.rows.shape[1:]:
        raise NotPaired(f"feature dimensions differ ({a.rows.shape[1:]} vs {b.rows.shape[1:]})")


class PairedComparer:
    """Paired comparisons among many cells, each cell's bootstrap replicates computed once.

    All cells with N images are resampled with the same counts (from `seed`), so the difference of two cells'
    replicate vectors is the paired bootstrap distribution of their difference. For FD both cells are scored
    against one reference: the `reference` evidence's statistics when given, else each cell's own (equal
    within a run)."""

    def __init__(self, resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
                 seed: tuple[int, ...] = PAIRED_SEED) -> None:
        if resamples < 2:
            raise BenchError(f"paired comparisons need at least 2 resamples, got {resamples}")
        if not 0.0 < confidence < 1.0:
            raise BenchError(f"confidence must be in (0, 1), got {confidence}")
        self.resamples, self.confidence, self.seed = resamples, confidence, seed
        self._counts: dict[tuple[int, bytes], np.ndarray] = {}
        self._cache: dict[tuple[int, str | None, bytes], tuple[float, np.ndarray]] = {}

    def _counts_for(self, n: int, strata: np.ndarray | None) -> np.ndarray:
        key = (n, b"" if strata is None else strata.tobytes())
        if key not in self._counts:
            self._counts[key] = (bootstrap_counts(n, self.resamples, self.seed) if strata is None
                                 else stratified_counts(strata, self.resamples, self.seed))
        return self._counts[key]

    def _stats(self, ev: Evidence, ref: Evidence | None, strata: np.ndarray | None) -> tuple[float, np.ndarray]:
        src = ref if ref is not None else ev
        stats = None
        if ev.kind == "features":
            if src.ref_mean is None or src.ref_cov is None:
                raise NotPaired("FD evidence without reference statistics")
            stats = FeatureStats(src.ref_mean, src.ref_cov, -1)
        key = (id(ev), src.ref_digest() if ev.kind == "features" else None,
               b"" if strata is None else strata.tobytes())
        if key not in self._cache:
            self._cache[key] = (_point(ev, stats), _replicates(ev, self._counts_for(ev.n, strata), stats))
        return self._cache[key]

    def compare(self, metric: str, higher_is_better: bool, a: Evidence, b: Evidence) -> Paired:
        """B versus A, scored against A's reference statistics (for FD)."""
        check_pairable(a, b)
        strata = resampling_plan(a, b)
        va, ra = self._stats(a, a, strata)
        vb, rb = self._stats(b, a, strata)
        diff = rb - ra
        delta = vb - va
        bias = float(np.mean(diff) - delta)
        alpha = (1 - self.confidence) / 2
        lo, hi = (np.quantile(diff, [alpha, 1 - alpha]) - bias) if np.any(diff != diff[0]) else (diff[0], diff[0])
        lo, hi = min(float(lo), delta), max(float(hi), delta)
        method = "paired bootstrap within conditions" if strata is not None else "paired bootstrap"
        return Paired(metric, higher_is_better, va, vb, delta, lo, hi, self.confidence, self.resamples, a.n, method)


def paired(metric: str, higher_is_better: bool, a: Evidence, b: Evidence, resamples: int = DEFAULT_RESAMPLES,
           confidence: float = DEFAULT_CONFIDENCE) -> Paired:
    """One paired comparison (B versus A); use PairedComparer for many."""
    return PairedComparer(resamples, confidence).compare(metric, higher_is_better, a, b)


def regression_tolerance(baseline_value: float, rel_tol: float | None, abs_tol: float | None) -> float:
    """The worsening a rule allows: the larger of rel_tol x |baseline| and abs_tol (0 when neither is set)."""
    allowed = [t for t in ((rel_tol * abs(baseline_value)) if rel_tol is not None else None, abs_tol)
               if t is not None]
    return max(allowed) if allowed else 0.0


# ----------------------------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class Timing:
    """A latency with its interquartile range and whether it may take part in a verdict."""

    median: float
    q25: float
    q75: float
    unstable: bool = False
    reason: str = ""


def timing_of(metric: dict[str, Any] | None) -> Timing | None:
    """A Timing from a stored metric record (value, ci_low/ci_high = IQR, provenance.unstable)."""
    if not metric:
        return None
    v = _finite(metric.get("value"))
    if v is None:
        return None
    lo, hi = _finite(metric.get("ci_low")), _finite(metric.get("ci_high"))
    prov = metric.get("provenance") or {}
    unstable = bool(prov.get("unstable")) if isinstance(prov, dict) else False
    reason = str(prov.get("unstable_reason") or "") if isinstance(prov, dict) else ""
    return Timing(v, v if lo is None else lo, v if hi is None else hi, unstable, reason)


def latency_separated(a: Timing, b: Timing) -> bool:
    """The two IQRs do not overlap (the latency protocol's rule, bench.metrics.latency.separated)."""
    from bench.metrics.latency import separated

    return separated(a.q25, a.q75, b.q25, b.q75)


def latency_verdict(a: Timing, b: Timing) -> str:
    """B versus A: 'faster' | 'slower' | 'tie' (IQRs overlap) | 'unstable' (either is flagged)."""
    if a.unstable or b.unstable:
        return "unstable"
    if not latency_separated(a, b):
        return "tie"
    return "faster" if b.median < a.median else "slower"


# ----------------------------------------------------------------------------------------------- budgets


@dataclass(frozen=True)
class Candidate:
    """One cell as the budget and ranking rules see it."""

    key: str
    label: str
    quality: float
    higher_is_better: bool
    timing: Timing
    evidence: Evidence | None = None


@dataclass
class BudgetRow:
    """The best cell within a latency budget, and the cells it cannot be told apart from."""

    budget: float
    best: Candidate
    quality_ties: list[str]  # within the budget, quality not separable from the best (paired)
    latency_ties: list[str]  # better quality but a latency not separable from the budget's edge
    unstable: list[str]  # left out: unstable latency
    decided: bool  # False: the headline cannot name one best cell


def _better(c: Candidate, d: Candidate) -> bool:
    return c.quality > d.quality if c.higher_is_better else c.quality < d.quality


def best_within_budgets(cands: Sequence[Candidate], comparer: PairedComparer, metric: str) -> list[BudgetRow]:
    """Read the (latency, quality) front left to right: each budget is a front cell's median latency; its best
    cell is the best quality among stable cells at or under that latency. A cell of better quality whose
    latency IQR overlaps the best one's is a latency tie (it may be just as fast); a cell within the budget
    whose quality the paired test cannot separate from the best is a quality tie. `decided` is False when a
    latency tie exists: the report then never names a single winner."""
    stable = [c for c in cands if not c.timing.unstable]
    unstable = [c.label for c in cands if c.timing.unstable]
    rows: list[BudgetRow] = []
    best_so_far: Candidate | None = None
    for c in sorted(stable, key=lambda c: (c.timing.median, -c.quality if c.higher_is_better else c.quality)):
        if best_so_far is not None and not _better(c, best_so_far):
            continue
        best_so_far = c
        within = [d for d in stable if d.timing.median <= c.timing.median and d is not c]
        q_ties = []
        for d in within:
            if d.evidence is not None and c.evidence is not None:
                try:
                    if comparer.compare(metric, c.higher_is_better, c.evidence, d.evidence).verdict() == "tie":
                        q_ties.append(d.label)
                    continue
                except NotPaired:
                    pass
        lat_ties = [d.label for d in stable if d.timing.median > c.timing.median and _better(d, c)
                    and not latency_separated(c.timing, d.timing)]
        rows.append(BudgetRow(c.timing.median, c, q_ties, lat_ties, unstable, decided=not lat_ties))
    return rows
