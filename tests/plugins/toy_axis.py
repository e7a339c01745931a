"""A toy axis made the way a user adds one: an Axis for the suite schema and an adapter that reads it.

Nothing in the worker, store, gate or report knows about it (tests/test_cells_as_data.py). `grey` pulls every
pixel of analytic-euler's output toward mid-grey by that fraction, so its value visibly changes the numbers.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.adapters.analytic import AnalyticEuler
from bench.adapters.protocol import SampleRequest
from bench.spec import Axis
from tests.plugins.degraded import pull_to_grey


def _fraction(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ValueError(f"grey values must be fractions in [0, 1), got {v!r}")
    return float(v)


GREY = Axis("grey", "Toy axis: pull every pixel toward mid-grey by this fraction.", _fraction)


class GreyAxisEuler(AnalyticEuler):
    """analytic-euler whose output is pulled toward grey by the cell's `grey` axis value (req.extra)."""

    def sample(self, req: SampleRequest) -> torch.Tensor:
        return pull_to_grey(super().sample(req), float(req.extra.get("grey", 0.0)))


VERSION = "1"  # tests change it to show that a sampler's version is part of the cell key


class VersionedEuler(AnalyticEuler):
    """analytic-euler whose SamplerInfo.version is this module's VERSION (read when the planner builds it)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from dataclasses import replace

        self.info = replace(self.info, version=f"versioned-{VERSION}")
