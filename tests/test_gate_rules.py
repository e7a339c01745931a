"""The gate's decision rules on plain snapshots (docs/ci.md): tolerance, direction, intervals, calibration,
drift, unstable latencies, missing cells and the front, one rule per test, without a store in between.

tests/test_gate.py checks the same rules end to end (store -> baseline file -> `bench gate`); here each rule is
checked at its edge (just inside and just beyond a limit), which is where a wrong operator or constant shows."""

from __future__ import annotations

import numpy as np
import pytest

from bench.analysis import Paired, PairedComparer
from bench.errors import BenchError
from bench.evidence import values_evidence
from bench.gate import (
    Check,
    EvidenceSource,
    GateResult,
    Point,
    calibration_summary,
    compare,
    compare_value,
    drift,
    effective_rules,
    front_checks,
    identity_problems,
    median_snapshot,
    pareto_front,
    rule_for,
)
from bench.suite import FrontGate, GateRule, Gates

HW = "cpu"
LAT = "latency_ms_per_image"


def metric(value, low=None, high=None, hib=False, **provenance) -> dict:
    return {"value": value, "ci_low": low, "ci_high": high, "higher_is_better": hib, "provenance": provenance}


def cell(sampler="s", nfe=1, *, fd=1.0, lat=None, cal=None, status="done", reason=None, nfe_counted=1, hw=HW,
         res=8, extra=None, key=None, **more) -> dict:
    metrics = {"fd": metric(fd)} if fd is not None else {}
    if lat is not None:
        metrics[LAT] = lat if isinstance(lat, dict) else metric(lat)
    if cal is not None:
        metrics["calibration_ms"] = metric(cal)
    metrics.update(extra or {})
    return {"sampler": sampler, "nfe_requested": nfe, "resolution": res, "hardware": hw, "status": status,
            "reason": reason, "metrics": metrics, "nfe_counted": nfe_counted,
            "cell_key": key or f"{sampler}-{nfe}-{res}-{hw}", **more}


def snap(cells, run_id="r", **more) -> dict:
    return {"suite": "t", "suite_hash": "h", "run_id": run_id, "cells": cells,
            "calibration": calibration_summary(cells), "feature_spaces": {}, **more}


def only(**metrics: GateRule) -> Gates:
    """Gates with only these rules: no built-in rules, no front."""
    return Gates(defaults=False, metrics=metrics)


def checks(res: GateResult, metric_name: str | None = None) -> list[Check]:
    return [c for c in res.checks if metric_name is None or c.metric == metric_name]


def status(name, rule, hib, b, r, **kw) -> str:
    return compare_value(name, rule, hib, b, r, **kw)[0]


# ------------------------------------------------------------------------------------------ one metric's value


@pytest.mark.parametrize("hib", [False, True])
def test_a_change_fails_just_beyond_the_tolerance_in_the_metrics_bad_direction(hib):
    rule = GateRule(rel_tol=0.1, significance="none")
    worse, better = (lambda x: 10 - x, lambda x: 10 + x) if hib else (lambda x: 10 + x, lambda x: 10 - x)
    assert status("m", rule, hib, metric(10.0), metric(worse(0.999))) == "PASS"
    assert status("m", rule, hib, metric(10.0), metric(worse(1.0))) == "PASS"  # exactly at the limit
    assert status("m", rule, hib, metric(10.0), metric(worse(1.001))) == "FAIL"
    assert status("m", rule, hib, metric(10.0), metric(better(1.001))) == "BETTER"
    assert status("m", rule, hib, metric(10.0), metric(better(0.999))) == "PASS"


def test_the_tolerance_is_the_larger_of_rel_tol_and_abs_tol():
    rel_wins = GateRule(rel_tol=0.1, abs_tol=0.5, significance="none")  # 1.0 allowed at a baseline of 10
    assert status("m", rel_wins, False, metric(10.0), metric(10.9)) == "PASS"
    assert status("m", rel_wins, False, metric(10.0), metric(11.1)) == "FAIL"
    abs_wins = GateRule(rel_tol=0.01, abs_tol=0.5, significance="none")  # 0.5 allowed
    assert status("m", abs_wins, False, metric(10.0), metric(10.4)) == "PASS"
    assert status("m", abs_wins, False, metric(10.0), metric(10.6)) == "FAIL"
    only_abs = GateRule(abs_tol=0.5, significance="none")
    assert status("m", only_abs, False, metric(-10.0), metric(-9.6)) == "PASS"
    assert status("m", only_abs, False, metric(-10.0), metric(-9.4)) == "FAIL"
    negative = GateRule(rel_tol=0.1, significance="none")  # relative to |baseline|
    assert status("m", negative, False, metric(-10.0), metric(-9.1)) == "PASS"
    assert status("m", negative, False, metric(-10.0), metric(-8.9)) == "FAIL"


def test_a_rule_without_tolerance_fails_any_worsening_and_says_so():
    rule = GateRule(significance="none")
    st, change, limit, _ = compare_value("nfe_counted", rule, False, metric(4.0), metric(4.000001))
    assert (st, limit) == ("FAIL", "any worsening") and change == pytest.approx(0.00000025)
    assert status("nfe_counted", rule, False, metric(4.0), metric(4.0)) == "PASS"
    assert status("nfe_counted", rule, False, metric(4.0), metric(3.0)) == "BETTER"


def test_the_limit_text_and_the_relative_change():
    st, change, limit, note = compare_value("m", GateRule(rel_tol=0.1, abs_tol=0.25, significance="none"), False,
                                            metric(10.0), metric(12.0))
    assert (st, limit, note) == ("FAIL", "worse by >10% and >0.25", "") and change == pytest.approx(0.2)
    assert compare_value("m", GateRule(rel_tol=0.1, significance="none"), False, metric(0.0), metric(0.0))[1] is None


def test_drift_widens_the_relative_tolerance_multiplicatively():
    rule = GateRule(rel_tol=0.3, significance="none")  # allowed ratio 1.3 x 1.2 = 1.56
    assert status("m", rule, False, metric(1.0), metric(1.559), slack=1.2) == "PASS"
    assert status("m", rule, False, metric(1.0), metric(1.561), slack=1.2) == "FAIL"
    assert status("m", rule, False, metric(1.0), metric(1.31)) == "FAIL"  # no drift: 1.3
    limit = compare_value("m", rule, False, metric(1.0), metric(1.0), slack=1.2)[2]
    assert limit == "worse by >56% (30% x drift 1.20)"


def test_values_are_compared_divided_by_their_scales():
    rule = GateRule(rel_tol=0.3, significance="none")
    # 2 ms on a machine twice as slow (scale 2) is 1 ms of baseline work: unchanged
    st, change, _, _ = compare_value("m", rule, False, metric(1.0), metric(2.0), b_scale=1.0, r_scale=2.0)
    assert st == "PASS" and change == pytest.approx(0.0)
    assert status("m", rule, False, metric(2.0), metric(2.0), b_scale=1.0, r_scale=2.0) == "BETTER"
    assert status("m", rule, False, metric(2.0), metric(1.4), b_scale=2.0, r_scale=1.0) == "FAIL"


def test_missing_values():
    rule = GateRule(rel_tol=0.1)
    assert compare_value("m", rule, False, metric(None), metric(1.0)) == ("SKIP", None, "", "no baseline value")
    assert compare_value("m", rule, False, metric(1.0), metric(None)) == ("FAIL", None, "", "no value in the run")
    assert compare_value("m", rule, False, metric(1.0), metric(float("nan")))[0] == "FAIL"


@pytest.mark.parametrize("hib", [False, True])
def test_ci_rule_needs_the_intervals_apart_to_fail_or_to_be_better(hib):
    rule = GateRule(rel_tol=0.1, significance="ci")
    sign = -1 if hib else 1
    b = metric(10.0, 9.5, 10.5, hib)
    bad = 10 + sign * 2
    apart = metric(bad, bad - 0.4, bad + 0.4, hib)  # interval beyond the baseline's on the bad side
    touching = metric(bad, bad - 1.6, bad + 1.6, hib)  # reaches into the baseline's interval
    st, _, limit, note = compare_value("m", rule, hib, b, apart)
    assert (st, limit, note) == ("FAIL", "worse by >10%, CIs apart", "")
    st, _, _, note = compare_value("m", rule, hib, b, touching)
    assert (st, note) == ("PASS", "not significant: the intervals overlap")
    good = 10 - sign * 2
    assert status("m", rule, hib, b, metric(good, good - 0.4, good + 0.4, hib)) == "BETTER"
    assert status("m", rule, hib, b, metric(good, good - 1.6, good + 1.6, hib)) == "PASS"
    st, _, _, note = compare_value("m", rule, hib, metric(10.0, hib=hib), metric(bad, hib=hib))
    assert (st, note) == ("FAIL", "no interval: tolerance only")


def test_ci_rule_compares_intervals_divided_by_their_scales():
    rule = GateRule(rel_tol=0.3, significance="ci")
    b = metric(1.0, 0.9, 1.1)
    # run on a machine 2x slower: raw 3.0 [2.9, 3.1] is 1.5 [1.45, 1.55] of baseline work, apart and worse
    assert status("m", rule, False, b, metric(3.0, 2.9, 3.1), r_scale=2.0) == "FAIL"
    # raw 3.0 [2.0, 3.1] is [1.0, 1.55]: reaches the baseline's 1.1, not significant
    assert status("m", rule, False, b, metric(3.0, 2.0, 3.1), r_scale=2.0) == "PASS"


def _paired(delta: float, low: float, high: float, hib: bool = False, base: float = 10.0) -> Paired:
    return Paired("m", hib, base, base + delta, delta, low, high, 0.95, 200, 100)


def test_paired_rule_follows_the_paired_interval_against_the_tolerance():
    rule = GateRule(rel_tol=0.01, significance="paired")  # 0.1 allowed at a baseline of 10
    b, r = metric(10.0, 9.0, 11.0), metric(10.3, 9.3, 11.3)  # unpaired intervals overlap widely
    st, _, limit, note = compare_value("m", rule, False, b, r, paired=_paired(0.3, 0.2, 0.4))
    assert (st, limit) == ("FAIL", "worse by >1%, paired CI beyond it")
    assert note == "paired change +0.3 (+3.0%), paired 95% CI [+0.2, +0.4]"
    assert status("m", rule, False, b, r, paired=_paired(0.3, 0.05, 0.4)) == "PASS"  # interval reaches the limit
    assert status("m", rule, False, b, metric(9.7), paired=_paired(-0.3, -0.4, -0.2)) == "BETTER"
    assert status("m", rule, False, b, metric(9.7), paired=_paired(-0.3, -0.4, -0.05)) == "PASS"
    hib = compare_value("m", rule, True, metric(10.0, hib=True), metric(9.7, hib=True),
                        paired=_paired(-0.3, -0.4, -0.2, hib=True))
    assert hib[0] == "FAIL"


def test_paired_rule_without_evidence_falls_back_to_the_intervals_and_says_why():
    rule = GateRule(rel_tol=0.01, significance="paired")
    b = metric(10.0, 9.9, 10.1)
    st, _, limit, note = compare_value("m", rule, False, b, metric(11.0, 10.9, 11.1), unpaired_why="no evidence")
    assert (st, limit, note) == ("FAIL", "worse by >1%, CIs apart (unpaired fallback)",
                                 "unpaired fallback: no evidence")
    st, _, _, note = compare_value("m", rule, False, b, metric(11.0, 10.0, 12.0))
    assert (st, note) == ("PASS", "unpaired fallback; not significant: the intervals overlap")


# ------------------------------------------------------------------------------------------ rules


def test_the_base_names_rule_covers_its_variants_and_an_exact_rule_wins():
    fd, fd_pixels = GateRule(rel_tol=0.1), GateRule(rel_tol=0.5)
    assert rule_for("fd:clip", {"fd": fd}) is fd
    assert rule_for("fd:pixels", {"fd": fd, "fd:pixels": fd_pixels}) is fd_pixels
    assert rule_for("kid", {"fd": fd}) is None and rule_for("fd", {"fd:pixels": fd_pixels}) is None


def test_defaults_bring_the_built_in_rules_and_the_front_and_a_suites_rule_overrides_one():
    rules, front = effective_rules(Gates())
    assert {"fd", LAT, "nfe_counted"} <= set(rules) and front == FrontGate()
    mine = GateRule(rel_tol=0.5)
    rules, _ = effective_rules(Gates(metrics={"fd": mine}))
    assert rules["fd"] is mine and LAT in rules
    rules, front = effective_rules(Gates(defaults=False, metrics={"fd": mine}))
    assert rules == {"fd": mine} and front is None
    own_front = FrontGate(tol_quality=0.2)
    assert effective_rules(Gates(defaults=False, front=own_front))[1] is own_front


# ------------------------------------------------------------------------------------------ cells


def test_cell_status_rules():
    base = snap([cell("a"), cell("b"), cell("c"), cell("d"), cell("e"), cell("f", status="failed", reason="x"),
                 cell("g", status="failed", reason="y")])
    run = snap([cell("a"), cell("b", status="failed", reason="boom"), cell("c", status="planned"),
                cell("d", status="skipped", reason="no CUDA device"), cell("f"), cell("g", status="failed"),
                cell("h"), cell("i", status="skipped", reason="no CUDA device")])
    res = compare(base, run, only(fd=GateRule(rel_tol=0.1)))
    by_cell = {c.cell.split()[0]: (c.status, c.note) for c in checks(res, "cell")}
    assert by_cell == {
        "b": ("FAIL", "cell now failed: boom"),
        "c": ("FAIL", "cell now planned: the run did not finish this cell"),
        "d": ("SKIP", "skipped in the run: no CUDA device"),
        "e": ("FAIL", "cell missing from the run"),
        "f": ("NEW", "now done (baseline: failed)"),
        "h": ("NEW", "not in the baseline (done)"),
    }
    assert "s nfe=1" not in " ".join(res.notes)
    assert "d nfe=1 res=8 hw=cpu: not compared, skipped in the run (no CUDA device)" in res.notes
    assert [c.cell for c in checks(res, "fd")] == ["a nfe=1 res=8 hw=cpu"]
    assert res.exit_code == 1 and {c.cell.split()[0] for c in res.failures} == {"b", "c", "e"}


def test_a_failed_cell_without_a_reason_says_its_status():
    res = compare(snap([cell("a"), cell("b")]), snap([cell("a"), cell("b", status="failed")]),
                  only(fd=GateRule(rel_tol=0.1)))
    assert [c.note for c in checks(res, "cell")] == ["cell now failed: failed"]


def test_cells_match_on_every_axis_not_on_their_order():
    base = snap([cell("a", axes={"nfe": 1, "resolution": 8, "hardware": HW, "guidance": 1.0}, fd=1.0),
                 cell("a", axes={"nfe": 1, "resolution": 8, "hardware": HW, "guidance": 2.0}, fd=5.0)])
    run = snap(list(reversed(base["cells"])))
    res = compare(base, run, only(fd=GateRule(rel_tol=0.01, significance="none")))
    assert [c.status for c in checks(res, "fd")] == ["PASS", "PASS"]
    assert sorted(c.cell for c in checks(res, "fd")) == ["a nfe=1 res=8 hw=cpu guidance=1",
                                                         "a nfe=1 res=8 hw=cpu guidance=2"]


def test_a_metric_missing_from_the_run_fails_and_one_without_a_rule_is_not_compared():
    base = snap([cell("a", extra={"kid": metric(1.0), "other": metric(1.0)})])
    run = snap([cell("a", extra={"other": metric(99.0)})])
    res = compare(base, run, only(kid=GateRule(rel_tol=0.1)))
    assert [(c.cell, c.metric, c.status, c.baseline, c.note) for c in res.checks] == [
        ("a nfe=1 res=8 hw=cpu", "kid", "FAIL", 1.0, "metric missing from the run")]
    # a missing metric does not end the cell's checks: the next metric is still compared
    both = compare(snap([cell("a", fd=1.0, extra={"kid": metric(1.0)})]), snap([cell("a", fd=None,
                   extra={"kid": metric(1.0)})]), only(fd=GateRule(rel_tol=0.1), kid=GateRule(rel_tol=0.1)))
    assert [(c.metric, c.status) for c in both.checks] == [("fd", "FAIL"), ("kid", "PASS")]


def test_nfe_counted_any_increase_fails():
    rule = {"nfe_counted": GateRule(significance="none")}
    more = compare(snap([cell("a", nfe_counted=4)]), snap([cell("a", nfe_counted=5)]), only(**rule))
    assert [(c.status, c.baseline, c.run) for c in checks(more, "nfe_counted")] == [("FAIL", 4.0, 5.0)]
    fewer = compare(snap([cell("a", nfe_counted=4)]), snap([cell("a", nfe_counted=3)]), only(**rule))
    assert [c.status for c in checks(fewer, "nfe_counted")] == ["BETTER"]


def test_the_direction_comes_from_the_baselines_higher_is_better():
    clip = GateRule(abs_tol=0.5, significance="none")
    base = snap([cell("a", extra={"clip_score": metric(30.0, hib=True)})])
    down = compare(base, snap([cell("a", extra={"clip_score": metric(29.0, hib=True)})]), only(clip_score=clip))
    up = compare(base, snap([cell("a", extra={"clip_score": metric(31.0, hib=True)})]), only(clip_score=clip))
    assert [c.status for c in checks(down, "clip_score")] == ["FAIL"]
    assert [c.status for c in checks(up, "clip_score")] == ["BETTER"]


def test_a_reused_cell_is_compared_and_noted():
    res = compare(snap([cell("a")]), snap([cell("a", reused=True)]), only(fd=GateRule(rel_tol=0.1)))
    assert [c.status for c in checks(res, "fd")] == ["PASS"]
    assert res.notes == ["a nfe=1 res=8 hw=cpu: the run reused this cell's results from an earlier run (use a fresh "
                         "store or `bench run --force` to re-measure)"]


def test_nothing_to_compare_is_an_error_naming_both_hardware_lists():
    base = snap([cell("a", hw="cuda")])
    run = snap([cell("a", hw="cuda", status="skipped", reason="no CUDA device"), cell("b", hw="cpu")])
    with pytest.raises(BenchError, match=r"no common cell to compare.*baseline hardware \['cuda'\], "
                                         r"run hardware \['cpu'\]"):
        compare(base, run, only(fd=GateRule(rel_tol=0.1)))
    assert compare(snap([cell("a")]), snap([]), only(fd=GateRule(rel_tol=0.1))).exit_code == 1  # missing: a FAIL


# ------------------------------------------------------------------------------------------ latency


def _lat_cells(lat: float, cal: float = 10.0, *, n: int = 3, iqr: float = 0.01, cal_spread=(1.0, 1.0, 1.0),
               unstable: str = "", sampler="a") -> list[dict]:
    prov = {"unstable": True, "unstable_reason": unstable} if unstable else {}
    return [cell(f"{sampler}{i}", lat=metric(lat, lat * (1 - iqr), lat * (1 + iqr), **prov),
                 cal=cal * cal_spread[i % len(cal_spread)]) for i in range(n)]


LAT_RULE = {LAT: GateRule(rel_tol=0.3)}


def test_latency_is_compared_per_calibration_and_shown_so():
    base = snap(_lat_cells(1.0, cal=10.0))
    slower_machine = compare(base, snap(_lat_cells(1.5, cal=15.0)), only(**LAT_RULE))
    assert {(c.metric, c.status) for c in slower_machine.checks} == {(f"{LAT}/cal", "PASS")}
    c = slower_machine.checks[0]
    assert (c.baseline, c.run, c.change) == (pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.0))
    assert slower_machine.info["calibration_ratio"] == pytest.approx(1.5)
    slower_sampler = compare(base, snap(_lat_cells(1.5, cal=10.0)), only(**LAT_RULE))
    assert {c.status for c in slower_sampler.checks} == {"FAIL"}
    raw = compare(base, snap(_lat_cells(1.5, cal=15.0)), only(**{LAT: GateRule(rel_tol=0.3, normalize="none")}))
    assert {(c.metric, c.status) for c in raw.checks} == {(LAT, "FAIL")}


def test_a_latency_without_calibration_is_skipped_not_judged():
    base = snap([cell("a", lat=metric(1.0, 0.99, 1.01))])
    res = compare(base, snap([cell("a", lat=metric(9.0, 8.9, 9.1))]), only(**LAT_RULE))
    assert [(c.metric, c.status, c.note) for c in res.checks] == [(LAT, "SKIP", "no calibration_ms to normalise with")]


def test_calibration_per_run_divides_by_the_runs_median():
    base = snap([cell("a", lat=metric(1.0, 0.99, 1.01), cal=20.0), cell("b", fd=None, cal=10.0),
                 cell("c", fd=None, cal=10.0)])
    # each side's own cell calibration is off (20 in the baseline, 5 in the run), both medians are 10: a tie
    run = snap([cell("a", lat=metric(1.0, 0.99, 1.01), cal=5.0), cell("b", fd=None, cal=10.0),
                cell("c", fd=None, cal=10.0)])
    per_cell = compare(base, run, Gates(defaults=False, metrics=LAT_RULE, drift=False))
    per_run = compare(base, run, Gates(defaults=False, metrics=LAT_RULE, drift=False, calibration="run"))
    assert [c.status for c in per_cell.checks] == ["FAIL"] and [c.status for c in per_run.checks] == ["PASS"]


def test_calibration_summary_and_drift():
    cells = [cell("a", cal=10.0), cell("b", cal=12.0), cell("c", cal=15.0), cell("d", cal=99.0, status="failed"),
             cell("e", cal=None), cell("f", cal=20.0, hw="other")]
    s = calibration_summary(cells)
    assert s[HW] == {"median_ms": 12.0, "min_ms": 10.0, "max_ms": 15.0, "cells": 3, "drift": 1.5, "workload": None}
    assert drift(s, HW) == pytest.approx(1.5)
    assert drift(s, "other") == 1.0 and drift(s, "absent") == 1.0  # fewer than 3 cells: no drift measured
    assert drift(calibration_summary(cells[:2]), HW) == 1.0


def test_drift_widens_latency_limits_and_the_gate_says_so():
    base = snap(_lat_cells(1.0))
    steady = snap(_lat_cells(1.5))
    drifting = snap(_lat_cells(1.5, cal_spread=(1.0, 1.0, 1.25)))  # drift 1.25: limit 1.3 x 1.25 = 1.625
    assert {c.status for c in compare(base, steady, only(**LAT_RULE)).checks} == {"FAIL"}
    res = compare(base, drifting, only(**LAT_RULE))
    by = {c.cell.split()[0]: c.status for c in res.checks}
    assert by == {"a0": "PASS", "a1": "PASS", "a2": "PASS"}  # a2's own calibration is 12.5: 0.12 vs 0.1
    assert res.info["drift"] == {HW: {"baseline": 1.0, "run": pytest.approx(1.25)}}
    assert res.notes == [f"{HW}: the machine's speed varied while measuring (calibration drift x1.00 in the "
                         "baseline, x1.25 in the run), so latency limits are widened to x1.62; slower changes than "
                         "that are not flagged here (a quieter machine restores the sensitivity)"]
    off = compare(base, drifting, Gates(defaults=False, metrics=LAT_RULE, drift=False))
    assert {c.cell.split()[0]: c.status for c in off.checks} == {"a0": "FAIL", "a1": "FAIL", "a2": "PASS"}
    assert off.notes == []
    small = snap(_lat_cells(1.0, cal_spread=(1.0, 1.0, 1.15)))  # drift 1.15 <= 1.2: widened, but no note
    assert compare(base, small, only(**LAT_RULE)).notes == []


def test_an_unstable_latency_is_skipped_unless_slower_beyond_doubt():
    base = snap(_lat_cells(1.0, iqr=0.1))
    shaky = snap(_lat_cells(1.6, iqr=0.5, unstable="IQR 100% of the median"))
    res = compare(base, shaky, only(**LAT_RULE))
    assert {(c.metric, c.status) for c in res.checks} == {(LAT, "SKIP")}
    assert res.checks[0].note == "unstable latency, not used for a verdict (run: IQR 100% of the median)"
    assert (res.checks[0].baseline, res.checks[0].run) == (1.0, 1.6)
    # q25 of the run 5 x 0.9 = 4.5 > q75 of the baseline 1.1 x 1.3: slower beyond doubt
    beyond = compare(base, snap(_lat_cells(5.0, iqr=0.1, unstable="too few runs")), only(**LAT_RULE))
    c = beyond.checks[0]
    assert (c.metric, c.status) == (f"{LAT}/cal", "FAIL")
    assert c.note == "unstable latency, slower beyond doubt (run: too few runs)"
    assert c.limit == "unstable timings, but the run's q25 0.45 > the baseline's q75 0.11 x 1.3"
    assert (c.baseline, c.run, c.change) == (pytest.approx(0.1), pytest.approx(0.5), pytest.approx(4.0))
    # q25 1.3 x 0.9 = 1.17 < 1.1 x 1.3 = 1.43: could be noise
    near = compare(base, snap(_lat_cells(1.3, iqr=0.1, unstable="too few runs")), only(**LAT_RULE))
    assert {c.status for c in near.checks} == {"SKIP"}
    flagged_base = compare(snap(_lat_cells(1.0, iqr=0.1, unstable="busy")), snap(_lat_cells(1.0)), only(**LAT_RULE))
    assert flagged_base.checks[0].note == "unstable latency, not used for a verdict (baseline: busy)"
    both = compare(snap(_lat_cells(1.0, unstable="busy")), snap(_lat_cells(1.0, unstable="too few runs")),
                   only(**LAT_RULE))
    assert both.checks[0].note == ("unstable latency, not used for a verdict (baseline: busy; run: too few runs)")
    unnamed = compare(base, snap([cell(f"a{i}", lat=metric(1.0, 0.9, 1.1, unstable=True), cal=10.0)
                                  for i in range(3)]), only(**LAT_RULE))
    assert unnamed.checks[0].note == "unstable latency, not used for a verdict (run: unstable)"


def test_slower_beyond_doubt_uses_the_drift_and_the_calibration():
    base = snap(_lat_cells(1.0, iqr=0.1))
    # 2.0 x 0.9 = 1.8 on a run whose calibration is 2x: 0.9 of baseline work, under 1.1 x 1.3
    machine = compare(base, snap(_lat_cells(2.0, cal=20.0, iqr=0.1, unstable="busy")), only(**LAT_RULE))
    assert {c.status for c in machine.checks} == {"SKIP"}
    # q25 1.6 x 0.9 = 1.44 > 1.43 without drift, < 1.43 x 1.25 with the run's drift 1.25
    steady = compare(base, snap(_lat_cells(1.6, iqr=0.1, unstable="busy")), only(**LAT_RULE))
    assert {c.status for c in steady.checks} == {"FAIL"}
    spread = snap(_lat_cells(1.6, iqr=0.1, unstable="busy", cal_spread=(1.0, 1.0, 1.25)))
    drifting = compare(base, spread, only(**LAT_RULE))
    assert drifting.checks[0].status == "SKIP" and drifting.checks[1].status == "SKIP"
    no_tol = compare(base, snap(_lat_cells(9.0, iqr=0.1, unstable="busy")), only(**{LAT: GateRule(abs_tol=0.1)}))
    assert {c.status for c in no_tol.checks} == {"SKIP"}  # needs a relative tolerance
    no_iqr = compare(snap([cell(f"a{i}", lat=metric(1.0), cal=10.0) for i in range(3)]),
                     snap(_lat_cells(9.0, iqr=0.1, unstable="busy")), only(**LAT_RULE))
    assert {c.status for c in no_iqr.checks} == {"SKIP"}  # needs both interquartile ranges


# ------------------------------------------------------------------------------------------ paired evidence


def _evidence(values) -> dict:
    return {"score": values_evidence(np.asarray(values, float), list(range(len(values))))}


def test_paired_rule_reads_each_sides_evidence_and_falls_back_with_the_reason():
    rule = {"score": GateRule(rel_tol=0.01, significance="paired")}
    rng = np.random.default_rng(0)
    base_vals = rng.normal(10.0, 3.0, 200)
    b = snap([cell("a", fd=None, extra={"score": metric(float(base_vals.mean()), 0.0, 20.0)})])
    r = snap([cell("a", fd=None, extra={"score": metric(float(base_vals.mean()) + 0.5, 0.0, 20.0)})])
    base_ev = EvidenceSource(lambda key: _evidence(base_vals))
    worse_ev = EvidenceSource(lambda key: _evidence(base_vals + 0.5))  # every image 0.5 worse: 5 %
    res = compare(b, r, only(**rule), base_ev, worse_ev)
    (c,) = res.checks
    assert c.status == "FAIL" and c.note.startswith("paired change +0.5") and c.limit.endswith("paired CI beyond it")
    same = compare(b, b, only(**rule), base_ev, EvidenceSource(lambda key: _evidence(base_vals)))
    assert same.checks[0].status == "PASS" and same.checks[0].note.startswith("paired change +0 ")
    # without evidence the unpaired intervals overlap widely: no verdict of worse, and the note says why
    for base_src, run_src, why in (
            (None, worse_ev, "no per-image evidence given"),
            (EvidenceSource(lambda key: {}), worse_ev, "the baseline cell has no per-image evidence for this metric"),
            (base_ev, EvidenceSource(lambda key: {}), "the run's cell has no per-image evidence for this metric"),
            (EvidenceSource(None, missing="baseline evidence file damaged"), worse_ev, "baseline evidence file damaged"),
            (base_ev, EvidenceSource(lambda key: _evidence(base_vals[:100] + 0.5)), "sample counts differ (200 vs 100)")):
        (c,) = compare(b, r, only(**rule), base_src, run_src).checks
        assert (c.status, c.note) == ("PASS", f"unpaired fallback: {why}; not significant: the intervals overlap")


def test_paired_evidence_of_a_higher_is_better_metric_fails_on_a_drop():
    rule = {"score": GateRule(rel_tol=0.01, significance="paired")}
    vals = np.linspace(20.0, 40.0, 200)
    b = snap([cell("a", fd=None, extra={"score": metric(30.0, 0.0, 60.0, hib=True)})])
    r = snap([cell("a", fd=None, extra={"score": metric(28.5, 0.0, 60.0, hib=True)})])
    base_ev = EvidenceSource(lambda key: _evidence(vals))
    lower = compare(b, r, only(**rule), base_ev, EvidenceSource(lambda key: _evidence(vals * 0.95))).checks[0]
    higher = compare(b, r, only(**rule), base_ev, EvidenceSource(lambda key: _evidence(vals * 1.05))).checks[0]
    assert (lower.status, higher.status) == ("FAIL", "BETTER")


def test_paired_evidence_is_looked_up_by_each_sides_cell_key():
    rule = {"score": GateRule(rel_tol=0.01, significance="paired")}
    vals = np.linspace(1.0, 2.0, 50)
    b = snap([cell("a", fd=None, key="kb", extra={"score": metric(1.5, 0.0, 3.0)})])
    r = snap([cell("a", fd=None, key="kr", extra={"score": metric(1.6, 0.0, 3.0)})])
    base_ev = EvidenceSource(lambda key: _evidence(vals) if key == "kb" else {})
    run_ev = EvidenceSource(lambda key: _evidence(vals + 0.1) if key == "kr" else {})
    assert compare(b, r, only(**rule), base_ev, run_ev).checks[0].status == "FAIL"


# ------------------------------------------------------------------------------------------ front


def _front_cell(sampler, nfe, fd, lat, *, fd_ci=0.0, lat_iqr=0.0, cal=10.0, unstable="", res=8, hw=HW):
    prov = {"unstable": True, "unstable_reason": unstable} if unstable else {}
    return cell(sampler, nfe, fd=None, res=res, hw=hw, cal=cal,
                extra={"fd": metric(fd, fd * (1 - fd_ci), fd * (1 + fd_ci)),
                       LAT: metric(lat, lat * (1 - lat_iqr), lat * (1 + lat_iqr), **prov)})


FRONT = Gates(defaults=False, front=FrontGate(significance="none"), drift=False)


def _front(base_cells, run_cells, gates=FRONT, base_ev=None, run_ev=None) -> list[Check]:
    assert gates.front is not None
    return front_checks(snap(base_cells), snap(run_cells), gates.front, gates.calibration, gates.drift, base_ev,
                        run_ev, PairedComparer())


def test_every_front_point_must_be_kept_at_its_quality_and_latency():
    base = [_front_cell("fast", 1, 4.0, 1.0), _front_cell("good", 4, 1.0, 4.0), _front_cell("bad", 2, 5.0, 5.0)]
    same = _front(base, base)
    assert [(c.status, c.cell) for c in same] == [("PASS", f"front hw={HW} res=8: fast nfe=1"),
                                                   ("PASS", f"front hw={HW} res=8: good nfe=4")]
    assert same[0].note == "kept by fast nfe=1 (0.1/cal)" and same[0].metric == f"fd vs {LAT}/cal"
    assert same[0].limit == f"fd <= 4 x 1.01 at {LAT}/cal <= 0.1 x 1.3"
    worse_q = [_front_cell("fast", 1, 4.0 * 1.011, 1.0), *base[1:]]  # beyond tol_quality 1 %
    lost = _front(base, worse_q)
    assert [c.status for c in lost] == ["FAIL", "PASS"]
    assert lost[0].note == "front point lost: fast nfe=1 (fd 4 at 0.1/cal)"
    assert [c.status for c in _front(base, [_front_cell("fast", 1, 4.0 * 1.009, 1.0), *base[1:]])] == ["PASS", "PASS"]
    slower = [_front_cell("fast", 1, 4.0, 1.31), *base[1:]]  # beyond tol_latency 30 %
    assert [c.status for c in _front(base, slower)] == ["FAIL", "PASS"]
    assert [c.status for c in _front(base, [_front_cell("fast", 1, 4.0, 1.29), *base[1:]])] == ["PASS", "PASS"]


def test_a_front_point_may_be_kept_by_another_sampler_the_fastest_one_named():
    base = [_front_cell("old", 1, 2.0, 1.0)]
    run = [_front_cell("old", 1, 9.0, 1.0), _front_cell("new", 1, 1.9, 1.1), _front_cell("newer", 2, 1.8, 0.9)]
    (c,) = _front(base, run)
    assert c.status == "PASS" and c.note == "kept by newer nfe=2 (0.09/cal)" and c.run == 1.8


def test_front_tolerances_and_calibration():
    base = [_front_cell("a", 1, 2.0, 1.0)]
    loose = Gates(defaults=False, front=FrontGate(significance="none", tol_quality=0.2, tol_latency=1.0), drift=False)
    assert _front(base, [_front_cell("a", 1, 2.3, 1.9)], loose)[0].status == "PASS"
    assert _front(base, [_front_cell("a", 1, 2.5, 1.9)], loose)[0].status == "FAIL"
    assert _front(base, [_front_cell("a", 1, 2.3, 2.1)], loose)[0].status == "FAIL"
    # a machine twice as slow: calibrated latency is unchanged
    assert _front(base, [_front_cell("a", 1, 2.0, 2.0, cal=20.0)])[0].status == "PASS"
    raw = Gates(defaults=False, front=FrontGate(significance="none", normalize="none"), drift=False)
    (c,) = _front(base, [_front_cell("a", 1, 2.0, 2.0, cal=20.0)], raw)
    assert c.status == "FAIL" and c.metric == f"fd vs {LAT}"
    uncalibrated = [cell("a", fd=None, extra={"fd": metric(2.0), LAT: metric(1.0)})]
    assert _front(uncalibrated, uncalibrated) == []  # nothing to normalise with: no front point


def test_front_latency_limit_widens_with_drift():
    base = [_front_cell("a", 1, 2.0, 1.0), _front_cell("b", 1, 9.0, 9.0), _front_cell("c", 1, 9.0, 9.0)]
    run = [_front_cell("a", 1, 2.0, 1.5), _front_cell("b", 1, 9.0, 9.0, cal=12.0), _front_cell("c", 1, 9.0, 9.0)]
    # a's calibrated latency: 1.5 / 10 = 0.15 vs 0.1 x 1.3 x drift 1.2 = 0.156
    with_drift = Gates(defaults=False, front=FrontGate(significance="none"))
    (c,) = _front(base, run, with_drift)
    assert c.status == "PASS" and c.limit.endswith("<= 0.1 x 1.56")
    assert _front(base, run)[0].status == "FAIL"


def test_front_ci_significance_keeps_a_point_whose_intervals_overlap():
    base = [_front_cell("a", 1, 2.0, 1.0, fd_ci=0.05, lat_iqr=0.05)]
    ci = Gates(defaults=False, front=FrontGate(significance="ci"), drift=False)
    run = [_front_cell("a", 1, 2.2, 1.0, fd_ci=0.06)]  # 2.2 x 0.94 = 2.07 <= 2.1: overlaps
    assert _front(base, run, ci)[0].status == "PASS" and _front(base, run)[0].status == "FAIL"
    far = [_front_cell("a", 1, 2.4, 1.0, fd_ci=0.06)]  # 2.26 > 2.1
    assert _front(base, far, ci)[0].status == "FAIL"
    slow = [_front_cell("a", 1, 2.0, 1.4, lat_iqr=0.25)]  # latency IQR [1.05, 1.75] reaches 1.05
    assert _front(base, slow, ci)[0].status == "PASS" and _front(base, slow)[0].status == "FAIL"
    assert _front(base, [_front_cell("a", 1, 2.0, 1.4, lat_iqr=0.2)], ci)[0].status == "FAIL"
    assert "(or intervals overlap)" in _front(base, run, ci)[0].limit


def test_unstable_latencies_keep_no_front_point_and_lose_none():
    base = [_front_cell("a", 1, 2.0, 1.0)]
    flagged = [_front_cell("a", 1, 2.0, 1.0, unstable="busy")]
    (c,) = _front(flagged, base)
    assert (c.status, c.note) == ("SKIP", "unstable latency in the baseline (busy): not used for a verdict")
    (c,) = _front(base, flagged)
    assert (c.status, c.note) == ("SKIP", "not kept by a stable run point, and some run latencies are unstable: "
                                           "no verdict")
    (c,) = _front(base, [*flagged, _front_cell("b", 1, 2.0, 1.0)])
    assert c.status == "PASS" and c.note.startswith("kept by b nfe=1")
    (c,) = _front(base, [_front_cell("a", 1, 2.0, 1.0, unstable="busy"), _front_cell("b", 1, 9.0, 9.0)])
    assert c.status == "SKIP"


def test_front_points_per_hardware_and_resolution_and_variants_of_the_quality_metric():
    base = [_front_cell("a", 1, 2.0, 1.0, res=8), _front_cell("a", 1, 3.0, 2.0, res=16),
            _front_cell("a", 1, 2.0, 1.0, hw="gpu")]
    run = [_front_cell("a", 1, 2.0, 1.0, res=8), _front_cell("a", 1, 3.5, 2.0, res=16)]
    out = _front(base, run)
    assert [(c.cell, c.status) for c in out] == [(f"front hw={HW} res=8: a nfe=1", "PASS"),
                                                 (f"front hw={HW} res=16: a nfe=1", "FAIL"),
                                                 ("front hw=gpu res=8: a nfe=1", "FAIL")]
    variant = [cell("a", fd=None, cal=10.0, extra={"fd:pixels": metric(2.0), LAT: metric(1.0)})]
    (c,) = _front(variant, variant)
    assert c.metric == f"fd:pixels vs {LAT}/cal" and c.status == "PASS"
    failed = [_front_cell("a", 1, 2.0, 1.0)]
    failed[0]["status"] = "failed"
    b_only = [_front_cell("b", 1, 5.0, 5.0)]
    assert _front([*failed, *b_only], b_only)[0].cell.endswith("b nfe=1")


def test_the_paired_front_compares_the_front_points_evidence_with_the_candidates():
    vals = np.linspace(1.0, 3.0, 100)
    base = [_front_cell("a", 1, 2.0, 1.0, fd_ci=0.5)]
    run = [_front_cell("a", 1, 2.1, 1.0, fd_ci=0.5)]  # 5 % worse; unpaired intervals overlap
    paired = Gates(defaults=False, front=FrontGate(), drift=False)
    b_ev = EvidenceSource(lambda key: {"fd": values_evidence(vals, list(range(100)))})
    r_ev = EvidenceSource(lambda key: {"fd": values_evidence(vals * 1.05, list(range(100)))})
    assert _front(base, run, paired, b_ev, r_ev)[0].status == "FAIL"
    same = EvidenceSource(lambda key: {"fd": values_evidence(vals, list(range(100)))})
    assert _front(base, base, paired, b_ev, same)[0].status == "PASS"
    assert _front(base, run, paired)[0].status == "PASS"  # no evidence: unpaired overlap
    assert "(paired quality CI)" in _front(base, run, paired)[0].limit


def test_pareto_front_keeps_the_undominated_points_by_latency():
    pts = [Point("a", 1.0, 5.0), Point("b", 2.0, 1.0), Point("c", 2.0, 6.0), Point("d", 1.0, 5.0),
           Point("e", 0.5, 9.0), Point("f", 3.0, 1.0)]
    assert [p.label for p in pareto_front(pts)] == ["b", "a", "d", "e"]


# ------------------------------------------------------------------------------------------ results, baselines


def test_the_gate_fails_on_any_failed_check_or_front_point():
    ok, bad = Check("PASS", "c", "fd"), Check("FAIL", "c", "fd")
    assert GateResult(checks=[ok, Check("SKIP", "c", "x"), Check("NEW", "d", "cell")]).exit_code == 0
    assert GateResult(checks=[ok, bad]).exit_code == 1 and GateResult(front=[bad]).failures == [bad]
    assert GateResult(checks=[ok], front=[bad]).to_json()["status"] == "fail"
    assert GateResult(checks=[ok]).to_json()["status"] == "pass"


def test_median_snapshot_takes_each_cells_median_calibrated_latency_from_stable_runs():
    def run(run_id, lat, cal=10.0, unstable=""):
        prov = {"unstable": True, "unstable_reason": unstable} if unstable else {}
        return snap([cell("a", lat=metric(lat, lat, lat, **prov), cal=cal), cell("b", lat=metric(1.0), cal=10.0)],
                    run_id=run_id)

    three = median_snapshot([run("r1", 3.0), run("r2", 1.0), run("r3", 2.0, cal=5.0)])  # normalised .3 .1 .4
    a = three["cells"][0]
    assert (a["source_run"], a["metrics"][LAT]["value"]) == ("r1", 3.0)
    assert three["runs"] == ["r1", "r2", "r3"] and three["cells"][1]["source_run"] == "r2"  # equal: the middle run
    assert three["calibration"] == calibration_summary(three["cells"])
    even = median_snapshot([run("r1", 1.0), run("r2", 2.0), run("r3", 4.0), run("r4", 3.0)])
    assert even["cells"][0]["source_run"] == "r2"  # the lower median
    stable = median_snapshot([run("r1", 9.0, unstable="busy"), run("r2", 1.0), run("r3", 8.0, unstable="busy")])
    assert stable["cells"][0]["source_run"] == "r2"
    none_stable = median_snapshot([run("r1", 9.0, unstable="x"), run("r2", 1.0, unstable="x"),
                                   run("r3", 5.0, unstable="x")])
    assert none_stable["cells"][0]["source_run"] == "r3"
    failed = run("r2", 1.0)
    failed["cells"][0]["status"] = "failed"
    assert median_snapshot([run("r1", 3.0), failed])["cells"][0]["source_run"] == "r1"
    other = run("r2", 1.0)
    other["suite_hash"] = "changed"
    with pytest.raises(BenchError, match="runs r1 and r2 cannot be combined: suite hash differs"):
        median_snapshot([run("r1", 1.0), other])


def test_identity_problems_name_what_differs():
    base = snap([cell("a", n=256)], feature_spaces={"fd": [{"name": "pixels"}]})
    assert identity_problems(base, dict(base)) == []
    assert identity_problems(base, {**base, "suite": "u"})[0] == "suite differs: baseline 't', run 'u'"
    (p,) = identity_problems(base, {**base, "suite_hash": "g"})
    assert p.startswith("suite hash differs: baseline h, run g (the suite file changed")
    (p,) = identity_problems(base, {**base, "feature_spaces": {"fd": [{"name": "clip"}]}})
    assert p.startswith("feature space of fd differs")
    assert identity_problems(base, {**base, "feature_spaces": {"kid": [{"name": "clip"}]}}) == []


def test_slower_beyond_doubt_needs_the_fast_quartile_strictly_beyond_the_limit():
    raw = {LAT: GateRule(rel_tol=0.3, normalize="none")}
    base = snap([cell("a", lat=metric(1.0, 0.5, 1.0))])
    at_limit = snap([cell("a", lat=metric(2.0, 1.3, 2.5, unstable=True))])  # q25 1.3 = q75 1.0 x 1.3
    assert [c.status for c in compare(base, at_limit, only(**raw)).checks] == ["SKIP"]
    beyond = snap([cell("a", lat=metric(2.0, 1.31, 2.5, unstable=True))])
    assert [c.status for c in compare(base, beyond, only(**raw)).checks] == ["FAIL"]


def test_front_limits_are_inclusive():
    base = [_front_cell("a", 1, 2.0, 1.0, fd_ci=0.05, lat_iqr=0.05)]
    # quality exactly at 2.0 x 1.01 and latency exactly at 1.0 x 1.3 (raw latencies, no drift) keep the point
    raw = Gates(defaults=False, front=FrontGate(significance="none", normalize="none"), drift=False)
    assert _front(base, [_front_cell("a", 1, 2.0 * 1.01, 1.0 * 1.3)], raw)[0].status == "PASS"
    # with ci: an interval whose low end equals the front point's high end overlaps it
    ci = Gates(defaults=False, front=FrontGate(significance="ci", normalize="none"), drift=False)
    touching = cell("a", fd=None, cal=10.0, extra={"fd": metric(2.5, 2.1, 2.9), LAT: metric(1.0, 0.95, 1.05)})
    assert _front(base, [touching], ci)[0].status == "PASS"
    apart = cell("a", fd=None, cal=10.0, extra={"fd": metric(2.5, 2.1000001, 2.9), LAT: metric(1.0, 0.95, 1.05)})
    assert _front(base, [apart], ci)[0].status == "FAIL"


def test_the_paired_front_uses_each_cells_own_evidence_and_the_relative_tolerance():
    vals = np.linspace(1.0, 3.0, 100)  # mean 2.0: tol_quality 1 % allows a paired worsening of 0.02
    base = [_front_cell("a", 1, 2.0, 1.0, fd_ci=0.5)]
    paired = Gates(defaults=False, front=FrontGate(), drift=False)

    def source(key_values):
        return EvidenceSource(lambda key: {"fd": values_evidence(key_values[key], list(range(100)))}
                              if key in key_values else {})

    b_ev = source({"a-1-8-cpu": vals})
    slightly = [_front_cell("a", 1, 2.015, 1.0, fd_ci=0.5)]  # 0.75 % worse on every image: inside 1 %
    assert _front(base, slightly, paired, b_ev, source({"a-1-8-cpu": vals * 1.0075}))[0].status == "PASS"
    assert _front(base, slightly, paired, b_ev, source({"a-1-8-cpu": vals * 1.015}))[0].status == "FAIL"
    # evidence of another cell key is not this cell's: unpaired fallback (intervals overlap, kept)
    assert _front(base, slightly, paired, b_ev, source({"other": vals * 1.015}))[0].status == "PASS"
    assert _front(base, slightly, paired, source({"other": vals}), source({"a-1-8-cpu": vals * 1.015}))[0] \
        .status == "PASS"
    # evidence on one side only: unpaired, never a crash
    assert _front(base, slightly, paired, None, source({"a-1-8-cpu": vals * 1.015}))[0].status == "PASS"
    assert _front(base, slightly, paired, b_ev, None)[0].status == "PASS"


def test_median_snapshot_without_latencies_keeps_the_first_done_record():
    def run(run_id, status="done", **extra):
        return snap([cell("a", status=status, **extra)], run_id=run_id)

    assert median_snapshot([run("r1"), run("r2"), run("r3")])["cells"][0]["source_run"] == "r1"
    assert median_snapshot([run("r1", "failed"), run("r2"), run("r3")])["cells"][0]["source_run"] == "r2"
    none_done = median_snapshot([run("r1", "failed"), run("r2", "failed")])["cells"][0]
    assert (none_done["source_run"], none_done["status"]) == ("r1", "failed")
    # a latency without a calibration, or a calibration without a latency, is not timed
    odd = median_snapshot([run("r1", lat=metric(5.0)), run("r2", lat=metric(None), cal=10.0),
                           run("r3", lat=metric(1.0), cal=0.0)])
    assert odd["cells"][0]["source_run"] == "r1"


def test_median_snapshot_recomputes_the_calibration_and_feature_spaces_of_the_chosen_cells():
    from bench.gate import feature_spaces

    runs = [snap([cell("a", fd=None, lat=metric(lat), cal=cal,
                       extra={"fd": metric(1.0, feature_space={"feature_space": f"v{i}"})})], run_id=f"r{i}")
            for i, (lat, cal) in enumerate(((3.0, 10.0), (1.0, 10.0), (1.0, 5.0)))]
    combined = median_snapshot([{**r, "feature_spaces": {"stale": True}} for r in runs])
    assert combined["cells"][0]["source_run"] == "r2"  # normalised 0.3, 0.1, 0.2: the median is r2's
    assert combined["calibration"][HW]["median_ms"] == 5.0
    assert combined["feature_spaces"] == feature_spaces(combined["cells"])
    assert combined["feature_spaces"]["fd"][0]["feature_space"] == "v2"


def test_runs_that_differ_in_several_ways_say_all_of_them():
    a = snap([cell("a")], run_id="r1")
    b = {**snap([cell("a")], run_id="r2"), "suite": "u", "suite_hash": "g"}
    with pytest.raises(BenchError) as e:
        median_snapshot([a, b])
    assert str(e.value).startswith("runs r1 and r2 cannot be combined: suite differs: baseline 't', run 'u'; "
                                   "suite hash differs: baseline h, run g")


def test_gate_result_json_has_every_check_the_notes_and_the_front():
    res = GateResult(checks=[Check("PASS", "c", "fd", 1.0, 1.0, 0.0, "worse by >1%", "")],
                     front=[Check("FAIL", "front", "fd vs latency", note="lost")], notes=["n1"], info={"drift": {}})
    out = res.to_json()
    assert out["status"] == "fail" and out["exit_code"] == 1 and out["notes"] == ["n1"] and out["drift"] == {}
    assert out["checks"] == [{"status": "PASS", "cell": "c", "metric": "fd", "baseline": 1.0, "run": 1.0,
                              "change": 0.0, "limit": "worse by >1%", "note": ""}]
    assert [c["note"] for c in out["front"]] == ["lost"]


def test_front_points_skip_unusable_cells_and_keep_looking():
    good = _front_cell("b", 1, 2.0, 1.0)
    no_latency = cell("a", fd=None, cal=10.0, extra={"fd": metric(1.0)})
    no_quality_value = _front_cell("a", 1, 1.0, 0.5)
    no_quality_value["metrics"]["fd"]["value"] = None
    no_calibration = _front_cell("a", 1, 1.0, 0.5)
    del no_calibration["metrics"]["calibration_ms"]
    failed = _front_cell("a", 1, 1.0, 0.5, )
    failed["status"] = "failed"
    for bad in (no_latency, no_quality_value, no_calibration, failed):
        (c,) = _front([bad, good], [good])
        assert (c.status, c.cell) == ("PASS", f"front hw={HW} res=8: b nfe=1")


def test_front_with_raw_latency_names_the_raw_numbers():
    raw = Gates(defaults=False, front=FrontGate(significance="none", normalize="none"), drift=False)
    (c,) = _front([_front_cell("a", 1, 2.0, 1.0)], [_front_cell("a", 1, 2.0, 1.5)], raw)
    assert c.status == "FAIL" and c.note == "front point lost: a nfe=1 (fd 2 at 1)"
    assert c.limit == f"fd <= 2 x 1.01 at {LAT} <= 1 x 1.3"


def test_front_calibration_per_run_divides_by_the_runs_median():
    per_run = Gates(defaults=False, front=FrontGate(significance="none"), drift=False, calibration="run")
    base = [_front_cell("a", 1, 2.0, 1.0, cal=20.0), _front_cell("x", 1, 9.0, 9.0), _front_cell("y", 1, 9.0, 9.0)]
    # each side's own cell calibration is off (20 in the baseline, 5 in the run), both runs' medians are 10:
    # per run the latency is unchanged
    run = [_front_cell("a", 1, 2.0, 1.0, cal=5.0), _front_cell("x", 1, 9.0, 9.0), _front_cell("y", 1, 9.0, 9.0)]
    assert _front(base, run, per_run)[0].status == "PASS"
    assert _front(base, run)[0].status == "FAIL"  # per cell: 1.0 / 5 = 0.2 against 1.0 / 20 = 0.05


def test_an_unstable_front_point_without_a_reason_says_unstable():
    flagged = _front_cell("a", 1, 2.0, 1.0)
    flagged["metrics"][LAT]["provenance"] = {"unstable": True}
    (c,) = _front([flagged], [_front_cell("a", 1, 2.0, 1.0)])
    assert c.note == "unstable latency in the baseline (unstable): not used for a verdict"


def test_front_latency_limit_widens_with_the_baselines_drift_too():
    base = [_front_cell("a", 1, 2.0, 1.0), _front_cell("b", 1, 9.0, 9.0, cal=12.0), _front_cell("c", 1, 9.0, 9.0)]
    run = [_front_cell("a", 1, 2.0, 1.5), _front_cell("b", 1, 9.0, 9.0), _front_cell("c", 1, 9.0, 9.0)]
    with_drift = Gates(defaults=False, front=FrontGate(significance="none"))
    assert _front(base, run, with_drift)[0].status == "PASS"  # 0.15 <= 0.1 x 1.3 x 1.2
    assert _front(base, run)[0].status == "FAIL"


def test_the_paired_front_also_accepts_an_overlapping_latency_iqr():
    base = [_front_cell("a", 1, 2.0, 1.0, lat_iqr=0.05)]
    slow = [_front_cell("a", 1, 2.0, 1.4, lat_iqr=0.25)]  # beyond x1.3, but its IQR reaches 1.05
    paired = Gates(defaults=False, front=FrontGate(significance="paired"), drift=False)
    assert _front(base, slow, paired)[0].status == "PASS"
    assert _front(base, slow)[0].status == "FAIL"


def test_a_change_within_float_noise_of_the_limit_is_at_the_limit():
    rule = GateRule(abs_tol=0.5, significance="none")
    assert status("m", rule, False, metric(1.0), metric(1.5 + 0.5e-12)) == "PASS"  # 1e-12 x max(|b|, 1)
    assert status("m", rule, False, metric(1.0), metric(1.5 + 1.5e-12)) == "FAIL"
    big = GateRule(abs_tol=1.0, significance="none")  # the noise allowance scales with the baseline
    assert status("m", big, False, metric(1e6), metric(1e6 + 1.0 + 0.5e-6)) == "PASS"
    assert status("m", big, False, metric(1e6), metric(1e6 + 1.0 + 2e-6)) == "FAIL"


def test_a_paired_interval_that_ends_at_the_tolerance_is_not_beyond_it():
    rule = GateRule(abs_tol=0.5, significance="paired")
    assert status("m", rule, False, metric(10.0), metric(10.6), paired=_paired(0.6, 0.5, 0.7)) == "PASS"
    assert status("m", rule, False, metric(10.0), metric(10.6), paired=_paired(0.6, 0.51, 0.7)) == "FAIL"
    assert status("m", rule, False, metric(10.0), metric(9.4), paired=_paired(-0.6, -0.7, -0.5)) == "PASS"


def test_paired_fallback_without_intervals_says_both_things():
    st, _, _, note = compare_value("m", GateRule(rel_tol=0.01, significance="paired"), False, metric(10.0),
                                   metric(11.0), unpaired_why="no per-image evidence given")
    assert (st, note) == ("FAIL", "unpaired fallback: no per-image evidence given; no interval: tolerance only")


@pytest.mark.parametrize("hib", [False, True])
def test_intervals_that_touch_overlap(hib):
    rule = GateRule(rel_tol=0.1, significance="ci")
    b = metric(10.0, 9.5, 10.5, hib)
    up, down = metric(12.0, 10.5, 13.5, hib), metric(8.0, 6.5, 9.5, hib)  # each touches the baseline's interval
    assert status("m", rule, hib, b, up) == "PASS" and status("m", rule, hib, b, down) == "PASS"
    up_apart, down_apart = metric(12.0, 10.51, 13.5, hib), metric(8.0, 6.5, 9.49, hib)
    assert {status("m", rule, hib, b, up_apart), status("m", rule, hib, b, down_apart)} == {"FAIL", "BETTER"}


def test_both_intervals_are_divided_by_their_own_scale():
    rule = GateRule(rel_tol=0.1, significance="ci")
    # baseline 1.0 [0.9, 1.1] at scale 0.5 is 2.0 [1.8, 2.2]; run 3.0 [2.8, 3.2] at scale 2 is 1.5 [1.4, 1.6]
    assert status("m", rule, False, metric(1.0, 0.9, 1.1), metric(3.0, 2.8, 3.2), b_scale=0.5, r_scale=2.0) \
        == "BETTER"
    assert status("m", rule, True, metric(1.0, 0.9, 1.1, True), metric(3.0, 2.8, 3.2, True), b_scale=0.5,
                  r_scale=2.0) == "FAIL"


def test_drift_in_the_baseline_widens_the_limits_too():
    base = snap(_lat_cells(1.0, cal_spread=(1.0, 1.0, 1.25)))
    res = compare(base, snap(_lat_cells(1.5)), only(**LAT_RULE))
    # a0, a1: 0.15 vs 0.1 is inside 1.3 x 1.25; a2's own baseline calibration is 12.5: 0.15 vs 0.08 is not
    assert {c.cell.split()[0]: c.status for c in res.checks} == {"a0": "PASS", "a1": "PASS", "a2": "FAIL"}
    assert res.info["drift"][HW] == {"baseline": pytest.approx(1.25), "run": 1.0}


def test_a_calibration_on_one_side_only_gives_no_calibration_ratio():
    res = compare(snap([cell("a", cal=10.0)]), snap([cell("a")]), only(fd=GateRule(rel_tol=0.1)))
    assert [c.status for c in res.checks] == ["PASS"] and "calibration_ratio" not in res.info
    res = compare(snap([cell("a")]), snap([cell("a", cal=10.0)]), only(fd=GateRule(rel_tol=0.1)))
    assert "calibration_ratio" not in res.info


def test_an_unstable_latency_under_a_raw_rule_is_judged_raw():
    raw = {LAT: GateRule(rel_tol=0.3, normalize="none")}
    base = snap(_lat_cells(1.0, cal=10.0, iqr=0.1))
    # 5x slower in raw time on a machine 10x slower: beyond doubt raw, not per calibration
    res = compare(base, snap(_lat_cells(5.0, cal=100.0, iqr=0.1, unstable="busy")), only(**raw))
    assert {(c.metric, c.status) for c in res.checks} == {(LAT, "FAIL")}
    assert res.checks[0].limit == "unstable timings, but the run's q25 4.5 > the baseline's q75 1.1 x 1.3"
    # with calibration on one side only, the comparison cannot be normalised: raw values as well
    one_side = [cell(f"a{i}", lat=metric(5.0, 4.5, 5.5, unstable=True, unstable_reason="busy")) for i in range(3)]
    res = compare(base, snap(one_side), only(**LAT_RULE))
    assert {(c.metric, c.status) for c in res.checks} == {(LAT, "FAIL")}


def test_identity_names_differing_overrides_when_the_suite_file_is_the_same():
    text = "name: t\nsamples: 8\n"
    base = {**snap([cell("a")]), "suite_hash": "h1", "suite_text": text + "\n# --set samples=4\n"}
    run = {**snap([cell("a")]), "suite_hash": "h2", "suite_text": text + "\n# --set samples=6\n# --set base_seed=1\n"}
    (p,) = identity_problems(base, run)
    assert p == ("suite hash differs: baseline h1, run h2: the suite file is the same but the --set overrides "
                 "differ (baseline --set samples=4, run --set samples=6 --set base_seed=1); run with the baseline's "
                 "overrides, or re-record it with `bench baseline save`")
    (p,) = identity_problems({**base, "suite_text": text}, run)
    assert "(baseline none, run --set samples=6 --set base_seed=1)" in p
    edited = {**run, "suite_text": "name: t\nsamples: 9\n\n# --set samples=6\n"}
    (p,) = identity_problems(base, edited)
    assert p == "suite hash differs: baseline h1, run h2 (the suite file changed; re-record with `bench baseline save`)"
    (p,) = identity_problems({**base, "suite_text": None}, {**run, "suite_text": None})
    assert p.endswith("(the suite file changed; re-record with `bench baseline save`)")
    same_sets = {**run, "suite_text": base["suite_text"]}  # same text, other hash: not an override difference
    assert identity_problems(base, same_sets)[0].endswith("(the suite file changed; re-record with `bench baseline "
                                                          "save`)")


def test_identity_names_the_feature_space_and_sample_count_that_differ():
    space = {"feature_space": "pixels", "feature_space_version": "1", "weights_sha256": "ab" * 32,
             "preprocessing": "native", "feature_dim": 64}
    base = {**snap([cell("a", fd=None, extra={"fd": {**metric(1.0), "n": 256}})]), "samples": 256,
            "feature_spaces": {"fd": [space]}}
    run = {**snap([cell("a", fd=None, extra={"fd": {**metric(1.0), "n": 128}})]), "samples": 128,
           "feature_spaces": {"fd": [{**space, "feature_dim": 32}]}}
    assert identity_problems(base, run) == [
        "feature space of fd differs: baseline pixels (v1, weights abababababab, native, dim 64), run pixels (v1, "
        "weights abababababab, native, dim 32)",
        "sample count differs: baseline 256, run 128"]
    mixed = {**run, "samples": 256, "feature_spaces": base["feature_spaces"]}
    assert identity_problems(base, mixed) == ["sample count differs: baseline 256, run 128/256"]


def test_calibration_summary_keeps_the_workload_it_timed():
    def cal_cell(name, value, workload=None, **kw):
        c = cell(name, cal=value, **kw)
        if workload is not None:
            c["metrics"]["calibration_ms"]["provenance"] = {"workload": workload}
        return c

    s = calibration_summary([cal_cell("a", 10.0, "conv x4 + gemm"), cal_cell("b", 11.0), cal_cell("c", 12.0)])
    assert s[HW]["workload"] == "conv x4 + gemm"
    assert calibration_summary([cal_cell("a", 10.0)])[HW]["workload"] is None


def test_front_checks_carry_the_point_its_limit_and_the_keeping_value():
    metric_name = f"fd vs {LAT}/cal"
    where = f"front hw={HW} res=8"
    base = [_front_cell("a", 1, 2.0, 1.0)]
    (kept,) = _front(base, [_front_cell("a", 1, 2.01, 1.0)])
    assert kept == Check("PASS", f"{where}: a nfe=1", metric_name, 2.0, 2.01, None,
                         f"fd <= 2 x 1.01 at {LAT}/cal <= 0.1 x 1.3", "kept by a nfe=1 (0.1/cal)")
    (lost,) = _front(base, [_front_cell("a", 1, 3.0, 1.0)])
    assert lost == Check("FAIL", f"{where}: a nfe=1", metric_name, 2.0, None, None,
                         f"fd <= 2 x 1.01 at {LAT}/cal <= 0.1 x 1.3", "front point lost: a nfe=1 (fd 2 at 0.1/cal)")
    (unsure,) = _front(base, [_front_cell("a", 1, 2.0, 1.0, unstable="busy")])
    assert (unsure.cell, unsure.metric, unsure.baseline, unsure.limit) == (
        f"{where}: a nfe=1", metric_name, 2.0, f"fd <= 2 x 1.01 at {LAT}/cal <= 0.1 x 1.3")
    # an unstable front point is skipped and the next front point is still checked
    two = [_front_cell("a", 1, 2.0, 1.0, unstable="busy"), _front_cell("b", 2, 1.0, 2.0)]
    out = _front(two, [_front_cell("b", 2, 1.0, 2.0)])
    assert [(c.cell, c.status) for c in out] == [(f"{where}: a nfe=1", "SKIP"), (f"{where}: b nfe=2", "PASS")]
    assert (out[0].metric, out[0].baseline, out[0].limit) == (metric_name, 2.0,
                                                              f"fd <= 2 x 1.01 at {LAT}/cal <= 0.1 x 1.3")
    ci = Gates(defaults=False, front=FrontGate(significance="ci"), drift=False)
    paired = Gates(defaults=False, front=FrontGate(), drift=False)
    assert _front(base, base, ci)[0].limit == f"fd <= 2 x 1.01 at {LAT}/cal <= 0.1 x 1.3 (or intervals overlap)"
    assert _front(base, base, paired)[0].limit == f"fd <= 2 x 1.01 at {LAT}/cal <= 0.1 x 1.3 (paired quality CI)"
