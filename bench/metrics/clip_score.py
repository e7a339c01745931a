"""CLIP score: 100 * max(cos(image, text), 0) per image, then the mean, with a seeded bootstrap CI.

The model is `shapes-clip` (default) or any open_clip model with a pretrained tag or local checkpoint
(`ViT-B-32:openai`, `clip:ViT-B-32:/path/to/ckpt.pt`). The stored name carries the model and its weights:
`clip_score:<model>[:<tag or checkpoint file name>]`, e.g. `clip_score:shapes-clip`,
`clip_score:ViT-B-32:openai`. Prompts are the suite dataset's prompts for the cell's indices (ctx.prompts).
The image embeddings are the same (un-normalised) features a `clip:` / `shapes-clip` FD would use, shared
through ctx.shared, then L2-normalised here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.evidence import condition_strata, values_evidence
from bench.metrics.bootstrap import bootstrap_means, check_confidence, check_resamples, percentile_interval
from bench.metrics.common import (
    FeatureRequest,
    base_provenance,
    batch_size_of,
    cell_seed,
    check_options,
    get_space,
    sample_features,
)
from bench.metrics.features import ClipSpace
from bench.metrics.registry import MetricResult, QualityContext

CLIP_OPTIONS = ("model", "pretrained", "weights", "resize", "batch_size", "bootstrap", "confidence")
DEFAULT_CLIP_MODEL = "shapes-clip"


def clip_space_spec(model: str) -> str:
    """'shapes-clip' | 'clip:<model>[:<tag>]' | '<model>[:<tag>]' -> a feature-space spec."""
    if model == "shapes-clip" or model.startswith("clip:"):
        return model
    return f"clip:{model}"


def clip_scores(image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
    """Per-image 100 * max(cos, 0) for paired rows (both are normalised here)."""
    cos = (F.normalize(image_feats.float(), dim=-1) * F.normalize(text_feats.float(), dim=-1)).sum(-1)
    return 100.0 * cos.clamp_min(0.0)


def feature_requests_of(metric: str, options: dict[str, Any]) -> list[FeatureRequest]:
    """The CLIP image embeddings clip_score reads (its model as a feature space)."""
    model = options.get("variant") or options.get("model")
    space_opts = {"feature_space": clip_space_spec(str(model or DEFAULT_CLIP_MODEL))}
    space_opts.update({k: options[k] for k in ("pretrained", "weights", "resize") if options.get(k) is not None})
    return [FeatureRequest(metric, tuple(sorted(space_opts.items())), batch_size_of(metric, options))]


def clip_score_metric(ctx: QualityContext, options: dict[str, Any]) -> list[MetricResult]:
    check_options("clip_score", options, CLIP_OPTIONS)
    variant, model = options.get("variant"), options.get("model")
    if variant and model and variant != model:
        raise BenchError(f"metric clip_score:{variant} also sets model: {model}; keep one")
    prompts = ctx.prompts
    if not prompts:
        raise BenchError(f"metric clip_score needs prompts and dataset {ctx.dataset.key()} gives none "
                         f"(conditioning: {getattr(ctx.dataset, 'conditioning', '?')})")
    if len(prompts) != ctx.count:
        raise BenchError(f"metric clip_score: {len(prompts)} prompts for {ctx.count} samples")
    resamples = check_resamples(options.get("bootstrap", 200))
    confidence = check_confidence(options.get("confidence", 0.95))
    (request,) = feature_requests_of("clip_score", options)
    bs = request.batch_size
    space = get_space(ctx, "clip_score", dict(request.options))
    if not isinstance(space, ClipSpace):
        raise BenchError(f"metric clip_score: {space.name} is not a CLIP model")
    clip = space.clip

    image_feats = torch.from_numpy(sample_features(ctx, space, bs))
    unique = sorted(set(prompts))
    text_unique = clip.encode_texts(unique, batch_size=bs)
    row = {p: i for i, p in enumerate(unique)}
    text_feats = text_unique[torch.tensor([row[p] for p in prompts])]
    scores = clip_scores(image_feats, text_feats).double().numpy()
    value = float(scores.mean())

    ci_low = ci_high = None
    ci: dict[str, Any] = {"resamples": 0}
    if resamples:
        iv = percentile_interval(bootstrap_means(scores, resamples, cell_seed(ctx, 4)), confidence)
        ci_low, ci_high = iv.low, iv.high
        ci = {"confidence": confidence, "resamples": resamples, "seed": [int(ctx.seed), 4], "method": iv.method}
    prov = base_provenance(ctx)
    prov.update({
        **clip.provenance(),
        "resize": space.resize,
        "preprocessing": space.preprocessing,
        "formula": "mean over images of 100 * max(cos(image_embedding, text_embedding), 0)",
        "scale": 100.0,
        "clamp": "max(cos, 0) per image before averaging",
        "prompts": {"count": len(prompts), "unique": len(unique)},
        "fraction_clamped": float(np.mean(scores == 0.0)),
        "ci": ci,
    })
    return [MetricResult(name=f"clip_score:{clip.label}", value=value, higher_is_better=True, ci_low=ci_low,
                         ci_high=ci_high, n=int(scores.shape[0]), provenance=prov,
                         evidence=values_evidence(scores, ctx.seeds, condition_strata(ctx.labels, ctx.prompts)))]
