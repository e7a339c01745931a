"""The `density_coverage` metric: density and coverage (Naeem et al. 2020) of a cell's samples, in any feature space.

With r_i the distance from reference image X_i to its k-th nearest other reference image (k = nearest_k, 5):
density  = 1 / (k M) * sum_j sum_i 1[|Y_j - X_i| < r_i]    (M samples Y_j; how many reference balls hold each)
coverage = 1 / N * sum_i 1[min_j |Y_j - X_i| < r_i]       (N reference images; is some sample in each ball)
Strict '<' and the k-th value counting the self-distance, as the authors' `prdc` package (a test checks equality).
Distances in float64 through torch-fidelity's `calc_cdist_part` (precision/recall's float32 ones differ by
rounding near a radius, so the radii are not shared with them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bench.errors import BenchError
from bench.evidence import condition_strata, values_evidence
from bench.metrics.bootstrap import (
    bootstrap_means,
    check_confidence,
    check_resamples,
    percentile_interval,
    wilson_interval,
)
from bench.metrics.common import (
    FEATURE_OPTIONS,
    base_provenance,
    batch_size_of,
    cell_seed,
    check_options,
    get_reference,
    get_space,
    name_suffix,
    positive_int,
    sample_features,
)
from bench.metrics.registry import MetricResult, QualityContext

DC_OPTIONS = (*FEATURE_OPTIONS, "nearest_k", "bootstrap", "confidence")
DEFAULT_NEAREST_K = 5  # Naeem et al. 2020 and prdc's README
DC_SEED_STREAM = 6  # cell_seed stream of density's bootstrap (fd 1, 3; clip_score 4; cmmd 5)
_BLOCK = 4096  # rows per distance block: a (4096 x N) float64 block


def reference_radii(real: torch.Tensor, k: int, block: int = _BLOCK) -> torch.Tensor:
    """Each reference row's distance to its k-th nearest other row (the (k+1)-th smallest, self included)."""
    from torch_fidelity.metric_prc import calc_cdist_part

    return torch.cat([calc_cdist_part(b, real, block).kthvalue(k + 1).values for b in real.split(block)])


def density_coverage_rows(real: np.ndarray, fake: np.ndarray, k: int = DEFAULT_NEAREST_K,
                          device: Any = None, block: int = _BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample density rows (count of reference balls holding sample j, / k; their mean is density) and
    per-reference coverage indicators (their mean is coverage), from float64 distances."""
    from torch_fidelity.metric_prc import calc_cdist_part

    dev = torch.device(device) if device is not None else torch.device("cpu")
    x = torch.from_numpy(np.asarray(real, np.float64)).to(dev)
    y = torch.from_numpy(np.asarray(fake, np.float64)).to(dev)
    radii = reference_radii(x, k, block)
    counts = torch.zeros(y.shape[0], dtype=torch.float64)
    covered = []
    for lo in range(0, x.shape[0], block):
        d = calc_cdist_part(x[lo:lo + block], y, block)  # (rows of X, all of Y), on the CPU
        inside = d < radii[lo:lo + block, None].cpu()
        counts += inside.sum(0, dtype=torch.float64)
        covered.append(inside.any(1))
    return (counts / k).numpy(), torch.cat(covered).double().numpy()


def _settings(options: dict[str, Any]) -> dict[str, Any]:
    check_options("density_coverage", options, DC_OPTIONS)
    return {"k": positive_int("density_coverage", "nearest_k", options.get("nearest_k", DEFAULT_NEAREST_K)),
            "resamples": check_resamples(options.get("bootstrap", 200)),
            "confidence": check_confidence(options.get("confidence", 0.95)),
            "batch_size": batch_size_of("density_coverage", options)}


def density_coverage_metric(ctx: QualityContext, options: dict[str, Any]) -> list[MetricResult]:
    """Density and coverage of the cell's samples against the reference set's k-NN balls; returns both."""
    s = _settings(options)
    k = s["k"]
    space = get_space(ctx, "density_coverage", options)
    feats = sample_features(ctx, space, s["batch_size"])
    ref = get_reference(ctx, space, "reference", s["batch_size"])
    n_fake, n_real = feats.shape[0], ref.features.shape[0]
    if min(n_fake, n_real) <= k:
        raise BenchError(f"metric density_coverage: needs more than nearest_k={k} samples and reference images, "
                         f"got {n_fake} and {n_real}")
    dens_rows, cov_ind = density_coverage_rows(ref.features, feats, k, space.device)
    sfx = name_suffix(options)
    strata = condition_strata(ctx.labels, ctx.prompts)
    library = ("k-NN radii of the reference features (k-th value counting self), strict '<', float64 distances "
               "through torch-fidelity's metric_prc.calc_cdist_part; Naeem et al. 2020, equal to the prdc package")

    density = float(dens_rows.mean())
    ci_low = ci_high = None
    ci: dict[str, Any] = {"resamples": 0}
    if s["resamples"]:
        seed = cell_seed(ctx, DC_SEED_STREAM)
        iv = percentile_interval(bootstrap_means(dens_rows, s["resamples"], seed), s["confidence"])
        ci_low, ci_high = iv.low, iv.high
        ci = {"confidence": s["confidence"], "resamples": s["resamples"], "seed": list(seed),
              "method": f"{iv.method} of the per-sample rows (reference balls fixed)"}
    prov_d = base_provenance(ctx, space, ref)
    prov_d.update({"library": library, "nearest_k": k, "ci": ci,
                   "what": "mean over samples of how many reference k-NN balls hold the sample, / k (1 for samples "
                           "distributed like the reference; can exceed 1)",
                   "paired_evidence": {"what": "per-sample rows count_j / k; their mean is density"}})
    cov = float(cov_ind.mean())
    iv_c = wilson_interval(cov, int(n_real), s["confidence"])
    prov_c = base_provenance(ctx, space, ref)
    prov_c.update({"library": library, "nearest_k": k,
                   "what": "fraction of reference images whose k-NN ball holds at least one sample",
                   "ci": {"confidence": s["confidence"], "method": "Wilson score interval over the per-reference "
                                                                  "indicators, given the reference balls"}})
    # coverage's rows are reference images i in dataset-index order, as the samples': pairable like recall's
    cov_ev = values_evidence(cov_ind, ctx.seeds, strata) if cov_ind.shape[0] == len(ctx.seeds) else None
    return [
        MetricResult(name=f"density{sfx}", value=density, higher_is_better=True, ci_low=ci_low, ci_high=ci_high,
                     n=int(n_fake), provenance=prov_d, evidence=values_evidence(dens_rows, ctx.seeds, strata)),
        MetricResult(name=f"coverage{sfx}", value=cov, higher_is_better=True, ci_low=iv_c.low, ci_high=iv_c.high,
                     n=int(n_real), provenance=prov_c, evidence=cov_ev),
    ]
