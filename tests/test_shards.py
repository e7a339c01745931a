"""Sharded cells (issue 17): a cell split into image ranges scores exactly what the whole cell scores, resumes per
shard after kill -9, fails with the shard that failed, and stays whole when a metric needs the images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bench
from bench.cli import main
from bench.shards import shard_ranges
from bench.store import Store
from tests._paths import bench_env

ANALYTIC = """
name: shards
dataset: {{name: gmm, split: eval, components: 4}}
samples: 96
base_seed: 0
batch_size: 16
samplers:
  - {{id: euler, adapter: {adapter}, options: {options}}}
axes: {{nfe: [2], resolution: [4], hardware: ["cpu:threads=1"]}}
metrics:
  fd: {{feature_space: pixels, size: 4, dim: 16, bootstrap: 50}}
  kid: {{feature_space: pixels, size: 4, dim: 16, subset_size: 32}}
  precision_recall: {{feature_space: pixels, size: 4, dim: 16}}
  cmmd: {{feature_space: pixels, size: 4, dim: 16, bootstrap: 20}}
  density_coverage: {{feature_space: pixels, size: 4, dim: 16, bootstrap: 20}}
  memory: {{}}
report: {{enabled: false, grid: 20}}
"""

EMBEDDED = """
name: shards-zoo
dataset: {name: shapes, split: eval}
samples: 96
base_seed: 0
batch_size: 32
samplers:
  - {id: teacher-euler, adapter: teacher-euler}
axes: {nfe: [2], resolution: [16], hardware: ["cpu:threads=1"]}
metrics:
  fd: {feature_space: shapes-clip, bootstrap: 50}
  kid: {feature_space: shapes-clip, subset_size: 32}
  clip_score: {model: shapes-clip, bootstrap: 50}
  cmmd: {feature_space: shapes-clip, bootstrap: 20}
report: {enabled: false, grid: 4}
"""


def _suite(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text.lstrip())
    return path


def _quality(store: Path) -> dict:
    df = bench.load_results(str(store))
    df = df[~df.metric.astype(str).str.startswith(("latency", "calibration", "peak_memory"))]
    return {(r.sampler, r.nfe, r.metric): (r.value, r.ci_low, r.ci_high, r.n) for r in df.itertuples()}


def _evidence(store: Path) -> dict:
    with Store(store, readonly=True) as st:
        return {(k, m): e.rows for k in st.done_keys() for m, e in st.evidence(k).items()}


def _same(a: Path, b: Path) -> None:
    qa, qb = _quality(a), _quality(b)
    assert qa.keys() == qb.keys() and len(qa) >= 5
    for k in qa:
        if k[2] == "fd":
            assert qa[k][0] == pytest.approx(qb[k][0], rel=1e-9, abs=0), k
        assert qa[k] == qb[k], k  # every number, interval and N exactly
    ea, eb = _evidence(a), _evidence(b)
    assert ea.keys() == eb.keys() and ea
    assert all(np.array_equal(ea[k], eb[k]) for k in ea)


def test_shard_ranges_start_on_batch_boundaries():
    assert shard_ranges(96, 16, 30) == [(0, 32), (32, 64), (64, 96)]
    assert shard_ranges(100, 16, 32) == [(0, 32), (32, 64), (64, 96), (96, 100)]
    assert shard_ranges(10, 16, 4) == [(0, 10)]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_sharded_cell_scores_exactly_the_whole_cell_analytic_world(tmp_path, capsys, jobs):
    suite = _suite(tmp_path, ANALYTIC.format(adapter="analytic-euler", options="{components: 4}"))
    whole, sharded = tmp_path / "whole" / "r.sqlite", tmp_path / "sharded" / "r.sqlite"
    assert main(["run", str(suite), "--store", str(whole), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["run", str(suite), "--store", str(sharded), "--no-progress", "--set", "shard_size=12",
                 "--jobs", jobs]) == 0  # rounded up to the batch: 6 shards of 16
    assert "shards: 6 computed, 0 reused" in capsys.readouterr().out
    _same(whole, sharded)
    with Store(sharded, readonly=True) as st:
        (key,) = st.done_keys()
        info = st.db.execute("SELECT info FROM cells").fetchone()[0]
    assert '"ranges": [[0, 16], [16, 32], [32, 48], [48, 64], [64, 80], [80, 96]]' in info  # the split, in provenance
    assert not (sharded.parent / "shards" / key).exists()  # shard files go once the cell is committed
    # the grid (20 images: shard 0 and part of shard 1) is the whole cell's, file for file
    grid = sorted((whole.parent / "samples").rglob("*.png"))
    assert len(grid) == 20
    assert [p.read_bytes() for p in grid] == [p.read_bytes() for p in sorted((sharded.parent / "samples").rglob("*.png"))]


@pytest.mark.slow
def test_a_sharded_cell_scores_exactly_the_whole_cell_embedded_world(tmp_path):
    suite = _suite(tmp_path, EMBEDDED)
    whole, sharded = tmp_path / "whole" / "r.sqlite", tmp_path / "sharded" / "r.sqlite"
    assert main(["run", str(suite), "--store", str(whole), "--no-progress"]) == 0
    assert main(["run", str(suite), "--store", str(sharded), "--no-progress", "--set", "shard_size=32"]) == 0
    _same(whole, sharded)


def test_a_failed_shard_fails_its_cell_with_the_range(tmp_path, capsys):
    suite = _suite(tmp_path, ANALYTIC.format(adapter="'tests.plugins.crashy:RaisesOnSeed'",
                                             options="{components: 4, bad_seed: 40}"))
    store = tmp_path / "r.sqlite"
    assert main(["run", str(suite), "--store", str(store), "--no-progress", "--set", "shard_size=32"]) == 1
    err = capsys.readouterr().err
    assert "shard of images 32-63 failed: ValueError: boom at seed 40" in err
    with Store(store, readonly=True) as st:
        assert st.db.execute("SELECT status FROM cells").fetchone()[0] == "failed"


def test_a_metric_that_reads_images_keeps_its_cell_whole(tmp_path, capsys):
    text = ANALYTIC.format(adapter="analytic-euler", options="{components: 4}").replace(
        "  memory: {}", "  memory: {}\n  tests.plugins.metrics:sample_stats: {}")
    suite = _suite(tmp_path, text)
    capsys.readouterr()
    assert main(["run", str(suite), "--dry-run", "--set", "shard_size=32", "--store", str(tmp_path / "r.sqlite")]) == 0
    assert "planned (not sharded: metric 'tests.plugins.metrics:sample_stats' reads the images themselves" in \
        capsys.readouterr().out
    assert main(["run", str(suite), "--no-progress", "--set", "shard_size=32", "--store", str(tmp_path / "r.sqlite")]) == 0
    assert "shards:" not in capsys.readouterr().out


@pytest.mark.slow
def test_kill_9_midway_then_resume_recomputes_only_the_missing_shards(tmp_path):
    text = ANALYTIC.format(adapter="'tests.plugins.crashy:SlowSampler'", options="{components: 4, delay: 0.4}")
    suite = _suite(tmp_path, text)
    store = tmp_path / "r.sqlite"
    cmd = [sys.executable, "-m", "bench", "run", str(suite), "--store", str(store), "--no-progress",
           "--set", "shard_size=16"]
    env = bench_env()
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    shards = tmp_path / "shards"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list(shards.rglob("*.npz"))) < 2:
            time.sleep(0.1)
        done = len(list(shards.rglob("*.npz")))
        assert 2 <= done < 6, f"could not catch the run midway ({done} of 6 shards)"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    kept = {p.name: p.stat().st_mtime_ns for p in shards.rglob("*.npz")}
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert f"shards: {6 - len(kept)} computed, {len(kept)} reused from an interrupted run" in rerun.stdout
    clean = tmp_path / "clean" / "r.sqlite"
    assert main(["run", str(suite), "--store", str(clean), "--no-progress"]) == 0
    _same(clean, store)


MIXED = """
name: mix
dataset: {name: gmm, split: eval, components: 4}
samples: 96
samples_per_resolution: {8: 32}
base_seed: 0
batch_size: 16
samplers:
  - {id: euler, adapter: analytic-euler, options: {components: 4}}
axes: {nfe: [2], resolution: [4, 8], hardware: ["cpu:threads=1"]}
metrics:
  fd: {feature_space: pixels, size: 4, dim: 16, bootstrap: 20}
report: {grid: 4}
"""


def test_a_suite_with_sharded_and_whole_cells_makes_one_report_without_a_trace_of_sharding(tmp_path, capsys):
    suite = _suite(tmp_path, MIXED)
    sharded, whole = tmp_path / "s" / "r.sqlite", tmp_path / "w" / "r.sqlite"
    assert main(["run", str(suite), "--store", str(sharded), "--no-progress", "--set", "shard_size=48",
                 "--report", str(tmp_path / "s.html")]) == 0
    assert "shards: 2 computed" in capsys.readouterr().out  # the 96-image cell in 2, the 32-image cell whole
    assert main(["run", str(suite), "--store", str(whole), "--no-progress", "--report", str(tmp_path / "w.html")]) == 0
    assert _quality(sharded) == _quality(whole)
    html = (tmp_path / "s.html").read_text()
    body = html.split("<h2>Environment and provenance")[0]  # provenance (the command line) may say it
    assert "<h2>Environment and provenance" in html and "shard" not in body.lower() and html.count("<svg") == (tmp_path / "w.html").read_text().count("<svg")
    df = bench.load_results(str(sharded))
    assert sorted(df[df.metric == "fd"].resolution) == [4, 8]


def test_auto_shard_size_gives_one_shard_per_worker_and_caps_the_shard():
    from bench.shards import AUTO_MAX_SHARD, auto_shard_size

    assert auto_shard_size(96, 16, 1) is None  # one worker, a small cell: whole
    assert shard_ranges(96, 16, auto_shard_size(96, 16, 2)) == [(0, 48), (48, 96)]
    assert len(shard_ranges(4000, 64, auto_shard_size(4000, 64, 3))) == 3
    # one worker still splits a long cell, so it resumes in pieces; no shard is larger than the cap
    ranges = shard_ranges(50_000, 64, auto_shard_size(50_000, 64, 1))
    assert len(ranges) == 5 and max(hi - lo for lo, hi in ranges) <= AUTO_MAX_SHARD + 63
    assert auto_shard_size(16, 16, 4) is None  # one batch cannot be split


def test_shard_size_auto_splits_for_the_workers_and_scores_the_whole_cell(tmp_path, capsys):
    suite = _suite(tmp_path, ANALYTIC.format(adapter="analytic-euler", options="{components: 4}"))
    whole, auto = tmp_path / "whole" / "r.sqlite", tmp_path / "auto" / "r.sqlite"
    capsys.readouterr()
    assert main(["run", str(suite), "--dry-run", "--set", "shard_size=auto", "--jobs", "3",
                 "--store", str(auto)]) == 0
    assert "planned, 3 shards" in capsys.readouterr().out
    assert main(["run", str(suite), "--dry-run", "--set", "shard_size=auto", "--store", str(auto)]) == 0
    assert "shards" not in capsys.readouterr().out  # one worker, 96 images: whole
    assert main(["run", str(suite), "--store", str(whole), "--no-progress"]) == 0
    assert main(["run", str(suite), "--store", str(auto), "--no-progress", "--set", "shard_size=auto",
                 "--jobs", "2"]) == 0
    assert "shards: 2 computed, 0 reused" in capsys.readouterr().out
    _same(whole, auto)


@pytest.mark.parametrize("bad", ["0", "-3", "several"])
def test_a_bad_shard_size_is_one_line_and_exit_2(tmp_path, capsys, bad):
    suite = _suite(tmp_path, ANALYTIC.format(adapter="analytic-euler", options="{components: 4}"))
    assert main(["run", str(suite), "--dry-run", "--set", f"shard_size={bad}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "shard_size" in err and len(err.splitlines()) == 1, err


def test_pinned_workers_run_one_shard_per_device(tmp_path, capsys):
    """One shard per GPU, simulated on CPU: each worker is spawned seeing one device (CUDA_VISIBLE_DEVICES), every
    shard records the device it ran on, and the numbers equal the whole cell's. (On a CPU machine the variable
    changes nothing else; with GPUs it is what gives each worker its own.)"""
    suite = _suite(tmp_path, ANALYTIC.format(adapter="'tests.plugins.crashy:SlowSampler'",
                                             options="{components: 4, delay: 0.2}"))
    whole, pinned = tmp_path / "whole" / "r.sqlite", tmp_path / "pinned" / "r.sqlite"
    assert main(["run", str(suite), "--store", str(whole), "--no-progress"]) == 0
    assert main(["run", str(suite), "--store", str(pinned), "--no-progress", "--set", "shard_size=16",
                 "--jobs", "2", "--devices", "0,1"]) == 0
    _same(whole, pinned)
    with Store(pinned, readonly=True) as st:
        info = json.loads(st.db.execute("SELECT info FROM cells").fetchone()[0])
    devices = info["shards"]["devices"]
    assert len(devices) == 6 and set(devices) <= {"0", "1"}, devices  # which worker took which: the scheduler's
    capsys.readouterr()
    assert main(["run", str(suite), "--dry-run", "--devices", "0,,1"]) == 2
    assert "--devices" in capsys.readouterr().err


def test_workers_spread_evenly_over_devices_and_unpin_for_a_named_gpu():
    from bench.executors.local import LocalExecutor

    ex = LocalExecutor(jobs=3, devices=["0", "1"])
    try:
        ex.prestart()
        assert sorted(s.device for s in ex._prestarted) == ["0", "0", "1"]
        ex.unpin()  # a suite with a cuda:1 cell: every worker must see every GPU
        assert [s.device for s in ex._prestarted] == [None] * 3 and ex.devices == []
    finally:
        ex.close()


def test_progress_of_a_sharded_cell_counts_images_over_all_its_shards():
    from dataclasses import replace

    from bench.run import CellProgress
    from bench.worker import CellTask

    class _Spec:
        samples = 96

    class _Cell:
        label, spec = "euler nfe=2", _Spec()

    whole = CellTask(cell=_Cell(), batch_size=16, samples_dir="", cache_dir="")  # type: ignore[arg-type]
    # shard 0-31 was finished by an interrupted run: this run has the other two
    p = CellProgress([replace(whole, shard=(32, 64)), replace(whole, shard=(64, 96))])
    a, b = "euler nfe=2 images 32-63", "euler nfe=2 images 64-95"
    assert p.title(a) == p.title(b) == "euler nfe=2"
    p.update(a, "sample")
    p.update(b, "sample")
    text = p.update(a, "sample 16/32")
    assert text.startswith("sampled 48/96 images (2 of 2 shards running), ") and "sampling eta" in text, text
    p.update(b, "sample 16/32")
    assert (p.label, p.done, p.total) == ("euler nfe=2", 64, 96)
    p.finish(a)
    p.update(b, "sample 32/32")
    assert (p.done, p.total) == (96, 96)


def test_devices_option_parses_and_auto_pins_nothing_without_gpus(monkeypatch):
    from bench.errors import BenchError
    from bench.hardware import worker_devices

    assert worker_devices("0,1", 2) == ["0", "1"] and worker_devices(" 3 ", 1) == ["3"]
    assert worker_devices("none", 8) == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert worker_devices("auto", 1) == []  # one worker sees every GPU anyway
    import torch

    if not torch.cuda.is_available():
        assert worker_devices("auto", 4) == []
    for bad in ("", "0,,1", "a b", "0;1"):
        with pytest.raises(BenchError, match="--devices"):
            worker_devices(bad, 2)


@pytest.mark.slow
def test_an_interrupted_sharded_cell_resumes_per_shard_in_the_embedded_world(tmp_path, capsys):
    """Item 3 in the embedded world: a run whose middle shard fails keeps the other shards' files; the rerun
    computes only the missing shard and scores exactly what an uninterrupted, unsharded run scores. (kill -9 of
    the driver is the analytic-world test above; the shard files are the same unit of resume.)"""
    marker = tmp_path / "interrupt"
    marker.write_text("")
    text = EMBEDDED.replace("  - {id: teacher-euler, adapter: teacher-euler}",
                            "  - {id: teacher-euler, adapter: 'tests.plugins.crashy:TeacherFailsWhileMarked', "
                            f"options: {{marker: '{marker}', bad_seed: 40}}}}")
    suite = _suite(tmp_path, text)
    whole, sharded = tmp_path / "whole" / "r.sqlite", tmp_path / "sharded" / "r.sqlite"
    args = ["run", str(suite), "--store", str(sharded), "--no-progress", "--set", "shard_size=32"]
    assert main(args) == 1
    assert "shard of images 32-63 failed: ValueError: interrupted at seed 40" in capsys.readouterr().err
    kept = sorted(p.name for p in (sharded.parent / "shards").rglob("*.npz"))
    assert kept == ["000000000-000000032.npz", "000000064-000000096.npz"]
    marker.unlink()
    assert main(args) == 0
    assert "shards: 1 computed, 2 reused from an interrupted run" in capsys.readouterr().out
    assert main(["run", str(suite), "--store", str(whole), "--no-progress"]) == 0
    _same(whole, sharded)
