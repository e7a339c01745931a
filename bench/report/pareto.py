"""Pareto analysis: which cells are not dominated, and who dominates whom.

Pure functions on plain numbers (no pandas, no plotting), so reports and gates share one definition.

A point is a row of n metric values; `directions` says, per column, whether higher is better
(True, "max", "higher") or lower is better (False, "min", "lower") -- the `higher_is_better` of each
metric. Point a *dominates* b when a is at least as good in every column and strictly better in one.
Equal points do not dominate each other (ties are all kept on the front). A point with a missing value
(None or NaN) in any column cannot be compared: it is never on the front and never dominates or is
dominated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Direction = bool | str


def _signs(directions: Sequence[Direction], ncols: int) -> np.ndarray:
    if len(directions) != ncols:
        raise ValueError(f"{len(directions)} directions for {ncols} columns")
    out = []
    for d in directions:
        if isinstance(d, str):
            key = d.lower()
            if key in ("max", "higher", "up"):
                out.append(1.0)
            elif key in ("min", "lower", "down"):
                out.append(-1.0)
            else:
                raise ValueError(f"direction must be 'max' or 'min' (or higher_is_better bool), not {d!r}")
        else:
            out.append(1.0 if bool(d) else -1.0)
    return np.asarray(out, dtype=float)


def _as_matrix(points: Any) -> np.ndarray:
    """(n, d) float array; None becomes NaN. A 1-D input is n points of one metric."""
    arr = np.array([[np.nan if v is None else float(v) for v in np.atleast_1d(p)] for p in points], dtype=float)
    if arr.size == 0:
        return arr.reshape(0, 0)
    return arr


def oriented(points: Any, directions: Sequence[Direction]) -> np.ndarray:
    """Points flipped so that higher is better in every column (NaN stays NaN)."""
    arr = _as_matrix(points)
    if arr.shape[0] == 0:
        return arr
    return arr * _signs(directions, arr.shape[1])


def dominates(a: Sequence[float | None], b: Sequence[float | None], directions: Sequence[Direction]) -> bool:
    """True when a is at least as good as b in every metric and strictly better in one (no missing values)."""
    o = oriented([a, b], directions)
    if np.isnan(o).any():
        return False
    return bool((o[0] >= o[1]).all() and (o[0] > o[1]).any())


def _dominance_matrix(o: np.ndarray) -> np.ndarray:
    """D[i, j] = point i dominates point j; rows/columns with a NaN are all False."""
    n = o.shape[0]
    if n == 0:
        return np.zeros((0, 0), dtype=bool)
    valid = ~np.isnan(o).any(axis=1)
    ge = (o[:, None, :] >= o[None, :, :]).all(axis=2)
    gt = (o[:, None, :] > o[None, :, :]).any(axis=2)
    d = ge & gt
    d &= valid[:, None] & valid[None, :]
    return d


def pareto_front(points: Any, directions: Sequence[Direction]) -> list[int]:
    """Indices (ascending) of the non-dominated points; points with a missing value are left out.

    Works in any number of dimensions; duplicates of a front point are all on the front.
    """
    o = oriented(points, directions)
    if o.shape[0] == 0:
        return []
    valid = ~np.isnan(o).any(axis=1)
    dominated = _dominance_matrix(o).any(axis=0)
    return [int(i) for i in np.flatnonzero(valid & ~dominated)]


@dataclass(frozen=True)
class Dominance:
    """`winner` dominates `loser`. `better`: the metric columns where the winner is strictly better;
    `significant`: those of them where the two confidence intervals do not overlap (empty when no
    intervals were given, or when every gain is within the noise: then the dominance is a statistical tie)."""

    winner: int
    loser: int
    better: tuple[int, ...]
    significant: tuple[int, ...] = ()


def dominance_pairs(points: Any, directions: Sequence[Direction], *, low: Any = None, high: Any = None,
                    only_front: bool = False, groups: Sequence[Any] | None = None) -> list[Dominance]:
    """Every (winner, loser) pair where winner dominates loser, ordered by winner then loser.

    `low`/`high`: optional confidence bounds with the shape of `points` (None/NaN where unknown) used to
    mark which gains are significant. `only_front`: keep only winners that are on the Pareto front.
    `groups`: one label per point (e.g. the sampler); pairs inside the same group are left out.
    """
    o = oriented(points, directions)
    n = o.shape[0]
    if n == 0:
        return []
    d = _dominance_matrix(o)
    if only_front:
        front = np.zeros(n, dtype=bool)
        front[pareto_front(points, directions)] = True
        d &= front[:, None]
    if groups is not None:
        if len(groups) != n:
            raise ValueError(f"{len(groups)} group labels for {n} points")
        g = np.asarray([str(x) for x in groups], dtype=object)
        d &= g[:, None] != g[None, :]
    signs = _signs(directions, o.shape[1])
    lo = hi = None
    if low is not None and high is not None:
        lo_raw, hi_raw = _as_matrix(low), _as_matrix(high)
        if lo_raw.shape != o.shape or hi_raw.shape != o.shape:
            raise ValueError("low/high must have the shape of points")
        # orient the intervals too: flipping a column swaps its bounds
        lo = np.where(signs > 0, lo_raw, -hi_raw)
        hi = np.where(signs > 0, hi_raw, -lo_raw)
    out = []
    for i, j in zip(*np.nonzero(d), strict=True):
        better = tuple(int(k) for k in np.flatnonzero(o[i] > o[j]))
        sig: tuple[int, ...] = ()
        if lo is not None and hi is not None:
            # winner's interval entirely above the loser's (oriented so that higher is better)
            sig = tuple(k for k in better if not np.isnan(lo[i, k]) and not np.isnan(hi[j, k]) and lo[i, k] > hi[j, k])
        out.append(Dominance(int(i), int(j), better, sig))
    return out


def front_steps(x: Sequence[float], y: Sequence[float], x_higher_is_better: bool = False,
                y_higher_is_better: bool = False) -> list[int]:
    """2-D front indices ordered along x from the best-cost end (for drawing the front as a staircase)."""
    idx = pareto_front(list(zip(x, y, strict=True)), [x_higher_is_better, y_higher_is_better])
    return sorted(idx, key=lambda i: (x[i] if not x_higher_is_better else -x[i],
                                      -y[i] if y_higher_is_better else y[i]))
