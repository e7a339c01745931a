"""Metrics: quality (registry of FD, KID, precision/recall, CLIP score), NFE, latency and memory."""

from bench.metrics.frechet import FeatureStats, InsufficientSamplesError, frechet_distance
from bench.metrics.registry import (
    SYSTEM_METRICS,
    MetricResult,
    QualityContext,
    get_metric,
    metric_names,
    register_metric,
)

__all__ = [
    "SYSTEM_METRICS",
    "FeatureStats",
    "InsufficientSamplesError",
    "MetricResult",
    "QualityContext",
    "frechet_distance",
    "get_metric",
    "metric_names",
    "register_metric",
]
