"""Cost of the quality metrics per cell (pytest-benchmark): 2,000 samples at 32 x 32 in the embedded space.

One round = what the worker does after sampling a cell: embed the 2,000 samples in `shapes-clip` once, then FD
(200 bootstrap resamples, noise floor), KID, precision / recall and CLIP score (200 resamples), all reading the
same features. `test_quality_metrics_per_cell` has the reference statistics cached (as every cell of a sweep
after the first); `test_quality_metrics_cold_cache` also embeds the reference and the disjoint floor set.
Target: a warm cell under 10 s on a 2-core CPU.

Run: `python -m pytest tests/benchmarks/test_bench_metrics.py --benchmark-only` (or `nox -s benchmarks`).
Uses the shipped shapes-clip weights when present, else randomly initialised ones of the same architecture
(same cost); `extra_info["weights"]` says which.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.metrics.registry import QualityContext, get_metric

N, RES = 2000, 32
METRICS = (
    ("fd", {"feature_space": "shapes-clip", "bootstrap": 200}),
    ("kid", {"feature_space": "shapes-clip"}),
    ("precision_recall", {"feature_space": "shapes-clip"}),
    ("clip_score", {"model": "shapes-clip", "bootstrap": 200}),
)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: Any) -> Iterator[str]:
    from bench.zoo import checkpoints, shapes_clip

    if checkpoints.weight_path("shapes-clip").is_file():
        yield "shipped"
        return
    folder = tmp_path_factory.mktemp("zoo")
    old = os.environ.get(checkpoints.ENV_VAR)
    os.environ[checkpoints.ENV_VAR] = str(folder)
    torch.manual_seed(0)
    checkpoints.save_fp16(shapes_clip.to_compact(shapes_clip.build_model().state_dict()),
                          checkpoints.weight_path("shapes-clip"), {})
    yield "random (same architecture)"
    if old is None:
        os.environ.pop(checkpoints.ENV_VAR, None)
    else:
        os.environ[checkpoints.ENV_VAR] = old


@pytest.fixture(scope="module")
def cell_data() -> dict[str, Any]:
    from bench.zoo.shapes import ShapesDataset

    ds = ShapesDataset("eval")
    idx = list(range(N))
    # A near-perfect sampler: other images of the same split (sampling is not part of the metric cost).
    return {"dataset": ds, "indices": idx, "images": ds.images([i + 100_000 for i in idx], RES),
            "prompts": ds.conditions(idx).prompts}


def _ctx(data: dict[str, Any], cache: Path) -> QualityContext:
    return QualityContext(images=data["images"], indices=data["indices"], seeds=data["indices"],
                          prompts=data["prompts"], labels=None, dataset=data["dataset"], resolution=RES,
                          device=torch.device("cpu"), cache_dir=cache, seed=0)


def _all_metrics(ctx: QualityContext) -> dict[str, float]:
    out = {}
    for name, opts in METRICS:
        out.update({r.name: r.value for r in get_metric(name)(ctx, dict(opts))})
    return out


def _clean() -> None:
    gc.collect()


def _info(benchmark: Any, weights: str) -> None:
    benchmark.group = "quality metrics per cell"
    benchmark.extra_info.update({"samples": N, "resolution": RES, "feature_space": "shapes-clip",
                                 "metrics": [m for m, _ in METRICS], "weights": weights,
                                 "torch_threads": torch.get_num_threads()})


def _timed(benchmark: Any, fn: Any) -> Any:
    """fn, recording this process's CPU seconds per round too (all threads): on a busy shared machine the
    wall clock measures the neighbours, the CPU seconds still measure the work."""
    cpu = benchmark.extra_info.setdefault("cpu_seconds", [])

    def run() -> Any:
        t0 = time.process_time()
        out = fn()
        cpu.append(round(time.process_time() - t0, 3))
        return out

    return run


def test_quality_metrics_per_cell(benchmark: Any, weights: str, cell_data: dict[str, Any], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _all_metrics(_ctx(cell_data, cache))  # fills the reference cache once, as the first cell of a sweep does
    _info(benchmark, weights)
    values = benchmark.pedantic(_timed(benchmark, lambda: _all_metrics(_ctx(cell_data, cache))), setup=_clean,
                                rounds=3, iterations=1)
    assert {"fd", "fd_floor", "kid", "precision", "recall", "clip_score:shapes-clip"} <= set(values)


def test_quality_metrics_cold_cache(benchmark: Any, weights: str, cell_data: dict[str, Any], tmp_path: Path) -> None:
    rounds = iter(range(100))
    _info(benchmark, weights)
    values = benchmark.pedantic(_timed(benchmark, lambda: _all_metrics(_ctx(cell_data, tmp_path / f"c{next(rounds)}"))),
                                setup=_clean, rounds=2, iterations=1)
    assert "fd" in values
