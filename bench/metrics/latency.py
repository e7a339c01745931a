"""Latency measured apart from quality sampling: warm-up, device sync, adaptive repeats, median and IQR."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

# torch.utils.benchmark imports cpp_extension, which warns "No CUDA runtime is found" on CPU-only machines.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
import torch.utils.benchmark as tbench  # noqa: E402


@dataclass
class LatencyResult:
    batch_size: int
    median_s: float
    q25_s: float
    q75_s: float
    runs: int
    number_per_run: int

    def per_image_ms(self) -> tuple[float, float, float]:
        b = self.batch_size
        return self.median_s * 1e3 / b, self.q25_s * 1e3 / b, self.q75_s * 1e3 / b


def measure(fn: Callable[[], object], batch_size: int, device: torch.device, *, warmup: int = 1,
            min_run_time: float = 0.2, max_run_time: float = 5.0, threshold: float = 0.1) -> LatencyResult:
    """Time `fn` (one batch) with torch.utils.benchmark's adaptive autorange on the current thread count.

    torch's Timer synchronises CUDA around each measurement; warm-up calls run first so lazy
    initialisation and allocator growth are not timed.
    """
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timer = tbench.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.adaptive_autorange(threshold=threshold, min_run_time=min_run_time, max_run_time=max_run_time)
    q25, q75 = np.percentile(np.asarray(m.times), [25, 75])
    return LatencyResult(batch_size, float(m.median), float(q25), float(q75), len(m.times), m.number_per_run)
