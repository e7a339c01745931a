"""The Ray executor on a real local Ray instance: same numbers as the local executor, fast skips, crash isolation.

Needs the [ray] extra (CI installs it). Each test starts its own Ray instance (about 5 s on a 2-core machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import ray  # noqa: F401  (the [dev] extra installs it: a missing ray is a failure, not a skip)

import bench
from bench.run import run_suite
from tests._paths import bench_env

ROOT = Path(__file__).resolve().parents[1]
# Measurements that depend on the process and the moment, not on the samples (every latency_* metric, its
# phases included).
MACHINE_METRICS = {"peak_memory_mb", "calibration_ms"}


def _cells(store: Path) -> dict[str, dict]:
    """cell_key -> status, reason, nfe_counted, quality metrics, sample grid bytes (the run's own rows)."""
    df = bench.load_results(str(store))
    out: dict[str, dict] = {}
    for key, rows in df.groupby("cell_key", sort=False):
        first = rows.iloc[0]
        grid = {}
        if isinstance(first.samples_dir, str):
            grid = {p.name: p.read_bytes() for p in sorted(Path(first.samples_dir).glob("*.png"))}
        out[key] = {
            "label": (first.sampler, int(first.nfe), first.hardware), "status": first.status,
            "reason": first.reason, "nfe_counted": first.nfe_counted, "grid": grid,
            "quality": {r.metric: (r.value, r.ci_low, r.ci_high) for r in rows.itertuples()
                        if isinstance(r.metric, str) and r.metric not in MACHINE_METRICS
                        and not r.metric.startswith("latency")},
        }
    return out


@pytest.mark.slow
def test_smoke_suite_on_ray_gives_the_local_executors_numbers(tmp_path):
    smoke = ROOT / "suites" / "smoke.yaml"
    t0 = time.perf_counter()
    local = run_suite(smoke, tmp_path / "local" / "r.sqlite", progress=False)
    t_local = time.perf_counter() - t0
    t0 = time.perf_counter()
    on_ray = run_suite(smoke, tmp_path / "ray" / "r.sqlite", executor="ray", progress=False)
    t_ray = time.perf_counter() - t0
    print(f"smoke wall time: local {t_local:.1f} s, ray {t_ray:.1f} s ({t_ray / t_local:.2f}x)")
    assert local.ok and on_ray.ok, (local.failed, on_ray.failed)
    a, b = _cells(tmp_path / "local" / "r.sqlite"), _cells(tmp_path / "ray" / "r.sqlite")
    assert a.keys() == b.keys() and len(a) == 18
    done = [k for k in a if a[k]["status"] == "done"]
    assert len(done) == 9 and all(b[k]["status"] == "done" for k in done)
    for k in done:
        assert b[k]["nfe_counted"] == a[k]["nfe_counted"], a[k]["label"]
        assert b[k]["quality"] == a[k]["quality"], a[k]["label"]
        assert b[k]["grid"] == a[k]["grid"] and len(a[k]["grid"]) == 8, a[k]["label"]  # the same pixels
    for k in set(a) - set(done):  # the cuda half: no GPU on this machine, nor in its Ray instance
        assert a[k]["status"] == b[k]["status"] == "skipped"
        assert "no Ray node can run cuda" in b[k]["reason"] and "GPU=0" in b[k]["reason"]


FAILURES_SUITE = """
name: ray-failures
dataset: {name: gmm, split: eval, components: 4}
samples: 32
base_seed: 0
batch_size: 16
timeout: 60
samplers:
  - {id: slow, adapter: "tests.plugins.crashy:SlowSampler", options: {components: 4, delay: 0.3}, nfe: [1, 2, 3, 4]}
  - {id: exits, adapter: "tests.plugins.crashy:ExitingSampler", options: {components: 4}, nfe: [1, 2, 4]}
axes: {nfe: [1], resolution: [4], hardware: [cpu, "cuda:accelerator=H100"]}
metrics:
  tests.plugins.metrics:sample_stats: {}
  latency: {batch_sizes: [1], min_run_time: 0.01, max_run_time: 0.05, calibrate: false}
report: {grid: 2}
"""


def _bench_workers(root_pid: int) -> list[psutil.Process]:
    """Ray actor processes (`ray::BenchWorker...`) under the given process: started by this test only."""
    found = []
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            if p.cmdline() and p.cmdline()[0].startswith("ray::BenchWorker"):
                found.append(p)
        except psutil.Error:
            continue
    return found


def _done_count(store: Path) -> int:
    if not store.exists():
        return 0
    with sqlite3.connect(store) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM cells WHERE status='done'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def test_killed_and_exiting_workers_fail_only_their_cells_then_a_rerun_completes(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(FAILURES_SUITE.lstrip())
    store = tmp_path / "r.sqlite"
    env = bench_env()
    cmd = [sys.executable, "-m", "bench", "run", str(suite), "--store", str(store), "--no-progress",
           "--executor", "ray"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    killed: int | None = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline and _done_count(store) < 1:  # the first slow cell is done ...
            time.sleep(0.1)
        workers = _bench_workers(proc.pid)
        assert len(workers) == 1, workers  # ... and the same actor runs the second one now
        killed = workers[0].pid
        os.kill(killed, signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, err
    assert "14 cells planned: 5 computed, 0 reused from earlier runs, 2 failed; 7 skipped" in out, out + err
    cells = {c["label"]: c for c in _cells(store).values()}
    failed = {label: c["reason"] for label, c in cells.items() if c["status"] == "failed"}
    slow_failed = [label for label in failed if label[0] == "slow"]
    assert len(slow_failed) == 1 and slow_failed[0][1] in (2, 3, 4), failed
    assert f"Ray worker (pid {killed} " in failed[slow_failed[0]], failed
    assert "died" in failed[("exits", 2, "cpu")]
    assert {label for label, c in cells.items() if c["status"] == "done"} == {
        ("slow", n, "cpu") for n in (1, 2, 3, 4) if ("slow", n, "cpu") not in failed} | {
        ("exits", 1, "cpu"), ("exits", 4, "cpu")}  # a fresh actor took the cells after each death

    # H100 cells: skipped with the reason before any cell ran, and after Ray was up (no timing window: on a
    # loaded machine Ray's start-up alone takes over 10 s; the order is the rule)
    with sqlite3.connect(store) as db:
        started = db.execute("SELECT started FROM runs").fetchone()[0]
        first_cell = db.execute("SELECT MIN(started) FROM cells WHERE status!='skipped'").fetchone()[0]
        skips = db.execute("SELECT hardware, error, finished, info FROM cells WHERE status='skipped'").fetchall()
    assert len(skips) == 7
    for hardware, reason, finished, info in skips:
        assert hardware == "cuda:accelerator=H100" and "no Ray node has accelerator H100" in reason
        ray_ready = json.loads(info)["executor"]["ray_ready_at"]
        assert started <= finished <= first_cell and ray_ready <= first_cell
    print(f"H100 skip reported {finished - started:.1f} s after the run started, "
          f"{finished - ray_ready:.2f} s after Ray was ready")

    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert rerun.returncode == 1  # ExitingSampler exits at NFE 2 every time
    assert "14 cells planned: 1 computed, 5 reused from earlier runs, 1 failed; 7 skipped" in rerun.stdout, \
        rerun.stdout + rerun.stderr
    assert _cells(store)[next(k for k, c in _cells(store).items() if c["label"] == slow_failed[0])]["status"] == "done"


MULTINODE_SUITE = """
name: ray-multinode
dataset: {name: gmm, split: eval, components: 4}
samples: 96
base_seed: 0
batch_size: 32
timeout: 120
samplers:
  - {id: euler, adapter: analytic-euler, options: {components: 4}, nfe: [1, 2]}
  - {id: heun, adapter: analytic-heun, options: {components: 4}}
  - {id: tagged, adapter: analytic-euler, options: {components: 4}, hardware: ["cpu:threads=1,accelerator=T4"]}
axes: {nfe: [1], resolution: [4], hardware: ["cpu:threads=1"]}
metrics:
  fd: {feature_space: pixels, bootstrap: 10}
report: {grid: 2}
"""


@pytest.fixture(autouse=True)
def ray_root(monkeypatch):
    """A fresh, short folder for everything Ray writes (socket paths must stay < 107 bytes), removed afterwards.

    `ray.cluster_utils.Cluster` writes its address file under Ray's default temp root ($RAY_TMPDIR/ray, else
    $TMPDIR/ray, else /tmp/ray) even when its nodes get their own temp_dir; pointing RAY_TMPDIR here keeps the
    test off /tmp/ray, which exists only on a machine where Ray ran before."""
    from bench.executors.ray import short_temp_dir

    root = short_temp_dir("bench-rt-")
    (root / "ray").mkdir()
    monkeypatch.setenv("RAY_TMPDIR", str(root))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_multinode_cluster_shares_reference_statistics_and_routes_labels(tmp_path, ray_root):
    """Three raylets on this machine (a head without CPUs, two 1-CPU workers, one labelled accelerator:T4)."""
    from ray.cluster_utils import Cluster

    from bench.executors.ray import loopback_only

    suite = tmp_path / "suite.yaml"
    suite.write_text(MULTINODE_SUITE.lstrip())
    store = tmp_path / "r.sqlite"
    ray_tmp = str(ray_root / "nodes")
    node_args = {"temp_dir": ray_tmp, "env_vars": {"PYTHONPATH": str(ROOT)}}
    with loopback_only():
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "include_dashboard": False, "_system_config": {"enable_autoscaler_v2": True},
            **node_args})
        try:
            tagged_node = cluster.add_node(num_cpus=1, resources={"accelerator:T4": 1}, **node_args)
            cluster.add_node(num_cpus=1, **node_args)
            cluster.wait_for_nodes()
            summary = run_suite(suite, store, executor="ray", progress=False,
                                executor_options={"address": cluster.address})
        finally:
            cluster.shutdown()
    assert summary.ok and summary.computed == 4, summary.failed
    df = bench.load_results(str(store))
    fd = {(r.sampler, r.nfe): r for r in df[df.metric == "fd"].itertuples()}
    assert len(fd) == 4
    assert fd[("tagged", 1)].value == fd[("euler", 1)].value  # same sampler, other node: same number
    refs = [json.loads(r.provenance)["reference"]["from_cache"] for r in fd.values()]
    assert refs.count(False) == 1, refs  # computed by one cell, read by the other three
    with sqlite3.connect(store) as db:
        info = {s: json.loads(i)["executor"] for s, i in db.execute("SELECT sampler, info FROM cells")}
    assert info["tagged"]["node"] == tagged_node.node_id
    remote = [s for s, i in info.items() if not i["driver_node"]]
    assert remote  # at least one cell ran away from the driver's node: its files came back through Ray
    for r in fd.values():
        assert sorted(p.name for p in Path(r.samples_dir).glob("*.png")) == ["000.png", "001.png"]
    assert any((tmp_path / "cache" / "reference_stats").glob("ref-*.npz"))


# -- sharded cells (issue 17) ------------------------------------------------------------------------------------
def _sharded_suite(tmp_path: Path, adapter: str, options: str) -> Path:
    """The shards tests' analytic cell (96 images, batches of 16, a grid of 20 that spans two shards of 16)."""
    from tests.test_shards import ANALYTIC

    suite = tmp_path / "shards.yaml"
    suite.write_text(ANALYTIC.format(adapter=adapter, options=options).lstrip())
    return suite


def _shard_info(store: Path) -> dict:
    with sqlite3.connect(store) as db:
        (info,) = db.execute("SELECT info FROM cells").fetchone()
    return json.loads(info)["shards"]


def _same_as_whole(whole: Path, sharded: Path) -> None:
    """Every quality number and per-image evidence of the local unsharded cell, and its grid, byte for byte."""
    from tests.test_shards import _same

    _same(whole, sharded)
    grid = sorted((whole.parent / "samples").rglob("*.png"))
    assert len(grid) == 20
    assert [p.name for p in sorted((sharded.parent / "samples").rglob("*.png"))] == [p.name for p in grid]
    assert [p.read_bytes() for p in sorted((sharded.parent / "samples").rglob("*.png"))] == \
        [p.read_bytes() for p in grid]
    assert not any((sharded.parent / "shards").rglob("*.npz"))  # shard files go once the cell is committed


def test_a_sharded_cell_on_ray_scores_exactly_the_local_whole_cell(tmp_path):
    suite = _sharded_suite(tmp_path, "analytic-euler", "{components: 4}")
    whole, sharded = tmp_path / "whole" / "r.sqlite", tmp_path / "ray" / "r.sqlite"
    assert run_suite(suite, whole, progress=False).ok
    summary = run_suite(suite, sharded, executor="ray", progress=False, overrides=["shard_size=16"])
    assert summary.ok and summary.computed == 1 and summary.shards_computed == 6, summary.failed
    _same_as_whole(whole, sharded)
    shards = _shard_info(sharded)
    assert shards["ranges"] == [[i, i + 16] for i in range(0, 96, 16)]
    assert len(shards["nodes"]) == 6 and all(shards["nodes"]) and all(shards["hosts"])


def test_shard_size_auto_on_ray_splits_a_cell_for_the_actors_the_cluster_holds(tmp_path):
    """`shard_size: auto` asks the cluster: a local instance has os.cpu_count() CPUs, so that many
    `cpu:threads=1` actors at once, and the cell splits for them (when the machine has more than one core)."""
    import os

    from bench.shards import auto_shard_size, shard_ranges

    suite = _sharded_suite(tmp_path, "analytic-euler", "{components: 4}")
    whole, auto = tmp_path / "whole" / "r.sqlite", tmp_path / "ray" / "r.sqlite"
    assert run_suite(suite, whole, progress=False).ok
    summary = run_suite(suite, auto, executor="ray", progress=False, overrides=["shard_size=auto"])
    size = auto_shard_size(96, 16, os.cpu_count() or 1)
    expected = shard_ranges(96, 16, size) if size else [(0, 96)]
    assert summary.ok and summary.shards_computed == (len(expected) if size else 0), summary.failed
    if size:
        assert _shard_info(auto)["ranges"] == [list(r) for r in expected]
    from tests.test_shards import _same

    _same(whole, auto)


def test_shards_of_one_cell_run_on_two_nodes_and_merge_to_the_local_numbers(tmp_path, ray_root):
    """A head and a second raylet with its own custom resource, one CPU each: two actors, one per node, share
    the six shards; one node is the driver's, the other sends its features (and grid part) back through Ray."""
    from ray.cluster_utils import Cluster

    from bench.executors.ray import loopback_only

    # a slow sampler (0.5 s a call, about 1 s a shard) so that neither actor finishes every shard alone
    suite = _sharded_suite(tmp_path, "'tests.plugins.crashy:SlowSampler'", "{components: 4, delay: 0.5}")
    whole, sharded = tmp_path / "whole" / "r.sqlite", tmp_path / "ray" / "r.sqlite"
    assert run_suite(suite, whole, progress=False).ok
    ray_tmp = str(ray_root / "nodes")
    node_args = {"temp_dir": ray_tmp, "env_vars": {"PYTHONPATH": str(ROOT)}}
    with loopback_only():
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "include_dashboard": False, "_system_config": {"enable_autoscaler_v2": True},
            **node_args})
        try:
            head = cluster.head_node.node_id  # read before shutdown, which forgets the head
            second = cluster.add_node(num_cpus=1, resources={"shard-node": 1}, **node_args)
            cluster.wait_for_nodes()
            summary = run_suite(suite, sharded, executor="ray", progress=False, overrides=["shard_size=16"],
                                executor_options={"address": cluster.address})
        finally:
            cluster.shutdown()
    assert summary.ok and summary.shards_computed == 6, summary.failed
    nodes = _shard_info(sharded)["nodes"]
    assert len(nodes) == 6 and set(nodes) == {head, second.node_id}, nodes
    _same_as_whole(whole, sharded)
