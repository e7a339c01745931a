"""A cheap quality metric for spine tests: per-cell sample statistics that change if any pixel changes."""

from __future__ import annotations

import hashlib
from typing import Any

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
