"""`bench baseline save` + `bench gate` on synthetic stores: injected regressions are caught, noise is not.

The stores are written through the real Store API (start_run / record_plan / commit_cell), so the gate reads
exactly what a run would leave; only the numbers are chosen by the test.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.gate import Point, load_baseline, pareto_front, run_gate, save_baseline
from bench.metrics.registry import MetricResult
from bench.store import CellResult, Store
from tests.cells import make_cell

HW = "cpu:threads=1"
SUITE = """
name: syn
dataset: {name: gmm, components: 8}
samples: 256
samplers:
  - {id: euler, adapter: analytic-euler}
  - {id: oracle, adapter: analytic-oracle-flowmap, nfe: [1, 2]}
axes: {nfe: [1, 2, 4, 8], resolution: [8], hardware: ["cpu:threads=1"]}
metrics:
  fd: {feature_space: pixels}
  latency: {batch_sizes: [1, 32]}
"""
PIXELS = {"feature_space": "pixels", "feature_space_version": "1", "weights_sha256": "ae58" * 16,
          "preprocessing": "native:8:scale[-1,1]", "feature_dim": 64}


@dataclass
class Spec:
    """One synthetic cell: FD with a +-3% interval, latency with a +-3% IQR, calibration."""

    sampler: str
    nfe: int
    fd: float
    latency: float
    calibration: float = 10.0
    status: str = "done"
    nfe_counted: float | None = None
    fd_ci: float = 0.03
    n: int = 256
    unstable: bool = False
    iqr: float = 0.03  # half-width of the latency's interquartile range, relative
    space: dict = field(default_factory=lambda: dict(PIXELS))
    clip: float | None = None  # a higher-is-better metric (+-0.2 interval), when set


def standard() -> list[Spec]:
    """Euler gets better with NFE and slower; the oracle flow map is good at NFE 1 but costly per step."""
    cells = [Spec("euler", k, fd=4.0 / k, latency=0.1 * k) for k in (1, 2, 4, 8)]
    return cells + [Spec("oracle", k, fd=0.3, latency=1.0 * k) for k in (1, 2)]


def write_run(path: Path, specs: list[Spec], suite_text: str = SUITE, suite_hash: str | None = None) -> str:
    text = textwrap.dedent(suite_text).lstrip()
    with Store(path) as st:
        run_id = st.start_run("syn", suite_hash or hashlib.sha256(text.encode()).hexdigest()[:16], "syn.yaml", text,
                              git_commit="abc123", fingerprint={"cpu_model": "test cpu", "cpu_cores_logical": 2},
                              versions={"torch": "x"}, executor="local", argv=["bench", "run"])
        cells = []
        for s in specs:
            cells.append(make_cell("syn", s.sampler, "analytic-euler", "ode", s.nfe, 8, HW, tag=str(path),
                                   status="skipped" if s.status == "skipped" else "planned",
                                   reason="no CUDA device" if s.status == "skipped" else None))
        st.record_plan(run_id, cells, set())
        for cell, s in zip(cells, specs, strict=True):
            if s.status in ("skipped", "planned"):
                continue
            prov = {"n_samples": s.n, "feature_space": {**s.space, "description": "test"}}
            metrics = [
                MetricResult("fd", s.fd, False, s.fd * (1 - s.fd_ci), s.fd * (1 + s.fd_ci), s.n, prov),
                MetricResult("fd_floor", 0.3, False, 0.28, 0.32, s.n, prov),
                MetricResult("latency_ms_per_image", s.latency, False, s.latency * (1 - s.iqr), s.latency * (1 + s.iqr), 20,
                             {"batch_size": 32, "unstable": s.unstable,
                              "unstable_reason": "IQR is 60% of the median > max_iqr_rel 0.25" if s.unstable else ""}),
                MetricResult("latency_ms_batch1", 4 * s.latency, False, 3.8 * s.latency, 4.2 * s.latency, 20, {}),
                MetricResult("calibration_ms", s.calibration, False, s.calibration * 0.98, s.calibration * 1.02, 20,
                             {"workload": "test"}),
            ]
            if s.clip is not None:
                metrics.append(MetricResult("clip_score", s.clip, True, s.clip - 0.2, s.clip + 0.2, s.n, prov))
            failed = s.status == "failed"
            st.commit_cell(run_id, cell, CellResult(
                key=cell.key, status=s.status, error="RuntimeError: boom" if failed else None,
                nfe_counted=s.nfe_counted if s.nfe_counted is not None else float(s.nfe),
                metrics=[] if failed else metrics))
        st.finish_run(run_id, "done")
    return run_id


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    write_run(tmp_path / "base.sqlite", standard())
    out = tmp_path / "baselines" / "syn.cpu.json"
    assert main(["baseline", "save", "--store", str(tmp_path / "base.sqlite"), "-o", str(out)]) == 0
    return out


def gate(tmp_path: Path, baseline: Path, specs: list[Spec], name: str = "run", **kw) -> tuple[int, object]:
    store = tmp_path / f"{name}.sqlite"
    write_run(store, specs, **kw)
    res = run_gate(baseline, store)
    return res.exit_code, res


def failing(res) -> set[tuple[str, str]]:
    return {(c.cell, c.metric) for c in res.failures}


def test_baseline_file_records_cells_metrics_cis_nfe_provenance_calibration(baseline):
    data = load_baseline(baseline)
    assert data["suite"] == "syn" and len(data["suite_hash"]) == 16 and data["samples"] == 256
    assert data["calibration"][HW]["median_ms"] == 10.0
    assert data["feature_spaces"]["fd"][0]["feature_space"] == "pixels"
    cell = next(c for c in data["cells"] if c["sampler"] == "euler" and c["nfe_requested"] == 2)
    assert cell["nfe_counted"] == 2 and cell["status"] == "done"
    fd = cell["metrics"]["fd"]
    assert fd["value"] == 2.0 and fd["ci_low"] < 2.0 < fd["ci_high"] and fd["n"] == 256
    assert fd["higher_is_better"] is False and fd["provenance"]["feature_space"]["feature_space"] == "pixels"
    assert set(cell["metrics"]) >= {"latency_ms_per_image", "latency_ms_batch1", "calibration_ms"}


def test_default_baseline_path_is_suite_dot_hardware(tmp_path, monkeypatch):
    write_run(tmp_path / "base.sqlite", standard())
    monkeypatch.chdir(tmp_path)
    path, _ = save_baseline(tmp_path / "base.sqlite")
    assert path == Path("baselines/syn.cpu-threads-1.json") and path.is_file()


def test_unchanged_rerun_passes(tmp_path, baseline, capsys):
    write_run(tmp_path / "run.sqlite", standard())
    assert main(["gate", "--baseline", str(baseline), "--store", str(tmp_path / "run.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "PASS: 0 regression(s)" in out and "FAIL" not in out
    assert "latency_ms_per_image/cal" in out and "front hw=cpu:threads=1 res=8" in out


def test_fd_up_20_percent_on_one_cell_fails(tmp_path, baseline):
    specs = standard()
    specs[2].fd *= 1.2  # euler nfe=4
    code, res = gate(tmp_path, baseline, specs)
    assert code == 1
    # the cell's FD check, and (euler nfe=4 being on the FD-latency front) its front point
    assert failing(res) == {(f"euler nfe=4 res=8 hw={HW}", "fd"),
                            ("front hw=cpu:threads=1 res=8: euler nfe=4", "fd vs latency_ms_per_image/cal")}


def test_fd_change_inside_tolerance_or_noise_passes(tmp_path, baseline):
    small = standard()
    small[2].fd *= 1.04  # under the 10% tolerance (and the front's 5%), CIs apart
    assert gate(tmp_path, baseline, small)[0] == 0

    noisy = standard()
    noisy[2].fd *= 1.2
    noisy[2].fd_ci = 0.2  # +20% but the run's interval overlaps the baseline's: not significant
    code, res = gate(tmp_path, baseline, noisy, name="noisy")
    assert code == 0
    check = next(c for c in res.checks if c.metric == "fd" and c.cell.startswith("euler nfe=4"))
    assert check.status == "PASS" and "overlap" in check.note


def test_sampler_1_5x_slower_fails(tmp_path, baseline):
    specs = standard()
    for s in specs:
        if s.sampler == "oracle":
            s.latency *= 1.5
    code, res = gate(tmp_path, baseline, specs)
    assert code == 1
    lat = {(cell, m) for cell, m in failing(res) if m == "latency_ms_per_image/cal"}
    assert lat == {(f"oracle nfe=1 res=8 hw={HW}", "latency_ms_per_image/cal"),
                   (f"oracle nfe=2 res=8 hw={HW}", "latency_ms_per_image/cal")}


def test_machine_30_percent_slower_is_not_a_regression(tmp_path, baseline):
    specs = standard()
    for s in specs:
        s.latency *= 1.3
        s.calibration *= 1.3
    code, res = gate(tmp_path, baseline, specs)
    assert code == 0, failing(res)
    assert res.info["calibration_ratio"] == pytest.approx(1.3)

    # the same numbers compared raw (normalize: none) would fail every latency check: normalisation is what helps
    raw = SUITE + "gates:\n  metrics:\n    latency_ms_per_image: {rel_tol: 0.2, normalize: none}\n"
    write_run(tmp_path / "b2.sqlite", standard(), suite_text=raw)
    save_baseline(tmp_path / "b2.sqlite", tmp_path / "b2.json")
    write_run(tmp_path / "r2.sqlite", specs, suite_text=raw)
    res = run_gate(tmp_path / "b2.json", tmp_path / "r2.sqlite")
    assert {m for _, m in failing(res)} == {"latency_ms_per_image"}
    assert len(failing(res)) == 6


def test_cell_that_now_fails_is_a_regression_and_new_cells_are_reported(tmp_path, baseline):
    specs = [*standard(), Spec("euler", 16, fd=0.3, latency=1.6)]
    specs[1].status = "failed"
    code, res = gate(tmp_path, baseline, specs)
    assert code == 1
    # the cell, and its point on the front, which no other point of the run replaces
    assert failing(res) == {(f"euler nfe=2 res=8 hw={HW}", "cell"),
                            ("front hw=cpu:threads=1 res=8: euler nfe=2", "fd vs latency_ms_per_image/cal")}
    assert "cell now failed: RuntimeError: boom" in res.failures[0].note
    new = [c for c in res.checks if c.status == "NEW"]
    assert [c.cell for c in new] == [f"euler nfe=16 res=8 hw={HW}"]


def test_unfinished_cell_fails_and_baseline_failure_now_done_is_new(tmp_path):
    base = standard()
    base[0].status = "failed"
    write_run(tmp_path / "base.sqlite", base)
    save_baseline(tmp_path / "base.sqlite", tmp_path / "b.json")
    specs = standard()
    specs[3].status = "planned"  # the run was interrupted before this cell
    code, res = gate(tmp_path, tmp_path / "b.json", specs)
    assert code == 1
    assert failing(res) == {(f"euler nfe=8 res=8 hw={HW}", "cell")}
    assert any(c.status == "NEW" and c.cell.startswith("euler nfe=1 ") for c in res.checks)


def test_cell_missing_from_the_run_fails(tmp_path, baseline):
    # docs/ci.md: a cell done in the baseline that the run "did not finish" fails, and a cell the run never
    # planned (absent altogether) did not finish either
    specs = [s for s in standard() if (s.sampler, s.nfe) != ("oracle", 2)]  # off the front: only the cell fails
    code, res = gate(tmp_path, baseline, specs)
    assert code == 1
    assert failing(res) == {(f"oracle nfe=2 res=8 hw={HW}", "cell")}


def _gate_with(tmp_path: Path, gates: str, base: list[Spec], run: list[Spec], name: str = "run"):
    """Baseline and run from the same suite with this `gates:` section (no built-in rules, no front gate)."""
    text = SUITE + "gates:\n  defaults: false\n  metrics:\n" + textwrap.indent(textwrap.dedent(gates), "    ")
    write_run(tmp_path / f"{name}-base.sqlite", base, suite_text=text)
    save_baseline(tmp_path / f"{name}-base.sqlite", tmp_path / f"{name}-base.json")
    return gate(tmp_path, tmp_path / f"{name}-base.json", run, name=name, suite_text=text)


def test_higher_is_better_metric_fails_on_a_drop_not_on_a_rise(tmp_path):
    # docs/ci.md: "Direction comes from each metric's higher_is_better" (clip_score: higher is better)
    def with_clip(changed: float | None = None) -> list[Spec]:
        specs = standard()
        for s in specs:
            s.clip = 30.0
        if changed is not None:
            specs[2].clip = changed  # euler nfe=4
        return specs

    rule = "clip_score: {abs_tol: 0.5}\n"
    code, res = _gate_with(tmp_path, rule, with_clip(), with_clip(28.0), name="drop")
    assert code == 1 and failing(res) == {(f"euler nfe=4 res=8 hw={HW}", "clip_score")}
    code, res = _gate_with(tmp_path, rule, with_clip(), with_clip(32.0), name="rise")
    assert code == 0, failing(res)
    check = next(c for c in res.checks if c.metric == "clip_score" and c.cell.startswith("euler nfe=4 "))
    assert check.status == "BETTER"


def test_tolerance_is_the_larger_of_rel_tol_and_abs_tol(tmp_path):
    # docs/ci.md: "worse than its tolerance (the larger of rel_tol x |baseline| and abs_tol)"; significance: none
    # so the values alone decide. euler FD: nfe=1 4.0, nfe=4 1.0, nfe=8 0.5.
    run = standard()
    run[0].fd = 4.3  # +0.3: beyond abs_tol 0.2, inside rel_tol 10% of 4.0 = 0.4 -> passes
    run[2].fd = 1.15  # +0.15: beyond rel_tol 10% of 1.0 = 0.1, inside abs_tol 0.2 -> passes
    run[3].fd = 0.75  # +0.25: beyond both (0.05 and 0.2) -> fails
    code, res = _gate_with(tmp_path, "fd: {rel_tol: 0.1, abs_tol: 0.2, significance: none}\n", standard(), run)
    assert code == 1 and failing(res) == {(f"euler nfe=8 res=8 hw={HW}", "fd")}


def test_more_counted_nfe_fails(tmp_path, baseline):
    specs = standard()
    specs[4].nfe_counted = 2.0  # oracle nfe=1 now calls the network twice
    code, res = gate(tmp_path, baseline, specs)
    assert failing(res) == {(f"oracle nfe=1 res=8 hw={HW}", "nfe_counted")} and code == 1


# Unpaired rules stated in the suite (these synthetic stores keep no per-image evidence): a per-cell tolerance
# wider than the front's, so a front point can be lost while every cell passes.
UNPAIRED = SUITE + "gates:\n  metrics:\n    fd: {rel_tol: 0.1, significance: ci}\n  front: {tol_quality: 0.05, significance: none}\n"


@pytest.fixture
def unpaired_baseline(tmp_path: Path) -> Path:
    write_run(tmp_path / "base-unpaired.sqlite", standard(), suite_text=UNPAIRED)
    out = tmp_path / "baselines" / "syn-unpaired.cpu.json"
    save_baseline(tmp_path / "base-unpaired.sqlite", out)
    return out


def test_lost_front_point_fails_and_is_named(tmp_path, unpaired_baseline, capsys):
    # oracle nfe=1 (FD 0.3 at 1.0 ms) is on the front; +8% FD stays inside the per-cell 10% tolerance but not
    # the front's 5%, and no other run point reaches FD <= 0.315 at latency <= 1.3 x 1.0.
    baseline = unpaired_baseline
    specs = standard()
    specs[4].fd *= 1.08
    store = tmp_path / "run.sqlite"
    write_run(store, specs, suite_text=UNPAIRED)
    assert main(["gate", "--baseline", str(baseline), "--store", str(store)]) == 1
    out = capsys.readouterr().out
    assert "front point lost: oracle nfe=1" in out
    res = run_gate(baseline, store)
    assert [c.cell for c in res.failures] == ["front hw=cpu:threads=1 res=8: oracle nfe=1"]
    kept = {c.cell.split(": ")[1] for c in res.front if c.status == "PASS"}
    assert kept == {"euler nfe=1", "euler nfe=2", "euler nfe=4", "euler nfe=8"}


def test_front_point_kept_by_a_different_sampler_passes(tmp_path, unpaired_baseline):
    specs = standard()
    specs[4].fd *= 1.08  # oracle nfe=1 gets worse ...
    specs[2].fd = 0.3  # ... but euler nfe=4 (0.4 ms) now matches it at lower latency
    code, res = gate(tmp_path, unpaired_baseline, specs, suite_text=UNPAIRED)
    assert code == 0 and not [c for c in res.front if c.status == "FAIL"]
    lost = next(c for c in res.front if c.cell.endswith("oracle nfe=1"))
    assert "kept by euler nfe=4" in lost.note


def test_suite_gates_section_overrides_defaults(tmp_path):
    lenient = SUITE + "gates:\n  defaults: false\n  metrics:\n    fd: {rel_tol: 0.5}\n"
    write_run(tmp_path / "base.sqlite", standard(), suite_text=lenient)
    save_baseline(tmp_path / "base.sqlite", tmp_path / "b.json")
    specs = standard()
    specs[2].fd *= 1.2
    for s in specs:
        s.latency *= 3  # no latency rule, no front gate with defaults: false
    code, res = gate(tmp_path, tmp_path / "b.json", specs, suite_text=lenient)
    assert code == 0 and not res.front
    assert {c.metric for c in res.checks} == {"fd"}


@pytest.mark.parametrize(("change", "message"), [
    ("hash", "suite hash differs"),
    ("space", "feature space of fd differs: baseline pixels"),
    ("samples", "sample count differs: baseline 256, run 128"),
])
def test_unusable_comparisons_exit_2_and_say_which(tmp_path, baseline, capsys, change, message):
    specs = standard()
    kw = {}
    if change == "hash":
        kw["suite_hash"] = "0" * 16
    elif change == "space":
        for s in specs:
            s.space = {**PIXELS, "feature_space": "inception-v3", "feature_dim": 2048}
    else:
        for s in specs:
            s.n = 128
        kw["suite_text"] = SUITE.replace("samples: 256", "samples: 128")
    write_run(tmp_path / "run.sqlite", specs, **kw)
    assert main(["gate", "--baseline", str(baseline), "--store", str(tmp_path / "run.sqlite")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    if change != "hash":  # the suite text changed too (or its hash would not say so)
        assert change == "space" or "suite hash differs" in err


def test_missing_or_bad_baseline_exits_2(tmp_path, capsys):
    write_run(tmp_path / "run.sqlite", standard())
    assert main(["gate", "--baseline", str(tmp_path / "nope.json"), "--store", str(tmp_path / "run.sqlite")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"cells": []}')
    with pytest.raises(BenchError, match="not a baseline file"):
        load_baseline(tmp_path / "bad.json")


def test_no_common_cell_exits_2(tmp_path, baseline):
    specs = standard()
    for s in specs:
        s.status = "skipped"
    write_run(tmp_path / "run.sqlite", specs)
    with pytest.raises(BenchError, match="no common cell"):
        run_gate(baseline, tmp_path / "run.sqlite")


def test_markdown_goes_to_step_summary_and_json_is_parseable(tmp_path, baseline, capsys, monkeypatch):
    specs = standard()
    specs[2].fd *= 1.2
    write_run(tmp_path / "run.sqlite", specs)
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    args = ["gate", "--baseline", str(baseline), "--store", str(tmp_path / "run.sqlite")]
    assert main([*args, "--format", "md"]) == 1
    md = summary.read_text()
    assert md.startswith("earlier step\n") and "| result | cell |" in md and "❌ FAIL | euler nfe=4" in md
    assert md.split("earlier step\n")[1] in capsys.readouterr().out + "\n"

    assert main([*args, "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "fail" and data["exit_code"] == 1
    assert [(c["cell"], c["metric"]) for c in data["checks"] if c["status"] == "FAIL"] == [
        (f"euler nfe=4 res=8 hw={HW}", "fd")]
    assert summary.read_text() == md  # only --format md appends


def test_pareto_front():
    pts = [Point("a", 1.0, 1.0), Point("b", 0.5, 2.0), Point("c", 1.2, 1.5), Point("d", 0.5, 3.0), Point("e", 2, 0.5)]
    assert [p.label for p in pareto_front(pts)] == ["e", "a", "b"]


def _drifting(specs: list[Spec]) -> list[Spec]:
    """The machine's speed changes during the run: every other cell runs 1.6x slower, its calibration too."""
    for i, s in enumerate(specs):
        if i % 2:
            s.latency *= 1.6
            s.calibration *= 1.6
    return specs


def test_calibration_drift_widens_latency_limits_and_says_so(tmp_path, baseline):
    specs = _drifting(standard())
    specs[4].latency *= 1.5  # oracle nfe=1, 1.5x slower: inside the x1.6 band the machine itself moved
    code, res = gate(tmp_path, baseline, specs)
    assert code == 0, failing(res)
    assert res.info["drift"][HW] == {"baseline": 1.0, "run": pytest.approx(1.6)}
    assert any("latency limits are widened to x2.08" in n for n in res.notes)

    big = _drifting(standard())
    big[4].latency *= 2.5  # beyond (1 + 0.3) x 1.6: still caught
    code, res = gate(tmp_path, baseline, big, name="big")
    assert (f"oracle nfe=1 res=8 hw={HW}", "latency_ms_per_image/cal") in failing(res) and code == 1

    strict = SUITE + "gates:\n  drift: false\n"
    write_run(tmp_path / "b3.sqlite", standard(), suite_text=strict)
    save_baseline(tmp_path / "b3.sqlite", tmp_path / "b3.json")
    code, res = gate(tmp_path, tmp_path / "b3.json", specs, name="strict", suite_text=strict)
    assert code == 1 and (f"oracle nfe=1 res=8 hw={HW}", "latency_ms_per_image/cal") in failing(res)


def test_baseline_from_several_stores_takes_the_median_latency(tmp_path, capsys):
    stores = []
    for name, factor in (("a", 3.0), ("b", 1.0), ("c", 0.5)):  # one slow and one fast outlier for oracle nfe=1
        specs = standard()
        specs[4].latency *= factor
        stores.append(tmp_path / f"{name}.sqlite")
        write_run(stores[-1], specs)
    args = ["baseline", "save", "-o", str(tmp_path / "b.json")]
    for st in stores:
        args += ["--store", str(st)]
    assert main(args) == 0
    assert "median calibrated latency of runs" in capsys.readouterr().out
    data = load_baseline(tmp_path / "b.json")
    oracle = next(c for c in data["cells"] if c["sampler"] == "oracle" and c["nfe_requested"] == 1)
    assert oracle["metrics"]["latency_ms_per_image"]["value"] == 1.0 and len(data["runs"]) == 3
    write_run(tmp_path / "run.sqlite", standard())
    assert run_gate(tmp_path / "b.json", tmp_path / "run.sqlite").exit_code == 0


def test_baseline_from_several_stores_prefers_a_stable_latency(tmp_path):
    stores = []
    for name, factor, unstable in (("a", 3.0, False), ("b", 1.0, True), ("c", 0.5, False)):
        specs = standard()
        specs[4].latency *= factor
        specs[4].unstable = unstable  # the median run's timing of oracle nfe=1 is unstable
        stores.append(tmp_path / f"{name}.sqlite")
        write_run(stores[-1], specs)
    _, data = save_baseline(stores, tmp_path / "b.json")
    oracle = next(c for c in data["cells"] if c["sampler"] == "oracle" and c["nfe_requested"] == 1)
    lat = oracle["metrics"]["latency_ms_per_image"]
    assert lat["value"] == 0.5 and not lat["provenance"]["unstable"]  # lower median of the two stable runs


def test_an_unstable_latency_is_skipped_with_its_reason_not_failed(tmp_path, baseline):
    specs = standard()
    specs[4].latency *= 1.6  # would fail (limit x1.3) ...
    specs[4].unstable, specs[4].iqr = True, 0.3  # ... but the run's timing is flagged unstable, its IQR +-30 %
    code, res = gate(tmp_path, baseline, specs)
    check = next(c for c in res.checks if c.cell.startswith("oracle nfe=1") and c.metric.startswith("latency"))
    assert check.status == "SKIP" and "unstable latency, not used for a verdict" in check.note
    assert "IQR is 60% of the median" in check.note and code == 0


@pytest.mark.parametrize(("factor", "status"), [(2.0, "FAIL"), (1.9, "SKIP")])
def test_an_unstable_latency_still_fails_when_its_fast_quartile_is_beyond_the_limit(tmp_path, baseline, factor,
                                                                                    status):
    # run IQR +-30 %: q25 = 0.7 x factor x 1.0; baseline q75 = 1.03; limit x1.3 -> fails from factor 1.3 x 1.03 / 0.7
    specs = standard()
    specs[4].latency *= factor
    specs[4].unstable, specs[4].iqr = True, 0.3
    code, res = gate(tmp_path, baseline, specs)
    check = next(c for c in res.checks if c.cell.startswith("oracle nfe=1") and c.metric.startswith("latency"))
    assert check.status == status and code == (status == "FAIL")
    if status == "FAIL":
        assert check.metric == "latency_ms_per_image/cal" and "slower beyond doubt" in check.note
        assert "q25 0.14 > the baseline's q75 0.103 x 1.3" in check.limit  # calibrated (/10 ms)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(cells=[{}]), "cells[0].sampler is None, not str"),
    (lambda d: d["cells"][0].update(metrics="zzz"), "cells[0].metrics is 'zzz', not dict"),
    (lambda d: d.update(calibration="x"), "calibration is str, not a mapping"),
    (lambda d: d["cells"][0].update(nfe_requested=None), "cells[0].nfe_requested is None, not int"),
    (lambda d: d["cells"][0]["metrics"].update(fd=3), "cells[0].metrics.fd is int, not a mapping"),
])
def test_a_baseline_with_damaged_content_is_one_line_and_exit_2(tmp_path, baseline, capsys, edit, message):
    data = json.loads(baseline.read_text())
    edit(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    write_run(tmp_path / "run.sqlite", standard())
    assert main(["gate", "--baseline", str(bad), "--store", str(tmp_path / "run.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is damaged: " + message in err
