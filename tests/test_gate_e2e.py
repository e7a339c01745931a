"""`bench run` -> `bench baseline save` -> `bench gate` on a real tiny run (analytic world, FD in pixel space)."""

from __future__ import annotations

import json
import os
import time

import pytest

from bench.adapters.analytic import AnalyticEuler
from bench.cli import main
from bench.gate import run_gate

SLOWDOWN_ENV = "BENCH_TEST_GATE_SLOWDOWN"


class SlowableEuler(AnalyticEuler):
    """Analytic Euler that spins for (factor - 1) x its own sampling time when BENCH_TEST_GATE_SLOWDOWN is set.

    The injected regression: the same images and NFE, `factor` times the work per call.
    """

    def sample(self, req):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out = super().sample(req)
        factor = float(os.environ.get(SLOWDOWN_ENV) or 1)
        if factor > 1:
            end = time.perf_counter() + (factor - 1) * (time.perf_counter() - t0)
            while time.perf_counter() < end:
                pass
        return out


SUITE = """
name: gate-e2e
dataset: {name: gmm, split: eval, components: 4}
samples: 96
base_seed: 0
batch_size: 96
timeout: 120
samplers:
  - {id: euler, adapter: "tests.test_gate_e2e:SlowableEuler", options: {components: 4}}
axes: {nfe: [2, 4], resolution: [4], hardware: ["cpu:threads=1"]}
metrics:
  fd: {feature_space: pixels, size: 4, dim: 16, bootstrap: 50}
  latency: {batch_sizes: [1, 16], min_run_time: 0.05, max_run_time: 0.3}
report: {enabled: false, grid: 0}
"""


@pytest.mark.slow
def test_run_save_gate_then_catch_a_slower_sampler(write_suite, tmp_path, monkeypatch, capsys):
    suite = write_suite(SUITE)
    store, baseline = tmp_path / "r.sqlite", tmp_path / "baselines" / "gate-e2e.cpu.json"
    monkeypatch.delenv(SLOWDOWN_ENV, raising=False)
    assert main(["run", str(suite), "--store", str(store), "--no-progress"]) == 0
    assert main(["baseline", "save", "--store", str(store), "-o", str(baseline)]) == 0
    data = json.loads(baseline.read_text())
    assert data["feature_spaces"]["fd"][0]["feature_space"] == "pixels" and data["samples"] == 96
    assert data["calibration"]["cpu:threads=1"]["median_ms"] > 0
    euler2 = next(c for c in data["cells"] if c["sampler"] == "euler" and c["nfe_requested"] == 2)
    assert euler2["nfe_counted"] == 2 and euler2["metrics"]["fd"]["ci_low"] < euler2["metrics"]["fd"]["ci_high"]

    # the same run against its own baseline: every check passes exactly
    capsys.readouterr()
    assert main(["gate", "--baseline", str(baseline), "--store", str(store)]) == 0
    assert "PASS: 0 regression(s)" in capsys.readouterr().out

    # the sampler becomes 5x slower (a margin for this shared CPU's timing noise, docs/ci.md): a new run
    # (recomputed, same suite) fails on its calibrated latency, and nothing else changed
    monkeypatch.setenv(SLOWDOWN_ENV, "5")
    assert main(["run", str(suite), "--store", str(store), "--no-progress", "--force"]) == 0
    res = run_gate(baseline, store)
    assert res.exit_code == 1
    slow = {c.cell.split(" res=")[0] for c in res.failures if c.metric == "latency_ms_per_image/cal"}
    assert slow and slow <= {"euler nfe=2", "euler nfe=4"}
    assert all(c.metric in ("latency_ms_per_image/cal", "fd vs latency_ms_per_image/cal") for c in res.failures)
    fd = [c for c in res.checks if c.metric == "fd"]
    assert len(fd) == 2 and all(c.status == "PASS" and c.change == 0 for c in fd)  # same images, same FD
