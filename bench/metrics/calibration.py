"""A fixed calibration workload timed next to every latency measurement.

Latency gates compare latency / calibration time, so a CI machine that is uniformly slower (or busier) than
the one that recorded the baseline does not flag a regression. The workload is shaped like the zoo's small
conv U-Nets: a few 3x3 convolutions at 64 channels on 16x16 maps plus a GEMM. The worker times it right after
each cell's latency, in the same process and on the same thread count, so both see the same machine state.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.metrics import latency

WORKLOAD = "4x conv3x3 64ch 16x16 batch 8 + GEMM 512"
_CACHE: dict[tuple[str, str], torch.nn.Module] = {}


def _network(device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    key = (str(device), str(dtype))
    if key not in _CACHE:
        g = torch.Generator().manual_seed(0)
        layers: list[torch.nn.Module] = []
        for _ in range(4):
            conv = torch.nn.Conv2d(64, 64, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
                if conv.bias is not None:
                    conv.bias.zero_()
            layers += [conv, torch.nn.SiLU()]
        _CACHE[key] = torch.nn.Sequential(*layers).to(device, dtype).eval()
    return _CACHE[key]


def workload(device: torch.device, dtype: torch.dtype = torch.float32) -> Callable[[], torch.Tensor]:
    """One call of the calibration workload (batch 8 of 64x16x16 maps through the conv stack + a 512x512 GEMM)."""
    net = _network(device, dtype)
    x = torch.randn(8, 64, 16, 16, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    a = torch.randn(512, 512, generator=torch.Generator().manual_seed(2)).to(device, dtype)

    @torch.no_grad()
    def work() -> torch.Tensor:
        return net(x).sum() + (a @ a).sum()

    return work


def calibrate(device: torch.device, dtype: torch.dtype = torch.float32, min_run_time: float = 0.5,
              max_run_time: float = 1.0) -> latency.LatencyResult:
    """Time the calibration workload on this device and thread count (median and IQR of adaptive repeats).

    The window (0.5 to 1 s) is about as long as a CI suite's latency windows: on a shared CPU the share of a core
    a process gets fluctuates, and equally long windows average over the same fluctuation (docs/ci.md).
    """
    return latency.measure(workload(device, dtype), 1, device, warmup=2, min_run_time=min_run_time,
                           max_run_time=max_run_time)
