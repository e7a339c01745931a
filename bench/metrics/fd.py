"""The `fd` and `fd_floor` metrics: Fréchet distance of a cell's samples to the reference set, with uncertainty.

fd        FD(samples, reference) in a feature space, with a seeded bootstrap CI (sample features resampled,
          reference statistics fixed), the noise floor next to it, and optionally FD∞.
fd_floor  The noise floor at the same N. condition-matched (datasets with `matched_images`: gmm, shapes):
          FD(an independent draw with the reference items' own labels / captions, reference set), what a perfect
          sampler scores at this N. disjoint-block (prompt files, folders): FD(disjoint reference set, reference
          set), whose items have other conditions than the samples, so it can sit above that. Computed once per key and cached;
          `fd` returns it too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.evidence import condition_strata, features_evidence
from bench.metrics.bootstrap import bias_shifted_interval, check_confidence, check_resamples, normal_interval
from bench.metrics.common import (
    DISJOINT_FLOOR,
    FEATURE_OPTIONS,
    MATCHED_FLOOR,
    FeatureRequest,
    base_provenance,
    batch_size_of,
    cell_seed,
    check_options,
    feature_spec,
    get_floor_reference,
    get_reference,
    get_space,
    name_suffix,
    sample_features,
)
from bench.metrics.common import feature_requests_of as common_requests
from bench.metrics.frechet import (
    FeatureStats,
    bootstrap_frechet,
    check_sample_count,
    fd_infinity,
    frechet_distance_from_stats,
)
from bench.metrics.reference import ReferenceSet, cached_numbers
from bench.metrics.registry import MetricResult, QualityContext
from bench.metrics.statsfile import StatsFile, check_dim, comparability, load_stats_file, pipeline_fingerprint

BACKENDS = ("bench", "torch-fidelity", "clean-fid")
FLOOR_OPTIONS = (*FEATURE_OPTIONS, "bootstrap", "confidence", "floor_offset", "backend")
FD_OPTIONS = (*FLOOR_OPTIONS, "noise_floor", "fd_inf", "reference_stats", "reference_stats_sha256")
FLOOR_SEED = 0  # the floor's bootstrap seed is fixed: one floor per key, the same number in every cell
_BUILTIN_SPACES = ("pixels", "inception-v3", "clip", "dinov2", "shapes-clip")
_FORMULA = "|mu_s - mu_r|^2 + tr(S_s) + tr(S_r) - 2 tr((S_s S_r)^(1/2)), float64 stats, eigenvalue trace term"


def fd_value(a: FeatureStats, b: FeatureStats, backend: str) -> float:
    """FD from statistics with the chosen backend's formula (all three agree to ~1e-6 relative)."""
    if backend == "bench":
        return frechet_distance_from_stats(a, b)
    if backend == "torch-fidelity":
        from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

        out = fid_statistics_to_metric({"mu": a.mean, "sigma": a.cov}, {"mu": b.mean, "sigma": b.cov}, False)
        return float(out[KEY_METRIC_FID])
    if backend == "clean-fid":
        from cleanfid.fid import frechet_distance as cleanfid_frechet

        return float(cleanfid_frechet(a.mean, a.cov, b.mean, b.cov))
    raise BenchError(f"metric fd: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


def _settings(metric: str, options: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    check_options(metric, options, allowed)
    backend = options.get("backend", "bench")
    if backend not in BACKENDS:
        raise BenchError(f"metric {metric}: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    opts = dict(options)
    # clean-fid's published protocol resizes with PIL bicubic ('clean'); make that the default with its backend.
    if backend == "clean-fid" and "resize" not in opts \
            and feature_spec(metric, opts).partition(":")[0] in _BUILTIN_SPACES:
        opts["resize"] = "clean"
    if not isinstance(opts.get("noise_floor", True), bool):
        raise BenchError(f"metric {metric}: noise_floor must be true or false, got {opts['noise_floor']!r}")
    fd_inf = opts.get("fd_inf", False)
    if not isinstance(fd_inf, bool) and (not isinstance(fd_inf, int) or fd_inf < 3):
        raise BenchError(f"metric {metric}: fd_inf must be true, false or a number of subset sizes >= 3, "
                         f"got {fd_inf!r}")
    offset = opts.get("floor_offset")
    if offset is not None and (isinstance(offset, bool) or not isinstance(offset, int)):
        raise BenchError(f"metric {metric}: floor_offset must be an integer, got {offset!r}")
    return {
        "options": opts,
        "backend": backend,
        "resamples": check_resamples(opts.get("bootstrap", 200)),
        "confidence": check_confidence(opts.get("confidence", 0.95)),
        "batch_size": batch_size_of(metric, opts),
        "offset": offset,
    }


def feature_requests_of(metric: str, options: dict[str, Any]) -> list[FeatureRequest]:
    """The feature space fd reads, as its settings resolve it (the clean-fid backend's default resize included)."""
    return common_requests(metric, _settings(metric, options, FD_OPTIONS)["options"])


def _floor(ctx: QualityContext, metric: str, s: dict[str, Any],
           ref: ReferenceSet) -> tuple[dict[str, float], str, ReferenceSet]:
    """The noise floor FD(floor set, reference) with its CI and kind, cached per key (the kind is in the key)."""
    space = get_space(ctx, metric, s["options"])
    kind, other = get_floor_reference(ctx, space, metric, s["batch_size"], s["offset"])
    check_sample_count(other.stats.n, other.stats.dim, "the noise-floor reference set")

    def compute() -> dict[str, float]:
        value = fd_value(other.stats, ref.stats, s["backend"])
        out = {"value": value, "ci_low": float("nan"), "ci_high": float("nan"), "bias": float("nan")}
        if s["resamples"]:
            reps = bootstrap_frechet(other.features, ref.stats, s["resamples"], (FLOOR_SEED, 2), space.device)
            iv, bias = bias_shifted_interval(reps, frechet_distance_from_stats(other.stats, ref.stats),
                                             s["confidence"])
            out.update(ci_low=iv.low, ci_high=iv.high, bias=bias)
        return out

    key = {"floor_kind": kind, "reference": ref.digest, "floor_reference": other.digest, "bootstrap": s["resamples"],
           "confidence": s["confidence"], "seed": FLOOR_SEED, "backend": s["backend"]}
    numbers, from_cache, recovered = cached_numbers(ctx.cache_dir, "fd_floor", key, compute)
    out: dict[str, Any] = {**numbers, "from_cache": from_cache, "cache_recovered": recovered}
    return out, kind, other


def _nan_to_none(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


_FLOOR_WHAT = {
    MATCHED_FLOOR: "FD between an independent draw with the reference images' own labels / captions and the "
                   "reference set: what a perfect sampler scores at this N",
    DISJOINT_FLOOR: "FD between the reference set and a disjoint block of the dataset of the same size (other "
                    "labels / prompts than the samples', so it can sit above what a perfect sampler scores at this "
                    "N)",
}


def _floor_result(ctx: QualityContext, name: str, s: dict[str, Any], floor: dict[str, Any], kind: str,
                  other: ReferenceSet, ref: ReferenceSet, space: Any) -> MetricResult:
    prov = base_provenance(ctx, space, ref)
    where = {"indices_range": other.key["indices_range"], "cache_key": other.digest[:32]}
    prov.update({
        "floor_kind": kind,
        "what": _FLOOR_WHAT[kind],
        "backend": s["backend"],
        **({"matched_reference": {**where, "draw": other.key["draw"]}} if kind == MATCHED_FLOOR
           else {"disjoint_reference": where}),
        "ci": {"confidence": s["confidence"], "resamples": s["resamples"], "seed": FLOOR_SEED,
               "method": "percentile bootstrap of the floor set's features, reference stats fixed, shifted by "
                         "the bootstrap bias estimate", "bias": _nan_to_none(floor["bias"])},
        "from_cache": floor["from_cache"],
        **({"cache_recovered": floor["cache_recovered"]} if floor.get("cache_recovered") else {}),
    })
    return MetricResult(name=name, value=float(floor["value"]), higher_is_better=False,
                        ci_low=_nan_to_none(floor["ci_low"]), ci_high=_nan_to_none(floor["ci_high"]),
                        n=int(ref.stats.n), provenance=prov)


def fd_metric(ctx: QualityContext, options: dict[str, Any]) -> list[MetricResult]:
    """FD of the cell's samples vs the reference set, + CI, + noise floor (`noise_floor: false` to skip), + FD∞."""
    s = _settings("fd", options, FD_OPTIONS)
    sfx = name_suffix(options)
    space = get_space(ctx, "fd", s["options"])
    feats = sample_features(ctx, space, s["batch_size"])
    check_sample_count(feats.shape[0], feats.shape[1], f"the cell's samples in {space.name}")
    fingerprint = pipeline_fingerprint(space, int(feats.shape[0]), ctx.uint8)
    stats_file: StatsFile | None = None
    if options.get("reference_stats"):  # checked when the suite loaded; sha256 pinned then, re-checked here
        if options.get("fd_inf"):
            raise BenchError("metric fd: fd_inf needs the reference features; a statistics file has only mu, sigma")
        stats_file = load_stats_file(options["reference_stats"], options.get("reference_stats_sha256"))
        check_dim(stats_file, space)
        ref, ref_stats = None, stats_file.stats
    else:
        ref = get_reference(ctx, space, "reference", s["batch_size"])
        ref_stats = ref.stats
    stats = FeatureStats.from_features(feats)
    value = fd_value(stats, ref_stats, s["backend"])

    ci_low = ci_high = None
    ci: dict[str, Any] = {"resamples": 0}
    if s["resamples"]:
        reps = bootstrap_frechet(feats, ref_stats, s["resamples"], cell_seed(ctx, 1), space.device)
        iv, bias = bias_shifted_interval(reps, frechet_distance_from_stats(stats, ref_stats), s["confidence"])
        ci_low, ci_high = iv.low, iv.high
        ci = {"confidence": s["confidence"], "resamples": s["resamples"], "seed": [int(ctx.seed), 1],
              "method": "percentile bootstrap of the sample features (reference stats fixed), shifted by the "
                        "bootstrap bias estimate mean(FD*) - FD", "bias": bias}

    prov = base_provenance(ctx, space, ref)
    prov.update({"formula": _FORMULA, "backend": s["backend"], "ci": ci, "fingerprint": fingerprint,
                 "comparable": True})
    if stats_file is not None:
        prov["reference"] = stats_file.provenance()
        prov["comparable"], prov["comparability"] = comparability(fingerprint, stats_file)
    results = []
    if options.get("noise_floor", True) and stats_file is not None:
        prov["noise_floor"] = None
        prov["noise_floor_skipped"] = ("not computable from a statistics file: the floor needs a second set of "
                                       "reference images, and the file has only mu and sigma")
    elif options.get("noise_floor", True):
        assert ref is not None
        floor, kind, other = _floor(ctx, "fd", s, ref)
        prov["noise_floor"] = floor["value"]
        prov["noise_floor_kind"] = kind
        prov["excess_fd"] = value - floor["value"]
        results.append(_floor_result(ctx, f"fd_floor{sfx}", s, floor, kind, other, ref, space))
    evidence = features_evidence(feats, ctx.seeds, ref_stats.mean, ref_stats.cov,
                                 condition_strata(ctx.labels, ctx.prompts))
    results.insert(0, MetricResult(name=f"fd{sfx}", value=value, higher_is_better=False, ci_low=ci_low,
                                   ci_high=ci_high, n=int(feats.shape[0]), provenance=prov, evidence=evidence))

    fd_inf = options.get("fd_inf", False)
    if fd_inf and ref is not None:
        points = 15 if fd_inf is True else int(fd_inf)
        r = fd_infinity(feats, ref.features, cell_seed(ctx, 3), points=points)
        iv = normal_interval(r.value, r.stderr, s["confidence"], "normal interval from the fit's intercept stderr")
        prov_inf = base_provenance(ctx, space, ref)
        prov_inf.update({
            "method": "Chong & Forsyth FD∞: FD of random subsets of both sets at N_i, least squares "
                      "FD = a + b/N_i, value = a (bench eigenvalue FD)",
            "ns": list(r.ns), "fds": list(r.fds), "slope": r.slope, "stderr": r.stderr,
            "ci": {"confidence": s["confidence"], "method": iv.method}, "seed": [int(ctx.seed), 3],
        })
        results.append(MetricResult(name=f"fd_inf{sfx}", value=r.value, higher_is_better=False, ci_low=iv.low,
                                    ci_high=iv.high, n=int(feats.shape[0]), provenance=prov_inf))
    return results


def fd_floor_metric(ctx: QualityContext, options: dict[str, Any]) -> list[MetricResult]:
    """Only the FD noise floor (the `fd` metric already returns it unless `noise_floor: false`)."""
    s = _settings("fd_floor", options, FLOOR_OPTIONS)
    space = get_space(ctx, "fd_floor", s["options"])
    ref = get_reference(ctx, space, "reference", s["batch_size"])
    check_sample_count(ref.stats.n, ref.stats.dim, "the reference set")
    floor, kind, other = _floor(ctx, "fd_floor", s, ref)
    return [_floor_result(ctx, f"fd_floor{name_suffix(options)}", s, floor, kind, other, ref, space)]
