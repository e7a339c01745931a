"""Sample features embedded batch by batch as the images are sampled, instead of from all images at the end.

A cell whose metrics all declare the feature spaces they read (the catalogue's `features`) never holds its N
images: each sampled batch is embedded in every space and dropped, which bounds memory by the features (N x D)
and lets a cell be split into shards of image ranges whose features are concatenated later. Embedding a batch
alone gives the same features as embedding it among all N (checked for the built-in spaces: bit-identical), so
streamed, sharded and whole cells score the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.importing import import_target
from bench.metrics.catalogue import spec_of
from bench.metrics.common import FeatureRequest, features_key, get_space
from bench.metrics.registry import SYSTEM_METRICS, QualityContext


def feature_requests(metrics: Mapping[str, dict[str, Any] | None]) -> tuple[list[FeatureRequest] | None, str]:
    """Every feature request of a cell's metrics, in metric order; (None, why) when some metric needs the images
    themselves (a plugin metric without a catalogue spec that declares its features)."""
    out: list[FeatureRequest] = []
    for name, opts in metrics.items():
        if name in SYSTEM_METRICS:
            continue
        spec = spec_of(name)
        base, _, variant = name.partition(":")
        if spec is None or spec.name != base:  # a module:function metric (its spec, if any, names the function)
            base, variant = name, ""
        if spec is None:
            return None, f"metric {name!r} reads the images themselves (no catalogue entry declares its features)"
        if not spec.reads_samples:
            continue
        if spec.features is None:
            return None, f"metric {name!r} reads the images themselves"
        options = dict(opts or {})
        if variant:
            options["variant"] = variant
        out += import_target(spec.features)(base, options)
    return out, ""


class FeatureStream:
    """Embeds each sampled batch in every requested space (each space once: the first request's batch size, as
    `sample_features` would) and hands the concatenated features to the metrics through ctx.shared."""

    def __init__(self, ctx: QualityContext, requests: list[FeatureRequest]) -> None:
        self.ctx = ctx
        self.spaces: dict[str, tuple[Any, int]] = {}
        self.unavailable: dict[str, str] = {}  # metric -> why its space did not load (the metric fails alone)
        for r in requests:
            try:
                space = get_space(ctx, r.metric, dict(r.options))
            except Exception as e:  # missing weights: that metric fails with this error when it runs
                self.unavailable[r.metric] = str(e).splitlines()[0] if str(e) else type(e).__name__
                continue
            self.spaces.setdefault(space.id, (space, r.batch_size))
        self.parts: dict[str, list[np.ndarray]] = {sid: [] for sid in self.spaces}

    def add(self, images: Any) -> None:
        """Embed one batch of uint8 (B, 3, R, R) images in every space."""
        for sid, (space, bs) in self.spaces.items():
            self.parts[sid].append(space.extract(images, bs))

    def arrays(self) -> dict[str, np.ndarray]:
        """The features so far, per space id (float32, rows in sampling order)."""
        return {sid: np.concatenate(p) if p else np.zeros((0, 0), np.float32) for sid, p in self.parts.items()}

    def load(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Give the metrics these features (e.g. merged from shards) as the cell's sample features."""
        missing = sorted(set(self.spaces) - set(arrays))
        if missing:
            raise BenchError(f"shard features are missing for feature space(s) {', '.join(missing)}")
        for sid, (space, _) in self.spaces.items():
            feats = np.asarray(arrays[sid])
            if feats.shape[0] != self.ctx.count:
                raise BenchError(f"{feats.shape[0]} sample features in {space.name} for {self.ctx.count} samples")
            self.ctx.shared[features_key(space)] = feats

    def finish(self) -> None:
        """The streamed features become the cell's sample features."""
        self.load(self.arrays())
