"""The `cmmd` metric: CMMD (Jayasumana et al. 2024) of a cell's samples to the reference set, in any feature space.

As google-research `cmmd/distance.py` defines it: the biased (minimum-variance) MMD² estimator, i.e. the means of
the full kernel matrices K_xx + K_yy - 2 K_xy (diagonals included), Gaussian RBF kernel
k(x, y) = exp(-gamma |x - y|²) with gamma = 1 / (2 sigma²), sigma = 10, times 1000. Its embeddings are CLIP
ViT-L/14@336 image embeddings, L2-normalised by the CLIP encoder; here any feature space, normalised the same way
unless `normalize: false`. Computed in float64 (the reference runs in JAX's default float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.errors import BenchError
from bench.evidence import condition_strata, values_evidence
from bench.metrics.bootstrap import bias_shifted_interval, check_confidence, check_resamples
from bench.metrics.common import (
    FEATURE_OPTIONS,
    base_provenance,
    batch_size_of,
    cell_seed,
    check_options,
    get_reference,
    get_space,
    name_suffix,
    sample_features,
)
from bench.metrics.registry import MetricResult, QualityContext

CMMD_SIGMA = 10.0  # google-research cmmd distance.py _SIGMA
CMMD_SCALE = 1000.0  # google-research cmmd distance.py _SCALE
CMMD_OPTIONS = (*FEATURE_OPTIONS, "normalize", "bootstrap", "confidence")
CMMD_SEED_STREAM = 5  # cell_seed stream of the bootstrap (fd uses 1 and 3, clip_score 4)
_BLOCK_BYTES = 1 << 28  # one float64 kernel block (rows x columns) stays under 256 MB


@dataclass(frozen=True)
class KernelMeans:
    """Row means of the sample kernels and the reference block's mean: everything CMMD and its CI need.

    a[i] = mean_j k(x_i, x_j) (self included), h[i] = mean_l k(x_i, y_l), kyy = mean_{l,m} k(y_l, y_m);
    replicates[b] = c_bᵀ K_xx c_b / N² for each bootstrap count vector c_b (empty without bootstrap)."""

    a: np.ndarray
    h: np.ndarray
    kyy: float
    replicates_xx: np.ndarray


def l2_normalize(features: np.ndarray, what: str) -> np.ndarray:
    """Rows scaled to unit length (CLIP's image embedding normalisation); a zero row is a one-line error."""
    f = np.asarray(features, np.float64)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise BenchError(f"metric cmmd: {what} has a zero feature vector that cannot be L2-normalised; "
                         "set normalize: false")
    return f / norms


def _rbf_block(a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor, b_sq: torch.Tensor,
               gamma: float) -> torch.Tensor:
    """exp(-gamma (|a|² + |b|² - 2 a·b)), the reference's expansion of the squared distance (no clamping)."""
    return torch.exp(-gamma * (a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)))


def kernel_means(x: np.ndarray, y: np.ndarray, sigma: float = CMMD_SIGMA, counts: np.ndarray | None = None,
                 device: Any = None) -> KernelMeans:
    """Kernel row means of samples x against x and y, and K_yy's mean, in float64 blocks of columns.

    `counts` (B, N) are bootstrap multiplicities of the samples; their quadratic forms with K_xx are taken in the
    same pass, so the bootstrap costs no second kernel evaluation."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    xt = torch.from_numpy(np.asarray(x, np.float64)).to(dev)
    yt = torch.from_numpy(np.asarray(y, np.float64)).to(dev)
    x_sq, y_sq = (xt * xt).sum(1), (yt * yt).sum(1)
    gamma = 1.0 / (2.0 * sigma**2)
    n, m = xt.shape[0], yt.shape[0]
    c = None if counts is None else torch.from_numpy(np.asarray(counts, np.float64)).to(dev)
    a = torch.zeros(n, dtype=torch.float64, device=dev)
    h = torch.zeros(n, dtype=torch.float64, device=dev)
    reps = torch.zeros(0 if c is None else c.shape[0], dtype=torch.float64, device=dev)
    step = max(1, _BLOCK_BYTES // (8 * max(n, m)))
    for j in range(0, n, step):
        k = _rbf_block(xt, xt[j:j + step], x_sq, x_sq[j:j + step], gamma)
        a += k.sum(1)
        if c is not None:
            reps += ((c @ k) * c[:, j:j + step]).sum(1)
    for j in range(0, m, step):
        h += _rbf_block(xt, yt[j:j + step], x_sq, y_sq[j:j + step], gamma).sum(1)
    kyy = 0.0
    for j in range(0, m, step):
        kyy += float(_rbf_block(yt, yt[j:j + step], y_sq, y_sq[j:j + step], gamma).sum())
    return KernelMeans(a=(a / n).cpu().numpy(), h=(h / m).cpu().numpy(), kyy=kyy / (m * m),
                       replicates_xx=(reps / (n * n)).cpu().numpy())


def cmmd_value(means: KernelMeans, scale: float = CMMD_SCALE) -> float:
    """scale * (mean K_xx + mean K_yy - 2 mean K_xy): the reference's biased estimator."""
    return float(scale * (means.a.mean() + means.kyy - 2.0 * means.h.mean()))


def cmmd(x: np.ndarray, y: np.ndarray, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE,
         device: Any = None) -> float:
    """CMMD of two embedding sets as google-research cmmd computes it (no normalisation here), in float64."""
    return cmmd_value(kernel_means(x, y, sigma, device=device), scale)


def cmmd_influence_rows(means: KernelMeans, scale: float = CMMD_SCALE) -> np.ndarray:
    """Per-sample rows whose mean is CMMD: row i = CMMD + scale * psi_i with psi_i = 2 (a_i - mean a) -
    2 (h_i - mean h), the biased MMD²'s influence function with the reference fixed (as kid_influence_rows)."""
    psi = 2.0 * (means.a - means.a.mean()) - 2.0 * (means.h - means.h.mean())
    return cmmd_value(means, scale) + scale * psi


def bootstrap_counts(n: int, resamples: int, seed: tuple[int, ...]) -> np.ndarray:
    """(resamples, n) multiplicities of n rows drawn with replacement, from a seeded generator."""
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    flat = (idx + n * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def _settings(options: dict[str, Any]) -> dict[str, Any]:
    check_options("cmmd", options, CMMD_OPTIONS)
    normalize = options.get("normalize", True)
    if not isinstance(normalize, bool):
        raise BenchError(f"metric cmmd: normalize must be true or false, got {normalize!r}")
    return {"normalize": normalize, "resamples": check_resamples(options.get("bootstrap", 200)),
            "confidence": check_confidence(options.get("confidence", 0.95)),
            "batch_size": batch_size_of("cmmd", options)}


def cmmd_metric(ctx: QualityContext, options: dict[str, Any]) -> list[MetricResult]:
    """CMMD of the cell's samples vs the reference set, with a seeded bootstrap CI and per-image rows."""
    s = _settings(options)
    space = get_space(ctx, "cmmd", options)
    feats = sample_features(ctx, space, s["batch_size"])
    if feats.shape[0] < 2:
        raise BenchError(f"metric cmmd: needs at least 2 samples, got {feats.shape[0]}")
    ref = get_reference(ctx, space, "reference", s["batch_size"])
    n = feats.shape[0]
    x, y = feats, ref.features
    if s["normalize"]:
        x, y = l2_normalize(x, "a sample"), l2_normalize(y, "a reference image")
    seed = cell_seed(ctx, CMMD_SEED_STREAM)
    counts = bootstrap_counts(n, s["resamples"], seed) if s["resamples"] else None
    means = kernel_means(x, y, CMMD_SIGMA, counts, space.device)
    value = cmmd_value(means)

    ci_low = ci_high = None
    ci: dict[str, Any] = {"resamples": 0}
    if counts is not None:
        reps = CMMD_SCALE * (means.replicates_xx + means.kyy - 2.0 * (counts @ means.h) / n)
        iv, bias = bias_shifted_interval(reps, value, s["confidence"])
        ci_low, ci_high = iv.low, iv.high
        ci = {"confidence": s["confidence"], "resamples": s["resamples"], "seed": list(seed),
              "method": "percentile bootstrap of the sample features (reference fixed), shifted by the bootstrap "
                        "bias estimate mean(CMMD*) - CMMD (duplicated rows add diagonal kernel terms)",
              "bias": bias}
    prov = base_provenance(ctx, space, ref)
    gamma = 1.0 / (2.0 * CMMD_SIGMA**2)
    prov.update({
        "formula": f"{CMMD_SCALE:g} * (mean K_xx + mean K_yy - 2 mean K_xy), full kernel matrices (biased MMD²)",
        "kernel": f"exp(-gamma |x - y|^2), gamma = 1 / (2 sigma^2) = {gamma:g}, sigma = {CMMD_SIGMA:g}",
        "sigma": CMMD_SIGMA, "gamma": gamma, "scale": CMMD_SCALE,
        "normalize": "L2 (unit-length embeddings, as CMMD's CLIP encoder returns)" if s["normalize"] else "none",
        "dtype": "float64",
        "reference_implementation": "google-research/google-research cmmd/distance.py (mmd); its embeddings are "
                                    "CLIP ViT-L/14@336, here the feature space named in feature_space",
        "ci": ci,
        "paired_evidence": {"what": "per-image rows CMMD + 1000 * psi_i, psi the biased MMD²'s influence function "
                                    "(reference fixed): their mean is CMMD; paired differences resample them"},
    })
    rows = cmmd_influence_rows(means)
    evidence = values_evidence(rows, ctx.seeds, condition_strata(ctx.labels, ctx.prompts))
    return [MetricResult(name=f"cmmd{name_suffix(options)}", value=value, higher_is_better=False, ci_low=ci_low,
                         ci_high=ci_high, n=int(n), provenance=prov, evidence=evidence)]
