"""Measurement helpers: peak memory over an idle baseline, latency quartiles."""

from __future__ import annotations

import time

import torch

from bench.metrics.latency import measure
from bench.metrics.memory import PeakMemory


def _allocate(mb: int) -> None:
    """Many 256 KB tensors: below glibc's mmap threshold, so freed memory stays in the heap unless trimmed."""
    xs = [torch.ones(2**16) for _ in range(mb * 4)]
    del xs


def test_peak_memory_sees_each_block_even_after_earlier_frees():
    cpu = torch.device("cpu")
    peaks = []
    for mb in (64, 64, 16):
        with PeakMemory(cpu) as m:
            _allocate(mb)
        peaks.append(m.peak_mb)
    # a reused process must not hide the second block behind memory the first one freed
    assert 55 < peaks[0] < 100 and 55 < peaks[1] < 100, peaks
    assert 10 < peaks[2] < 40, peaks


def test_latency_quartiles_bracket_the_median():
    r = measure(lambda: time.sleep(0.002), 4, torch.device("cpu"), warmup=1, min_run_time=0.05, max_run_time=0.2)
    med, q25, q75 = r.per_image_ms()
    assert q25 <= med <= q75
    assert 0.4 < med < 5  # 2 ms per batch of 4, plus scheduling slack
