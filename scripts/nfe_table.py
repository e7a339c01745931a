"""The NFE table of docs/zoo.md and issue 5's acceptance checks, from `bench run suites/nfe_sweep.yaml` stores.

    python scripts/nfe_table.py --store runs/nfe/bench.sqlite \
        [--seed-store runs/nfe-seed1/bench.sqlite --seed-store runs/nfe-seed2/bench.sqlite] [--json OUT]

The first store's latest `nfe_sweep` run gives the table (FD with its bootstrap CI, per resolution); the seed
stores are the same suite rerun with other sampling seeds (`--set base_seed=...`), and give each 16x16 cell's
seed-to-seed FD spread (max - min over all seed sets). Excess FD = FD - the noise floor at the same sample count.
Prints Markdown.

Ties: when the store's cells keep per-image evidence, an ordering of two samplers is claimed only when the paired
95% bootstrap interval of their FD difference (bench.analysis: same seeds, same images, resampled jointly)
excludes zero. Cells without evidence (stores of the first release) fall back to the seed spread: an ordering
only when the FD gap exceeds both cells' seed spread. Otherwise the table calls them tied.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis import NotPaired, PairedComparer
from bench.errors import BenchError
from bench.evidence import Evidence
from bench.store import Store

FLOW_MAPS = ("flowmap-lmd", "flowmap-meanflow")
BASELINES = ("consistency", "lcm", "turbo")
STUDENT_NFE = (1, 2, 4, 8)


def load(store: Path, suite: str) -> pd.DataFrame:
    """One row per done cell: sampler, nfe, counted NFE, resolution, fd, CI, floor (cpu cells only)."""
    with Store(store, readonly=True) as s:
        df = s.results(suite=suite)
    df = df[(df.status == "done") & (df.hardware == "cpu")]
    keys = ["sampler", "nfe", "resolution"]
    fd = df[df.metric == "fd"].set_index(keys)[["value", "ci_low", "ci_high", "nfe_counted", "cell_key"]]
    floor = df[df.metric == "fd_floor"].set_index(keys)["value"].rename("floor")
    out = fd.join(floor).rename(columns={"value": "fd"}).reset_index()
    out["excess"] = out.fd - out.floor
    return out


class PairedFD:
    """Paired FD verdicts between the cells of one store (bench.analysis), for the cells that keep evidence."""

    def __init__(self, store: Path, df: pd.DataFrame) -> None:
        self.comparer = PairedComparer()
        self.evidence: dict[str, Evidence] = {}
        self.problems: list[str] = []
        with Store(store, readonly=True) as s:
            for key in df.cell_key:
                try:
                    ev = s.evidence(str(key)).get("fd")
                except BenchError as e:
                    self.problems.append(str(e))
                    continue
                if ev is not None:
                    self.evidence[str(key)] = ev

    def __bool__(self) -> bool:
        return bool(self.evidence)

    def verdict(self, key_a: str, key_b: str) -> str | None:
        """FD of cell B versus cell A: 'better' | 'worse' | 'tie', or None when the two cannot be paired."""
        ea, eb = self.evidence.get(str(key_a)), self.evidence.get(str(key_b))
        if ea is None or eb is None:
            return None
        try:
            return self.comparer.compare("fd", False, ea, eb).verdict()
        except NotPaired:
            return None


def spreads(main: pd.DataFrame, seeds: list[pd.DataFrame]) -> pd.Series:
    """Max - min FD over the seed sets per (sampler, nfe) at 16x16; NaN where a seed set lacks the cell."""
    frames = [d[d.resolution == 16].set_index(["sampler", "nfe"]).fd for d in [main, *seeds]]
    both = pd.concat(frames, axis=1)
    return (both.max(axis=1) - both.min(axis=1)).where(both.notna().all(axis=1))


def table(df: pd.DataFrame, res: int, order: list[str]) -> str:
    sub = df[df.resolution == res]
    nfes = sorted(sub.nfe.unique())
    lines = [f"| {res}x{res} | " + " | ".join(str(n) for n in nfes) + " |", "| --- |" + " --- |" * len(nfes)]
    for sampler in order:
        rows = sub[sub.sampler == sampler].set_index("nfe")
        if rows.empty:
            continue
        cells = []
        for n in nfes:
            if n not in rows.index:
                cells.append("")
                continue
            r = rows.loc[n]
            counted = f" ({r.nfe_counted:g} NFE)" if r.nfe_counted != n else ""
            cells.append(f"{r.fd:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]{counted}")
        lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ordered(prev: Any, r: Any, nfe: int, spread: pd.Series, paired: PairedFD | None) -> tuple[bool, str]:
    """Is r's FD worse than prev's beyond the noise? (decision, 'paired' | 'seed spread')."""
    if paired is not None and (v := paired.verdict(prev.cell_key, r.cell_key)) is not None:
        return v == "worse", "paired"
    sp = max(spread.get((prev.sampler, nfe), float("nan")), spread.get((r.sampler, nfe), float("nan")))
    return bool(r.fd - prev.fd > sp), "seed spread"


def ranking(df16: pd.DataFrame, spread: pd.Series, nfe: int, samplers: list[str],
            paired: PairedFD | None = None) -> str:
    """Samplers at one NFE, best first; '<' where the FD difference is beyond the noise, '=' (tied) where not.
    The noise is the paired CI of the difference when both cells keep evidence, else both cells' seed spread
    (a comparison decided by the seed spread while others are paired is marked '<*' / '=*')."""
    rows = df16[(df16.nfe == nfe) & df16.sampler.isin(samplers)].sort_values("fd")
    parts: list[str] = []
    prev = None
    for r in rows.itertuples():
        if prev is not None:
            worse, how = _ordered(prev, r, nfe, spread, paired)
            mark = "*" if paired and how != "paired" else ""
            parts.append(("<" if worse else "=") + mark)
        parts.append(f"{r.sampler} {r.fd:.2f}")
        prev = r
    return " ".join(parts)


def checks(df: pd.DataFrame, spread: pd.Series, paired: PairedFD | None = None) -> dict[str, Any]:
    """Issue 5's acceptance rules on the 16x16 cells."""
    d = df[df.resolution == 16].set_index(["sampler", "nfe"])
    teacher = [s for s in d.index.get_level_values(0).unique() if s.startswith("teacher-")]
    best_t = d.loc[teacher].excess.idxmin()
    best_teacher_excess = float(d.loc[teacher].excess.min())
    out: dict[str, Any] = {"best_teacher": {"cell": list(best_t), "excess_fd": best_teacher_excess}}
    fms = [s for s in FLOW_MAPS if all((s, n) in d.index for n in STUDENT_NFE)]
    eu = d.loc["teacher-euler"]
    out["flow_maps"] = {}
    for name in fms:  # every objective is checked; "best" = lowest mean FD over NFE 1, 2, 4, 8
        fm = d.loc[name]
        rises = [(a, b) for a, b in itertools.pairwise(STUDENT_NFE) if fm.loc[b].fd > fm.loc[a].ci_high]
        out["flow_maps"][name] = {
            "fd": {n: round(float(fm.loc[n].fd), 3) for n in STUDENT_NFE},
            "mean_fd": round(float(fm.loc[list(STUDENT_NFE)].fd.mean()), 3),
            "monotone_within_ci": not rises, "rises_beyond_ci": rises,
            "excess_fd_4": float(fm.loc[4].excess), "limit_1.5x_best_teacher": 1.5 * best_teacher_excess,
            "excess_ok": bool(fm.loc[4].excess <= 1.5 * best_teacher_excess),
            "below_euler_at_1_2_4": {n: bool(fm.loc[n].fd < eu.loc[n].fd) for n in (1, 2, 4)},
            "not_worse_than_euler_at_8": bool(fm.loc[8].fd <= eu.loc[8].ci_high),
        }
    if fms:
        out["best_flow_map"] = min(fms, key=lambda s: out["flow_maps"][s]["mean_fd"])
    euler1 = float(d.loc[("teacher-euler", 1)].excess)
    out["baselines_1step"] = {
        s: {"excess_fd": float(d.loc[(s, 1)].excess), "limit": 0.5 * euler1,
            "ok": bool(d.loc[(s, 1)].excess < 0.5 * euler1)}
        for s in BASELINES if (s, 1) in d.index}
    if "consistency" in d.index.get_level_values(0):
        cd = d.loc["consistency"]
        best_n = int(cd.fd.idxmin())

        def beyond(a: int, b: int) -> bool:  # FD at b above FD at a by more than both cells' seed spread
            sp = max(spread.get(("consistency", a), float("nan")), spread.get(("consistency", b), float("nan")))
            return bool(cd.loc[b].fd - cd.loc[a].fd > sp)

        out["consistency_degrades"] = {
            "best_nfe": best_n, "fd": {int(n): round(float(v), 3) for n, v in cd.fd.items()},
            "worse_than_fewer_steps_beyond_seed_spread": {
                f"{b} vs {a}": beyond(int(a), int(b)) for a in cd.index for b in cd.index if b > a and b > best_n}}
        if paired:  # the same question on the paired CI of the FD difference (bench.analysis)
            out["consistency_degrades"]["worse_than_fewer_steps_paired"] = {
                f"{b} vs {a}": paired.verdict(cd.loc[a].cell_key, cd.loc[b].cell_key)
                for a in cd.index for b in cd.index if b > a and b > best_n}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, type=Path, help="store of the full nfe_sweep run")
    ap.add_argument("--seed-store", action="append", default=[], type=Path, help="store of a rerun with other seeds")
    ap.add_argument("--suite", default="nfe_sweep")
    ap.add_argument("--json", type=Path, help="also write the numbers and checks as JSON")
    a = ap.parse_args(argv)
    df = load(a.store, a.suite)
    seeds = [load(p, a.suite) for p in a.seed_store]
    spread = spreads(df, seeds) if seeds else pd.Series(dtype=float)
    paired = PairedFD(a.store, df)
    order = [s for s in (*FLOW_MAPS, *BASELINES, "teacher-euler", "teacher-heun", "teacher-dpmpp")
             if s in set(df.sampler)] + sorted(set(df.sampler) - set(FLOW_MAPS) - set(BASELINES)
                                               - {"teacher-euler", "teacher-heun", "teacher-dpmpp"})
    for res in sorted(df.resolution.unique()):
        floor = df[df.resolution == res].floor.iloc[0]
        print(table(df, int(res), order) + f"\n\nnoise floor {res}x{res}: {floor:.3f}\n")
    df16 = df[df.resolution == 16]
    if seeds:
        print(f"seed-to-seed FD spread (16x16, {1 + len(seeds)} seed sets), max - min:\n")
        sp = spread.unstack("nfe").reindex([s for s in order if s in spread.index.get_level_values(0)])
        print("| sampler | " + " | ".join(str(n) for n in sp.columns) + " |\n| --- |" + " --- |" * len(sp.columns))
        for name, row in sp.iterrows():
            print(f"| {name} | " + " | ".join("" if pd.isna(v) else f"{v:.2f}" for v in row) + " |")
        print()
    if paired or seeds:
        if paired:
            print("ranking per NFE (16x16; '<' the paired 95% CI of the FD difference excludes 0, '=' tied; "
                  "'*' decided by the seed spread, no per-image evidence):\n")
        else:
            print("ranking per NFE (16x16; '<' beats the seed spread, '=' tied; the store keeps no per-image "
                  "evidence, so no paired test):\n")
        for n in sorted(df16.nfe.unique()):
            print(f"- NFE {n}: {ranking(df16, spread, int(n), order, paired if paired else None)}")
        print()
    result = checks(df, spread, paired if paired else None)
    result["ranking_method"] = "paired" if paired else ("seed spread" if seeds else None)
    print("```json\n" + json.dumps(result, indent=1, default=str) + "\n```")
    if a.json:
        a.json.write_text(json.dumps({"checks": result, "cells": df.to_dict(orient="records"),
                                      "spread": {f"{k[0]}@{k[1]}": v for k, v in spread.dropna().items()}},
                                     indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
