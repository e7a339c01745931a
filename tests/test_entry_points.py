"""Entry-point groups bench.metrics, bench.feature_spaces and bench.datasets: an installed distribution (here a
`.dist-info` folder on PYTHONPATH) adds a metric, a feature space and a dataset that `bench list` shows, suites
validate against, and a real `bench run` uses in its spawned worker, where `register_metric` never reached."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests._paths import bench_env

PLUGIN = '''
"""A third-party metric package: one metric with a catalogue spec, one without."""
import multiprocessing
import os

from pydantic import BaseModel, ConfigDict

from bench.metrics.catalogue import MetricSpec, ResultSpec
from bench.metrics.registry import MetricResult


class ToyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    offset: float = 0.0


def toy_mean(ctx, options):
    where = {"pid": os.getpid(), "spawned_worker": multiprocessing.parent_process() is not None}
    value = float(ctx.images.float().mean()) + float(options.get("offset", 0.0))
    return [MetricResult("toy_mean", value, True, n=len(ctx.images), provenance=where)]


toy_mean.spec = MetricSpec("toy_mean", "quality", "toy mean", "px", True, "Mean pixel plus an offset.",
                           ToyOptions, (ResultSpec("toy_mean", "quality", True, "px", "toy mean"),))


def toy_free(ctx, options):
    return [MetricResult("toy_free", float(len(options)), False, n=len(ctx.images))]
'''

ENTRY_POINTS = """
[bench.metrics]
toy_mean = catalogue_toy_plugin:toy_mean
toy_free = catalogue_toy_plugin:toy_free

[bench.feature_spaces]
toy-pixels = bench.metrics.features:_build_pixels

[bench.datasets]
toygmm = bench.zoo.gmm:GaussianMixtureDataset
"""

SUITE = """
name: plugged
dataset: {{name: toygmm, split: eval, components: 4}}
samples: 80
batch_size: 40
samplers:
  - {{id: euler, adapter: analytic-euler}}
axes: {{nfe: [2], resolution: [4], hardware: [cpu]}}
metrics:
  toy_mean: {{offset: {offset}}}
  toy_free: {{anything: 1, goes: 2}}
  fd: {{feature_space: toy-pixels, bootstrap: 0, noise_floor: false}}
report: {{grid: 0, enabled: false}}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the plugin module and its installed-distribution metadata, as pip would leave them."""
    root = tmp_path_factory.mktemp("site")
    (root / "catalogue_toy_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = root / "catalogue_toy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: catalogue-toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


def _bench(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], env=bench_env(site), capture_output=True,
                          text=True, check=False, timeout=600)


def test_list_shows_entry_point_metrics_spaces_and_datasets(site):
    out = _bench(site, "list", "metrics").stdout
    mean = next(line for line in out.splitlines() if line.strip().startswith("toy_mean"))
    assert "quality" in mean and "px" in mean and "higher is better" in mean
    free = next(line for line in out.splitlines() if line.strip().startswith("toy_free"))
    assert "unchecked" in free
    assert "toy-pixels" in out.splitlines()[-1]
    assert "toygmm" in _bench(site, "list", "datasets").stdout


def test_a_suite_checks_an_entry_point_metrics_declared_options(site, tmp_path):
    suite = tmp_path / "bad.yaml"
    suite.write_text(SUITE.format(offset=1).replace("toy_mean: {offset: 1}", "toy_mean: {ofset: 1}"))
    r = _bench(site, "run", str(suite), "--dry-run", "--store", str(tmp_path / "s.sqlite"))
    assert r.returncode == 2
    assert r.stderr.strip() == f"bench: error: {suite}:10: metrics.toy_mean.ofset: unknown key"


def test_bench_run_uses_them_in_its_spawned_worker(site, tmp_path):
    suite = tmp_path / "plugged.yaml"
    suite.write_text(SUITE.format(offset=1000))
    store = tmp_path / "s.sqlite"
    r = _bench(site, "run", str(suite), "--store", str(store), "--no-progress", "--no-report")
    assert r.returncode == 0, r.stdout + r.stderr
    r = _bench(site, "export", "--store", str(store), "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = {row["metric"]: row for row in json.loads(r.stdout)}
    toy = rows["toy_mean"]
    assert toy["provenance"]["spawned_worker"] is True
    assert 1000 < toy["value"] < 1000 + 255  # the suite's option reached the worker
    assert rows["toy_free"]["value"] == 2.0  # unchecked options pass through as written
    assert rows["fd"]["value"] is not None and rows["fd"]["status"] == "done"
