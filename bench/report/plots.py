"""Report plots: matplotlib figures (no pyplot, so no GUI backend) returned as SVG strings to inline in HTML.

Every plot uses the same colour and marker per sampler (Okabe-Ito hues, colour-blind safe: a family's samplers
share its hue in shades, each with its own marker) and the same line style per line of a sampler (its option
variants `x[eta=0.5]` and its values of the extra axes, e.g. guidance), so a reader learns the legend once. Text stays text in the SVG (no
embedded font, so the files are small); matplotlib escapes it, so user-controlled names are inert.
"""

from __future__ import annotations

import io
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from bench.report.pareto import front_steps

# Okabe & Ito (2008) colour-blind-safe palette; yellow (#F0E442) is left last (weak on white).
OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
FAMILY_STYLE = {
    "flow_map": ("#0072B2", "o"),
    "consistency": ("#D55E00", "s"),
    "lcm": ("#009E73", "^"),
    "adversarial": ("#CC79A7", "D"),
    "ode": ("#E69F00", "v"),
}
EXTRA_MARKERS = ["P", "X", "h", "*", "<", ">"]
MARKERS = ["o", "s", "^", "D", "v", *EXTRA_MARKERS]
# A family's second, third, ... sampler: its hue mixed towards black (< 0) or white (> 0) by this much.
SHADES = [0.0, -0.4, 0.4, -0.65, 0.6]
LINESTYLES: list[Any] = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (8, 2, 2, 2)), (0, (3, 3))]
FRONT_COLOUR = "#444444"
UNSTABLE_NOTE = "hollow: unstable latency (no verdict)"

RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text as <text>, no glyph paths: small files, selectable labels
    "svg.hashsalt": "flowmap-bench",  # deterministic ids (prefixed per plot when inlined)
    "text.parse_math": False,  # a '$' in a sampler id is a character, not mathtext
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "figure.dpi": 100,
    "path.simplify": True,
}


def family_styles(families: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Colour and marker per family: fixed for the five known families, then the rest of the palette."""
    out = {f: FAMILY_STYLE[f] for f in families if f in FAMILY_STYLE}
    used = {c for c, _ in out.values()}
    spare_colours = [c for c in OKABE_ITO if c not in used] + [c for c in OKABE_ITO if c in used]
    spare = zip(itertools.cycle(spare_colours), itertools.cycle(EXTRA_MARKERS))
    for f in families:
        if f not in out:
            out[f] = next(spare)
    return out


def base_sampler(sampler: str) -> str:
    """`hyper-sd` for the option variant `hyper-sd[eta=0.5]` (bench.spec.variant_label); else the id itself."""
    if sampler.endswith("]") and "[" in sampler[1:]:
        return sampler[:sampler.index("[", 1)]
    return sampler


def _shade(colour: str, f: float) -> str:
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    target = 255 if f > 0 else 0
    return "#" + "".join(f"{round(c + (target - c) * abs(f)):02X}" for c in rgb)


def sampler_styles(samplers: Sequence[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """(sampler, family) -> (colour, marker) for every sampler id, one pair per base sampler: an option variant
    `x[eta=0.5]` gets x's pair (its line style tells it apart). A family's first sampler gets the family's colour and
    marker, its next ones a darker / lighter shade of that hue and the next marker, so no two base samplers share a
    pair (the teacher's Euler, Heun and DPM-Solver++ are three styles, not one)."""
    fams = family_styles(list(dict.fromkeys(f for _, f in samplers)))
    per_family: dict[str, int] = {}
    by_base: dict[str, tuple[str, str]] = {}
    used: set[tuple[str, str]] = set()
    out: dict[str, tuple[str, str]] = {}
    for s, fam in samplers:
        base = base_sampler(s)
        if base not in by_base:
            colour, marker = fams[fam]
            i = per_family.get(fam, 0)
            per_family[fam] = i + 1
            ring = MARKERS[MARKERS.index(marker):] + MARKERS[:MARKERS.index(marker)] if marker in MARKERS else MARKERS
            pair = (_shade(colour, SHADES[i % len(SHADES)]) if i else colour, ring[i % len(ring)])
            k = i
            while pair in used and k < i + len(ring):  # a spare family that reuses a colour: move to the next marker
                k += 1
                pair = (pair[0], ring[k % len(ring)])
            by_base[base] = pair
            used.add(pair)
        out[s] = by_base[base]
    return out


def line_styles(lines: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """(line, sampler) -> line style, cycling over the lines of each base sampler (its variants and extra-axis
    values) in the given order; a sampler with one line draws it solid."""
    counters: dict[str, int] = {}
    out: dict[str, Any] = {}
    for line, s in lines:
        if line in out:
            continue
        base = base_sampler(s)
        i = counters.get(base, 0)
        out[line] = LINESTYLES[i % len(LINESTYLES)]
        counters[base] = i + 1
    return out


@dataclass
class Series:
    """One sampler's points in NFE order; lo/hi are interval bounds (None where unknown)."""

    sampler: str
    family: str
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    x_lo: list[float | None] = field(default_factory=list)
    x_hi: list[float | None] = field(default_factory=list)
    y_lo: list[float | None] = field(default_factory=list)
    y_hi: list[float | None] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # annotation per point (the NFE)
    tips: list[str] = field(default_factory=list)  # hover text per point (which cell, its numbers); '' for none
    faded: bool = False  # drawn hollow and light (the "before" run of a comparison)
    name: str | None = None  # legend text (default: sampler)
    unstable: list[bool] = field(default_factory=list)  # per point: latency flagged unstable (drawn hollow)
    line: str | None = None  # the key of its line style (default: sampler)

    def is_unstable(self, i: int) -> bool:
        return i < len(self.unstable) and self.unstable[i]

    def tip(self, i: int) -> str:
        return self.tips[i] if i < len(self.tips) else ""


@dataclass
class Style:
    colours: dict[str, tuple[str, str]]  # sampler -> (colour, marker)
    linestyles: dict[str, Any]  # line -> matplotlib line style

    def of(self, s: Series) -> tuple[str, str, Any]:
        colour, marker = self.colours.get(s.sampler) or self.colours.get(base_sampler(s.sampler), ("#000000", "o"))
        return colour, marker, self.linestyles.get(s.line or s.sampler, "-")


def _err(values: list[float], bounds: list[float | None], lower: bool) -> list[float]:
    out = []
    for v, b in zip(values, bounds, strict=True):
        if b is None or not math.isfinite(b):
            out.append(0.0)
        else:
            out.append(max(v - b, 0.0) if lower else max(b - v, 0.0))
    return out


def xy_plot(series: Sequence[Series], style: Style, *, title: str, xlabel: str, ylabel: str,
            logx: bool | str = False, logx_base: float = 10, front: tuple[bool, bool] | None = None,
            hline: tuple[float, str] | None = None, size: tuple[float, float] = (6.6, 3.7),
            fronts_by_faded: bool = False, logy: bool | str = False) -> str:
    """Lines per sampler (points joined in the given order), CI error bars on both axes, optionally the
    Pareto front of all points (front = (x_higher_is_better, y_higher_is_better)) drawn as a staircase.
    `logx` / `logy` "auto": a log axis when the values span more than a factor 15."""
    with matplotlib.rc_context(RC):  # type: ignore[arg-type]
        # A bare Figure, no pyplot: no global backend switch and no figure manager to leak.
        fig = Figure(figsize=size, layout="constrained")
        ax = fig.add_subplot()
        tips: dict[str, str] = {}
        for s in series:
            if not s.x:
                continue
            colour, marker, ls = style.of(s)
            xerr = [_err(s.x, s.x_lo, True), _err(s.x, s.x_hi, False)] if s.x_lo else None
            yerr = [_err(s.y, s.y_lo, True), _err(s.y, s.y_hi, False)] if s.y_lo else None
            if xerr is not None and not any(map(any, xerr)):
                xerr = None
            if yerr is not None and not any(map(any, yerr)):
                yerr = None
            alpha = 0.45 if s.faded else 1.0
            ax.errorbar(s.x, s.y, xerr=xerr, yerr=yerr, color=colour, marker=marker, linestyle=ls,
                        linewidth=1.4, markersize=5.5, capsize=2, elinewidth=0.8, alpha=alpha,
                        markerfacecolor="white" if s.faded else colour,
                        label="_nolegend_" if s.faded and fronts_by_faded else (s.name or s.sampler))
            for x, y, lab in zip(s.x, s.y, s.labels, strict=False):
                ax.annotate(lab, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=colour, alpha=alpha)
            for i in range(len(s.x)):
                if s.tip(i):
                    _hover_target(ax, s.x[i], s.y[i], f"{TIP_ID}{len(tips)}")
                    tips[f"{TIP_ID}{len(tips)}"] = s.tip(i)
            hollow = [i for i in range(len(s.x)) if s.is_unstable(i)]
            if hollow:  # white fill over the point, dashed edge: its latency takes part in no verdict
                ax.scatter([s.x[i] for i in hollow], [s.y[i] for i in hollow], s=44, marker=marker,
                           facecolors="white", edgecolors=colour, linewidths=1.3, linestyles="--", zorder=4,
                           label="_nolegend_")
        if any(s.is_unstable(i) for s in series for i in range(len(s.x))):
            from matplotlib.lines import Line2D

            ax.add_line(Line2D([], [], linestyle="none", marker="o", markersize=5.5, markerfacecolor="white",
                               markeredgecolor="#555555", label=UNSTABLE_NOTE))
        if front is not None:
            sets = [[s for s in series if s.faded], [s for s in series if not s.faded]] if fronts_by_faded \
                else [list(series)]
            for group in sets:
                faded = bool(group) and group[0].faded and fronts_by_faded
                label = ("Pareto front, A" if faded else "Pareto front, B") if fronts_by_faded else "Pareto front"
                _draw_front(ax, group, front, faded=faded, label=label)
        if hline is not None:
            ax.axhline(hline[0], color="#777777", linestyle=(0, (4, 3)), linewidth=1)
            ax.annotate(hline[1], (0.01, hline[0]), xycoords=("axes fraction", "data"), xytext=(0, 3),
                        textcoords="offset points", fontsize=7, color="#555555")
        xs = [x for s in series for x in s.x]
        if logx == "auto":
            logx = bool(xs) and min(xs) > 0 and max(xs) / min(xs) > 15
        if logx:
            ax.set_xscale("log", base=logx_base)
            _plain_log_ticks(ax.xaxis, logx_base)
        ys = [y for s in series for y in s.y] + ([hline[0]] if hline else [])
        if logy == "auto":
            logy = bool(ys) and min(ys) > 0 and max(ys) / min(ys) > 15
        if logy:
            ax.set_yscale("log")
            _plain_log_ticks(ax.yaxis, 10)
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5))
        return to_svg(fig, tips)


TIP_ID = "bench-tip-"


def _hover_target(ax: object, x: float, y: float, gid: str) -> None:
    """An invisible disc over a point, on top of everything, that to_svg turns into a <g> with the point's
    <title>: the browser shows it as a tooltip when the pointer rests on the point (no script needed)."""
    ax.plot([x], [y], linestyle="none", marker="o", markersize=9, alpha=0.0, zorder=10,  # type: ignore[attr-defined]
            label="_nolegend_", gid=gid)


def _plain_log_ticks(axis: object, base: float) -> None:
    """Ticks on a log axis written as plain numbers (1, 2, 5, 10, ... or powers of 2), at least two in view."""
    from matplotlib.ticker import FuncFormatter, NullLocator

    lo, hi = axis.get_view_interval()  # type: ignore[attr-defined]
    lo, hi = min(lo, hi), max(lo, hi)
    if not (lo > 0 and hi > lo):
        return
    kmin, kmax = math.floor(math.log(lo, base)) - 1, math.ceil(math.log(hi, base)) + 1
    ticks: list[float] = []
    for subs in ([1.0] if base == 2 else [1.0, 2.0, 5.0], [1.0, 1.5, 2.0, 3.0, 5.0, 7.0], [1.0 + i / 4 for i in range(36)]):
        ticks = [m * base**k for k in range(kmin, kmax + 1) for m in subs if lo <= m * base**k <= hi]
        if len(ticks) >= 2:
            break
    if len(ticks) > 9:
        ticks = ticks[:: math.ceil(len(ticks) / 8)]
    axis.set_ticks(ticks)  # type: ignore[attr-defined]
    axis.set_minor_locator(NullLocator())  # type: ignore[attr-defined]
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))  # type: ignore[attr-defined]
    axis.set_view_interval(lo, hi, ignore=True)  # type: ignore[attr-defined]


def _draw_front(ax: object, series: Sequence[Series], front: tuple[bool, bool], faded: bool,
                label: str = "Pareto front") -> None:
    stable = [(s.x[i], s.y[i]) for s in series for i in range(len(s.x)) if not s.is_unstable(i)]
    xs = [x for x, _ in stable]
    ys = [y for _, y in stable]
    if len(xs) < 1:
        return
    idx = front_steps(xs, ys, *front)
    if not idx:
        return
    fx, fy = [xs[i] for i in idx], [ys[i] for i in idx]
    kw = {"color": FRONT_COLOUR, "linewidth": 5, "alpha": 0.12 if faded else 0.22, "zorder": 0,
          "solid_capstyle": "round", "label": label}
    ax.step(fx, fy, where="post", **kw)  # type: ignore[attr-defined]
    ax.scatter(fx, fy, s=110, facecolors="none", edgecolors=FRONT_COLOUR,  # type: ignore[attr-defined]
               linewidths=0.9, alpha=0.5 if faded else 0.9, zorder=3)


_ID = re.compile(r'\sid="([^"]+)"')
_REF = re.compile(r'(url\(#|href="#)([^")]+)')
_COORDS = re.compile(r'\s(d|x|y|transform|points)="([^"]*)"')
_NUMBER = re.compile(r"-?\d+\.\d+")
_FONT = re.compile(r"font-family: [^;\"]*;? ?")
_NO_ROTATE = re.compile(r'\stransform="rotate\(-?0 [\d.\- ]+\)"')


def to_svg(fig: object, tips: dict[str, str] | None = None) -> str:
    """The figure as a compact <svg> element: no XML prolog or metadata, coordinates to 0.1 pt, the
    font left to the page's CSS, and ids only where something refers to them. `tips`: group id -> tooltip text
    (escaped here); each such group becomes <g class="point"><title>text</title>...."""
    from markupsafe import escape

    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})  # type: ignore[attr-defined]
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    for gid, tip in (tips or {}).items():
        text = text.replace(f'<g id="{gid}">', f'<g class="point"><title>{escape(tip)}</title>', 1)
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, count=1, flags=re.S)
    text = _NO_ROTATE.sub("", text)
    text = _COORDS.sub(lambda m: f' {m.group(1)}="{_round(m.group(2))}"', text)
    text = _FONT.sub("", text)
    used = {m.group(2) for m in _REF.finditer(text)}
    text = _ID.sub(lambda m: m.group(0) if m.group(1) in used else "", text)
    return re.sub(r"\n\s*", "\n", text)


def _round(coords: str) -> str:
    def one(m: re.Match[str]) -> str:
        v = f"{float(m.group(0)):.1f}".rstrip("0").rstrip(".")
        return "0" if v == "-0" else v

    return " ".join(_NUMBER.sub(one, coords).split())


def inline_svg(svg: str, prefix: str, label: str) -> str:
    """Give every id of `svg` the prefix (several plots share one HTML document), size it to its container
    and label it for screen readers. `label` is escaped here."""
    from markupsafe import escape

    svg = _ID.sub(lambda m: f' id="{prefix}-{m.group(1)}"', svg)
    svg = _REF.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)
    head_end = svg.index(">")
    head = svg[:head_end]
    w = re.search(r'\bwidth="([\d.]+)pt"', head)
    head = re.sub(r'\s(width|height)="[\d.]+pt"', "", head)
    style = f' style="max-width:{float(w.group(1)) * 4 / 3:.0f}px"' if w else ""
    head += f' class="plot" role="img" aria-label="{escape(label)}"{style}'
    return head + svg[head_end:]
