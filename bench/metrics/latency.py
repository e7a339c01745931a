"""Latency measured apart from quality sampling: warm-up, device sync, adaptive repeats, median and IQR.

The protocol (docs/metrics.md, "Latency"): torch.utils.benchmark's adaptive_autorange times blocks of calls
until the IQR is tight or `max_run_time` is spent; when that left fewer than `min_runs` blocks (one slow block
can outlast the budget), blocked_autorange adds blocks until there are `min_runs`, within a hard cap of
`max_time` seconds per batch size. `stability` flags a measurement with too few runs or too wide an IQR, and
`separated` says whether two latencies differ (their IQRs do not overlap). Both are pure: readers of stored
results use them without timing anything. torch is imported only by `measure` and `PhaseClock`.

Phases: the whole call is the latency (the default). With `PhaseClock` the same timed calls are also split at
the first and the last counted network call (the hooks on `networks()`), so every moment of a call belongs to
exactly one phase:
  conditioning  call start -> first network call starts: text encoders, initial latents, scheduler set-up
  denoising     first network call starts -> last one ends: the counted calls and the scheduler steps between
  decoding      last network call ends -> call returns: the last scheduler step, VAE decode, post-processing
On CUDA the marks are CUDA events on the current stream (no extra synchronisation inside the call; read once the
timing has synchronised), elsewhere time.perf_counter, the Timer's own clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    import torch

DEFAULT_MIN_RUNS = 5
DEFAULT_MAX_TIME = 30.0
DEFAULT_MAX_IQR_REL = 0.25
CPU_CLOCK = "time.process_time"
PHASES = ("conditioning", "denoising", "decoding")
PHASE_SPLIT = "at the first and last counted network call (bench.metrics.latency.PhaseClock)"


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
    throughput_max_batch: int | None = Field(
        default=None, ge=1, description="Also search the batch with the most images per second: double the "
        "largest batch size up to this cap, stopping at the first that runs out of device memory, and store "
        "throughput_img_s (images/s at the best batch, with its IQR). Default: no search.")
    phases: bool = Field(default=True, description="Also split each timed call into conditioning, denoising and "
                         "decoding at the first and last counted network call (latency_<phase>_ms_batch1 / "
                         "_per_image); the whole call stays the latency.")
    scope: Literal["call", "denoiser"] = Field(
        default="call", description="What latency_ms_batch1 / latency_ms_per_image (the numbers the gate and the "
        "Pareto plots use) time: the whole sample() call, or only its denoising phase (the counted network calls "
        "and the steps between them; needs phases). With denoiser, the whole call is kept as "
        "latency_call_ms_batch1 / _per_image.")

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, v: list[int]) -> list[int]:
        if not v or any(b <= 0 for b in v):
            raise ValueError("batch_sizes must list positive integers")
        return v

    @model_validator(mode="after")
    def _scope(self) -> LatencyOptions:
        if self.scope == "denoiser" and not self.phases:
            raise ValueError("scope: denoiser times the denoising phase, so it needs phases: true")
        return self

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
    phases: dict[str, tuple[float, float, float]] | None = None  # phase -> (median, q25, q75) seconds per call
    phase_calls: int = 0  # timed calls the phases were read from
    phase_shares: dict[str, float] | None = None  # phase -> share of the timed calls' total time

    def per_image_ms(self) -> tuple[float, float, float]:
        b = self.batch_size
        return self.median_s * 1e3 / b, self.q25_s * 1e3 / b, self.q75_s * 1e3 / b

    def cpu_per_image_ms(self) -> tuple[float, float, float] | None:
        if self.cpu_median_s is None or self.cpu_q25_s is None or self.cpu_q75_s is None:
            return None
        b = self.batch_size
        return self.cpu_median_s * 1e3 / b, self.cpu_q25_s * 1e3 / b, self.cpu_q75_s * 1e3 / b


class PhaseClock:
    """Marks where each call of a timed function crosses into and out of its counted network calls.

    Use as a context manager around `measure(..., phases=clock)`: entering puts a forward pre-hook and a forward
    hook on each network, leaving removes them. `wrap(fn)` marks the call's start and end; `reset()` forgets the
    calls so far (measure calls it after warm-up); `shares()` gives each phase's share of the timed calls' time.
    """

    def __init__(self, networks: Any, device: torch.device) -> None:
        self.networks = list(networks)
        self.cuda = device.type == "cuda"
        self._calls: list[list[Any]] = []  # per call: [start, first network start, last network end, end]
        self._current: list[Any] | None = None
        self._handles: list[Any] = []

    def _mark(self) -> Any:
        if self.cuda:
            import torch

            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def _pre(self, *_: Any) -> None:
        cur = self._current
        if cur is not None and cur[1] is None:
            cur[1] = self._mark()

    def _post(self, *_: Any) -> None:
        cur = self._current
        if cur is not None:
            cur[2] = self._mark()  # the last one to fire wins

    def __enter__(self) -> PhaseClock:
        for net in self.networks:
            self._handles.append(net.register_forward_pre_hook(self._pre))
            self._handles.append(net.register_forward_hook(self._post))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def wrap(self, fn: Callable[[], object]) -> Callable[[], object]:
        def timed() -> object:
            self._current = [self._mark(), None, None, None]
            try:
                return fn()
            finally:
                self._current[3] = self._mark()
                self._calls.append(self._current)
                self._current = None

        return timed

    def reset(self) -> None:
        self._calls.clear()

    def durations(self) -> list[tuple[float, float, float]]:
        """(conditioning, denoising, decoding) seconds of every call that made a network call."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        out = []
        for start, first, last, end in self._calls:
            if first is None or last is None:
                continue
            if self.cuda:
                out.append((start.elapsed_time(first) / 1e3, first.elapsed_time(last) / 1e3,
                            last.elapsed_time(end) / 1e3))
            else:
                out.append((first - start, last - first, end - last))
        return out

    def shares(self) -> tuple[dict[str, float] | None, int]:
        """Each phase's share of the timed calls' total time (sums over the calls, so the shares add up to 1),
        and how many calls they were read from. Shares rather than per-phase medians: the call's own latency is
        a median over runs of block means, and a median of each phase would not add up to it when calls vary
        (a loaded machine, a tiny network where Python overhead dominates)."""
        d = self.durations()
        if not d:
            return None, 0
        arr = np.asarray(d, dtype=np.float64)
        total = float(arr.sum())
        if total <= 0:
            return None, len(d)
        return {name: float(arr[:, i].sum()) / total for i, name in enumerate(PHASES)}, len(d)


def out_of_memory(exc: BaseException) -> bool:
    """Whether a sampler call failed for lack of device memory (CUDA's OutOfMemoryError, or an allocator's
    RuntimeError saying so), which ends a batch-size search instead of failing the cell."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in str(exc).lower())


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
            cpu_time: bool = False, phases: PhaseClock | None = None) -> LatencyResult:
    """Time `fn` (one batch) with torch.utils.benchmark on the current thread count.

    adaptive_autorange first (until IQR/median < `threshold` after `min_run_time`, or `max_run_time`); if that
    gave fewer than `min_runs` runs, blocked_autorange adds runs while, judged by the fastest run so far, they
    end within `max_time` seconds of the start of timing (`capped` when that stopped them short). torch's Timer synchronises CUDA around each measurement; warm-up
    calls run first so lazy initialisation and allocator growth are not timed. With `cpu_time`, the CPU seconds
    (time.process_time) of every run are kept too, read by the Timer's `setup` just before each run's timed
    loop and by its callback just after: on one thread they stay meaningful when other processes share the
    cores, and the wall-clock timing is unchanged. With `phases` (a PhaseClock whose hooks are in place), every
    call is also split into PHASES, read from the same calls the Timer times (warm-up calls excluded).
    """
    import logging

    import torch

    # torch.utils.benchmark imports cpp_extension, which warns "No CUDA runtime is found" on CPU-only machines.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import torch.utils.benchmark as tbench

    if phases is not None:
        fn = phases.wrap(fn)
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if phases is not None:
        phases.reset()

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
    if phases is not None:
        shares, result.phase_calls = phases.shares()
        if shares is not None:  # the call's median and IQR, split by each phase's measured share of the time
            result.phases = {p: (f * med, f * q25, f * q75) for p, f in shares.items()}
            result.phase_shares = shares
    return result


def phase_metric_name(phase: str, wall_name: str) -> str:
    """latency_ms_batch1 -> latency_<phase>_ms_batch1; latency_ms_per_image -> latency_<phase>_ms_per_image."""
    return wall_name.replace("latency_", f"latency_{phase}_", 1)


def denoiser_scope(metrics: list[Any]) -> list[Any]:
    """`scope: denoiser`: latency_ms_batch1 / _per_image become the denoising phase's numbers (provenance says
    so), and the whole call is kept as latency_call_ms_batch1 / _per_image."""
    from dataclasses import replace

    by_name = {m.name: m for m in metrics}
    out = []
    for m in metrics:
        if m.name in WALL_NAMES:
            phase = by_name.get(phase_metric_name("denoising", m.name))
            if phase is None:  # no counted call was timed: keep the call, say why
                out.append(replace(m, provenance={**m.provenance, "scope": "call",
                                                  "scope_note": "no denoising phase was timed"}))
                continue
            out.append(replace(m, name=m.name.replace("latency_ms", "latency_call_ms"),
                               provenance={**m.provenance, "scope": "call"}))
            out.append(replace(phase, name=m.name, provenance={
                **m.provenance, **phase.provenance, "scope": "denoiser", "unstable": m.provenance.get("unstable"),
                "unstable_reason": m.provenance.get("unstable_reason")}))
        else:
            out.append(m)
    return out


WALL_NAMES = ("latency_ms_batch1", "latency_ms_per_image")


def phase_metrics(r: LatencyResult, wall_names: list[str], provenance: dict[str, Any]) -> list[Any]:
    """The stored split of one timed batch size: for each of `wall_names` (latency_ms_batch1 and/or
    latency_ms_per_image) one metric per phase, ms per image, IQR over the timed calls. Empty without phases."""
    from bench.metrics.registry import MetricResult

    if not r.phases:
        return []
    b = r.batch_size
    out = []
    for phase, (med, q25, q75) in r.phases.items():
        prov = {**provenance, "phase": phase, "split": PHASE_SPLIT, "calls": r.phase_calls,
                "share": (r.phase_shares or {}).get(phase),
                "ci": "the call's interquartile range x this phase's share of the timed calls' time"}
        for wall in wall_names:
            out.append(MetricResult(phase_metric_name(phase, wall), med * 1e3 / b, False, q25 * 1e3 / b,
                                    q75 * 1e3 / b, r.phase_calls, dict(prov)))
    return out
