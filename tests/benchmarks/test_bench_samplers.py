"""Latency benchmarks (pytest-benchmark): every registered sampler whose weights are available, at a fixed NFE.

Not part of the default test run (pyproject's addopts has --benchmark-skip); run them with `nox -s benchmarks`,
which saves the timings per machine and fails when a median is slower than the last save by more than the
tolerance. Settings (environment variables):

  BENCH_BENCHMARK_HARDWARE    hardware spec (default: cuda when present, else cpu:threads=1)
  BENCH_BENCHMARK_NFE         requested steps (default 4; a sampler that does not support it uses its smallest)
  BENCH_BENCHMARK_BATCH       images per call (default 8)
  BENCH_BENCHMARK_RESOLUTION  image size for samplers that accept any (default 8, the analytic suites' size)
  BENCH_BENCHMARK_ROUNDS      most timed rounds (default 20; fewer when a call is slow, see BENCH_BENCHMARK_BUDGET)
  BENCH_BENCHMARK_BUDGET      seconds of timed rounds per benchmark (default 3; at least 5 rounds)

Each round is one sample() call on a fixed batch (fixed seeds), with the device synchronised before the clock
stops; the setup before each round collects garbage and synchronises, so rounds start from the same state.
These are raw wall-clock times: `bench gate` is the hardware-normalised check (docs/ci.md).
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

import pytest
import torch

from bench.adapters.protocol import SampleRequest
from bench.adapters.registry import build_sampler, list_samplers
from bench.errors import MissingWeightsError
from bench.hardware import HardwareSpec
from bench.metrics.calibration import WORKLOAD, workload
from bench.metrics.nfe import NFECounter

HARDWARE = os.environ.get("BENCH_BENCHMARK_HARDWARE") or ("cuda" if torch.cuda.is_available() else "cpu:threads=1")
NFE = int(os.environ.get("BENCH_BENCHMARK_NFE", "4"))
BATCH = int(os.environ.get("BENCH_BENCHMARK_BATCH", "8"))
RESOLUTION = int(os.environ.get("BENCH_BENCHMARK_RESOLUTION", "8"))
ROUNDS = int(os.environ.get("BENCH_BENCHMARK_ROUNDS", "20"))
BUDGET = float(os.environ.get("BENCH_BENCHMARK_BUDGET", "3"))
MIN_ROUNDS = 5
PROMPT = "a small red circle at the top left"


@pytest.fixture(scope="module")
def hw() -> HardwareSpec:
    spec = HardwareSpec.parse(HARDWARE)
    reason = spec.availability()
    if reason:
        pytest.skip(f"hardware {spec.label}: {reason}")
    if spec.threads:
        torch.set_num_threads(spec.threads)
    return spec


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _setup(device: torch.device) -> Any:
    def setup() -> None:
        gc.collect()
        _sync(device)

    return setup


def _rounds(seconds_per_call: float) -> int:
    """As many rounds as fit the time budget, between MIN_ROUNDS and ROUNDS."""
    return max(MIN_ROUNDS, min(ROUNDS, int(BUDGET / max(seconds_per_call, 1e-9))))


def _request(info: Any, nfe: int, resolution: int) -> SampleRequest:
    labels = [i % 4 for i in range(BATCH)] if info.conditioning == "class" else None
    prompts = [PROMPT] * BATCH if info.conditioning == "text" else None
    return SampleRequest(seeds=list(range(BATCH)), nfe=nfe, height=resolution, width=resolution, labels=labels,
                         prompts=prompts)


# Samplers that need an option to exist at all (no default network): benchmarked on their offline tiny model.
OPTIONS = {"flow-map": {"model": "tiny:flowmap"}}


def _load(name: str, hw: HardwareSpec) -> tuple[Any, int, int]:
    """The sampler loaded on hw, with the NFE and resolution to time it at. Skips only when it cannot run here
    (hardware, or weights not available offline); any other error is a broken adapter and fails."""
    sampler = build_sampler(name, dict(OPTIONS.get(name, {})))
    info = sampler.info
    nfe = NFE
    if not info.nfe.supports(nfe):
        nfe = min(info.nfe.values) if info.nfe.values else info.nfe.min
    resolution = info.resolutions[0] if info.resolutions else RESOLUTION
    reason = info.unsupported(nfe, resolution, hw)
    if reason:
        pytest.skip(f"{name}: {reason}")
    try:
        sampler.load(hw)
    except MissingWeightsError as e:  # a real model's weights, not in this machine's cache
        pytest.skip(f"{name}: weights not available offline ({str(e).splitlines()[0]})")
    return sampler, nfe, resolution


@pytest.mark.parametrize("name", [e.name for e in list_samplers()])
def test_sampler_latency(benchmark: Any, hw: HardwareSpec, name: str) -> None:
    sampler, nfe, resolution = _load(name, hw)
    device = hw.torch_device()
    req = _request(sampler.info, nfe, resolution)
    with NFECounter(sampler.networks()) as counter:  # also the first warm-up call
        first = sampler.sample(req)
    _sync(device)
    assert first.shape[0] == BATCH
    t0 = time.perf_counter()
    sampler.sample(req)
    _sync(device)
    rounds = _rounds(time.perf_counter() - t0)

    def run() -> Any:
        out = sampler.sample(req)
        _sync(device)
        return out

    benchmark.group = f"samplers {hw.label} batch {BATCH}"
    benchmark.extra_info.update({"sampler": name, "family": sampler.info.family, "nfe_requested": nfe,
                                 "nfe_counted": counter.per_image(BATCH), "resolution": resolution,
                                 "batch": BATCH, "hardware": hw.label})
    out = benchmark.pedantic(run, setup=_setup(device), rounds=rounds, warmup_rounds=1, iterations=1)
    assert out.shape[0] == BATCH


def test_calibration_workload(benchmark: Any, hw: HardwareSpec) -> None:
    """The fixed workload `bench gate` divides latencies by: read sampler timings relative to this one."""
    device = hw.torch_device()
    work = workload(device)

    def run() -> Any:
        out = work()
        _sync(device)
        return out

    benchmark.group = f"calibration {hw.label}"
    benchmark.extra_info.update({"workload": WORKLOAD, "hardware": hw.label})
    out = benchmark.pedantic(run, setup=_setup(device), rounds=ROUNDS, warmup_rounds=2, iterations=1)
    assert torch.isfinite(out)
