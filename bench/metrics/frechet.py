"""Fréchet distance between two feature sets, from float64 statistics, by an eigenvalue method.

    FD(a, b) = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))

The trace term uses no matrix square root of the (non-symmetric) product: with R = S_a^(1/2), the symmetric
square root from `eigh`, S_a S_b is similar to R S_b R, which is symmetric positive semi-definite, so
tr((S_a S_b)^(1/2)) = sum_i sqrt(lambda_i(R S_b R)) with real eigenvalues from `eigvalsh`, clamped at 0.

Statistics are accumulated in float64 whatever the feature dtype (two passes: mean, then centred scatter),
and FD needs more samples than feature dimensions (N > D), or the covariance is singular by construction.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.errors import BenchError

if TYPE_CHECKING:
    import torch

_CHUNK = 8192  # rows per float64 accumulation step (bounds the float64 copy of large feature sets)


class InsufficientSamplesError(BenchError):
    """FD was asked of N samples in D >= N dimensions: the covariance cannot be full rank."""


def check_sample_count(n: int, dim: int, what: str = "feature set") -> None:
    """Raise InsufficientSamplesError unless n > dim (the covariance needs N - 1 >= D to be full rank)."""
    if n <= dim:
        raise InsufficientSamplesError(
            f"Fréchet distance needs more samples than feature dimensions: {what} has N={n} samples for "
            f"D={dim} features; use at least {dim + 1} samples or a feature space with fewer dimensions"
        )


@dataclass(frozen=True)
class FeatureStats:
    """Mean (D,), unbiased covariance (D, D) and sample count of a feature set, all float64.

    Saved as a plain `.npz` of `mu`, `sigma`, `n` (the layout NVlabs/edm and clean-fid use for reference stats).
    """

    mean: np.ndarray
    cov: np.ndarray
    n: int

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def from_features(cls, feats: Any) -> FeatureStats:
        """Statistics of an (N, D) array or tensor, accumulated in float64 in chunks (mean first, then scatter)."""
        x = _as_numpy_2d(feats)
        n, d = x.shape
        if n < 2:
            raise InsufficientSamplesError(f"feature statistics need at least 2 samples, got {n}")
        total = np.zeros(d, dtype=np.float64)
        for start in range(0, n, _CHUNK):
            total += x[start:start + _CHUNK].astype(np.float64).sum(0)
        mean = total / n
        scatter = np.zeros((d, d), dtype=np.float64)
        for start in range(0, n, _CHUNK):
            c = x[start:start + _CHUNK].astype(np.float64) - mean
            scatter += c.T @ c
        cov = scatter / (n - 1)
        return cls(mean=mean, cov=(cov + cov.T) / 2, n=n)

    def save(self, path: str | Path) -> None:
        np.savez(path, mu=self.mean, sigma=self.cov, n=np.int64(self.n))

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        try:
            with np.load(path, allow_pickle=False) as z:
                mean = np.asarray(z["mu"], dtype=np.float64)
                cov = np.asarray(z["sigma"], dtype=np.float64)
                n = int(z["n"]) if "n" in z.files else -1
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            why = (str(e).splitlines() or [""])[0] or type(e).__name__
            raise BenchError(f"{path}: not readable feature statistics (an .npz with mu, sigma): "
                             f"{type(e).__name__}: {why}") from None
        if mean.ndim != 1 or cov.shape != (mean.shape[0], mean.shape[0]):
            raise BenchError(f"{path}: not feature statistics (mu {mean.shape}, sigma {cov.shape})")
        return cls(mean=mean, cov=cov, n=n)


def _as_numpy_2d(feats: Any) -> np.ndarray:
    if hasattr(feats, "detach"):  # torch.Tensor
        feats = feats.detach().cpu().numpy()
    x = np.asarray(feats)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, D) array, got shape {x.shape}")
    return x


def psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues clamped to 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr((S1 S2)^(1/2)) for PSD S1, S2: sum of sqrt of the eigenvalues of R S2 R, R = S1^(1/2)."""
    r = psd_sqrt(s1)
    m = r @ s2 @ r
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


def frechet_distance_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """FD between two Gaussians given by their statistics (float64); tiny negative round-off is clamped to 0."""
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"feature dimensions differ: {a.dim} vs {b.dim}")
    diff = a.mean - b.mean
    value = float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * trace_sqrt_product(a.cov, b.cov))
    return max(value, 0.0)


def frechet_distance(feats_a: Any, feats_b: Any) -> float:
    """Fréchet distance between two (N, D) feature sets. Raises InsufficientSamplesError unless N > D for both."""
    xa, xb = _as_numpy_2d(feats_a), _as_numpy_2d(feats_b)
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"feature dimensions differ: {xa.shape[1]} vs {xb.shape[1]}")
    check_sample_count(xa.shape[0], xa.shape[1], "the first feature set")
    check_sample_count(xb.shape[0], xb.shape[1], "the second feature set")
    return frechet_distance_from_stats(FeatureStats.from_features(xa), FeatureStats.from_features(xb))


def gaussian_frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Closed-form FD between N(mu1, cov1) and N(mu2, cov2) (the population value, for tests and docs)."""
    return frechet_distance_from_stats(
        FeatureStats(np.asarray(mu1, np.float64), np.asarray(cov1, np.float64), -1),
        FeatureStats(np.asarray(mu2, np.float64), np.asarray(cov2, np.float64), -1),
    )


def bootstrap_counts(n: int, resamples: int, seed: int | tuple[int, ...]) -> np.ndarray:
    """(resamples, n) multinomial counts: how often each image index appears in each bootstrap resample.

    Depends only on (n, resamples, seed), so two cells with the same image indices resampled with the same seed
    get the same resamples: the basis of paired comparisons (bench.analysis)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def bootstrap_frechet(feats: Any, ref: FeatureStats, resamples: int, seed: int | tuple[int, ...],
                      device: torch.device | str | None = None) -> np.ndarray:
    """FD of `resamples` bootstrap resamples of `feats` (rows drawn with replacement) against fixed `ref` stats.

    Returns the (resamples,) FD values, seeded by `seed` through `bootstrap_counts`."""
    x = _as_numpy_2d(feats)
    check_sample_count(x.shape[0], x.shape[1], "the bootstrapped feature set")
    if resamples <= 0:
        return np.zeros(0)
    return frechet_of_resamples(x, ref, bootstrap_counts(x.shape[0], resamples, seed), device)


def frechet_of_resamples(feats: Any, ref: FeatureStats, counts: np.ndarray,
                         device: torch.device | str | None = None) -> np.ndarray:
    """FD against fixed `ref` stats of each resample given by a row of multinomial `counts` (B, N).

    Vectorised: a resample's mean is c·X/N and its covariance (X0ᵀ diag(c) X0 - N m mᵀ)/(N - 1) on the centred
    features X0, accumulated in float64 on `device`."""
    import torch

    x = _as_numpy_2d(feats)
    n, d = x.shape
    resamples = counts.shape[0]
    dev = torch.device(device) if device is not None else torch.device("cpu")
    x0 = torch.from_numpy(x.astype(np.float64))
    x0 = (x0 - x0.mean(0)).to(dev)
    full_mean = torch.from_numpy(x.astype(np.float64).mean(0)).to(dev)
    r = torch.from_numpy(psd_sqrt(ref.cov)).to(dev)
    ref_mean = torch.from_numpy(ref.mean).to(dev)
    ref_trace = float(np.trace(ref.cov))
    # Chunk resamples so that the (chunk, N, D) weighted copy stays under ~256 MB.
    chunk = max(1, min(resamples, (256 * 2**20) // max(1, n * d * 8)))
    out = np.empty(resamples)
    for start in range(0, resamples, chunk):
        c = torch.from_numpy(counts[start:start + chunk]).to(dev)  # (b, N)
        m0 = c @ x0 / n  # (b, D) mean offset from the full-sample mean
        weighted = x0.unsqueeze(0) * c.sqrt().unsqueeze(-1)  # (b, N, D)
        cov = (weighted.transpose(1, 2) @ weighted - n * m0.unsqueeze(2) * m0.unsqueeze(1)) / (n - 1)
        m = r @ cov @ r
        ev = torch.linalg.eigvalsh((m + m.transpose(1, 2)) / 2).clamp_min(0)
        diff = m0 + full_mean - ref_mean
        fd = (diff * diff).sum(1) + cov.diagonal(dim1=1, dim2=2).sum(1) + ref_trace - 2 * ev.sqrt().sum(1)
        out[start:start + chunk] = fd.clamp_min(0).cpu().numpy()
    return out


@dataclass(frozen=True)
class FDInfinity:
    """Chong & Forsyth's FD∞: FD at several N, a least-squares line in 1/N, its intercept and standard error."""

    value: float
    stderr: float
    slope: float
    ns: tuple[int, ...]
    fds: tuple[float, ...]


def fd_infinity(feats: Any, ref_feats: Any, seed: int | tuple[int, ...], points: int = 15,
                min_n: int | None = None) -> FDInfinity:
    """FD∞ (Chong & Forsyth 2020): FD of random subsets of size N_i of both sets, fit FD = a + b / N_i, return a.

    Both the samples and the reference are subsampled to N_i (both carry an O(1/N) bias). N_i runs evenly from
    `min_n` (default max(D + 2, N / 5)) to N; every N_i must exceed D.
    """
    x, y = _as_numpy_2d(feats), _as_numpy_2d(ref_feats)
    n, d = min(x.shape[0], y.shape[0]), x.shape[1]
    lo = max(d + 2, n // 5) if min_n is None else int(min_n)
    if lo <= d or n - lo < points - 1 or points < 3:
        raise InsufficientSamplesError(
            f"FD∞ needs {points} subset sizes between D+1={d + 1} and N={n}; use more samples or fewer points"
        )
    ns = sorted({round(float(v)) for v in np.linspace(lo, n, points)})
    rng = np.random.default_rng(seed)
    fds = []
    for m in ns:
        ia = rng.choice(x.shape[0], m, replace=False)
        ib = rng.choice(y.shape[0], m, replace=False)
        fds.append(frechet_distance_from_stats(FeatureStats.from_features(x[ia]), FeatureStats.from_features(y[ib])))
    inv = 1.0 / np.asarray(ns, dtype=np.float64)
    design = np.stack([np.ones_like(inv), inv], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.asarray(fds), rcond=None)
    resid = np.asarray(fds) - design @ coef
    dof = max(1, len(ns) - 2)
    s2 = float(resid @ resid) / dof
    cov = s2 * np.linalg.inv(design.T @ design)
    return FDInfinity(value=float(coef[0]), stderr=math.sqrt(max(cov[0, 0], 0.0)), slope=float(coef[1]),
                      ns=tuple(ns), fds=tuple(float(f) for f in fds))
