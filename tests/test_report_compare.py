"""compare_runs: per-cell deltas with intervals between two runs' tidy tables (shared with `bench gate`)."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from bench.report.compare import compare_runs, format_compare


def _rows(run: str, cells: list[tuple]) -> pd.DataFrame:
    """cells: (sampler, nfe, status, reason, {metric: (value, lo, hi, higher_is_better)})"""
    out = []
    for sampler, nfe, status, reason, metrics in cells:
        key = f"{run}-{sampler}-{nfe}"
        base = {"run_id": run, "suite": "s", "sampler": sampler, "family": "flow_map", "nfe": nfe,
                "nfe_counted": float(nfe), "resolution": 16, "hardware": "cpu", "status": status, "reason": reason,
                "cell_key": key}
        if not metrics:
            out.append({**base, "metric": None, "value": None, "ci_low": None, "ci_high": None,
                        "higher_is_better": None})
        for name, (v, lo, hi, hib) in metrics.items():
            out.append({**base, "metric": name, "value": v, "ci_low": lo, "ci_high": hi, "higher_is_better": hib})
    return pd.DataFrame(out)


A = _rows("A", [
    ("fm", 1, "done", None, {"fd": (10.0, 9.0, 11.0, False), "clip_score": (20.0, 19.5, 20.5, True),
                             "peak_memory_mb": (50.0, None, None, False)}),
    ("fm", 2, "done", None, {"fd": (5.0, 4.7, 5.3, False)}),
    ("cd", 1, "done", None, {"fd": (8.0, 7.0, 9.0, False)}),
    ("old", 1, "done", None, {"fd": (3.0, 2.0, 4.0, False)}),
])
B = _rows("B", [
    ("fm", 1, "done", None, {"fd": (7.0, 6.0, 8.5, False), "clip_score": (20.2, 19.7, 20.7, True),
                             "peak_memory_mb": (55.0, None, None, False)}),
    ("fm", 2, "done", None, {"fd": (5.9, 5.5, 6.2, False)}),
    ("cd", 1, "failed", "RuntimeError: boom", {}),
    ("new", 1, "skipped", "no CUDA device", {}),
])


def _get(cmp: pd.DataFrame, sampler: str, nfe: int, metric: str | None) -> pd.Series:
    sel = cmp[(cmp.sampler == sampler) & (cmp.nfe == nfe)]
    sel = sel[sel.metric.isna()] if metric is None else sel[sel.metric == metric]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def test_deltas_intervals_and_direction():
    cmp = compare_runs(A, B)
    r = _get(cmp, "fm", 1, "fd")
    assert r.delta == pytest.approx(-3.0)
    assert r.rel_delta == pytest.approx(-0.3)
    # lower side: B's lower half-width (1.0) with A's upper half-width (1.0); upper: B up 1.5, A down 1.0
    assert r.delta_ci_low == pytest.approx(-3.0 - math.hypot(1.0, 1.0))
    assert r.delta_ci_high == pytest.approx(-3.0 + math.hypot(1.5, 1.0))
    assert r.significant and r.change == "better"
    assert r.ci_method == "unpaired"  # no per-image evidence given: the conservative combined interval

    r = _get(cmp, "fm", 2, "fd")  # FD up by 0.9, intervals combine to ~0.36 below: significant regression
    assert r.change == "worse" and r.significant

    r = _get(cmp, "fm", 1, "clip_score")  # +0.2 with +-0.5 intervals: better but within CI
    assert r.change == "better" and not r.significant

    r = _get(cmp, "fm", 1, "peak_memory_mb")  # no intervals at all: no significance claimed
    assert r.change == "worse" and not r.significant and math.isnan(r.delta_ci_low)
    assert r.ci_method is None


def test_unmatched_failed_and_skipped_cells_are_listed():
    cmp = compare_runs(A, B)
    cd = _get(cmp, "cd", 1, "fd")
    assert cd.status_b == "failed" and cd.reason_b == "RuntimeError: boom"
    assert cd.change == "unmeasured" and math.isnan(cd.delta)
    gone = _get(cmp, "old", 1, "fd")
    assert gone.change == "gone" and pd.isna(gone.status_b)
    new = _get(cmp, "new", 1, None)
    assert new.status_b == "skipped" and pd.isna(new.status_a) and new.reason_b == "no CUDA device"
    assert set(cmp.columns) >= {"value_a", "value_b", "delta", "delta_ci_low", "delta_ci_high", "significant",
                                "ci_method"}


def test_identical_runs_have_zero_deltas():
    cmp = compare_runs(A, A)
    measured = cmp[cmp.metric.notna()]
    assert (measured.delta == 0).all()
    assert set(measured.change) == {"same"}
    assert not measured.significant.any()


def test_format_compare_text():
    text = format_compare(compare_runs(A, B))
    lines = text.splitlines()
    assert lines[0].split() == ["cell", "metric", "A", "B", "delta", "[CI]", "CI", "change"]
    fd_line = next(line for line in lines if line.startswith("fm@1 ") and " fd " in line)
    assert "-3" in fd_line and "(-30.0%)" in fd_line and fd_line.rstrip().endswith("unpaired  better")
    assert any("clip_score" in line and line.endswith("better (within CI)") for line in lines)
    assert any(re.search(r"peak_memory_mb .* -\s+worse \(no CI\)$", line) for line in lines)
    assert any(re.search(r"^cd@1 .* -\s+unmeasured$", line) for line in lines)  # no delta, no interval
    assert "more rows" in format_compare(compare_runs(A, B), max_rows=2)
