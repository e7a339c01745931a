"""Quality-metric registry: a metric reads a cell's samples once generated and returns MetricResults.

A metric is a function `fn(ctx: QualityContext, options: dict) -> list[MetricResult]`, registered by name
(lazily as 'module:function'), so third parties add metrics without editing the harness. Installed packages
declare theirs in the entry-point group `bench.metrics`, read on first miss in every process: a metric
registered with `register_metric` in the driver does not reach workers started with spawn, an entry point does.
A metric's catalogue spec (options schema, kind, unit) is bench.metrics.catalogue's, or the function's `spec`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError
from bench.importing import import_target
from bench.runtime import UINT8_RULE

if TYPE_CHECKING:
    import torch

    from bench.datasets import Dataset
    from bench.evidence import Evidence


# Measurement metrics the worker produces itself (not through this registry); a suite may name them too.
SYSTEM_METRICS = ("latency", "memory")


@dataclass
class MetricResult:
    """One number with its uncertainty and provenance; `name` is the canonical metric name (e.g. `fd`)."""

    name: str
    value: float | None
    higher_is_better: bool
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    evidence: Evidence | None = None  # per-image rows for paired comparisons (bench.evidence); not in the table


@dataclass
class QualityContext:
    """Everything a quality metric may read. Samples are generated once per cell and shared by all metrics."""

    images: torch.Tensor | None  # uint8 (N, 3, R, R), CPU; None when the features were streamed (not kept)
    indices: list[int]  # dataset indices of the samples (sample i <-> reference image indices[i])
    seeds: list[int]
    prompts: list[str] | None
    labels: list[int] | None
    dataset: Dataset
    resolution: int
    device: Any  # torch.device for feature extraction
    cache_dir: Path  # reference statistics live here (never site-packages or /tmp)
    seed: int  # for bootstrap resampling
    allow_download: bool = False
    shared: dict[str, Any] = field(default_factory=dict)  # per-cell scratch, e.g. features reused by FD/KID/PR

    @property
    def count(self) -> int:
        """How many samples the cell scored (its images, or its indices when the images were not kept)."""
        return int(self.images.shape[0]) if self.images is not None else len(self.indices)
    # The reference set's dataset indices when it is not `indices` (`bench score`: every image of the REF folder).
    reference_indices: list[int] | None = None
    uint8: str = UINT8_RULE  # how the samples became uint8 (pipeline fingerprints, bench.metrics.statsfile)


MetricFn = Callable[[QualityContext, dict[str, Any]], list[MetricResult]]

# name -> "module:function" (imported on first use, so listing metrics loads no heavy library).
_METRICS: dict[str, str] = {
    "fd": "bench.metrics.fd:fd_metric",
    "fd_floor": "bench.metrics.fd:fd_floor_metric",
    "kid": "bench.metrics.fidelity:kid_metric",
    "precision_recall": "bench.metrics.fidelity:precision_recall_metric",
    "precision": "bench.metrics.fidelity:precision_metric",
    "recall": "bench.metrics.fidelity:recall_metric",
    "clip_score": "bench.metrics.clip_score:clip_score_metric",
    "cmmd": "bench.metrics.cmmd:cmmd_metric",
    "density_coverage": "bench.metrics.density_coverage:density_coverage_metric",
}
_LOADED: dict[str, MetricFn] = {}


def register_metric(name: str, target: str | MetricFn) -> None:
    """Register a quality metric by name: a callable, or 'module:function' imported on first use."""
    if callable(target):
        _LOADED[name] = target
        _METRICS[name] = f"{target.__module__}:{getattr(target, '__qualname__', name)}"
    else:
        _METRICS[name] = target
        _LOADED.pop(name, None)


ENTRY_POINT_GROUP = "bench.metrics"  # `[project.entry-points."bench.metrics"] name = "module:function"`


def _entry_point_metrics() -> dict[str, str]:
    """Metrics installed packages declare (name -> 'module:function'); the harness's own names win."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in _METRICS}


def metric_names() -> list[str]:
    """Every registered quality metric, entry points included."""
    return sorted({*_METRICS, *_entry_point_metrics()})


def get_metric(name: str) -> MetricFn:
    """The metric function for a registered name, a `name:variant`, or a 'module.path:function' string.

    `name:variant` (e.g. `fd:pixels`, `clip_score:ViT-B-32:openai`), where `name` is registered, calls that
    metric with options['variant'] set, so a suite can ask for one metric several times (FD in two feature
    spaces); the metric stores its results under names carrying the variant (`fd:pixels`, `fd_floor:pixels`).
    """
    if name in _LOADED:
        return _LOADED[name]
    base, sep, variant = name.partition(":")
    if base not in _METRICS:
        _METRICS.update({n: t for n, t in _entry_point_metrics().items() if n == base})
    if sep and variant and name not in _METRICS and base in _METRICS:
        fn = get_metric(base)

        def with_variant(ctx: QualityContext, options: dict[str, Any]) -> list[MetricResult]:
            return fn(ctx, {**(options or {}), "variant": variant})

        return with_variant
    target = _METRICS.get(name, name if ":" in name else None)
    if target is None:
        raise BenchError(f"unknown metric {name!r} (known: {', '.join(metric_names()) or 'none'}; "
                         "or name one as 'module.path:function')")
    try:
        fn = import_target(target)
    except (ImportError, AttributeError) as e:
        raise BenchError(f"metric {name!r}: cannot import {target!r} ({e})") from None
    _LOADED[name] = fn
    return fn
