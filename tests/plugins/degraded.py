"""The analytic samplers with an injected regression: output pulled toward mid-grey, or slower sampling.

`factor` (an option, or the BENCH_DEGRADE_FACTOR environment variable, which leaves the suite text and its
hash unchanged) scales every pixel's distance from 127.5 by (1 - factor): 0 is the unchanged sampler, image
for image. BENCH_SLOWDOWN=s (default 1) makes every sample() call take s times as long, by spinning on the
CPU for the extra time (so CPU time grows too). Used to measure what the gate detects
(tests/test_gate_paired.py, scripts/gate_rates.py).
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from bench.adapters.analytic import AnalyticEuler, AnalyticHeun, OracleFlowMap
from bench.adapters.protocol import SampleRequest


def _factor(option: float | None) -> float:
    return float(option if option is not None else os.environ.get("BENCH_DEGRADE_FACTOR", "0") or 0)


def pull_to_grey(images: torch.Tensor, factor: float) -> torch.Tensor:
    if factor == 0:
        return images
    x = images.float()
    return (127.5 + (x - 127.5) * (1 - factor)).round().clamp(0, 255).to(torch.uint8)


class _Greyed:
    def __init__(self, factor: float | None = None, **kwargs: Any) -> None:
        self.factor = factor
        super().__init__(**kwargs)  # type: ignore[call-arg]

    def sample(self, req: SampleRequest) -> torch.Tensor:
        t0 = time.perf_counter()
        out = pull_to_grey(super().sample(req), _factor(self.factor))  # type: ignore[misc]
        slowdown = float(os.environ.get("BENCH_SLOWDOWN", "1") or 1)
        if slowdown > 1:
            until = time.perf_counter() + (slowdown - 1) * (time.perf_counter() - t0)
            while time.perf_counter() < until:
                pass
        return out


class GreyEuler(_Greyed, AnalyticEuler):
    """analytic-euler, pulled toward grey."""


class GreyHeun(_Greyed, AnalyticHeun):
    """analytic-heun, pulled toward grey."""


class GreyOracle(_Greyed, OracleFlowMap):
    """analytic-oracle-flowmap, pulled toward grey."""
