"""A cheap quality metric for spine tests: per-cell sample statistics that change if any pixel changes."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict

from bench.metrics.catalogue import MetricSpec, ResultSpec
from bench.metrics.registry import MetricResult, QualityContext


def sample_stats(ctx: QualityContext, options: dict[str, Any]) -> list[MetricResult]:
    x = ctx.images.float()
    digest = hashlib.sha256(ctx.images.numpy().tobytes()).hexdigest()
    ref = ctx.dataset.images(ctx.indices, ctx.resolution).float()
    mse = float(((x - ref) ** 2).mean())
    return [
        MetricResult("pixel_mean", float(x.mean()), True, n=len(x), provenance={"sha256": digest}),
        MetricResult("pixel_mse_to_ref", mse, False, n=len(x)),
    ]


class SpecStatsOptions(BaseModel):
    """Options of spec_stats: checked when a suite loads, because the function declares its spec."""

    model_config = ConfigDict(extra="forbid", strict=True)
    offset: float = 0.0


def spec_stats(ctx: QualityContext, options: dict[str, Any]) -> list[MetricResult]:
    """Mean pixel value plus `offset`: a plugin metric that declares its catalogue spec."""
    value = float(ctx.images.float().mean()) + float(options.get("offset", 0.0))
    return [MetricResult("spec_pixel_mean", value, True, n=len(ctx.images))]


spec_stats.spec = MetricSpec(  # type: ignore[attr-defined]
    "spec_stats", "quality", "pixel mean", "px", True, "Mean pixel value plus an offset (a test plugin).",
    SpecStatsOptions, (ResultSpec("spec_pixel_mean", "quality", True, "px", "pixel mean"),))
