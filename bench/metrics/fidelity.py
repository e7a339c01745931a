"""KID and precision/recall through torch-fidelity, on features computed once per cell.

The cell's sample features and the cached reference features are handed to torch-fidelity's feature-level
functions (`kid_features_to_metric`; for precision/recall its k-NN distance steps, kept per image for paired
comparisons), so images are embedded once and shared with FD.
For KID at moderate N the same estimator on the same subsets is evaluated from kernel entries computed once
(`kid_from_kernel_rows`, ~10x cheaper on a CPU, equal to torch-fidelity's to 1e-9 on float64 features).
For users who want torch-fidelity's own front door, `calculate_metrics` registers any of our feature spaces as a
torch-fidelity `FeatureExtractorBase` and calls `torch_fidelity.calculate_metrics` (tests check both agree).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import torch

from bench.errors import BenchError
from bench.evidence import condition_strata, values_evidence
from bench.metrics.bootstrap import check_confidence, normal_interval, wilson_interval
from bench.metrics.common import (
    FEATURE_OPTIONS,
    base_provenance,
    batch_size_of,
    check_options,
    get_reference,
    get_space,
    name_suffix,
    positive_int,
    sample_features,
)
from bench.metrics.features import FeatureSpace
from bench.metrics.registry import MetricResult, QualityContext

KID_EVIDENCE_MAX_N = 20000  # per-image KID influence values need the N x N kernel: O(N^2 D), kept up to here
KID_OPTIONS = (*FEATURE_OPTIONS, "subsets", "subset_size", "degree", "coef0", "confidence", "backend")
KID_BACKENDS = ("auto", "bench", "torch-fidelity")
PR_OPTIONS = (*FEATURE_OPTIONS, "neighborhood", "confidence")
_QUIET = {"verbose": False}
KERNEL_BLOCK = 1 << 25  # kernel entries per block in kid_from_kernel_rows (float64: 256 MB); tests shrink it


# ----------------------------------------------------------------------------------------------- KID


def kid_subset_indices(n1: int, n2: int, subsets: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The subsets torch-fidelity's `kid_features_to_metric` draws: RandomState(seed), per subset f1 then f2."""
    rng = np.random.RandomState(seed)
    idx1, idx2 = np.empty((subsets, size), np.int64), np.empty((subsets, size), np.int64)
    for i in range(subsets):
        idx1[i] = rng.choice(n1, size, replace=False)
        idx2[i] = rng.choice(n2, size, replace=False)
    return idx1, idx2


def kid_from_kernel_rows(f1: np.ndarray, f2: np.ndarray, subsets: int, size: int, degree: int = 3,
                         coef0: float = 1.0, seed: int = 0, device: Any = None) -> tuple[float, float]:
    """torch-fidelity's KID (mean and std over subsets of the unbiased MMD², kernel (x·y/D + coef0)^degree, same
    subsets) with every kernel entry computed once, in float64: for a subset indicator s, the sum of a kernel
    block is sᵀ K s, so all subsets' sums come from one pass over blocks of kernel columns.
    Cheaper than per-subset kernels while N² < 3 · subsets · size² (see `kid_metric`)."""
    idx1, idx2 = kid_subset_indices(len(f1), len(f2), subsets, size, seed)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    x = torch.from_numpy(np.asarray(f1, dtype=np.float64)).to(dev)
    y = torch.from_numpy(np.asarray(f2, dtype=np.float64)).to(dev)
    gamma = 1.0 / x.shape[1]

    def indicator(idx: np.ndarray, n: int) -> torch.Tensor:
        s = torch.zeros(subsets, n, dtype=torch.float64, device=dev)
        s.scatter_(1, torch.from_numpy(idx).to(dev), 1.0)
        return s

    def block_sums(sa: torch.Tensor, a: torch.Tensor, sb: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(subsets, dtype=torch.float64, device=dev)
        step = max(64, KERNEL_BLOCK // max(1, a.shape[0]))  # (len(a) x step) float64 kernel block <= 256 MB
        for j in range(0, b.shape[0], step):
            k = (a @ b[j:j + step].T * gamma + coef0) ** degree
            out += ((sa @ k) * sb[:, j:j + step]).sum(1)
        return out

    s1, s2 = indicator(idx1, len(f1)), indicator(idx2, len(f2))
    kxx = block_sums(s1, x, s1, x) - s1 @ (((x * x).sum(1) * gamma + coef0) ** degree)  # drop the diagonal
    kyy = block_sums(s2, y, s2, y) - s2 @ (((y * y).sum(1) * gamma + coef0) ** degree)
    kxy = block_sums(s1, x, s2, y)
    mmd = (kxx + kyy) / (size * (size - 1)) - 2 * kxy / (size * size)
    return float(mmd.mean()), float(mmd.std(unbiased=False))


def kid_metric(ctx: QualityContext, options: dict[str, Any]) -> list[MetricResult]:
    """Kernel Inception Distance: torch-fidelity's estimator (unbiased MMD², cubic polynomial kernel, random
    subsets) on the cell's features and the cached reference features.

    backend `torch-fidelity` calls `kid_features_to_metric`; `bench` evaluates the same estimator on the same
    subsets from kernel entries computed once (equal to 1e-9 on float64 features, tested); `auto` (default)
    takes whichever does fewer kernel evaluations: `bench` while N1² + N2² + N1·N2 < 3 · subsets · size².
    """
    check_options("kid", options, KID_OPTIONS)
    bs = batch_size_of("kid", options)
    space = get_space(ctx, "kid", options)
    feats = sample_features(ctx, space, bs)
    ref = get_reference(ctx, space, "reference", bs)
    n1, n2 = feats.shape[0], ref.features.shape[0]
    n = min(n1, n2)
    subsets = positive_int("kid", "subsets", options.get("subsets", 100))
    size = positive_int("kid", "subset_size", options.get("subset_size", min(1000, max(2, n // 2))))
    if size > n or size < 2:
        raise BenchError(f"metric kid: subset_size {size} must be between 2 and the sample count {n}")
    degree = positive_int("kid", "degree", options.get("degree", 3))
    coef0 = float(options.get("coef0", 1.0))
    confidence = check_confidence(options.get("confidence", 0.95))
    backend = options.get("backend", "auto")
    if backend not in KID_BACKENDS:
        raise BenchError(f"metric kid: backend must be one of {', '.join(KID_BACKENDS)}, got {backend!r}")
    if backend == "auto":
        backend = "bench" if n1 * n1 + n2 * n2 + n1 * n2 < 3 * subsets * size * size else "torch-fidelity"
    seed = int(ctx.seed)
    if backend == "bench":
        mean, std = kid_from_kernel_rows(feats, ref.features, subsets, size, degree, coef0, seed, space.device)
        library = "torch-fidelity's KID estimator and subsets, from kernel entries computed once (float64)"
    else:
        from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

        out = kid_features_to_metric(torch.from_numpy(feats), torch.from_numpy(ref.features), kid_subsets=subsets,
                                     kid_subset_size=size, kid_kernel="poly", kid_kernel_poly_degree=degree,
                                     kid_kernel_poly_coef0=coef0, rng_seed=seed, **_QUIET)
        mean, std = float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])
        library = "torch-fidelity kid_features_to_metric"
    # The MMD² estimator's variance scales as 1/m, so the full-N estimate's spread is ~ std_m * sqrt(m / N).
    iv = normal_interval(mean, std * math.sqrt(size / n), confidence,
                         "normal: KID ± z * std_over_subsets * sqrt(subset_size / N)")
    prov = base_provenance(ctx, space, ref)
    prov.update({
        "library": library, "backend": backend,
        "kernel": f"(x·y / D + {coef0})^{degree}", "subsets": subsets, "subset_size": size, "rng_seed": seed,
        "std_over_subsets": std, "ci": {"confidence": confidence, "method": iv.method},
    })
    evidence = None
    if n1 <= KID_EVIDENCE_MAX_N and n2 <= KID_EVIDENCE_MAX_N:
        kid_full, rows = kid_influence_rows(feats, ref.features, degree, coef0)
        evidence = values_evidence(rows, ctx.seeds, condition_strata(ctx.labels, ctx.prompts))
        prov["paired_evidence"] = {"full_sample_kid": kid_full, "what": "per-image rows of the full-sample "
                                   "unbiased MMD² (its influence function): paired differences resample them"}
    else:
        prov["paired_evidence"] = {"kept": False, "why": f"N > {KID_EVIDENCE_MAX_N} (the N x N kernel is too costly)"}
    return [MetricResult(name=f"kid{name_suffix(options)}", value=mean, higher_is_better=False, ci_low=iv.low,
                         ci_high=iv.high, n=int(n1), provenance=prov, evidence=evidence)]


def kid_influence_rows(f1: np.ndarray, f2: np.ndarray, degree: int = 3, coef0: float = 1.0,
                       block: int = 2048) -> tuple[float, np.ndarray]:
    """The full-sample unbiased MMD² (KID's kernel) and per-image rows whose mean is it: row i = KID + psi_i,
    psi_i = 2 (a_i - mean a) - 2 (m_i - mean m), a_i the mean kernel of sample i with the other samples, m_i
    with the reference. psi is KID's influence function, so resampling these rows is the linearised (delta-method)
    bootstrap of KID, which bench.analysis pairs across cells with the reference held fixed."""
    x = np.asarray(f1, np.float64)
    y = np.asarray(f2, np.float64)
    n, m, d = x.shape[0], y.shape[0], x.shape[1]

    def kern(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T / d + coef0) ** degree

    a = np.empty(n)
    mr = np.empty(n)
    for lo in range(0, n, block):
        rows = x[lo:lo + block]
        kx = kern(rows, x)
        a[lo:lo + block] = (kx.sum(1) - kx[np.arange(kx.shape[0]), np.arange(lo, lo + kx.shape[0])]) / (n - 1)
        mr[lo:lo + block] = kern(rows, y).mean(1)
    ryy = 0.0
    for lo in range(0, m, block):
        ky = kern(y[lo:lo + block], y)
        ryy += ky.sum() - np.trace(ky[:, lo:lo + ky.shape[0]])
    kid = float(a.mean() - 2 * mr.mean() + ryy / (m * (m - 1)))
    psi = 2 * (a - a.mean()) - 2 * (mr - mr.mean())
    return kid, kid + psi


# ----------------------------------------------------------------------------------------------- PR


def pr_indicators(f1: torch.Tensor, f2: torch.Tensor, k: int, batch_size: int = 10000) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
    """Per-image precision and recall indicators, built from torch-fidelity's own distance and k-NN steps:
    precision_i = sample i lies in some reference image's k-NN ball; recall_j = reference image j lies in some
    sample's ball. Their means are torch-fidelity's precision and recall (a test checks equality)."""
    from torch_fidelity.metric_prc import calc_cdist_part

    def radii(f: torch.Tensor) -> torch.Tensor:
        return torch.cat([calc_cdist_part(b, f, batch_size).kthvalue(k + 1).values for b in f.split(batch_size)])

    def inside(a: torch.Tensor, b: torch.Tensor, rb: torch.Tensor) -> np.ndarray:
        return torch.cat([(calc_cdist_part(x, b, batch_size) <= rb).any(dim=1) for x in a.split(batch_size)]
                         ).double().numpy()

    return inside(f1, f2, radii(f2)), inside(f2, f1, radii(f1))


# ----------------------------------------------------------------------------------------------- PR


def _precision_recall(ctx: QualityContext, options: dict[str, Any], metric: str) -> list[MetricResult]:
    check_options(metric, options, PR_OPTIONS)
    bs = batch_size_of(metric, options)
    k = positive_int(metric, "neighborhood", options.get("neighborhood", 3))
    confidence = check_confidence(options.get("confidence", 0.95))
    space = get_space(ctx, metric, options)
    cache_key = f"prc:{space.id}:{k}:{confidence}"
    if cache_key in ctx.shared:
        return ctx.shared[cache_key]
    feats = sample_features(ctx, space, bs)
    ref = get_reference(ctx, space, "reference", bs)
    if min(feats.shape[0], ref.features.shape[0]) <= k:
        raise BenchError(f"metric {metric}: needs more than neighborhood={k} samples")
    ind_p, ind_r = pr_indicators(torch.from_numpy(feats), torch.from_numpy(ref.features), k)
    sfx = name_suffix(options)
    strata = condition_strata(ctx.labels, ctx.prompts)
    results = []
    for name, ind, n, what in (
        ("precision", ind_p, feats.shape[0], "fraction of samples inside the reference manifold"),
        ("recall", ind_r, ref.features.shape[0], "fraction of reference images inside the samples' manifold"),
    ):
        value = float(ind.mean())
        iv = wilson_interval(value, int(n), confidence)
        prov = base_provenance(ctx, space, ref)
        prov.update({
            "library": "torch-fidelity's k-NN distance steps (metric_prc.calc_cdist_part; Kynkäänniemi et al. 2019), "
                       "per-image indicators averaged",
            "what": what, "neighborhood": k,
            "ci": {"confidence": confidence, "method": "Wilson score interval over the per-image indicators, "
                                                       "given the estimated manifolds"},
        })
        # recall's rows are reference images j, precision's samples i: both in dataset-index order, so pairable
        ev = values_evidence(ind, ctx.seeds, strata) if ind.shape[0] == len(ctx.seeds) else None
        results.append(MetricResult(name=f"{name}{sfx}", value=value, higher_is_better=True, ci_low=iv.low,
                                    ci_high=iv.high, n=int(n), provenance=prov, evidence=ev))
    ctx.shared[cache_key] = results
    return results


def precision_recall_metric(ctx: QualityContext, options: dict[str, Any]) -> list[MetricResult]:
    """Improved precision and recall (k-NN manifolds in feature space); returns `precision` and `recall`."""
    return _precision_recall(ctx, options, "precision_recall")


def precision_metric(ctx: QualityContext, options: dict[str, Any]) -> list[MetricResult]:
    return [r for r in _precision_recall(ctx, options, "precision") if r.name.startswith("precision")]


def recall_metric(ctx: QualityContext, options: dict[str, Any]) -> list[MetricResult]:
    return [r for r in _precision_recall(ctx, options, "recall") if r.name.startswith("recall")]


# ----------------------------------------------------------------------------------------------- torch-fidelity


class _ImageTensorDataset(torch.utils.data.Dataset):
    """uint8 (N, 3, H, W) images as the torch Dataset torch-fidelity reads (one uint8 (3, H, W) per item)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def register_torch_fidelity(space: FeatureSpace) -> str:
    """Register `space` as a torch-fidelity feature extractor (a FeatureExtractorBase subclass); returns its name."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    name = "bench-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", space.name) + "-" + \
        re.sub(r"[^A-Za-z0-9]+", "", f"{space.weights_sha256[:12]}{space.preprocessing}")[:40]
    existing = FEATURE_EXTRACTORS_REGISTRY.get(name)
    if existing is not None and getattr(existing, "space", None) is space:
        return name
    if existing is not None:
        FEATURE_EXTRACTORS_REGISTRY.pop(name)  # same identity, a newer object of it: re-register

    def __init__(self: Any, name: str, features_list: list[str], **kwargs: Any) -> None:
        FeatureExtractorBase.__init__(self, name, features_list)

    def forward(self: Any, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (torch.from_numpy(self.space.extract(x.cpu(), batch_size=x.shape[0])),)

    cls = type(f"BenchFeatureExtractor[{name}]", (FeatureExtractorBase,), {
        "space": space,
        "__init__": __init__,
        "forward": forward,
        "get_provided_features_list": staticmethod(lambda: ("features",)),
        "get_default_feature_layer_for_metric": staticmethod(lambda metric: "features"),
        "can_be_compiled": staticmethod(lambda: False),
        "get_dummy_input_for_compile": staticmethod(lambda: None),
    })
    register_feature_extractor(name, cls)
    return name


def calculate_metrics(space: FeatureSpace, generated: torch.Tensor, reference: torch.Tensor,
                      **kwargs: Any) -> dict[str, float]:
    """`torch_fidelity.calculate_metrics` on two uint8 image tensors in one of our feature spaces.

    Defaults: cuda only when the space runs on CUDA, save_cpu_ram=True, no torch-fidelity disk cache, quiet.
    Pass fid=True / kid=True / prc=True and torch-fidelity's other keyword arguments as usual.
    """
    import torch_fidelity

    args: dict[str, Any] = {"cuda": space.device.type == "cuda", "save_cpu_ram": True, "cache": False,
                            "verbose": False, "batch_size": 256}
    args.update(kwargs)
    out = torch_fidelity.calculate_metrics(input1=_ImageTensorDataset(generated),
                                           input2=_ImageTensorDataset(reference),
                                           feature_extractor=register_torch_fidelity(space), **args)
    return {k: float(v) for k, v in out.items()}
