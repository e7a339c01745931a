"""What the quality metrics share: option checks, per-cell feature reuse (ctx.shared), reference sets, provenance.

Within one cell, a feature space is loaded once and the samples are embedded once per space (ctx.shared is the
per-cell scratch dict), so FD, KID and precision/recall in the same space read the same features.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.datasets import has_matched_draws
from bench.errors import BenchError
from bench.hardware import library_versions
from bench.metrics.features import FeatureSpace, build_feature_space
from bench.metrics.reference import ReferenceSet, reference_set
from bench.metrics.registry import QualityContext

DEFAULT_FEATURE_SPACE = "shapes-clip"
# Options every feature-space metric (fd, fd_floor, kid, precision_recall) accepts; the space-specific ones
# (weights, resize, size, dim, layer, repo, pretrained) are checked by the feature space itself.
FEATURE_OPTIONS = ("feature_space", "batch_size", "weights", "resize", "size", "dim", "layer", "repo", "pretrained")
_SPACE_KEYS = ("weights", "resize", "size", "dim", "layer", "repo", "pretrained")
DEFAULT_BATCH_SIZE = 256


def check_options(metric: str, options: dict[str, Any], allowed: Iterable[str]) -> None:
    allowed = set(allowed) | {"variant"}
    extra = sorted(set(options) - allowed)
    if extra:
        raise BenchError(f"metric {metric}: unknown option(s) {', '.join(extra)} "
                         f"(allowed: {', '.join(sorted(allowed - {'variant'}))})")


def positive_int(metric: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BenchError(f"metric {metric}: {name} must be a positive integer, got {value!r}")
    return value


def feature_spec(metric: str, options: dict[str, Any]) -> str:
    """The feature space: `fd:<space>` (variant) or the option feature_space, default shapes-clip."""
    variant, named = options.get("variant"), options.get("feature_space")
    if variant and named and variant != named:
        raise BenchError(f"metric {metric}:{variant} also sets feature_space: {named}; keep one")
    return str(variant or named or DEFAULT_FEATURE_SPACE)


def name_suffix(options: dict[str, Any]) -> str:
    """Result names carry the variant: metric `fd:pixels` stores `fd:pixels` and `fd_floor:pixels`."""
    return f":{options['variant']}" if options.get("variant") else ""


def _device(ctx: QualityContext) -> torch.device:
    return torch.device(ctx.device) if ctx.device is not None else torch.device("cpu")


def get_space(ctx: QualityContext, metric: str, options: dict[str, Any]) -> FeatureSpace:
    """The cell's FeatureSpace for these options, loaded once per cell."""
    spec = feature_spec(metric, options)
    space_opts = {k: options[k] for k in _SPACE_KEYS if options.get(k) is not None}
    cache_key = f"space:{spec}|{sorted(space_opts.items())!r}"
    if cache_key not in ctx.shared:
        ctx.shared[cache_key] = build_feature_space(spec, space_opts, _device(ctx), ctx.allow_download)
    return ctx.shared[cache_key]


def batch_size_of(metric: str, options: dict[str, Any]) -> int:
    return positive_int(metric, "batch_size", options.get("batch_size", DEFAULT_BATCH_SIZE))


@dataclass(frozen=True)
class FeatureRequest:
    """Sample features a metric reads: `get_space(ctx, metric, options)` embedded at `batch_size`."""

    metric: str
    options: tuple[tuple[str, Any], ...]  # the space options (feature_space and the space's own keys)
    batch_size: int


def feature_requests_of(metric: str, options: dict[str, Any]) -> list[FeatureRequest]:
    """The one feature space a feature-space metric (fd, kid, precision/recall, cmmd, density/coverage) reads."""
    space_opts = {"feature_space": feature_spec(metric, options),
                  **{k: options[k] for k in _SPACE_KEYS if options.get(k) is not None}}
    return [FeatureRequest(metric, tuple(sorted(space_opts.items())), batch_size_of(metric, options))]


def features_key(space: FeatureSpace) -> str:
    """Where a cell's sample features in `space` live in ctx.shared (filled by sample_features or streaming)."""
    return f"features:{space.id}"


def sample_features(ctx: QualityContext, space: FeatureSpace, batch_size: int) -> np.ndarray:
    """The cell's samples embedded in `space` (float32, N x D), computed once per cell and space (or embedded
    batch by batch while sampling, bench.metrics.streaming)."""
    key = features_key(space)
    if key not in ctx.shared:
        if ctx.images is None:
            raise BenchError(f"the samples were not kept and their features in {space.name} were not streamed "
                             "(a metric read a feature space its catalogue entry does not declare)")
        if len(ctx.indices) != ctx.images.shape[0]:
            raise BenchError(f"{ctx.images.shape[0]} samples but {len(ctx.indices)} reference indices")
        ctx.shared[key] = space.extract(ctx.images, batch_size)
    return ctx.shared[key]


def floor_indices(indices: Sequence[int], offset: int | None = None) -> list[int]:
    """A disjoint reference set of the same size: the indices shifted past their own range (or by `offset`)."""
    idx = list(indices)
    shift = (max(idx) - min(idx) + 1) if offset is None else int(offset)
    shifted = [i + shift for i in idx]
    if set(shifted) & set(idx):
        raise BenchError(f"floor_offset {offset} makes the noise-floor reference set overlap the reference set")
    return shifted


def get_reference(ctx: QualityContext, space: FeatureSpace, role: str, batch_size: int,
                  offset: int | None = None) -> ReferenceSet:
    """The reference set (role 'reference': dataset images at ctx.indices; 'floor': a disjoint set of equal size,
    the disjoint-block noise floor's set; see get_floor_reference for the floor)."""
    own = list(ctx.indices if ctx.reference_indices is None else ctx.reference_indices)
    indices = own if role == "reference" else floor_indices(own, offset)
    key = f"reference:{role}:{offset}:{space.id}"
    if key not in ctx.shared:
        ctx.shared[key] = reference_set(ctx, space, indices, role, batch_size)
    return ctx.shared[key]


MATCHED_FLOOR = "condition-matched"
DISJOINT_FLOOR = "disjoint-block"
FLOOR_DRAW = 1  # the matched draw the noise floor uses (every cell of a suite reads the same one)


def floor_kind(dataset: Any) -> str:
    """'condition-matched' where the dataset can draw new images for a condition, else 'disjoint-block'."""
    return MATCHED_FLOOR if has_matched_draws(dataset) else DISJOINT_FLOOR


def get_floor_reference(ctx: QualityContext, space: FeatureSpace, metric: str, batch_size: int,
                        offset: int | None = None) -> tuple[str, ReferenceSet]:
    """The noise floor's comparison set and its kind.

    condition-matched: matched draw FLOOR_DRAW of the reference items (same label / caption as reference image
    i, an independent image), so FD(it, reference) is what a perfect sampler scores at this N.
    disjoint-block: the dataset images at indices shifted past the reference range (or by `offset`); other
    conditions, so it sits above what a perfect sampler scores (used for prompt-file and folder datasets).
    """
    kind = floor_kind(ctx.dataset)
    if kind == DISJOINT_FLOOR:
        return kind, get_reference(ctx, space, "floor", batch_size, offset)
    if offset is not None:
        raise BenchError(f"metric {metric}: floor_offset only applies to the disjoint-block noise floor; dataset "
                         f"{ctx.dataset.key()} draws condition-matched images for its floor, so remove floor_offset")
    key = f"reference:matched:{FLOOR_DRAW}:{space.id}"
    if key not in ctx.shared:
        ctx.shared[key] = reference_set(ctx, space, list(ctx.indices), "floor-matched", batch_size, draw=FLOOR_DRAW)
    return kind, ctx.shared[key]


def cell_seed(ctx: QualityContext, *stream: int) -> tuple[int, ...]:
    """A numpy seed sequence derived from the cell's seed and a stream id (one stream per use)."""
    return (int(ctx.seed), *stream)


def seeds_summary(seeds: Sequence[int]) -> dict[str, Any]:
    s = [int(v) for v in seeds]
    return {"count": len(s), "first": s[0] if s else None, "last": s[-1] if s else None,
            "sha256": hashlib.sha256(np.asarray(s, dtype=np.int64).tobytes()).hexdigest()[:16]}


def base_provenance(ctx: QualityContext, space: FeatureSpace | None = None,
                    ref: ReferenceSet | None = None) -> dict[str, Any]:
    prov: dict[str, Any] = {
        "n_samples": ctx.count,
        "resolution": int(ctx.resolution),
        "seeds": seeds_summary(ctx.seeds),
        "metric_seed": int(ctx.seed),
        "dataset": ctx.dataset.key(),
        "versions": library_versions(),
    }
    if space is not None:
        prov["feature_space"] = space.provenance()
    if ref is not None:
        prov["reference"] = {"n": int(ref.stats.n), "indices_sha256": ref.key["indices_sha256"][:16],
                             "indices_range": ref.key["indices_range"], "cache_key": ref.digest[:32],
                             "from_cache": ref.from_cache}
        if ref.recovered:  # the report and export show that a corrupt cache file was replaced
            prov["reference"]["cache_recovered"] = ref.recovered
    return prov
