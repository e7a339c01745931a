"""Two runs side by side: per cell and metric, the change from run A to run B with its uncertainty.

`compare_runs` is the data behind `bench report --compare A B`. It works on the tidy long tables of
`Store.results()` (pandas only, no plotting), plus, when given, each run's per-image evidence.

The interval of a difference (column `ci_method`):
- `paired`: both cells keep per-image evidence of the metric from the same seeds (and, for FD, the same
  reference statistics): the paired bootstrap interval of bench.analysis (image indices resampled jointly).
- `unpaired`: otherwise (a store from the first release, other seeds, no evidence for the metric): the two runs'
  intervals combined in quadrature, side by side (lower: sqrt((b - b_lo)^2 + (a_hi - a)^2), upper likewise).
  Runs with common random numbers are positively correlated, so this is conservative: a change it calls
  significant is one, but it calls many real changes ties.
- None: no interval at all (memory, some extra metrics).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from bench.analysis import PairedComparer
    from bench.evidence import Evidence

from bench.results import extra_axes
from bench.spec import axes_label

EvidenceMap = Mapping[str, Mapping[str, "Evidence"]]  # cell key -> metric -> per-image evidence

# A cell is matched across runs by these and `slice`: its values of the extra axes (guidance, registered axes) as
# text, `guidance=1.5`, '' without any; the extra axes also get a column each.
CELL = ["sampler", "nfe", "resolution", "hardware", "slice"]
COLUMNS = [*CELL, "family", "metric", "higher_is_better", "status_a", "status_b", "reason_a", "reason_b",
           "value_a", "ci_low_a", "ci_high_a", "value_b", "ci_low_b", "ci_high_b", "delta", "delta_ci_low",
           "delta_ci_high", "rel_delta", "significant", "change", "ci_method"]


def _with_slice(df: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """`df` with a column per extra axis in `axes` (None where it has none) and the `slice` text they make."""
    df = pd.DataFrame(df).copy()
    for a in axes:
        if a not in df.columns:
            df[a] = None
    rows = df[axes].itertuples(index=False, name=None) if axes else ((),) * len(df)
    df["slice"] = [axes_label({a: v for a, v in zip(axes, vals, strict=True) if v is not None and not pd.isna(v)})
                   .strip() for vals in rows]
    return df


def _cells(df: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    c = df.drop_duplicates("cell_key")[[*CELL, *axes, "family", "status", "reason"]]
    return c.drop_duplicates(CELL, keep="last")


def _metrics(df: pd.DataFrame) -> pd.DataFrame:
    cols = [*CELL, "metric", "value", "ci_low", "ci_high", "higher_is_better"]
    m = df[df["metric"].notna()][cols + (["cell_key"] if "cell_key" in df.columns else [])]
    return m.drop_duplicates([*CELL, "metric"], keep="last")


def paired_delta_ci(name: str, higher_is_better: bool, ea: Evidence | None, eb: Evidence | None,
                    comparer: PairedComparer) -> tuple[float, float, float] | None:
    """(delta, low, high) of B - A from bench.analysis when the two cells' evidence pairs, else None. FD evidence
    pairs only when both cells were scored against the same reference statistics (else the stored values differ
    by the reference change too, which the paired interval does not cover)."""
    from bench.analysis import NotPaired

    if ea is None or eb is None or (ea.kind == "features" and ea.ref_digest() != eb.ref_digest()):
        return None
    try:
        p = comparer.compare(name, higher_is_better, ea, eb)
    except NotPaired:
        return None
    return p.delta, p.ci_low, p.ci_high


def compare_runs(df_a: pd.DataFrame, df_b: pd.DataFrame, evidence_a: EvidenceMap | None = None,
                 evidence_b: EvidenceMap | None = None, comparer: PairedComparer | None = None) -> pd.DataFrame:
    """One row per (cell, metric) present in either run: values and intervals of A and B, the change
    `delta = B - A` with `delta_ci_low/high`, `rel_delta = delta / |A|`, `significant` (the delta's interval
    excludes 0), `change`: better | worse | same (direction from higher_is_better) | new (only in B) |
    gone (only in A) | unmeasured (no value in one run, e.g. failed or skipped), and `ci_method`: 'paired'
    (bench.analysis, from the cells' per-image evidence `evidence_a/b`, keyed by cell key then metric),
    'unpaired' (the conservative combined interval) or None (no interval).

    Cells are matched on sampler, requested NFE, resolution, hardware and every extra axis (guidance, registered
    axes: a column each, and `slice`, their values as text): a cell at w = 1.5 is never compared with one at w = 2.
    A cell measured in neither run gets one row with metric None (so skipped/failed cells and their reasons are
    still listed)."""
    axes = list(dict.fromkeys([*extra_axes(df_a), *extra_axes(df_b)]))
    df_a, df_b = _with_slice(df_a, axes), _with_slice(df_b, axes)
    ca, cb = _cells(df_a, axes), _cells(df_b, axes)
    cells = ca.merge(cb, on=CELL, how="outer", suffixes=("_a", "_b"))
    for col in ("family", *axes):
        cells[col] = cells[f"{col}_a"].combine_first(cells[f"{col}_b"])
        cells = cells.drop(columns=[f"{col}_a", f"{col}_b"])

    ma, mb = _metrics(df_a), _metrics(df_b)
    m = ma.merge(mb, on=[*CELL, "metric"], how="outer", suffixes=("_a", "_b"))
    m["higher_is_better"] = m["higher_is_better_b"].combine_first(m["higher_is_better_a"])
    m = m.drop(columns=["higher_is_better_a", "higher_is_better_b"])
    out = cells.merge(m, on=CELL, how="left")
    for col in ("value", "ci_low", "ci_high"):
        for s in ("a", "b"):
            out[f"{col}_{s}"] = pd.to_numeric(out[f"{col}_{s}"], errors="coerce").astype(float)

    a, b = out["value_a"].to_numpy(), out["value_b"].to_numpy()
    a_lo, a_hi = out["ci_low_a"].to_numpy(), out["ci_high_a"].to_numpy()
    b_lo, b_hi = out["ci_low_b"].to_numpy(), out["ci_high_b"].to_numpy()
    delta = b - a
    down_b, up_b = b - b_lo, b_hi - b
    down_a, up_a = a - a_lo, a_hi - a
    has_ci = ~(np.isnan(b_lo) & np.isnan(a_lo))
    lower = np.sqrt(np.nan_to_num(down_b) ** 2 + np.nan_to_num(up_a) ** 2)
    upper = np.sqrt(np.nan_to_num(up_b) ** 2 + np.nan_to_num(down_a) ** 2)
    out["delta"] = delta
    out["delta_ci_low"] = np.where(has_ci, delta - lower, np.nan)
    out["delta_ci_high"] = np.where(has_ci, delta + upper, np.nan)
    out["ci_method"] = pd.Series(["unpaired" if np.isfinite(x) else None for x in out["delta_ci_low"]],
                                 index=out.index, dtype=object)
    if evidence_a and evidence_b and "cell_key_a" in out.columns and "cell_key_b" in out.columns:
        _apply_paired(out, evidence_a, evidence_b, comparer)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["rel_delta"] = np.where(np.abs(a) > 0, delta / np.abs(a), np.nan)
    out["significant"] = (out["delta_ci_low"] > 0) | (out["delta_ci_high"] < 0)
    out["change"] = [_change(r) for r in out.itertuples(index=False)]
    out["nfe"] = out["nfe"].astype(int)
    out["resolution"] = out["resolution"].astype(int)
    columns = [*COLUMNS[:len(CELL)], *axes, *COLUMNS[len(CELL):]]
    return out[columns].sort_values(["hardware", "resolution", "sampler", "slice", "nfe", "metric"],
                                    na_position="first", kind="stable").reset_index(drop=True)


def _apply_paired(out: pd.DataFrame, evidence_a: EvidenceMap, evidence_b: EvidenceMap,
                  comparer: PairedComparer | None) -> None:
    """Replace the combined interval by the paired one wherever both cells' evidence pairs. The paired interval is
    placed around the stored delta (it is computed around the evidence's own delta, equal up to the float16
    storage of features)."""
    if comparer is None:
        from bench.analysis import PairedComparer

        comparer = PairedComparer()
    for i, r in enumerate(out.itertuples(index=False)):
        if not isinstance(r.metric, str) or pd.isna(r.value_a) or pd.isna(r.value_b):
            continue
        ka, kb = r.cell_key_a, r.cell_key_b
        if not isinstance(ka, str) or not isinstance(kb, str):
            continue
        ea, eb = evidence_a.get(ka, {}).get(r.metric), evidence_b.get(kb, {}).get(r.metric)
        hib = False if r.higher_is_better is None or pd.isna(r.higher_is_better) else bool(r.higher_is_better)
        got = paired_delta_ci(r.metric, hib, ea, eb, comparer)
        if got is None:
            continue
        pd_delta, lo, hi = got
        d = float(r.value_b - r.value_a)
        out.iat[i, out.columns.get_loc("delta_ci_low")] = min(d + (lo - pd_delta), d)
        out.iat[i, out.columns.get_loc("delta_ci_high")] = max(d + (hi - pd_delta), d)
        out.iat[i, out.columns.get_loc("ci_method")] = "paired"


def _change(r: object) -> str | None:
    metric = r.metric  # type: ignore[attr-defined]
    if metric is None or (isinstance(metric, float) and math.isnan(metric)):
        return None
    if pd.isna(r.status_a):  # type: ignore[attr-defined]
        return "new"
    if pd.isna(r.status_b):  # type: ignore[attr-defined]
        return "gone"
    va, vb = r.value_a, r.value_b  # type: ignore[attr-defined]
    if pd.isna(va) or pd.isna(vb):
        return "unmeasured"
    d = vb - va
    hib = r.higher_is_better  # type: ignore[attr-defined]
    if d == 0 or hib is None or pd.isna(hib):
        return "same" if d == 0 else ("up" if d > 0 else "down")
    return "better" if (d > 0) == bool(hib) else "worse"


def format_compare(cmp: pd.DataFrame, metrics: list[str] | None = None, max_rows: int | None = None) -> str:
    """A plain-text table of `compare_runs` output for terminals (what `bench gate` prints)."""
    rows = cmp[cmp["metric"].notna()]
    if metrics is not None:
        rows = rows[rows["metric"].isin(metrics)]
    head = ["cell", "metric", "A", "B", "delta [CI]", "CI", "change"]
    lines = [head]
    for r in rows.itertuples(index=False):
        where = f" {r.slice}" if isinstance(getattr(r, "slice", None), str) and r.slice else ""
        cell = f"{r.sampler}@{r.nfe} r{r.resolution} {r.hardware}{where}"
        ci = "" if pd.isna(r.delta_ci_low) else f" [{_g(r.delta_ci_low)}, {_g(r.delta_ci_high)}]"
        rel = "" if pd.isna(r.rel_delta) else f" ({100 * r.rel_delta:+.1f}%)"
        qualifier = ""
        if r.change in ("better", "worse", "up", "down") and not r.significant:
            qualifier = " (no CI)" if pd.isna(r.delta_ci_low) else " (within CI)"
        change = f"{r.change}{qualifier}"
        method = r.ci_method if isinstance(getattr(r, "ci_method", None), str) else "-"
        lines.append([cell, str(r.metric), _g(r.value_a), _g(r.value_b), f"{_g(r.delta, sign=True)}{rel}{ci}", method,
                      change])
    if max_rows is not None and len(lines) > max_rows + 1:
        lines = [*lines[: max_rows + 1], [f"... {len(lines) - 1 - max_rows} more rows", "", "", "", "", "", ""]]
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in lines)


def _g(v: float, sign: bool = False) -> str:
    if v is None or pd.isna(v):
        return "-"
    return f"{v:+.4g}" if sign else f"{v:.4g}"
