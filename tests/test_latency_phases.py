"""Latency phases: each timed call split into conditioning / denoising / decoding at its counted network calls.

The split is checked twice: on a sampler whose phases have known lengths (sleeps: each phase's value must land on
its sleep), and on real pipelines (tiny diffusers pipelines built offline, an embedded zoo student), where the
three phases must add up to the whole-call median within max(its IQR, 5 %) and every phase that exists must be
> 0. Each phase is the call's median times the phase's measured share of the timed calls' time, so the sum holds
by construction; the known-length sampler is what checks the shares. No claim about speed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.adapters.protocol import SampleRequest
from bench.adapters.registry import build_sampler
from bench.hardware import HardwareSpec
from bench.metrics.latency import PHASES, LatencyOptions, PhaseClock, measure, phase_metrics

CPU = torch.device("cpu")


class _SleepNet(torch.nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


class KnownPhases:
    """40 ms before the first network call, two 30 ms calls with 10 ms between, 20 ms after the last."""

    def __init__(self) -> None:
        self.net = _SleepNet(0.03)

    def networks(self) -> list[torch.nn.Module]:
        return [self.net]

    def sample(self) -> None:
        time.sleep(0.04)
        x = self.net(torch.zeros(1))
        time.sleep(0.01)
        self.net(x)
        time.sleep(0.02)


def test_the_split_falls_at_the_first_and_last_network_call() -> None:
    s = KnownPhases()
    with PhaseClock(s.networks(), CPU) as clock:
        r = measure(s.sample, 1, CPU, warmup=1, min_run_time=0.05, max_run_time=0.3, min_runs=5, max_time=10)
        r2 = measure(s.sample, 1, CPU, warmup=1, min_run_time=0.05, max_run_time=0.3, min_runs=5, max_time=10,
                     phases=clock)
    assert r.phases is None  # without `phases` nothing is split
    assert r2.phases is not None and r2.phase_calls >= 5
    # sleep() never returns early; a busy machine makes it late by a few ms, not by 15
    for phase, expected in zip(PHASES, (0.04, 0.07, 0.02), strict=True):
        med = r2.phases[phase][0]
        assert expected <= med < expected + 0.015, (phase, med)
    assert not s.net._forward_pre_hooks and not s.net._forward_hooks  # the clock removed its hooks
    # stored as one metric per phase per latency name, ms per image
    got = phase_metrics(r2, ["latency_ms_batch1"], {"batch_size": 1})
    assert [m.name for m in got] == [f"latency_{p}_ms_batch1" for p in PHASES]
    assert got[1].value == pytest.approx(r2.phases["denoising"][0] * 1e3)
    assert all(m.provenance["phase"] in PHASES and m.provenance["split"] for m in got)
    assert LatencyOptions().phases is True




# (adapter, options, steps, resolution): text encoders + UNet + VAE; class-conditional pixel space (no encoder, no
# VAE); a flow map in a VAE's latent space; an embedded student of nfe_sweep.
CASES = {
    "sdxl-turbo": ("sdxl-turbo", {"model": "tiny:sdxl"}, 2, 32),
    "consistency-model": ("consistency-model", {"model": "tiny:cm"}, 2, 32),
    "flow-map-latent": ("flow-map", {"model": "tiny:flowmap-latent"}, 2, 32),
    "zoo-flowmap": ("zoo-flowmap", {"model": "flowmap-lmd"}, 2, 16),
}


@pytest.mark.usefixtures("tiny_env")
@pytest.mark.parametrize("case", list(CASES))
def test_phases_add_up_to_the_whole_call(case: str) -> None:
    adapter, options, steps, res = CASES[case]
    sampler: Any = build_sampler(adapter, options)
    sampler.load(HardwareSpec.parse("cpu:threads=1"))
    req = SampleRequest(seeds=[0, 1], nfe=steps, height=res, width=res, prompts=["a red circle"] * 2,
                        labels=[1, 2])
    with PhaseClock(sampler.networks(), CPU) as clock:
        r = measure(lambda: sampler.sample(req), 2, CPU, warmup=1, min_run_time=0.1, max_run_time=0.5,
                    min_runs=5, max_time=20, phases=clock)
    assert r.phases is not None and set(r.phases) == set(PHASES)
    medians = {p: v[0] for p, v in r.phases.items()}
    assert all(v > 0 for v in medians.values()), medians  # every phase exists in these samplers
    total = sum(medians.values())
    tol = max(r.q75_s - r.q25_s, 0.05 * r.median_s)
    assert abs(total - r.median_s) <= tol, (medians, r.median_s, tol)


SUITE = """
name: phases
dataset: {name: gmm, split: eval, components: 4}
samples: 4
batch_size: 4
samplers:
  - {id: euler, adapter: analytic-euler, options: {components: 4}}
axes: {nfe: [2], resolution: [4], hardware: ["cpu:threads=1"]}
metrics:
  latency: {batch_sizes: [1, 2], min_run_time: 0.005, max_run_time: 0.02, calibrate: false}
report: {grid: 0, enabled: false}
"""


def test_a_cell_stores_the_split_next_to_the_whole_call(write_suite: Any, tmp_path: Path) -> None:
    from bench.plan import plan
    from bench.run import make_tasks
    from bench.store import Store
    from bench.suite import load_suite
    from bench.worker import Worker

    for phases, want in ((True, True), (False, False)):
        text = SUITE if phases else SUITE.replace("calibrate: false}", "calibrate: false, phases: false}")
        suite = load_suite(write_suite(text, f"s{phases}.yaml"))
        with Store(tmp_path / f"r{phases}.sqlite") as store:
            (task,) = make_tasks(suite, plan(suite), store)
        result = Worker().run(task)
        assert result.status == "done", result.error
        names = {m.name for m in result.metrics}
        assert {"latency_ms_batch1", "latency_ms_per_image"} <= names
        split = {f"latency_{p}_ms_{w}" for p in PHASES for w in ("batch1", "per_image")}
        assert (split <= names) is want and (not names & split) is (not want)


def test_scope_denoiser_makes_the_headline_latency_the_denoising_phase(write_suite: Any, tmp_path: Path) -> None:
    """`latency: {scope: denoiser}`: the numbers the gate and Pareto plots read (latency_ms_*) are the
    denoising phase's, the whole call is kept as latency_call_ms_*, and the report labels the axis."""
    from bench.plan import plan
    from bench.report.data import MetricInfo
    from bench.run import make_tasks
    from bench.store import Store
    from bench.suite import load_suite
    from bench.worker import Worker

    text = SUITE.replace("calibrate: false}", "calibrate: false, scope: denoiser}")
    suite = load_suite(write_suite(text, "denoiser.yaml"))
    with Store(tmp_path / "d.sqlite") as store:
        (task,) = make_tasks(suite, plan(suite), store)
    result = Worker().run(task)
    assert result.status == "done", result.error
    by = {m.name: m for m in result.metrics}
    for wall in ("batch1", "per_image"):
        head, call, phase = by[f"latency_ms_{wall}"], by[f"latency_call_ms_{wall}"], by[f"latency_denoising_ms_{wall}"]
        assert head.value == phase.value and head.provenance["scope"] == "denoiser"
        assert call.provenance["scope"] == "call" and call.value >= phase.value
    assert MetricInfo("latency_ms_per_image", False, "latency", "denoiser").label.startswith("denoiser latency")


def test_scope_denoiser_needs_the_phase_split(write_suite: Any, capsys: Any) -> None:
    from bench.cli import main

    text = SUITE.replace("calibrate: false}", "calibrate: false, phases: false, scope: denoiser}")
    assert main(["run", str(write_suite(text, "bad.yaml")), "--dry-run"]) == 2
    assert "scope: denoiser times the denoising phase, so it needs phases: true" in capsys.readouterr().err
