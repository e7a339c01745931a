"""`bench run` end to end on tiny suites: store, resume, isolation of failures, crash recovery."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import bench
from bench.cli import main
from tests._paths import SUITES, bench_env

COLUMNS = ["run_id", "suite", "sampler", "family", "nfe", "nfe_counted", "resolution", "hardware",
           "status", "metric", "value", "ci_low", "ci_high", "n", "higher_is_better"]

EULER = "- {id: euler, adapter: analytic-euler, options: {components: 4}}"


def _quality(store: Path) -> dict[tuple[str, int, str], float]:
    df = bench.load_results(str(store))
    df = df[df.metric.isin(["pixel_mean", "pixel_mse_to_ref"])]
    return {(r.sampler, r.nfe, r.metric): r.value for r in df.itertuples()}


def test_run_fills_store_then_resumes_without_recomputing(tiny_suite, tmp_path, capsys):
    suite = tiny_suite(EULER + "\n- {id: heun, adapter: analytic-heun, options: {components: 4}}")
    store = tmp_path / "r.sqlite"
    assert main(["run", str(suite), "--store", str(store), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "6 computed, 0 reused" in out
    df = bench.load_results(str(store))
    assert list(df.columns[: len(COLUMNS)]) == COLUMNS
    assert set(df.metric) >= {"latency_ms_per_image", "latency_ms_batch1", "peak_memory_mb", "pixel_mean"}
    counted = df.drop_duplicates(["sampler", "nfe"]).set_index(["sampler", "nfe"]).nfe_counted
    assert counted[("euler", 4)] == 4 and counted[("heun", 4)] == 7
    lat = df[df.metric == "latency_ms_per_image"]
    assert (lat.ci_low <= lat.value).all() and (lat.value <= lat.ci_high).all() and (lat.value > 0).all()
    pngs = sorted((tmp_path / "samples").glob("*/*.png"))
    assert len([p for p in pngs if p.name == "000.png"]) == 6
    first = _quality(store)
    written = {p: p.stat().st_mtime_ns for p in pngs}

    assert main(["run", str(suite), "--store", str(store), "--no-progress"]) == 0
    assert "0 computed, 6 reused" in capsys.readouterr().out
    resumed = bench.load_results(str(store))  # the second run's own rows
    assert resumed.run_id.nunique() == 1 and resumed.run_id.iloc[0] != df.run_id.iloc[0]
    assert resumed.reused.all()
    assert _quality(store) == first  # the reused cells carry the first run's numbers
    assert {p: p.stat().st_mtime_ns for p in pngs} == written  # no cell sampled again

    assert main(["run", str(suite), "--store", str(store), "--no-progress", "--force"]) == 0
    assert "6 computed, 0 reused" in capsys.readouterr().out
    assert not bench.load_results(str(store)).reused.any()
    assert _quality(store) == first  # recomputed from the same seeds: the same numbers


def test_failed_cell_is_retried_on_resume(tiny_suite, tmp_path, capsys):
    # Only finished cells are reused (README "How a run works"): a failed cell is run again by the next run.
    suite = tiny_suite("- {id: raises, adapter: 'tests.plugins.crashy:RaisingSampler', options: {components: 4}}")
    store = tmp_path / "r.sqlite"
    assert main(["run", str(suite), "--store", str(store), "--no-progress"]) == 1
    capsys.readouterr()
    assert main(["run", str(suite), "--store", str(store), "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert "0 computed, 2 reused from earlier runs, 1 failed" in out
    assert "raises nfe=2 res=4 hw=cpu: ValueError: boom at nfe 2" in err


def test_editing_a_metric_option_recomputes_the_cells(tiny_suite, tmp_path, capsys):
    # The cell-key contract (README): a key hashes everything that determines a cell's numbers, metric options
    # included, so a run after such an edit measures again instead of reusing stale results.
    suite = tiny_suite(EULER.replace("{components: 4}", "{components: 4}, nfe: [1]"))
    store = tmp_path / "r.sqlite"
    assert main(["run", str(suite), "--store", str(store), "--no-progress"]) == 0
    assert "1 computed, 0 reused" in capsys.readouterr().out
    text = suite.read_text()
    suite.write_text(text.replace("batch_sizes: [1, 4]", "batch_sizes: [1, 2]"))
    assert main(["run", str(suite), "--store", str(store), "--no-progress"]) == 0
    assert "1 computed, 0 reused" in capsys.readouterr().out
    sizes = bench.load_results(str(store)).query("metric == 'latency_ms_per_image'").provenance.iloc[0]
    assert '"batch_size": 2' in sizes


def test_image_i_is_sampled_from_seed_base_seed_plus_i(tiny_suite, tmp_path):
    # README fairness rule: image i of every sampler starts from the noise of seed base_seed + i, whatever the
    # batch size. SeedEcho writes the seed it was handed into the image; the saved grid images show it.
    from tests.plugins.seed_echo import decode

    suite = tiny_suite("- {id: echo, adapter: 'tests.plugins.seed_echo:SeedEcho', options: {components: 4}, "
                       "nfe: [1]}", samples=7)
    store = tmp_path / "r.sqlite"
    args = ["run", str(suite), "--store", str(store), "--no-progress",
            "--set", "base_seed=1000", "--set", "batch_size=3", "--set", "report.grid=7"]
    assert main(args) == 0
    pngs = sorted((tmp_path / "samples").glob("*/*.png"))
    assert [decode(p) for p in pngs] == [1000 + i for i in range(7)]


def test_same_suite_same_numbers_in_fresh_store(tiny_suite, tmp_path):
    suite = tiny_suite(EULER)
    assert main(["run", str(suite), "--store", str(tmp_path / "a.sqlite"), "--no-progress"]) == 0
    assert main(["run", str(suite), "--store", str(tmp_path / "b.sqlite"), "--no-progress", "--isolate"]) == 0
    a, b = _quality(tmp_path / "a.sqlite"), _quality(tmp_path / "b.sqlite")
    assert a == b and len(a) == 6


def test_bad_cells_fail_alone(tiny_suite, tmp_path, capsys):
    suite = tiny_suite(
        """
        - {id: raises, adapter: "tests.plugins.crashy:RaisingSampler", options: {components: 4}}
        - {id: exits, adapter: "tests.plugins.crashy:ExitingSampler", options: {components: 4}}
        - {id: segfaults, adapter: "tests.plugins.crashy:SegfaultSampler", options: {components: 4}}
        - {id: hangs, adapter: "tests.plugins.crashy:HangingSampler", options: {components: 4}, nfe: [2, 4]}
        """.replace("        ", ""),
        timeout=8,
    )
    store = tmp_path / "r.sqlite"
    code = main(["run", str(suite), "--store", str(store), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "4 failed cell(s)" in err
    assert "raises nfe=2 res=4 hw=cpu: ValueError: boom at nfe 2" in err
    assert "exits nfe=2 res=4 hw=cpu: worker exited with code 3" in err
    assert "segfaults nfe=2 res=4 hw=cpu: worker killed by SIGSEGV" in err
    assert "hangs nfe=2 res=4 hw=cpu: timed out after 8 s" in err
    df = bench.load_results(str(store))
    status = df.drop_duplicates(["sampler", "nfe"]).set_index(["sampler", "nfe"]).status
    assert (status.xs(2, level=1) == "failed").all()
    assert (status[status.index.get_level_values(1) != 2] == "done").all()
    assert status[("hangs", 4)] == "done"  # the worker after a killed one starts fresh and carries on


def test_sigkill_midway_then_resume_computes_each_cell_once(tiny_suite, tmp_path):
    suite = tiny_suite("- {id: slow, adapter: 'tests.plugins.crashy:SlowSampler', "
                       "options: {components: 4, delay: 0.3}, nfe: [1, 2, 3, 4, 5, 6]}")
    store = tmp_path / "r.sqlite"
    env = bench_env()
    cmd = [sys.executable, "-m", "bench", "run", str(suite), "--store", str(store), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        done = 0
        while time.time() < deadline and done < 2:
            time.sleep(0.2)
            if store.exists():
                with sqlite3.connect(store) as db:
                    try:
                        done = db.execute("SELECT COUNT(*) FROM cells WHERE status='done'").fetchone()[0]
                    except sqlite3.OperationalError:
                        done = 0
        assert 2 <= done < 6, f"could not catch the run midway (done={done})"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with sqlite3.connect(store) as db:
        first = {k for (k,) in db.execute("SELECT cell_key FROM cells WHERE status='done'")}
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{6 - len(first)} computed, {len(first)} reused" in rerun.stdout
    with sqlite3.connect(store) as db:
        runs = dict(db.execute("SELECT cell_key, run_id FROM cells"))
        first_run = db.execute("SELECT run_id FROM runs ORDER BY started LIMIT 1").fetchone()[0]
    assert len(runs) == 6
    assert {k for k, r in runs.items() if r == first_run} == first  # nothing from run 1 was recomputed
    # an uninterrupted run gives the same quality numbers
    clean = tmp_path / "clean.sqlite"
    assert main(["run", str(suite), "--store", str(clean), "--no-progress"]) == 0
    assert _quality(store) == _quality(clean)


def test_export_formats(tiny_suite, tmp_path, capsys):
    suite = tiny_suite(EULER.replace("{components: 4}", "{components: 4}, nfe: [1]"))
    store = tmp_path / "r.sqlite"
    assert main(["run", str(suite), "--store", str(store), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", "--store", str(store), "--format", "csv", "-o", str(tmp_path / "x.csv")]) == 0
    assert main(["export", "--store", str(store), "--format", "parquet", "-o", str(tmp_path / "x.parquet")]) == 0
    a, b = pd.read_csv(tmp_path / "x.csv"), pd.read_parquet(tmp_path / "x.parquet")
    assert len(a) == len(b) > 0 and list(a.columns) == list(b.columns)
    assert main(["export", "--store", str(tmp_path / "missing.sqlite")]) == 2
    assert "no results store" in capsys.readouterr().err


def test_unsupported_cells_are_skipped_with_reason(write_suite, capsys):
    suite = write_suite("""
        name: skips
        dataset: {name: gmm}
        samples: 8
        samplers: [{id: e, adapter: analytic-euler}]
        axes: {nfe: [1, 2], resolution: [4, 8], hardware: [cpu, "cpu:threads=1", cuda, "cuda:1", mps]}
    """)
    assert main(["run", "--dry-run", str(suite)]) == 0
    out = capsys.readouterr().out
    assert "20 cells: 8 planned, 12 skipped" in out
    assert out.count("skipped: no CUDA device") == 8
    assert out.count("skipped: no MPS device") == 4


@pytest.mark.slow
def test_smoke_suite_dry_run_counts_product(capsys):
    assert main(["run", "--dry-run", str(SUITES / "smoke.yaml")]) == 0
    out = capsys.readouterr().out
    assert "18 cells: 9 planned, 9 skipped" in out


@pytest.mark.parametrize("path", sorted(SUITES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_suite_validates_and_plans(path):
    """A shipped suite must stay valid as the schema and adapters change: every cell planned or skipped with a reason."""
    from bench.plan import plan
    from bench.suite import load_suite

    cells = plan(load_suite(path))
    assert cells
    assert all(c.status == "planned" or c.reason for c in cells)
