"""A fixed calibration workload timed next to every latency measurement.

Latency gates compare latency / calibration time, so a CI machine that is uniformly slower (or busier) than
the one that recorded the baseline does not flag a regression. The workload is shaped like the zoo's small
conv U-Nets: a few 3x3 convolutions at 64 channels on 16x16 maps plus a GEMM.
"""

from __future__ import annotations

import torch

from bench.metrics import latency

_CACHE: dict[tuple[str, str], torch.nn.Module] = {}


def _workload(device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    key = (str(device), str(dtype))
    if key not in _CACHE:
        g = torch.Generator().manual_seed(0)
        layers: list[torch.nn.Module] = []
        for _ in range(4):
            conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
            layers += [conv, torch.nn.SiLU()]
        _CACHE[key] = torch.nn.Sequential(*layers).to(device, dtype).eval()
    return _CACHE[key]


@torch.no_grad()
def calibrate(device: torch.device, dtype: torch.dtype = torch.float32, min_run_time: float = 0.2,
              ) -> latency.LatencyResult:
    """Time the calibration workload (batch 8 of 64x16x16 maps + a 512x512 GEMM) on this device and thread count."""
    net = _workload(device, dtype)
    x = torch.randn(8, 64, 16, 16, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    a = torch.randn(512, 512, generator=torch.Generator().manual_seed(2)).to(device, dtype)

    def work() -> object:
        return net(x).sum() + (a @ a).sum()

    return latency.measure(work, 1, device, warmup=2, min_run_time=min_run_time, max_run_time=0.6)
