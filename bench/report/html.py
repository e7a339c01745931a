"""The HTML report: one self-contained file (CSS, JS, SVG plots and PNG grids inline; no network).

`write_report` reads a run from the store, computes the Pareto analysis, draws the plots and renders
templates/report.html.j2 (or compare.html.j2 for two runs) with Jinja2 autoescaping, so every
user-controlled string (sampler ids, prompts, paths, suite text) reaches the page escaped.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import BenchError
from bench.files import write_atomic
from bench.metrics.catalogue import is_latency
from bench.report import plots
from bench.report.data import (
    LATENCY_PREFERENCE,
    MetricInfo,
    RunData,
    Value,
    count_pngs,
    data_uri,
    fmt,
    fmt_ci,
    grid_captions,
    json_text,
    load_run,
    metric_provenance,
    reference_images,
    sample_folder,
    sample_pngs,
    sprite,
    suite_info,
)
from bench.report.pareto import dominance_pairs, front_steps, pareto_front
from bench.report.verdicts import Judge, intervals_overlap, latency_tie
from bench.spec import axes_label

TEMPLATES = Path(__file__).with_name("templates")
MAX_SENTENCES = 12
MARKER_GLYPH = {"o": "●", "s": "■", "^": "▲", "D": "◆", "v": "▼", "P": "✚", "X": "✖", "h": "⬢", "*": "★",
                "<": "◀", ">": "▶"}


def write_report(store_path: str | Path, run_id: str | None = None, suite: str | None = None,
                 out: str | Path | None = None, compare: Sequence[str] | None = None) -> Path:
    """Render the report of one run (default: the latest; or the latest of `suite`), or with
    `compare=(RUN_A, RUN_B)` the comparison of two runs, to `out` (default reports/<suite>.html or
    reports/compare-<A>-<B>.html). Returns the path written."""
    if compare is not None:
        if len(compare) != 2:
            raise BenchError("--compare needs exactly two run ids: RUN_A RUN_B")
        a, b = (load_run(store_path, run_id=r) for r in compare)
        html = render_compare(a, b)
        default = f"reports/compare-{_safe(a.run_id)}-{_safe(b.run_id)}.html"
    else:
        data = load_run(store_path, run_id=run_id, suite=suite)
        html = render_report(data)
        default = f"reports/{_safe(data.suite)}.html"
    path = Path(out) if out is not None else Path(default)
    _atomic_write(path, html)
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "report"


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and rename (bench.files), so a reader never sees half a report."""
    try:
        write_atomic(path, text)
    except OSError as e:
        raise BenchError(f"cannot write the report to {path}: {e.strerror or e}") from None


def _env() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    env.filters["json_text"] = json_text  # page text: `tojson` (ASCII, for <script>) shows ± as \u00b1
    return env


# -- shared pieces ---------------------------------------------------------------------------------

class _Ctx:
    """Per-report helpers: style (colour + marker per sampler, line style per line: a sampler's option variants and
    extra-axis values), ids for inlined SVGs, labels."""

    def __init__(self, datas: Sequence[RunData]) -> None:
        pairs = list(dict.fromkeys((str(r.sampler), str(r.family)) for d in datas for r in d.cells.itertuples()))
        lines = list(dict.fromkeys((str(r.line), str(r.sampler)) for d in datas for r in _ordered(d.cells, d)))
        self.style = plots.Style(plots.sampler_styles(pairs), plots.line_styles(lines))
        self.samplers = list(dict.fromkeys((plots.base_sampler(s), f) for s, f in pairs))
        self.n_svg = 0

    def svg(self, svg: str, label: str) -> Any:
        from markupsafe import Markup

        self.n_svg += 1
        return Markup(plots.inline_svg(svg, f"p{self.n_svg}", label))

    def legend(self) -> list[dict[str, str]]:
        """One entry per base sampler (its variants share its colour and marker)."""
        return [{"sampler": s, "family": f, "colour": self.colour(s), "glyph": self.glyph(s)} for s, f in self.samplers]

    def colour(self, sampler: str) -> str:
        return self._pair(sampler)[0]

    def glyph(self, sampler: str) -> str:
        return MARKER_GLYPH.get(self._pair(sampler)[1], "●")

    def _pair(self, sampler: str) -> tuple[str, str]:
        c = self.style.colours
        return c.get(sampler) or c.get(plots.base_sampler(sampler)) or ("#000", "o")


def cell_label(cell: Any) -> str:
    """`sampler @ 4 NFE`, or `sampler @ 4 steps (7 NFE)` when the counted NFE differs from the steps; with extra
    axes their values follow the sampler (`teacher-euler guidance=2 @ 4 steps (8 NFE)`)."""
    req = int(cell.nfe)
    counted = cell.nfe_counted
    name = getattr(cell, "line", None) or cell.sampler
    if counted is None or pd.isna(counted) or float(counted) == req:
        return f"{name} @ {req} NFE"
    return f"{name} @ {req} steps ({float(counted):g} NFE)"


def _add_point(s: plots.Series, xv: Value, yv: Value, label: str, tip: str = "") -> None:
    """One point of a plotted series: both values with their intervals, its label and its hover text."""
    s.tips.append(tip)
    s.x.append(float(xv.value))  # type: ignore[arg-type]
    s.y.append(float(yv.value))  # type: ignore[arg-type]
    s.x_lo.append(xv.ci_low)
    s.x_hi.append(xv.ci_high)
    s.y_lo.append(yv.ci_low)
    s.y_hi.append(yv.ci_high)
    s.labels.append(label)


def cell_tip(data: RunData, cell: Any, prefix: str = "") -> str:
    """A plotted point's tooltip: the cell (sampler and extra-axis values, steps, counted NFE, hardware, resolution)
    and its headline numbers: the plotted quality metrics with their confidence intervals and the latencies (per
    image at the timed batch, and at batch 1) with their interquartile ranges."""
    res = int(cell.resolution)
    counted = "" if cell.nfe_counted is None or pd.isna(cell.nfe_counted) else f", {float(cell.nfe_counted):g} NFE counted"
    lines = [f"{prefix}{getattr(cell, 'line', None) or cell.sampler}",
             f"{int(cell.nfe)} steps{counted} · {cell.hardware} · {res}×{res} px"]
    shown = [*data.plotted_quality, *(m for n in LATENCY_PREFERENCE if (m := data.metric(n)) is not None)]
    for m in shown:
        v = data.value(cell.cell_key, m.name)
        if not v.ok:
            continue
        if m.kind == "latency":
            text = f"{fmt(v.value)} ms" + (f", IQR {fmt(v.ci_low)}–{fmt(v.ci_high)}" if v.half_width is not None else "")
            reason = data.unstable_reason(cell.cell_key, m.name)
            text += f" (unstable: {reason})" if reason else ""
        else:
            text = fmt(v.value, v.half_width) + (f", CI [{fmt(v.ci_low, v.half_width)}, {fmt(v.ci_high, v.half_width)}]"
                                                 if v.half_width is not None else "")
        lines.append(f"{m.label}: {text}")
    return "\n".join(lines)


def _nfe_x(cell: Any) -> float:
    c = cell.nfe_counted
    return float(cell.nfe) if c is None or pd.isna(c) else float(c)


def _group_cells(data: RunData, hardware: str, resolution: int, done_only: bool = True) -> pd.DataFrame:
    c = data.cells
    sel = c[(c["hardware"].astype(str) == hardware) & (c["resolution"].astype(int) == resolution)]
    if done_only:
        sel = sel[sel["status"] == "done"]
    return sel


def _group_id(hardware: str, resolution: int) -> str:
    return "g-" + _safe(f"{hardware}-{resolution}")


def _ordered(cells: pd.DataFrame, data: RunData) -> list[Any]:
    """Plan order of samplers, then extra-axis values, then steps."""
    order = {s: i for i, s in enumerate(data.samplers())}
    slices = {s: i for i, s in enumerate(data.slices())}
    return sorted(cells.itertuples(index=False),
                  key=lambda r: (order.get(str(r.sampler), 0), slices.get(str(r.slice), 0), int(r.nfe)))


def _by_slice(data: RunData, cells: list[Any]) -> list[tuple[str, list[Any]]]:
    """The cells of each extra-axis slice (`guidance=1.5`), in order; one ('', cells) without extra axes. Rankings
    and verdicts compare cells within a slice only: a cell at w = 1 is never ranked against one at w = 2."""
    out: dict[str, list[Any]] = {s: [] for s in data.slices()}
    for c in cells:
        out.setdefault(str(c.slice), []).append(c)
    return [(s, cs) for s, cs in out.items() if cs]


def _series(data: RunData, cells: list[Any], xmetric: str | None, ymetric: str, *, faded: bool = False,
            suffix: str = "", mark_unstable: bool = False, tip_prefix: str = "") -> list[plots.Series]:
    """One Series per line (sampler and its extra-axis values): x = xmetric's value (or counted NFE when xmetric is
    None), y = ymetric; each point with its cell's tooltip. `mark_unstable`: flag the points whose latency (x or y)
    is unstable, to be drawn hollow."""
    out: dict[str, plots.Series] = {}
    for c in cells:
        yv = data.value(c.cell_key, ymetric)
        xv = Value(_nfe_x(c)) if xmetric is None else data.value(c.cell_key, xmetric)
        if not (xv.ok and yv.ok):
            continue
        s = out.setdefault(str(c.line), plots.Series(str(c.sampler), str(c.family), faded=faded,
                                                     name=f"{c.line}{suffix}", line=str(c.line)))
        _add_point(s, xv, yv, f"{_nfe_x(c):g}", cell_tip(data, c, tip_prefix))
        if mark_unstable:
            s.unstable.append(any(m is not None and data.unstable_reason(c.cell_key, m) is not None
                                  for m in (xmetric, ymetric) if m is not None and is_latency(m)))
    return list(out.values())


def _floor_line(data: RunData, cells: list[Any], q: MetricInfo) -> tuple[float, str] | None:
    f = data.floor_for(q)
    if f is None:
        return None
    vals = [data.value(c.cell_key, f.name).value for c in cells]
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    if not vals:
        return None
    v = float(pd.Series(vals).median())
    return v, f"noise floor {fmt(v)}"


# -- the single-run report ---------------------------------------------------------------------------

def render_report(data: RunData) -> str:
    ctx = _Ctx([data])
    judge = Judge(data)  # one PairedComparer for the whole report: each cell's replicates are computed once
    info = suite_info(data.run)
    lat = data.latency_metric
    quality = data.plotted_quality
    groups = []
    for hw, res in data.groups():
        cells = _ordered(_group_cells(data, hw, res), data)
        all_cells = _ordered(_group_cells(data, hw, res, done_only=False), data)
        g: dict[str, Any] = {"id": _group_id(hw, res), "hardware": hw, "resolution": res,
                             "title": f"{hw} · {res}×{res} px", "n_done": len(cells),
                             "n_other": len(all_cells) - len(cells)}
        slices = _by_slice(data, cells)  # rankings and verdicts within equal extra-axis values only
        b1 = _batch1_metric(data, lat)  # the headline again by batch-1 latency, one click away
        g["budget_sets"] = [{"where": f" · {sl}" if sl else "", "budgets": [
            *(_budget_table(judge, cs, q, lat) for q in quality),
            *([_budget_table(judge, cs, quality[0], b1, batch1=True)] if b1 is not None and quality else [])]}
            for sl, cs in slices] if lat else []
        g["dominance"] = [_dominance(judge, cs, q, lat) | {"slice": sl} for sl, cs in slices for q in quality] \
            if lat else []
        g["paired"] = _paired_section(judge, cells, quality)
        g["plots"] = _group_plots(ctx, data, cells, quality, lat, hw, res)
        g["table"] = _results_table(ctx, judge, all_cells, quality[0] if quality else None, lat)
        groups.append(g)
    guidance = _guidance_section(ctx, data)
    memory = [m for m in data.metrics if m.kind == "memory"]
    memory_plots = _memory_plots(ctx, data, memory[0]) if memory else []
    not_measured = [
        {"label": cell_label(c), "family": c.family, "resolution": int(c.resolution), "hardware": c.hardware,
         "status": c.status, "reason": c.reason or "(no reason recorded)"}
        for c in _ordered(data.cells[data.cells["status"] != "done"], data)
    ]
    status_counts = data.cells["status"].value_counts().to_dict()
    context = {
        "title": f"{data.suite} — flowmap-bench report",
        "suite": data.suite,
        "description": info.get("description") or "",
        "run": _run_meta(data),
        "generated": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "counts": {"cells": len(data.cells), "done": int(status_counts.get("done", 0)),
                   "failed": int(status_counts.get("failed", 0)), "skipped": int(status_counts.get("skipped", 0)),
                   "other": int(sum(v for k, v in status_counts.items() if k not in ("done", "failed", "skipped"))),
                   "reused": int(data.cells["reused"].sum()) if "reused" in data.cells else 0},
        "legend": ctx.legend(),
        "quality": [{"name": q.name, "label": q.label, "direction": q.direction_word} for q in quality],
        "evidence": _evidence_note(data),
        "latency": lat.label if lat else None,
        "groups": groups,
        "axes": data.axes,
        "guidance": guidance,
        "memory_plots": memory_plots,
        "grids": _grids(ctx, data, info),
        "not_measured": not_measured,
        "metrics": [{"name": m.name, "label": m.label, "kind": m.kind,
                     "direction": "" if m.higher_is_better is None else m.direction_word} for m in data.metrics],
        "metric_provenance": metric_provenance(data),
        "fingerprint": data.run.get("fingerprint") or {},
        "versions": data.run.get("versions") or {},
        "suite_text": data.run.get("suite_text") or "",
    }
    return _env().get_template("report.html.j2").render(**context)


def _run_meta(data: RunData) -> list[tuple[str, str]]:
    r = data.run

    def when(t: Any) -> str:
        if t is None or (isinstance(t, float) and math.isnan(t)):
            return "–"
        return _dt.datetime.fromtimestamp(float(t)).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")

    dur = ""
    if r.get("started") and r.get("finished"):
        dur = f" ({float(r['finished']) - float(r['started']):.1f} s)"
    argv = r.get("argv")
    return [
        ("run id", str(r.get("run_id"))),
        ("suite", f"{r.get('suite')}  ({r.get('suite_path') or '?'}, sha256 {r.get('suite_hash') or '?'})"),
        ("git commit", str(r.get("git_commit") or "unknown")),
        ("status", str(r.get("status"))),
        ("started", when(r.get("started"))),
        ("finished", when(r.get("finished")) + dur),
        ("executor", str(r.get("executor") or "")),
        ("command", " ".join(map(str, argv)) if isinstance(argv, list) else str(argv or "")),
        ("store", str(data.store_path)),
    ]


def _points(data: RunData, cells: list[Any], q: MetricInfo, lat: MetricInfo, stable_only: bool = False,
            ) -> tuple[list[Any], list[Value], list[Value]]:
    """Cells with both `q` and latency values (`stable_only`: leaving out cells whose latency is unstable)."""
    keep, qs, ls = [], [], []
    for c in cells:
        qv, lv = data.value(c.cell_key, q.name), data.value(c.cell_key, lat.name)
        if stable_only and data.unstable_reason(c.cell_key, lat.name) is not None:
            continue
        if qv.ok and lv.ok:
            keep.append(c)
            qs.append(qv)
            ls.append(lv)
    return keep, qs, ls


def _unstable_cells(data: RunData, cells: list[Any], lat: MetricInfo) -> list[dict[str, str]]:
    return [{"label": cell_label(c), "reason": r} for c in cells
            if (r := data.unstable_reason(c.cell_key, lat.name)) is not None]


def _evidence_note(data: RunData) -> dict[str, Any]:
    """How many measured cells keep per-image evidence (paired verdicts) and why the others do not."""
    done = [str(k) for k in data.cells.loc[data.cells["status"] == "done", "cell_key"]]
    with_ev = sum(1 for k in done if data.evidence.get(k))
    return {"cells": len(done), "with": with_ev, "problems": sorted(set(data.evidence_problems.values()))[:3]}


def _budget_table(judge: Judge, cells: list[Any], q: MetricInfo, lat: MetricInfo, batch1: bool = False,
                  ) -> dict[str, Any]:
    """The best cell for every latency budget (bench.analysis.best_within_budgets): the (latency, quality) front
    read left to right; quality ties from the paired test (the interval-overlap rule, labelled unpaired, for cells
    without evidence); a row whose best cell's latency IQR overlaps a better cell's is not decided."""
    data = judge.data
    cands = judge.candidates(cells, q, lat, cell_label)
    by_key = {str(c.cell_key): c for c in cells}
    rows = []
    for row, unpaired in judge.budgets(cands, q):
        best = row.best
        ties = [*row.quality_ties, *(f"{t} (unpaired)" for t in unpaired)]
        qv, lv = data.value(best.key, q.name), data.value(best.key, lat.name)
        rows.append({"budget": _ceil_sig(best.timing.median), "lat": best.timing.median, "label": best.label,
                     "family": by_key[best.key].family, "quality": fmt_ci(qv), "latency": fmt_ci(lv),
                     "decided": row.decided, "latency_ties": row.latency_ties,
                     "ties": ties[:4], "more_ties": max(len(ties) - 4, 0), "all_ties": ties})
    unstable = _unstable_cells(data, [c for c in cells if data.value(c.cell_key, q.name).ok], lat)
    widget = {"rows": [{k: r[k] for k in ("lat", "label", "decided", "latency_ties", "quality", "latency")}
                       | {"ties": r["all_ties"]} for r in rows],
              "higher": bool(q.higher_is_better), "metric": q.short, "unit": "ms",
              "unstable": [u["label"] for u in unstable]}
    paired = sum(1 for c in cands if c.evidence is not None)
    return {"metric": q.label, "direction": q.direction_word, "latency": lat.label, "rows": rows, "widget": widget,
            "name": f"{q.label} at batch 1" if batch1 else q.label, "unit": "ms at batch 1" if batch1
            else "ms per image",
            "unstable": unstable, "method": "paired" if paired == len(cands) and cands else
            ("unpaired" if paired == 0 else "mixed")}


def _ceil_sig(v: float | None, digits: int = 3) -> str:
    """`v` rounded *up* to `digits` significant digits: a budget written this way always admits its cell."""
    if v is None or not math.isfinite(v) or v <= 0:
        return fmt(v)
    scale = 10 ** (math.floor(math.log10(v)) - digits + 1)
    up = math.ceil(round(v / scale, 9)) * scale
    return f"{up:.{max(0, digits - 1 - math.floor(math.log10(up)))}f}"


def _dominance(judge: Judge, cells: list[Any], q: MetricInfo, lat: MetricInfo) -> dict[str, Any]:
    """'A dominates B' sentences from the (quality, latency) Pareto analysis, front winners only. Whether a gain
    is real: quality by the paired test (bench.analysis; unpaired interval overlap, labelled, without evidence),
    latency by IQR separation. Cells with an unstable latency take no part."""
    data = judge.data
    keep, qs, ls = _points(data, cells, q, lat, stable_only=True)
    points = [(qv.value, lv.value) for qv, lv in zip(qs, ls, strict=True)]
    pairs = dominance_pairs(points, [bool(q.higher_is_better), False], only_front=True,
                            groups=[str(c.line) for c in keep])
    timings = [data.timing(c.cell_key, lat.name) for c in keep]
    word_q = "higher" if q.higher_is_better else "lower"
    order = {s: i for i, s in enumerate(data.samplers())}
    grouped: dict[tuple[int, str, str], list[int]] = {}
    for p in pairs:
        q_phrase = f"{word_q} {q.short}" if 0 in p.better else f"equal {q.short}"
        l_phrase = "lower latency" if 1 in p.better else "equal latency"
        real, not_real = [], []
        if 0 in p.better:
            v = judge.quality(q, str(keep[p.winner].cell_key), str(keep[p.loser].cell_key))
            if v is not None and v.verdict == "worse":  # the loser is worse than the winner
                real.append(q.short)
            elif v is not None and v.verdict != "undecided":
                not_real.append(f"{q.short} {'within the paired CI' if v.paired else f'intervals overlap, {v.method_label}'}")
        if 1 in p.better:
            tw, tl = timings[p.winner], timings[p.loser]
            if tw is not None and tl is not None and latency_tie(tw, tl):
                not_real.append("latency IQRs overlap")
            else:
                real.append("latency")
        note = ""
        if not_real:
            note = ("a statistical tie: " if not real else "") + "; ".join(not_real)
        grouped.setdefault((p.winner, f"{q_phrase} at {l_phrase}", note), []).append(p.loser)
    sentences = []
    for (w, phrase, note), losers in grouped.items():
        by_sampler: dict[str, list[int]] = {}
        for j in sorted(losers, key=lambda j: (order.get(str(keep[j].sampler), 0), int(keep[j].nfe))):
            by_sampler.setdefault(str(keep[j].line), []).append(j)
        parts = [f"{s} @ {', '.join(str(int(keep[j].nfe)) for j in js)} "
                 f"{'steps' if _steps_differ(keep, js) else 'NFE'}" for s, js in by_sampler.items()]
        sentences.append({"winner": cell_label(keep[w]), "winner_family": keep[w].family, "loser": "; ".join(parts),
                          "phrase": phrase, "note": note, "lat": ls[w].value})
    sentences.sort(key=lambda x: x["lat"])
    front = pareto_front(points, [bool(q.higher_is_better), False])
    dominated_samplers = sorted({str(keep[j].line) for j in range(len(keep)) if j not in front}
                                - {str(keep[i].line) for i in front})
    b1 = _batch1_metric(data, lat)
    return {"metric": q.label, "sentences": sentences[:MAX_SENTENCES], "more": sentences[MAX_SENTENCES:],
            "latency": lat.label, "front": _front_labels(data, cells, q, lat),
            "batch1": None if b1 is None else {"latency": b1.label, "front": _front_labels(data, cells, q, b1),
                                               "unstable": [u["label"] for u in _unstable_cells(data, cells, b1)]},
            "never_on_front": dominated_samplers,
            "unstable": [u["label"] for u in _unstable_cells(data, cells, lat)]}


def _front_labels(data: RunData, cells: list[Any], q: MetricInfo, lat: MetricInfo) -> list[str]:
    """The (quality, `lat`) Pareto front of the cells with a stable latency, fastest first, as cell labels."""
    keep, qs, ls = _points(data, cells, q, lat, stable_only=True)
    idx = front_steps([float(lv.value) for lv in ls], [float(qv.value) for qv in qs],  # type: ignore[arg-type]
                      False, bool(q.higher_is_better))
    return [cell_label(keep[i]) for i in idx]


def _verdict_cell(v: Any) -> dict[str, str]:
    if v is None:
        return {"verdict": "", "text": "–", "method": "", "title": ""}
    return {"verdict": v.verdict, "text": v.delta_text(), "method": "paired" if v.paired else "unpaired",
            "title": v.describe()}


def _paired_section(judge: Judge, cells: list[Any], quality: list[MetricInfo]) -> dict[str, Any]:
    """(a) per line (sampler at given extra-axis values), each step count against the next smaller one; (b) per
    requested step count and extra-axis values, each sampler against the best one there. Every verdict from
    bench.analysis (paired), or labelled unpaired; a cell is never compared with one at other extra-axis values."""
    metrics = [q for q in quality if q.higher_is_better is not None]
    data = judge.data
    by_sampler: dict[str, list[Any]] = {}
    for c in cells:
        by_sampler.setdefault(str(c.line), []).append(c)
    steps: list[dict[str, Any]] = []
    for sampler, cs in by_sampler.items():
        cs = sorted(cs, key=lambda c: int(c.nfe))
        for a, b in itertools.pairwise(cs):
            verdicts = [judge.quality(q, str(a.cell_key), str(b.cell_key)) for q in metrics]
            if all(v is None for v in verdicts):
                continue
            steps.append({"sampler": sampler, "family": b.family, "a": cell_label(a), "b": cell_label(b),
                          "a_steps": int(a.nfe), "b_steps": int(b.nfe),
                          "vals": [_verdict_cell(v) for v in verdicts]})
    per_nfe: list[dict[str, Any]] = []
    for q in metrics:
        rows: list[dict[str, Any]] = []
        same_steps = [(n, [c for c in in_slice if int(c.nfe) == n]) for _, in_slice in _by_slice(data, cells)
                      for n in sorted({int(c.nfe) for c in in_slice})]
        for n, at_n in same_steps:
            at_n = [c for c in at_n if data.value(c.cell_key, q.name).ok]
            if len(at_n) < 2:
                continue
            pick = max if q.higher_is_better else min
            best = pick(at_n, key=lambda c: float(data.value(c.cell_key, q.name).value))  # type: ignore[arg-type]
            for c in at_n:
                if c is best:
                    continue
                v = judge.quality(q, str(best.cell_key), str(c.cell_key))
                rows.append({"steps": n, "best": cell_label(best), "cell": cell_label(c), "family": c.family,
                             **_verdict_cell(v)})
        per_nfe.append({"metric": q.label, "short": q.short, "rows": rows})
    methods = {v["method"] for r in steps for v in r["vals"]} | {r["method"] for t in per_nfe for r in t["rows"]}
    methods.discard("")
    return {"metrics": [q.label for q in metrics], "steps": steps, "per_nfe": per_nfe,
            "unpaired": "unpaired" in methods, "paired": "paired" in methods}


def _steps_differ(keep: list[Any], idx: list[int]) -> bool:
    return any(_nfe_x(keep[j]) != float(keep[j].nfe) for j in idx)


def _group_plots(ctx: _Ctx, data: RunData, cells: list[Any], quality: list[MetricInfo], lat: MetricInfo | None,
                 hw: str, res: int) -> list[dict[str, Any]]:
    """Per quality metric its plot against latency and, beside it, against batch-1 latency (the front can differ:
    a sampler that wins at batch 16 may lose at batch 1, where users ship); then quality and latency against NFE."""
    out = []
    where = f"{hw}, {res}px"
    lats = [(m, kind) for m, kind in ((lat, "quality-latency"), (_batch1_metric(data, lat), "quality-latency-batch1"))
            if m is not None]
    for q in quality:
        floor = _floor_line(data, cells, q)
        for lm, kind in lats:
            s = _series(data, cells, lm.name, q.name, mark_unstable=True)
            if s:
                title = f"{q.label} vs {lm.label} ({where})"
                svg = plots.xy_plot(s, ctx.style, title=title, xlabel=f"{lm.label}, log scale",
                                    ylabel=f"{q.label} ({q.direction_word})", logx=True,
                                    front=(False, bool(q.higher_is_better)), hline=floor, logy="auto")
                out.append({"title": title, "svg": ctx.svg(svg, title), "kind": kind})
    for q in quality:
        floor = _floor_line(data, cells, q)
        s = _series(data, cells, None, q.name)
        if s:
            title = f"{q.label} vs counted NFE ({where})"
            svg = plots.xy_plot(s, ctx.style, title=title, xlabel="counted NFE per image, log scale",
                                ylabel=f"{q.label} ({q.direction_word})", logx=True, logx_base=2, hline=floor, logy="auto")
            out.append({"title": title, "svg": ctx.svg(svg, title), "kind": "quality-nfe"})
    if lat is not None:
        s = _series(data, cells, None, lat.name, mark_unstable=True)
        if s:
            title = f"{lat.label} vs counted NFE ({where})"
            svg = plots.xy_plot(s, ctx.style, title=title, xlabel="counted NFE per image, log scale",
                                ylabel=f"{lat.label} (bars: IQR)", logx=True, logx_base=2, logy="auto")
            out.append({"title": title, "svg": ctx.svg(svg, title), "kind": "latency-nfe"})
    return out


def _batch1_metric(data: RunData, lat: MetricInfo | None) -> MetricInfo | None:
    """Batch-1 latency when the report's latency is another one (per image at a larger batch), else None."""
    b1 = data.metric("latency_ms_batch1")
    return b1 if lat is not None and b1 is not None and b1.name != lat.name else None


GUIDANCE_AXIS = "guidance"


def _guidance_section(ctx: _Ctx, data: RunData) -> dict[str, Any] | None:
    """The guidance trade-off (the FD-vs-CLIP-score curve of distillation papers): per hardware x resolution panel
    and step count, FD (x) against CLIP score (y), one curve per sampler (x its other extra-axis values) through its
    guidance values, each point labelled with its w. None when the run sweeps no more than one guidance value or
    lacks FD or CLIP score."""
    if GUIDANCE_AXIS not in data.axes:
        return None
    fd = next((m for m in data.plotted_quality if m.base == "fd"), None)
    clip = next((m for m in data.plotted_quality if m.base == "clip_score"), None)
    done = data.cells[data.cells["status"] == "done"]
    ws = {w for w in (data.cell_axes(c)[GUIDANCE_AXIS] for c in done.itertuples(index=False)) if w is not None}
    if fd is None or clip is None or len(ws) < 2:
        return None
    others = [a for a in data.axes if a != GUIDANCE_AXIS]
    plots_out, single = [], []
    for hw, res in data.groups():
        curves: dict[int, dict[str, list[tuple[float, Any]]]] = {}  # steps -> curve name -> (w, cell)
        for c in _ordered(_group_cells(data, hw, res), data):
            axes = data.cell_axes(c)
            w = axes[GUIDANCE_AXIS]
            if w is None or not (data.value(c.cell_key, fd.name).ok and data.value(c.cell_key, clip.name).ok):
                continue
            rest = axes_label({a: axes[a] for a in others if axes[a] is not None})
            name = f"{c.sampler}{rest} @ {int(c.nfe)} steps"
            curves.setdefault(int(c.nfe), {}).setdefault(name, []).append((float(w), c))
        for n in sorted(curves):  # a facet per step count: the curves of one budget side by side
            series = []
            for name, points in curves[n].items():
                if len(points) < 2:
                    single.append(f"{name} ({hw}, {res}px)")
                    continue
                points.sort(key=lambda p: p[0])
                first = points[0][1]
                s = plots.Series(str(first.sampler), str(first.family), name=name, line=name)
                for w, c in points:
                    xv, yv = data.value(c.cell_key, fd.name), data.value(c.cell_key, clip.name)
                    _add_point(s, xv, yv, f"w={w:g}", cell_tip(data, c))
                series.append(s)
            if not series:
                continue
            title = f"{fd.label} vs {clip.label} across guidance, {n} steps ({hw}, {res}px)"
            # sampler colours and markers as everywhere; a sampler's variants / other axis values by line style
            style = plots.Style(ctx.style.colours, plots.line_styles([(s.name or "", s.sampler) for s in series]))
            xs = [x for s in series for x in s.x]
            logx = min(xs) > 0 and max(xs) / min(xs) > 3  # few-step w = 1 cells sit far right of the rest
            svg = plots.xy_plot(series, style, title=title, xlabel=f"{fd.label} ({fd.direction_word})"
                                + (", log scale" if logx else ""), ylabel=f"{clip.label} ({clip.direction_word})",
                                logx=logx, size=(5.6, 3.6))
            plots_out.append({"title": title, "svg": ctx.svg(svg, title), "kind": "guidance", "steps": n,
                              "curves": len(series), "points": sum(len(s.x) for s in series)})
    if not plots_out:
        return None
    return {"fd": fd.label, "clip": clip.label, "values": [f"{w:g}" for w in sorted(ws)], "plots": plots_out,
            "single": single}


def _memory_plots(ctx: _Ctx, data: RunData, mem: MetricInfo) -> list[dict[str, Any]]:
    """Per hardware: peak memory vs resolution, per sampler the median over NFE (bars: min to max)."""
    out = []
    c = data.cells[data.cells["status"] == "done"]
    for hw in dict.fromkeys(str(h) for h in c["hardware"]):
        at_hw = c[c["hardware"].astype(str) == hw]
        resolutions = sorted({int(r) for r in at_hw["resolution"]})
        if len(resolutions) == 1:  # nothing to draw against resolution: show memory against NFE instead
            s1 = _series(data, _ordered(at_hw, data), None, mem.name)
            if s1:
                title = f"{mem.label} vs counted NFE ({hw}, {resolutions[0]}px)"
                svg = plots.xy_plot(s1, ctx.style, title=title, xlabel="counted NFE per image, log scale",
                                    ylabel=mem.label, logx=True, logx_base=2)
                out.append({"title": title, "svg": ctx.svg(svg, title), "kind": "memory"})
            continue
        series: dict[str, plots.Series] = {}
        for (line, res), grp in c[c["hardware"].astype(str) == hw].groupby(["line", "resolution"], sort=False):
            vals = [data.value(k, mem.name).value for k in grp["cell_key"]]
            vals = [v for v in vals if v is not None and math.isfinite(v)]
            if not vals:
                continue
            sv = pd.Series(vals)
            s = series.setdefault(str(line), plots.Series(str(grp["sampler"].iloc[0]), str(grp["family"].iloc[0]),
                                                          name=str(line), line=str(line)))
            s.x.append(float(res))
            s.y.append(float(sv.median()))
            s.x_lo.append(None)
            s.x_hi.append(None)
            s.y_lo.append(float(sv.min()))
            s.y_hi.append(float(sv.max()))
            s.labels.append("")
            s.tips.append(f"{line}\n{hw} · {int(res)}×{int(res)} px\n{mem.label}: median {fmt(float(sv.median()))} over "
                          f"{len(vals)} cells (min {fmt(float(sv.min()))}, max {fmt(float(sv.max()))})")
        for s in series.values():
            order = sorted(range(len(s.x)), key=lambda i: s.x[i])
            for f in ("x", "y", "x_lo", "x_hi", "y_lo", "y_hi", "labels", "tips"):
                setattr(s, f, [getattr(s, f)[i] for i in order])
        if series:
            title = f"{mem.label} vs resolution ({hw})"
            svg = plots.xy_plot(list(series.values()), ctx.style, title=title, xlabel="resolution (px), log scale",
                                ylabel=f"{mem.label}, median over NFE (bars: min–max)", logx=True, logx_base=2)
            out.append({"title": title, "svg": ctx.svg(svg, title), "kind": "memory"})
    return out


def _mark_best(judge: Judge, done: list[Any], present: list[MetricInfo], best: dict[str, set[str]],
               tied: dict[str, dict[str, str]]) -> None:
    """Add to `best` / `tied` the best cells of `done` (one slice) per metric and the cells tied with them."""
    data = judge.data
    for m in present:
        if m.higher_is_better is None or m.kind in ("calibration", "reference"):
            continue
        vals = {str(c.cell_key): data.value(c.cell_key, m.name) for c in done}
        vals = {k: v for k, v in vals.items() if v.ok}
        if m.kind == "latency":
            vals = {k: v for k, v in vals.items() if data.unstable_reason(k, m.name) is None}
        if not vals:
            continue
        target = (max if m.higher_is_better else min)(v.value for v in vals.values())  # type: ignore[type-var]
        winners = {k for k, v in vals.items() if v.value == target}
        best.setdefault(m.name, set()).update(winners)
        b_key = next(iter(winners))
        ties = tied.setdefault(m.name, {})
        for k, v in vals.items():
            if k in winners:
                continue
            if m.kind == "quality":
                verdict = judge.quality(m, b_key, k)
                if verdict is not None and verdict.verdict == "tie":
                    ties[k] = f"tie with the best ({verdict.method_label})"
            elif m.kind == "latency":
                tb, tk = data.timing(b_key, m.name), data.timing(k, m.name)
                if tb is not None and tk is not None and latency_tie(tb, tk):
                    ties[k] = "tie with the best (IQRs overlap)"
            elif intervals_overlap(v, vals[b_key]):
                ties[k] = "tie with the best (intervals overlap)"


def _results_table(ctx: _Ctx, judge: Judge, cells: list[Any], headline: MetricInfo | None,
                   lat: MetricInfo | None) -> dict[str, Any]:
    """Every cell with every metric, a column per extra axis. Per column and extra-axis slice the best value is
    marked, and the cells the verdict rules cannot separate from it: quality by the paired test (unpaired interval
    overlap without evidence), latency by IQR overlap; an unstable latency gets a badge and is never best nor tied.
    The Pareto-front badge is per slice too."""
    data = judge.data
    keys = {str(c.cell_key) for c in cells}
    present = _column_order(data, [m for m in data.metrics if any(data.value(k, m.name).ok for k in keys)])
    done = [c for c in cells if c.status == "done"]
    best: dict[str, set[str]] = {}
    tied: dict[str, dict[str, str]] = {}  # metric -> cell key -> how the tie was decided
    on_front: set[str] = set()
    for _, in_slice in _by_slice(data, done):
        _mark_best(judge, in_slice, present, best, tied)
        if headline is not None and lat is not None:
            keep, qs, ls = _points(data, in_slice, headline, lat, stable_only=True)
            idx = pareto_front([(q.value, v.value) for q, v in zip(qs, ls, strict=True)],
                               [bool(headline.higher_is_better), False])
            on_front |= {str(keep[i].cell_key) for i in idx}
    axes = [a for a in data.axes if any(data.cell_axes(c)[a] is not None for c in cells)]
    rows = []
    for c in cells:
        k = str(c.cell_key)
        row: dict[str, Any] = {"sampler": c.sampler, "family": c.family, "colour": ctx.colour(c.sampler),
                               "glyph": ctx.glyph(c.sampler), "steps": int(c.nfe),
                               "axes": [_axis_text(data.cell_axes(c)[a]) for a in axes],
                               "nfe": "" if c.nfe_counted is None or pd.isna(c.nfe_counted) else f"{float(c.nfe_counted):g}",
                               "nfe_v": _nfe_x(c), "status": c.status, "reason": c.reason or "",
                               "reused": bool(c.reused), "front": k in on_front, "vals": []}
        for m in present:
            v = data.value(k, m.name)
            tie = tied.get(m.name, {}).get(k)
            cls = "best" if k in best.get(m.name, ()) else ("tie" if tie else "")
            unstable = data.unstable_reason(k, m.name) if v.ok and m.kind == "latency" else None
            title = "" if not v.ok else (
                f"{v.value:.6g}" + (f"  CI [{v.ci_low:.6g}, {v.ci_high:.6g}]" if v.half_width is not None else "")
                + (f"  n={v.n}" if v.n else "") + (f"  {tie}" if tie else "")
                + (f"  unstable latency, no verdict: {unstable}" if unstable else ""))
            row["vals"].append({"text": fmt_ci(v), "sort": v.value if v.ok else "", "cls": cls, "title": title,
                                "unstable": unstable, "comparability": _comparability(data, k, m.name)})
        rows.append(row)
    return {"axes": axes, "columns": [{"name": m.name, "label": m.label, "kind": m.kind, "title": m.header_title,
                         "arrow": "" if m.higher_is_better is None else ("↑" if m.higher_is_better else "↓")}
                        for m in present],
            "rows": rows, "front_metric": headline.label if headline is not None else None}


def _comparability(data: RunData, cell_key: str, metric: str) -> str | None:
    """The note of an FD against a statistics file whose pipeline differs or is unknown (provenance), else None."""
    prov = data.provenance.get((cell_key, metric)) or {}
    return None if prov.get("comparable", True) is True else str(prov.get("comparability") or "not comparable")


def _column_order(data: RunData, present: list[MetricInfo]) -> list[MetricInfo]:
    """The plotted quality metrics, then the two latencies users ship by (per image, batch 1), then the rest in
    catalogue order: what a reader compares stays within the first screen's width."""
    first = [m.name for m in data.plotted_quality] + list(LATENCY_PREFERENCE)
    rank = {name: i for i, name in enumerate(first)}
    return sorted(present, key=lambda m: rank.get(m.name, len(first)))  # stable: the rest keep their order


def _axis_text(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _grids(ctx: _Ctx, data: RunData, info: dict[str, Any]) -> list[dict[str, Any]]:
    """Per resolution: rows = sampler @ NFE, columns = grid images (same seed and prompt in a column)."""
    out = []
    done = data.cells[data.cells["status"] == "done"]
    folders = {str(c.cell_key): sample_folder(data, c) for c in done.itertuples(index=False)}
    wanted = int(info.get("grid") or 0)
    for res in dict.fromkeys(int(r) for r in done["resolution"]):
        at_res = done[done["resolution"].astype(int) == res]
        hws = [h for h in dict.fromkeys(str(h) for h in at_res["hardware"])
               if any(folders.get(str(k)) for k in at_res[at_res["hardware"].astype(str) == h]["cell_key"])]
        if not hws:
            continue
        hw = hws[0]
        cells = _ordered(at_res[at_res["hardware"].astype(str) == hw], data)
        count = max(count_pngs(folders.get(str(c.cell_key))) for c in cells)
        if wanted:
            count = min(count, wanted) if count else 0
        if count == 0:
            continue
        captions = grid_captions(info, count)
        base_seed = int(info.get("base_seed", 0))
        columns = [{"seed": base_seed + i, "index": i, "caption": captions[i] if captions else ""}
                   for i in range(count)]
        scale = max(1, min(8, 64 // res)) if res < 64 else 1  # integer zoom keeps pixels crisp
        rows = []
        ref = reference_images(info, count, res)
        if ref:
            rows.append({"label": "reference (dataset)", "family": "", "colour": "#999", "glyph": "○",
                         "src": data_uri(sprite(list(ref), res)), "reference": True, "missing": 0})
        for c in cells:
            pngs = sample_pngs(folders.get(str(c.cell_key)), count)
            rows.append({"label": cell_label(c), "family": c.family, "colour": ctx.colour(str(c.sampler)),
                         "glyph": ctx.glyph(str(c.sampler)), "reference": False, "missing": sum(p is None for p in pngs),
                         "src": data_uri(sprite(pngs, res))})
        out.append({"id": f"grid-{res}", "resolution": res, "hardware": hw, "other_hardware": hws[1:],
                    "columns": columns, "rows": rows, "col_width": (res + 1) * scale,
                    "img_width": count * (res + 1) * scale, "img_height": res * scale,
                    "captions": bool(captions)})
    return out


# -- the two-run comparison --------------------------------------------------------------------------

def render_compare(a: RunData, b: RunData) -> str:
    from bench.analysis import PairedComparer
    from bench.report.compare import compare_runs

    ctx = _Ctx([a, b])
    cmp = compare_runs(a.df, b.df, a.evidence, b.evidence, PairedComparer())
    lat = b.latency_metric or a.latency_metric
    quality = b.plotted_quality or a.plotted_quality
    groups = []
    for hw, res in dict.fromkeys([*a.groups(), *b.groups()]):
        cells_a = _ordered(_group_cells(a, hw, res), a)
        cells_b = _ordered(_group_cells(b, hw, res), b)
        g: dict[str, Any] = {"id": _group_id(hw, res), "title": f"{hw} · {res}×{res} px", "plots": [],
                             "measured": bool(cells_a or cells_b)}
        for q in quality:
            if lat is None:
                break
            series = _series(a, cells_a, lat.name, q.name, faded=True, tip_prefix=f"A ({a.run_id}): ") \
                + _series(b, cells_b, lat.name, q.name, tip_prefix=f"B ({b.run_id}): ")
            if series:
                title = f"{q.label} vs latency: A hollow and light, B filled ({hw}, {res}px)"
                svg = plots.xy_plot(series, ctx.style, title=title, xlabel=f"{lat.label}, log scale",
                                    ylabel=f"{q.label} ({q.direction_word})", logx=True,
                                    front=(False, bool(q.higher_is_better)), fronts_by_faded=True, logy="auto")
                g["plots"].append({"title": title, "svg": ctx.svg(svg, title)})
        sub = cmp[(cmp["hardware"].astype(str) == hw) & (cmp["resolution"] == res)]
        g["table"] = _delta_table(ctx, sub, [m.name for m in b.metrics] + [m.name for m in a.metrics
                                                                           if b.metric(m.name) is None])
        groups.append(g)
    measured = cmp[cmp["metric"].notna()]
    tally = []
    for name, grp in measured.groupby("metric", sort=False):
        sig = grp[grp["significant"]]
        tally.append({"metric": name, "better": int((sig["change"] == "better").sum()),
                      "worse": int((sig["change"] == "worse").sum()),
                      "within": int(grp["change"].isin(["better", "worse"]).sum() - len(sig[sig["change"].isin(
                          ["better", "worse"])])),
                      "same": int((grp["change"] == "same").sum()),
                      "unmatched": int(grp["change"].isin(["new", "gone", "unmeasured"]).sum())})
    context = {
        "title": f"{a.suite} vs {b.suite} — flowmap-bench comparison" if a.suite != b.suite
        else f"{a.suite}: run comparison — flowmap-bench",
        "a": {"run": _run_meta(a), "id": a.run_id, "suite_text": a.run.get("suite_text") or "",
              "fingerprint": a.run.get("fingerprint") or {}, "versions": a.run.get("versions") or {}},
        "b": {"run": _run_meta(b), "id": b.run_id, "suite_text": b.run.get("suite_text") or "",
              "fingerprint": b.run.get("fingerprint") or {}, "versions": b.run.get("versions") or {}},
        "generated": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "legend": ctx.legend(),
        "groups": groups,
        "tally": tally,
        "text": _text_summary(cmp),
    }
    return _env().get_template("compare.html.j2").render(**context)


def _text_summary(cmp: pd.DataFrame) -> str:
    from bench.report.compare import format_compare

    return format_compare(cmp, max_rows=400)


def _delta_table(ctx: _Ctx, sub: pd.DataFrame, metric_order: list[str]) -> dict[str, Any]:
    metrics = [m for m in dict.fromkeys(metric_order) if m in set(sub["metric"].dropna())]
    hib = {m: sub[sub["metric"] == m]["higher_is_better"].dropna() for m in metrics}
    rows = []
    for (sampler, where, nfe), grp in sub.groupby(["sampler", "slice", "nfe"], sort=False):
        first = grp.iloc[0]
        status = f"{first['status_a'] if pd.notna(first['status_a']) else '—'} → " \
                 f"{first['status_b'] if pd.notna(first['status_b']) else '—'}"
        reasons = [str(first[k]) for k in ("reason_a", "reason_b") if pd.notna(first[k]) and first[k]]
        row: dict[str, Any] = {"sampler": sampler, "family": first["family"], "colour": ctx.colour(str(sampler)),
                               "glyph": ctx.glyph(str(sampler)), "steps": int(nfe), "status": status, "slice": where,
                               "reason": "; ".join(dict.fromkeys(reasons)), "vals": []}
        by_metric = {r.metric: r for r in grp.itertuples(index=False) if isinstance(r.metric, str)}
        for m in metrics:
            r = by_metric.get(m)
            if r is None or pd.isna(r.delta):
                row["vals"].append({"text": "–", "sort": "", "cls": "", "title": "", "method": ""})
                continue
            half = None if pd.isna(r.delta_ci_low) else max(r.delta - r.delta_ci_low, r.delta_ci_high - r.delta)
            text = fmt(r.delta, half)
            text = ("+" if r.delta > 0 else "") + text + (f" ± {fmt(half, half)}" if half else "")
            if not pd.isna(r.rel_delta):
                text += f" ({100 * r.rel_delta:+.0f}%)"
            cls = {"better": "better", "worse": "worse"}.get(r.change, "")
            if cls and not r.significant:
                cls += " within"  # not significant, or no interval to tell: coloured text, no fill
            method = r.ci_method if isinstance(r.ci_method, str) else ""
            how = {"paired": "paired CI of B − A (same images)",
                   "unpaired": "unpaired: both runs' intervals combined (conservative)"}.get(method, "no interval")
            title = (f"A: {_ci_text(r.value_a, r.ci_low_a, r.ci_high_a)}   B: {_ci_text(r.value_b, r.ci_low_b, r.ci_high_b)}"
                     f"   Δ {_ci_text(r.delta, r.delta_ci_low, r.delta_ci_high)} ({how})")
            row["vals"].append({"text": text, "sort": float(r.delta), "cls": cls, "title": title, "method": method})
        rows.append(row)
    return {"columns": [{"name": m, "label": m, "arrow": "" if hib[m].empty else ("↑" if bool(hib[m].iloc[0]) else "↓")}
                        for m in metrics], "rows": rows}


def _ci_text(v: float, lo: float, hi: float) -> str:
    if pd.isna(v):
        return "–"
    return f"{v:.4g}" + ("" if pd.isna(lo) or pd.isna(hi) else f" [{lo:.4g}, {hi:.4g}]")


