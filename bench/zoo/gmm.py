"""An analytic world: a Gaussian mixture in pixel space whose flow-matching velocity is closed form.

Data x1 ~ sum_k (1/K) N(mu_k, s^2 I) with smooth template images mu_k in [-1, 1]; noise x0 ~ N(0, I);
x_t = (1 - t) x0 + t x1. Given component k, x_t ~ N(t mu_k, sigma_t^2 I) with
sigma_t^2 = (1 - t)^2 + t^2 s^2, and E[x1 - x0 | x_t, k] = mu_k + (t s^2 - (1 - t)) / sigma_t^2 (x_t - t mu_k).
The marginal velocity averages that over the posterior of k. Needs no training: a ground truth for tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from bench.datasets import Conditions
from bench.runtime import to_uint8

MATCHED_SEED_BASE = 2**62  # generator seeds of matched draws; item seeds (`_gen`) stay below 2^43


def templates(k: int, resolution: int, seed: int = 0) -> torch.Tensor:
    """K smooth template images (K, 3, R, R) in [-0.8, 0.8], defined at any resolution (sums of sinusoids)."""
    g = torch.Generator().manual_seed(seed)
    coords = (torch.arange(resolution, dtype=torch.float64) + 0.5) / resolution
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    out = torch.zeros(k, 3, resolution, resolution, dtype=torch.float64)
    for i in range(k):
        for c in range(3):
            field = torch.zeros_like(xx)
            for _ in range(3):
                fx, fy = torch.randint(0, 3, (2,), generator=g).tolist()
                phase = float(torch.rand((), generator=g)) * 2 * math.pi
                amp = float(torch.rand((), generator=g))
                field += amp * torch.cos(2 * math.pi * (fx * xx + fy * yy) + phase)
            out[i, c] = field
        out[i] = out[i] / out[i].abs().amax().clamp_min(1e-6) * 0.8
    return out.float()


class MixtureModule(torch.nn.Module):
    """Holds the mixture's templates at whatever resolution the input has (built on first use, cached)."""

    def __init__(self, components: int, data_std: float, seed: int) -> None:
        super().__init__()
        self.components, self.seed = components, seed
        self.s2 = data_std**2
        self._mu: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    def mu(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        key = (x.shape[-1], x.device, dtype or x.dtype)
        if key not in self._mu:
            self._mu[key] = templates(self.components, x.shape[-1], self.seed).to(x.device, dtype or x.dtype)
        return self._mu[key]


class GaussianMixtureVelocity(MixtureModule):
    """Closed-form teacher velocity b(x, t | label); label -1 means unconditional (marginal over components)."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return velocity(x, t, labels, self.mu(x), self.s2)


def velocity(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, mu: torch.Tensor, s2: float) -> torch.Tensor:
    """E[x1 - x0 | x_t = x] for the mixture (labels >= 0 select one component)."""
    n = x.shape[0]
    t = t.reshape(-1).to(x.dtype).expand(n) if t.numel() == 1 else t.reshape(n).to(x.dtype)
    tb = t.view(n, 1, 1, 1, 1)
    var = (1 - tb) ** 2 + tb**2 * s2  # (n,1,1,1,1)
    mu = mu.to(x.dtype)
    diff = x.unsqueeze(1) - tb * mu.unsqueeze(0)  # (n, K, C, H, W)
    logw = -(diff**2).flatten(2).sum(-1) / (2 * var.view(n, 1))  # (n, K)
    cond = labels.reshape(n) >= 0
    if cond.any():
        mask = torch.full_like(logw, -math.inf)
        mask[cond, labels.reshape(n)[cond].long()] = 0.0
        logw = torch.where(cond.view(n, 1), mask, logw)
    w = torch.softmax(logw, dim=1).view(n, -1, 1, 1, 1)
    vk = mu.unsqueeze(0) + (tb * s2 - (1 - tb)) / var * diff
    return (w * vk).sum(1)


class GaussianMixtureDataset:
    """Reference images and labels of the analytic world; index i is deterministic from (seed, i)."""

    name = "gmm"
    conditioning = "class"

    def __init__(self, split: str = "eval", components: int = 8, data_std: float = 0.15, seed: int = 0) -> None:
        if split not in ("train", "eval"):
            raise ValueError(f"split must be train or eval, not {split!r}")
        self.split = split
        self.components = components
        self.data_std = data_std
        self.seed = seed
        self._offset = 0 if split == "train" else 10_000_000

    def key(self) -> str:
        # v2: images quantised by bench.runtime.to_uint8 (round half up; v1 rounded half to even)
        return f"gmm(split={self.split},K={self.components},std={self.data_std},seed={self.seed},v2)"

    def labels(self, indices: Sequence[int]) -> list[int]:
        return [int(torch.randint(0, self.components, (1,), generator=self._gen(i, 1))) for i in indices]

    def conditions(self, indices: Sequence[int]) -> Conditions:
        labels = self.labels(indices)
        return Conditions(prompts=[f"mode {k}" for k in labels], labels=labels)

    def _gen(self, i: int, stream: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 7919 + self._offset + int(i)) * 4 + stream)

    def float_images(self, indices: Sequence[int], resolution: int) -> torch.Tensor:
        """Reference samples in model space [-1, 1]-ish, float32 (N, 3, R, R)."""
        mu = templates(self.components, resolution, self.seed)
        labels = self.labels(indices)
        noise = torch.stack([torch.randn(3, resolution, resolution, generator=self._gen(i, 2)) for i in indices])
        return mu[labels] + self.data_std * noise

    def images(self, indices: Sequence[int], resolution: int) -> torch.Tensor:
        return to_uint8(self.float_images(indices, resolution))

    def _matched_gen(self, i: int, draw: int) -> torch.Generator:
        """Noise stream of matched draw `draw` of item i: seeds from 2^62 up, disjoint from every `_gen` seed."""
        base = self.seed * 7919 + self._offset + int(i)
        if not 0 <= base < 2**41:
            raise IndexError(f"gmm: index {i} is out of range for matched draws")
        return torch.Generator().manual_seed(MATCHED_SEED_BASE + (base << 20) + draw)

    def float_matched(self, indices: Sequence[int], resolution: int, draw: int = 1) -> torch.Tensor:
        """Another sample of each item's component (same label, independent noise), float32 (N, 3, R, R)."""
        if isinstance(draw, bool) or not isinstance(draw, int) or not 1 <= draw < 2**20:
            raise ValueError(f"gmm: draw must be an integer in [1, 2^20), not {draw!r}")
        mu = templates(self.components, resolution, self.seed)
        labels = self.labels(indices)
        noise = [torch.randn(3, resolution, resolution, generator=self._matched_gen(i, draw)) for i in indices]
        if not noise:
            return torch.zeros(0, 3, resolution, resolution)
        return mu[labels] + self.data_std * torch.stack(noise)

    def matched_images(self, indices: Sequence[int], resolution: int, draw: int = 1) -> torch.Tensor:
        """uint8 images with the same labels as `indices` and fresh noise: the condition-matched noise floor's set."""
        return to_uint8(self.float_matched(indices, resolution, draw))

