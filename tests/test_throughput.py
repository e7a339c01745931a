"""Throughput (issue 17 item 7): images/s at the batch that gives the most, searched up to a cap, with an
out-of-memory batch ending the search instead of failing the cell."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.metrics.latency import out_of_memory
from bench.store import Store

SUITE = """
name: throughput
dataset: {{name: gmm, split: eval, components: 4}}
samples: 32
batch_size: 16
samplers:
  - {{id: s, adapter: "tests.plugins.crashy:OutOfMemoryAbove", options: {{components: 4, max_batch: {oom}}}}}
axes: {{nfe: [2], resolution: [4], hardware: ["cpu:threads=1"]}}
metrics:
  latency: {{batch_sizes: [1, 4], min_run_time: 0.01, max_run_time: 0.02, min_runs: 2, throughput_max_batch: 64}}
report: {{enabled: false, grid: 0}}
"""


def _throughput(tmp_path, oom: int) -> dict:
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.format(oom=oom).lstrip())
    store = tmp_path / "r.sqlite"
    assert main(["run", str(suite), "--store", str(store), "--no-progress"]) == 0
    with Store(store, readonly=True) as st:
        row = st.db.execute("SELECT value, ci_low, ci_high, provenance FROM metrics WHERE name='throughput_img_s'"
                            ).fetchone()
    assert row is not None
    return {"value": row[0], "low": row[1], "high": row[2], **json.loads(row[3])}


def test_the_search_stops_at_the_first_batch_out_of_memory(tmp_path):
    t = _throughput(tmp_path, oom=16)
    assert [x["batch_size"] for x in t["tried"]] == [4, 8, 16]
    assert t["stopped"] == "out of memory at batch 32"
    best = max(t["tried"], key=lambda x: x["img_s"])
    assert t["batch_size"] == best["batch_size"] and t["value"] == pytest.approx(best["img_s"])
    assert t["low"] <= t["value"] <= t["high"]


def test_without_running_out_the_search_goes_to_the_cap(tmp_path):
    t = _throughput(tmp_path, oom=10_000)
    assert [x["batch_size"] for x in t["tried"]] == [4, 8, 16, 32, 64] and t["stopped"] == "cap 64"


def test_only_memory_errors_end_the_search():
    import torch

    assert out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate ... "
                                      "out of memory"))
    assert not out_of_memory(RuntimeError("shape mismatch"))
    assert not out_of_memory(ValueError("out of memory"))
