"""The gate on paired evidence, end to end on real runs of the analytic world (N=256, pixels space).

An unchanged sampler reproduces its per-image features exactly, so its paired change is 0 with a zero-width
interval; a sampler pulled toward grey (tests/plugins/degraded.py) by 2 % is +5.6 % FD (teacher Euler, 8 steps)
and must fail: the unpaired rule of the first release (10 % and intervals apart) passed that change.
"""

from __future__ import annotations

import json

import pytest

from bench.gate import run_gate, save_baseline
from bench.run import run_suite

SUITE = """
name: paired-gate
dataset: {name: gmm, split: eval, components: 8}
samples: 256
base_seed: 0
batch_size: 256
timeout: 120
samplers:
  - {id: euler, adapter: "tests.plugins.degraded:GreyEuler", nfe: [8]}
  - {id: oracle, adapter: "tests.plugins.degraded:GreyOracle", options: {substeps: 16}, nfe: [1]}
axes: {nfe: [1], resolution: [8], hardware: ["cpu:threads=1"]}
metrics:
  fd: {feature_space: pixels, bootstrap: 50}
report: {enabled: false}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A baseline (factor 0) and runs at factor 0 (unchanged) and 0.02 (pulled toward grey), fresh stores."""
    root = tmp_path_factory.mktemp("paired")
    suite = root / "suite.yaml"
    suite.write_text(SUITE.lstrip())
    mp = pytest.MonkeyPatch()
    stores = {}
    try:
        for name, factor in (("base", "0"), ("same", "0"), ("grey", "0.02")):
            mp.setenv("BENCH_DEGRADE_FACTOR", factor)
            stores[name] = root / name / "r.sqlite"
            assert run_suite(suite, stores[name], progress=False).ok
    finally:
        mp.undo()
    baseline = root / "baselines" / "paired.json"
    save_baseline(stores["base"], baseline)
    return root, stores, baseline


def _fd_checks(res):
    return {c.cell.split()[0]: c for c in res.checks if c.metric == "fd"}


def test_baseline_keeps_per_image_evidence_next_to_it(runs):
    _, _, baseline = runs
    data = json.loads(baseline.read_text())
    assert data["format"] == "flowmap-bench-baseline/3"
    side = baseline.parent / data["evidence"]["file"]
    assert side.name == "paired.evidence.npz" and side.stat().st_size == data["evidence"]["bytes"]
    assert all(c["evidence_metrics"] == ["fd"] for c in data["cells"] if c["status"] == "done")
    assert not any("_evidence_store" in c for c in data["cells"])  # no machine-local path in the file


def test_unchanged_rerun_passes_with_a_zero_paired_change(runs):
    _, stores, baseline = runs
    res = run_gate(baseline, stores["same"])
    assert res.exit_code == 0
    for check in _fd_checks(res).values():
        assert check.status == "PASS" and "paired change +0 (+0.0%), paired 95% CI [+0, +0]" in check.note


def test_five_percent_fd_regression_fails_on_paired_evidence(runs):
    _, stores, baseline = runs
    res = run_gate(baseline, stores["grey"])
    checks = _fd_checks(res)
    assert checks["euler"].change is not None and checks["euler"].change > 0.05
    assert checks["euler"].status == "FAIL" and "paired" in checks["euler"].note
    assert res.exit_code == 1


def test_unpaired_rule_of_the_first_release_misses_it(runs, tmp_path):
    """The same comparison with a format-1 baseline (no evidence) falls back to unpaired intervals, says so, and
    with the first release's default rule (10 %, intervals apart) the +5.6 % regression passes."""
    _root, stores, baseline = runs
    data = json.loads(baseline.read_text())
    data["format"] = "flowmap-bench-baseline/1"
    data.pop("evidence")
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    res = run_gate(old, stores["grey"])
    euler = _fd_checks(res)["euler"]
    assert "unpaired fallback" in euler.note and "format flowmap-bench-baseline/1" in euler.note
    from bench.gate import compare, gates_of, snapshot
    from bench.suite import GateRule

    g = gates_of(snapshot(stores["grey"]))
    g.metrics["fd"] = GateRule(rel_tol=0.1, significance="ci")
    first_release = compare(data, snapshot(stores["grey"]), g)
    assert _fd_checks(first_release)["euler"].status == "PASS"


def test_corrupt_evidence_falls_back_and_says_so(runs, tmp_path):
    _root, stores, baseline = runs
    import shutil

    copy = tmp_path / "b.json"
    shutil.copy(baseline, copy)
    data = json.loads(baseline.read_text())
    (tmp_path / data["evidence"]["file"]).write_bytes(b"not an npz")
    res = run_gate(copy, stores["grey"])
    assert any("does not match the sha256" in n for n in res.notes)
    assert "unpaired fallback" in _fd_checks(res)["euler"].note
