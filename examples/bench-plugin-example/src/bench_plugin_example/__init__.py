"""A complete third-party sampler: Euler steps with damping on a tiny seeded conv velocity network.

It is not a good image model (its weights are random); it shows every part of the protocol:
capabilities in `info`, device/dtype in `load`, the hooked network in `networks`, per-image seeds in `sample`.
"""

from __future__ import annotations

import torch

from bench.adapters.protocol import NFESupport, SampleRequest, SamplerInfo, per_image_noise
from bench.hardware import HardwareSpec


class TinyVelocity(torch.nn.Module):
    """v(x, t): two 3x3 convolutions with the time as an extra input channel."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = torch.nn.Conv2d(4, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return self.conv2(torch.tanh(self.conv1(torch.cat([x, tt], dim=1))))


class DampedEuler:
    """Damped Euler on a tiny random conv velocity (example plugin; NFE = steps, up to 16)."""

    def __init__(self, damping: float = 0.5, seed: int = 0) -> None:
        self.damping = damping
        self.net = TinyVelocity(seed)
        # The planner reads `info` without loading weights: declare what the sampler can do.
        self.info = SamplerInfo(
            family="ode", nfe=NFESupport(min=1, max=16), conditioning="none", devices=("cpu", "cuda"),
            description="damped Euler on a tiny random conv net (example plugin)", version=f"example-1-{seed}",
        )

    def load(self, hw: HardwareSpec) -> None:
        self.device, self.dtype = hw.torch_device(), hw.torch_dtype()
        self.net = self.net.to(self.device, self.dtype).eval()

    def networks(self) -> list[torch.nn.Module]:
        return [self.net]  # every forward call of these modules is counted as NFE

    @torch.no_grad()
    def sample(self, req: SampleRequest) -> torch.Tensor:
        # Common random numbers: image i starts from the noise of its own seed, whatever the batch.
        x = per_image_noise(req.seeds, (3, req.height, req.width), self.device, self.dtype)
        ts = torch.linspace(0, 1, req.nfe + 1, device=self.device, dtype=self.dtype)
        for i in range(req.nfe):
            t = ts[i].expand(len(req))
            x = x + (ts[i + 1] - ts[i]) * self.damping * self.net(x, t)
        return (x.clamp(-1, 1) + 1) / 2  # float in [0, 1]; the harness converts to uint8
