"""Samplers that break the output contract (bench/contract.py) on purpose, one way each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from bench.adapters.analytic import AnalyticEuler
from bench.adapters.protocol import SampleRequest


class NaNImages(AnalyticEuler):
    """Float output in [0, 1] where image 1 is all NaN (a diverged solve)."""

    def sample(self, req: SampleRequest) -> Any:
        x = super().sample(req).float() / 255
        if len(x) > 1:
            x[1] = float("nan")
        return x


class DivergedInModelSpace(AnalyticEuler):
    """Image 1's velocity is NaN (a solve that diverged, e.g. a half-precision overflow), but the sampler
    quantises to uint8 itself, as every embedded sampler does: its quantiser must refuse, not clamp NaN to 0."""

    def _guided(self, net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                w: float) -> torch.Tensor:
        v = super()._guided(net, x, t, labels, w)
        if len(v) > 1:
            v[1] = float("nan")
        return v


class SmallImages(AnalyticEuler):
    """Samples at half the requested height and width."""

    def sample(self, req: SampleRequest) -> Any:
        return super().sample(replace(req, height=req.height // 2, width=req.width // 2))


class SignedFloats(AnalyticEuler):
    """Float output in [-1, 1] (model space) instead of [0, 1]."""

    def sample(self, req: SampleRequest) -> Any:
        return super().sample(req).float() / 127.5 - 1


class UnlistedNetwork(AnalyticEuler):
    """Calls self.net but lists another module in networks(): counted NFE 0."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.decoy = torch.nn.Identity()

    def networks(self) -> Sequence[torch.nn.Module]:
        return [self.decoy]


class GlobalRNG(AnalyticEuler):
    """Initial noise from the global RNG (`torch.randn`), not from the per-image seeds."""

    def _noise(self, req: SampleRequest) -> torch.Tensor:
        return torch.randn(len(req), 3, req.height, req.width, device=self.device, dtype=self.dtype)


class BatchGenerator(AnalyticEuler):
    """One generator seeded with the batch's first seed draws the whole batch: image 0 is right, the rest depend
    on their place in the batch."""

    def _noise(self, req: SampleRequest) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(req.seeds[0]))
        return torch.randn(len(req), 3, req.height, req.width, generator=g).to(self.device, self.dtype)
