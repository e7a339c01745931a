"""`bench run` with the quality metrics: every cell stores FD (CI, floor), KID, PR and CLIP score with provenance;
a feature space without weights fails its metric with one line naming the file and the setting."""

from __future__ import annotations

import json
import sqlite3
import textwrap

import numpy as np
import pandas as pd
import torch

from bench.cli import main
from bench.metrics.features import INCEPTION_ENV, INCEPTION_FILE

SUITE = """
name: metrics-e2e
dataset: {name: gmm, split: eval, components: 8}
samples: 96
base_seed: 0
batch_size: 96
timeout: 300
samplers:
  - {id: euler, adapter: analytic-euler}
axes:
  nfe: [1, 4]
  resolution: [8]
  hardware: [cpu]
metrics:
  fd: {feature_space: pixels, bootstrap: 50}
  kid: {feature_space: pixels}
  precision_recall: {feature_space: pixels}
  clip_score: {bootstrap: 50}
  fd:inception-v3: {bootstrap: 0}
report: {grid: 2, enabled: false}
"""


def test_suite_stores_every_quality_metric_and_a_one_line_error_for_missing_weights(tmp_path, monkeypatch, capsys):
    from bench.zoo import checkpoints, shapes_clip

    monkeypatch.setenv("BENCH_ZOO_WEIGHTS", str(tmp_path / "zoo"))  # workers inherit the environment
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no Inception weights anywhere
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    torch.manual_seed(0)
    checkpoints.save_fp16(shapes_clip.to_compact(shapes_clip.build_model().state_dict()),
                          checkpoints.weight_path("shapes-clip"), {})
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(SUITE).lstrip())
    store = tmp_path / "runs" / "r.sqlite"

    assert main(["run", str(suite), "--store", str(store), "--no-progress"]) == 1  # fd:inception-v3 fails
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "fd:inception-v3" in ln]
    assert any(INCEPTION_FILE in ln and INCEPTION_ENV in ln and "weights:" in ln for ln in lines), lines

    # The cells' other metrics are stored (read from the store's metrics table: failed cells are hidden from
    # load_results), each with its CI, n and provenance.
    with sqlite3.connect(store) as db:
        df = pd.read_sql_query("SELECT c.nfe_requested AS nfe, c.error, m.* FROM metrics m "
                               "JOIN cells c ON c.cell_key = m.cell_key", db)
    assert set(df.nfe) == {1, 4}
    assert all("fd:inception-v3: MissingWeightsError" in e and "\n" not in e for e in df.error)
    expected = {"fd", "fd_floor", "kid", "precision", "recall", "clip_score:shapes-clip"}
    for nfe in (1, 4):
        cell = df[df.nfe == nfe].set_index("name")
        assert set(cell.index) == expected, nfe
        for name in expected:
            row = cell.loc[name]
            assert row.n == 96 and np.isfinite(row.value) and row.ci_low <= row.value <= row.ci_high, name
            prov = json.loads(row.provenance)
            assert prov["n_samples"] == 96 and prov["versions"]["torch"], name
        assert json.loads(cell.loc["fd"].provenance)["noise_floor"] == cell.loc["fd_floor"].value
    fd = df[df.name == "fd"].set_index("nfe").value
    assert fd[1] > fd[4]  # one Euler step is a worse sampler than four
    assert list((tmp_path / "runs" / "cache" / "reference_stats").glob("ref-*.npz"))  # the store's cache dir
