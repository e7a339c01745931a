"""Latency measured apart from quality sampling: warm-up, device sync, adaptive repeats, median and IQR.

The protocol (docs/metrics.md, "Latency"): torch.utils.benchmark's adaptive_autorange times blocks of calls
until the IQR is tight or `max_run_time` is spent; when that left fewer than `min_runs` blocks (one slow block
can outlast the budget), blocked_autorange adds blocks until there are `min_runs`, within a hard cap of
`max_time` seconds per batch size. `stability` flags a measurement with too few runs or too wide an IQR, and
`separated` says whether two latencies differ (their IQRs do not overlap). Both are pure: readers of stored
results use them without timing anything. torch is imported only by `measure`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    import torch

DEFAULT_MIN_RUNS = 5
DEFAULT_MAX_TIME = 30.0
DEFAULT_MAX_IQR_REL = 0.25
CPU_CLOCK = "time.process_time"


class LatencyOptions(BaseModel):
    """Options of the `latency` entry under a suite's `metrics:` (validated when the suite loads)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    batch_sizes: list[int] = Field(default=[1, 16], description="Batch sizes timed; latency_ms_batch1 comes from 1, "
                                   "latency_ms_per_image from the largest.")
    warmup: int = Field(default=1, ge=0, description="Untimed calls before timing each batch size.")
    min_run_time: float = Field(default=0.2, gt=0, description="Seconds of timed runs before the IQR may stop the "
                                "adaptive timing.")
    max_run_time: float = Field(default=5.0, gt=0, description="Seconds after which the adaptive timing stops even "
                                "if the IQR is still wide.")
    min_runs: int = Field(default=DEFAULT_MIN_RUNS, ge=1, description="Timed runs (blocks) required per batch size; "
                          "the timing goes on past max_run_time until there are this many, up to max_time.")
    max_time: float = Field(default=DEFAULT_MAX_TIME, gt=0, description="Hard cap in seconds on timing one batch "
                            "size (adaptive timing plus the runs added for min_runs); fewer runs when it is reached "
                            "make the latency unstable.")
    max_iqr_rel: float = Field(default=DEFAULT_MAX_IQR_REL, gt=0, description="A latency whose IQR is wider than "
                               "this fraction of its median is unstable.")
    calibrate: bool = Field(default=True, description="Also time the calibration workload (calibration_ms).")

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, v: list[int]) -> list[int]:
        if not v or any(b <= 0 for b in v):
            raise ValueError("batch_sizes must list positive integers")
        return v

    @model_validator(mode="after")
    def _cap(self) -> LatencyOptions:
        if self.max_time < self.max_run_time:
            raise ValueError(f"max_time ({self.max_time:g} s, the hard cap) must be >= max_run_time "
                             f"({self.max_run_time:g} s)")
        return self


@dataclass
class LatencyResult:
    batch_size: int
    median_s: float
    q25_s: float
    q75_s: float
    runs: int
    number_per_run: int  # calls per run (block) of the adaptive timing; added runs choose theirs the same way
    runs_added: int = 0  # runs added after adaptive_autorange to reach min_runs
    capped: bool = False  # max_time stopped the timing before min_runs
    cpu_median_s: float | None = None  # CPU seconds per call (time.process_time), when measured with cpu_time
    cpu_q25_s: float | None = None
    cpu_q75_s: float | None = None

    def per_image_ms(self) -> tuple[float, float, float]:
        b = self.batch_size
        return self.median_s * 1e3 / b, self.q25_s * 1e3 / b, self.q75_s * 1e3 / b

    def cpu_per_image_ms(self) -> tuple[float, float, float] | None:
        if self.cpu_median_s is None or self.cpu_q25_s is None or self.cpu_q75_s is None:
            return None
        b = self.batch_size
        return self.cpu_median_s * 1e3 / b, self.cpu_q25_s * 1e3 / b, self.cpu_q75_s * 1e3 / b


def stability(runs: int, median: float, q25: float, q75: float, min_runs: int = DEFAULT_MIN_RUNS,
              max_iqr_rel: float = DEFAULT_MAX_IQR_REL) -> tuple[bool, str]:
    """(unstable, reason) of one latency: unstable when it rests on fewer than `min_runs` timed runs or its IQR
    (q75 - q25) is wider than `max_iqr_rel` x its median. Any unit (per batch or per image): the rule is relative.
    The reason is "" when stable, else the failed conditions joined by "; "."""
    reasons = []
    if runs < min_runs:
        reasons.append(f"{runs} timed run{'' if runs == 1 else 's'} < min_runs {min_runs}")
    if not all(math.isfinite(x) for x in (median, q25, q75)) or median <= 0:
        reasons.append(f"median {median:g} is not a positive number")
    else:
        rel = (q75 - q25) / median
        if rel > max_iqr_rel:
            reasons.append(f"IQR is {rel:.0%} of the median > max_iqr_rel {max_iqr_rel:g}")
    return bool(reasons), "; ".join(reasons)


def separated(a_q25: float, a_q75: float, b_q25: float, b_q75: float) -> bool:
    """Two latencies differ only when their IQRs separate: one's q75 below the other's q25 (touching is a tie)."""
    for lo, hi in ((a_q25, a_q75), (b_q25, b_q75)):
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ValueError(f"not an interquartile range: [{lo}, {hi}]")
    return a_q75 < b_q25 or b_q75 < a_q25


def measure(fn: Callable[[], object], batch_size: int, device: torch.device, *, warmup: int = 1,
            min_run_time: float = 0.2, max_run_time: float = 5.0, threshold: float = 0.1,
            min_runs: int = DEFAULT_MIN_RUNS, max_time: float = DEFAULT_MAX_TIME,
            cpu_time: bool = False) -> LatencyResult:
    """Time `fn` (one batch) with torch.utils.benchmark on the current thread count.

    adaptive_autorange first (until IQR/median < `threshold` after `min_run_time`, or `max_run_time`); if that
    gave fewer than `min_runs` runs, blocked_autorange adds runs while, judged by the fastest run so far, they
    end within `max_time` seconds of the start of timing (`capped` when that stopped them short). torch's Timer synchronises CUDA around each measurement; warm-up
    calls run first so lazy initialisation and allocator growth are not timed. With `cpu_time`, the CPU seconds
    (time.process_time) of every run are kept too, read by the Timer's `setup` just before each run's timed
    loop and by its callback just after: on one thread they stay meaningful when other processes share the
    cores, and the wall-clock timing is unchanged.
    """
    import logging

    import torch

    # torch.utils.benchmark imports cpp_extension, which warns "No CUDA runtime is found" on CPU-only machines.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import torch.utils.benchmark as tbench

    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)

    block_start = [0.0]  # process_time when the current run (block) began
    cpu_runs: list[float] = []  # CPU seconds per call, one per timed run

    def run_starts() -> None:  # Timer's setup: runs right before each block's timed loop, outside it
        block_start[0] = time.process_time()

    def run_done(number: int, _seconds: float) -> None:  # torch calls this right after every timed run
        cpu_runs.append((time.process_time() - block_start[0]) / number)

    callback = cast(Any, run_done if cpu_time else None)
    timer = tbench.Timer(stmt="fn()", setup="run_starts()" if cpu_time else "pass",
                         globals={"fn": fn, "run_starts": run_starts}, num_threads=torch.get_num_threads())
    start = time.perf_counter()
    m = timer.adaptive_autorange(threshold=threshold, min_run_time=min_run_time, max_run_time=max_run_time,
                                 callback=callback)
    times, number, added, capped = list(m.times), m.number_per_run, 0, False
    while len(times) < min_runs:
        block = min(m.raw_times)  # the last timing's fastest run; block-size estimation costs about one more
        need = min((min_runs - len(times)) * block, max_time - (time.perf_counter() - start) - 2 * block)
        if need < block:
            capped = True
            break
        m = timer.blocked_autorange(min_run_time=need, callback=callback)
        times += m.times
        added += len(m.times)
    q25, med, q75 = (float(x) for x in np.percentile(np.asarray(times), [25, 50, 75]))
    result = LatencyResult(batch_size, med, q25, q75, len(times), number, added, capped)
    if cpu_time:
        result.cpu_q25_s, result.cpu_median_s, result.cpu_q75_s = (
            float(x) for x in np.percentile(np.asarray(cpu_runs), [25, 50, 75]))
    return result
