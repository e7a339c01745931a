"""The generic flow map's time grid: the default convention (noise t = 0 -> data t = 1), the SD3 / FLUX one
(noise t = 1 -> data t = 0), explicit `times`, each with and without the SD3-style `time_shift`.

A recording network stores the (s, t) of every call; the expected grids are written from the SD3 shift rule
(sigma -> s sigma / (1 + (s - 1) sigma), sigma the noise level) by hand, not from the adapter.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from bench.adapters.protocol import SampleRequest
from bench.adapters.registry import build_sampler
from bench.errors import BenchError
from bench.hardware import HardwareSpec


class Recorder(torch.nn.Module):
    calls: ClassVar[list[tuple[float, float]]] = []

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, cond: object = None) -> torch.Tensor:
        Recorder.calls.append((round(float(s[0]), 6), round(float(t[0]), 6)))
        return x + self.w


def _grid(tmp_path: Path, nfe: int, **cfg: Any) -> list[float]:
    (tmp_path / "config.json").write_text(json.dumps({"network": f"{__name__}:Recorder", **cfg}))
    s = build_sampler("flow-map", {"config": str(tmp_path)})
    s.load(HardwareSpec.parse("cpu:threads=1"))
    Recorder.calls.clear()
    s.sample(SampleRequest(seeds=[0], nfe=nfe, height=4, width=4))
    steps = list(Recorder.calls)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(steps))  # each step starts where one ended
    return [steps[0][0], *[t for _, t in steps]]


def test_default_convention_runs_noise_0_to_data_1(tmp_path: Path) -> None:
    assert _grid(tmp_path, 4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    # shift 3 on the noise level n = 1 - t: n = 0.5 -> 0.75, i.e. t = 0.25; ends fixed
    assert _grid(tmp_path, 2, time_shift=3.0) == pytest.approx([0.0, 0.25, 1.0])


def test_sd3_flux_convention_runs_noise_1_to_data_0(tmp_path: Path) -> None:
    assert _grid(tmp_path, 2, noise_time=1.0, data_time=0.0) == [1.0, 0.5, 0.0]
    # SD3: sigma = t; 3 * 0.5 / (1 + 2 * 0.5) = 0.75; with 4 steps 0.25 -> 0.5, 0.75 -> 0.9
    assert _grid(tmp_path, 2, noise_time=1.0, data_time=0.0, time_shift=3.0) == pytest.approx([1.0, 0.75, 0.0])
    assert _grid(tmp_path, 4, noise_time=1.0, data_time=0.0, time_shift=3.0) == pytest.approx(
        [1.0, 0.9, 0.75, 0.5, 0.0])


def test_explicit_times_are_shifted_too_and_a_bad_shift_fails_at_load(tmp_path: Path) -> None:
    cfg = {"noise_time": 1.0, "data_time": 0.0, "times": {"2": [1.0, 0.4, 0.0]}}
    assert _grid(tmp_path, 2, **cfg) == pytest.approx([1.0, 0.4, 0.0])
    assert _grid(tmp_path, 2, **cfg, time_shift=3.0) == pytest.approx([1.0, 1.2 / 1.8, 0.0])
    assert _grid(tmp_path, 2, **cfg, time_shift=1.0) == pytest.approx([1.0, 0.4, 0.0])
    with pytest.raises(BenchError, match="time_shift"):
        _grid(tmp_path, 2, time_shift=0)
