"""The report read as a user deciding what to ship (issue 20, item 4), from the HTML alone (no browser):
a tooltip on every plotted point with its numbers, a Pareto front at batch 1 beside the per-image one, the batch
behind "ms/image" in the headers, the latency columns among the first ones, and no escaped '\\u00b1' as text.

Expected numbers come from the public export (bench.load_results), not from the report's own data layer."""

from __future__ import annotations

import json
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

import bench
from bench.report.html import write_report
from tests.synthetic import FakeSampler, make_store

# Per-image (batch 16) latency favours `fast16`; at batch 1 it is launch-bound (factor 8) and `fast1` wins.
SAMPLERS = (
    FakeSampler("fast16", "consistency", 10.0, 0.5, 1.0, nfe=(1, 2, 4), batch1_factor=8.0),
    FakeSampler("fast1", "lcm", 10.0, 0.5, 1.6, nfe=(1, 2, 4), batch1_factor=2.0),
    FakeSampler('heun "x" & <y>', "ode", 45.0, 1.6, 2.0, nfe_per_step=2.0, intercept=1.0, nfe=(2, 4)),
)
QUALITY = "fd"
PER_IMAGE, BATCH1 = "latency_ms_per_image", "latency_ms_batch1"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[pd.DataFrame, str]:
    folder = tmp_path_factory.mktemp("ux")
    make_store(folder / "bench.sqlite", suite="ux", samplers=SAMPLERS, resolutions=(8,), hardware=("cpu",), grid=0,
               dataset="no-such-dataset", failed=None, unstable=(("fast1", 4),))
    html = write_report(folder / "bench.sqlite", out=folder / "ux.html").read_text(encoding="utf-8")
    return bench.load_results(str(folder / "bench.sqlite")), html


class _Page(HTMLParser):
    """The page as a reader gets it: visible text (no <script>/<style>), every element's title attribute, the
    <title> of every plotted point per figure (by its data-kind), and the results table's header cells."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.titles: list[str] = []
        self.points: list[tuple[str, str]] = []  # (figure kind, tooltip)
        self.headers: list[tuple[str, str]] = []  # (text, title) of table.results th
        self._stack: list[tuple[str, dict[str, str]]] = []
        self._kind = ""
        self._in_point_title = False
        self._th: list[str] | None = None
        self._th_title = ""
        self._results = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "figure":
            self._kind = a.get("data-kind", "")
        if tag == "table":
            self._results = "results" in a.get("class", "").split()
        if tag == "title" and self._stack and self._stack[-1][0] == "g" and self._stack[-1][1].get("class") == "point":
            self._in_point_title = True
            self.points.append((self._kind, ""))
        if tag == "th" and self._results and any(t == "thead" for t, _ in self._stack):
            self._th, self._th_title = [], a.get("title", "")
        if "title" in a:
            self.titles.append(a["title"])
        self._stack.append((tag, a))

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            if self._stack.pop()[0] == tag:
                break
        if tag == "title":
            self._in_point_title = False
        if tag == "th" and self._th is not None:
            self.headers.append(("".join(self._th).strip(), self._th_title))
            self._th = None
        if tag == "table":
            self._results = False

    def handle_data(self, data: str) -> None:
        if self._in_point_title:
            kind, text = self.points[-1]
            self.points[-1] = (kind, text + data)
        if self._th is not None:
            self._th.append(data)
        if not any(t in ("script", "style") for t, _ in self._stack):
            self.text.append(data)


def _page(html: str) -> _Page:
    p = _Page()
    p.feed(html)
    return p


def _cells(df: pd.DataFrame) -> list[dict]:
    """One row per measured cell with its FD and latencies (value and interval) from the export."""
    done = df[(df.status == "done") & df.metric.isin([QUALITY, PER_IMAGE, BATCH1])]
    wide = done.pivot_table(index=["sampler", "nfe", "nfe_counted"], columns="metric",
                            values=["value", "ci_low", "ci_high"], aggfunc="first")
    wide.columns = [f"{m}.{v}" for v, m in wide.columns]
    return wide.reset_index().to_dict("records")


def _num(tip: str, label: str) -> list[float]:
    """The numbers after 'label:' on the tooltip's line for it."""
    line = next((x for x in tip.splitlines() if x.startswith(label + ":")), None)
    assert line is not None, f"no {label!r} line in tooltip {tip!r}"
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", line[len(label) + 1:])]


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 0.01 * abs(b) + 1e-3  # the tooltip rounds to what the interval supports


def _batch(df: pd.DataFrame, metric: str) -> int:
    sizes = {json.loads(p)["batch_size"] for p in df.loc[df.metric == metric, "provenance"]}
    assert len(sizes) == 1
    return int(sizes.pop())


def test_every_point_of_the_latency_plots_has_a_tooltip_with_its_cell_and_numbers(run):
    df, html = run
    page = _page(html)
    cells = _cells(df)
    b16 = _batch(df, PER_IMAGE)
    for kind in ("quality-latency", "quality-latency-batch1"):
        tips = [t for k, t in page.points if k == kind]
        # FD and CLIP score are each drawn against this latency: every cell twice, each point with a tooltip
        assert len(tips) == 2 * len(cells), kind
        fd_tips = [t for t in tips if any(x.startswith("FD:") for x in t.splitlines())]
        assert len(fd_tips) == len(tips)  # every tooltip carries the headline numbers, whichever plot it is on
        seen = set()
        for c in cells:
            who = f"{int(c['nfe'])} steps, {c['nfe_counted']:g} NFE counted · cpu · 8×8 px"
            mine = [t for t in tips if t.splitlines()[0] == c["sampler"] and t.splitlines()[1] == who]
            assert len(mine) == 2, (kind, c["sampler"], c["nfe"], tips[:2])
            for tip in mine:
                seen.add(tip)
                fd, lo, hi = _num(tip, "FD")
                assert _close(fd, c["fd.value"]) and _close(lo, c["fd.ci_low"]) \
                    and _close(hi, c["fd.ci_high"])
                med, q25, q75 = _num(tip, f"latency (ms/image, batch {b16})")[:3]
                assert _close(med, c[f"{PER_IMAGE}.value"]) and _close(q25, c[f"{PER_IMAGE}.ci_low"]) \
                    and _close(q75, c[f"{PER_IMAGE}.ci_high"])
                med1 = _num(tip, "latency, batch 1 (ms)")[0]
                assert _close(med1, c[f"{BATCH1}.value"])
        assert seen == set(tips)
    # the other plots' points have tooltips too: FD / CLIP / latency vs NFE and memory
    for kind in ("quality-nfe", "latency-nfe", "memory"):
        tips = [t for k, t in page.points if k == kind]
        assert tips and all(t.strip() for t in tips), kind
    assert [t for _, t in page.points if "unstable" in t]  # fast1 @ 4: its tooltip says its latency is unstable


def _front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Brute-force (latency, FD) Pareto front, both lower is better, fastest first."""
    keep = [k for k, (la, q) in points.items()
            if not any(lb <= la and r <= q and (lb, r) != (la, q) for lb, r in points.values())]
    return sorted(keep, key=lambda k: points[k])


def test_a_batch1_front_beside_the_per_image_one(run):
    df, html = run
    cells = _cells(df)
    unstable = {("fast1", 4)}

    def front(metric: str) -> list[str]:
        pts = {f"{c['sampler']}|{int(c['nfe'])}": (c[f"{metric}.value"], c["fd.value"])
               for c in cells if (c["sampler"], int(c["nfe"])) not in unstable}
        return _front(pts)

    per_image, batch1 = front(PER_IMAGE), front(BATCH1)
    assert per_image != batch1  # the fixture's point: the ranking flips at batch 1
    text = " ".join(_page(html).text)
    for metric, label, expected in ((PER_IMAGE, f"latency (ms/image, batch {_batch(df, PER_IMAGE)})", per_image),
                                    (BATCH1, "latency, batch 1 (ms)", batch1)):
        m = re.search(rf"Pareto front by {re.escape(label)}[^:]*: (.*?)\.\s", text)
        assert m, f"no front line by {metric}"
        shown = [re.sub(r" @ (\d+) (?:NFE|steps.*)$", r"|\1", x.strip()) for x in m.group(1).split("→")]
        assert shown == expected, metric
    # the headline's budget table by batch-1 latency (behind a click): its best cells are that front, in order
    chunk = unescape(html.split("per budget of latency, batch 1 (ms)</h3>", 1)[1].split("</table>", 1)[0])
    at = [chunk.find(f"{label.split('|')[0]} @ {label.split('|')[1]} ") for label in batch1]
    assert -1 not in at and at == sorted(at), (batch1, at)
    assert re.search(r"The same by [^<]*FD at batch 1", html)
    # and its plot, with the front drawn, next to the per-image one
    assert html.count('data-kind="quality-latency-batch1"') == 2  # FD and CLIP score
    fig = re.search(r'data-kind="quality-latency-batch1">(.*?)</figure>', html, re.S)
    assert fig and "Pareto front" in fig.group(1) and "latency, batch 1 (ms), log scale" in fig.group(1)
    kinds = re.findall(r'<figure class="plot-figure" data-kind="([\w-]+)"', html)
    first = kinds.index("quality-latency")
    assert kinds[first + 1] == "quality-latency-batch1"  # side by side in the two-column grid


def test_ms_per_image_header_names_the_batch_and_latency_columns_come_first(run):
    df, html = run
    headers = _page(html).headers
    b16 = _batch(df, PER_IMAGE)
    texts = [t for t, _ in headers]
    per_image = next(i for i, t in enumerate(texts) if "ms/image" in t)
    assert f"batch {b16}" in texts[per_image]
    assert f"at batch {b16}, divided by the batch" in headers[per_image][1]
    assert "at batch 1 (ms)" in next(title for t, title in headers if t.startswith("latency, batch 1"))
    # right after the plotted quality metrics, before KID, precision, recall, the noise floor and the rest
    order = [t.split(" ↑")[0].split(" ↓")[0] for t in texts]
    assert order.index("FD") < per_image < order.index("KID")
    assert order.index("CLIP score [shapes-clip]") < per_image
    assert per_image + 1 == order.index("latency, batch 1 (ms)")
    assert per_image <= 8  # sampler, family, steps, NFE, FD, CLIP score: within a 1280 px screen


def test_no_escaped_unicode_shown_as_text(run):
    _, html = run
    page = _page(html)
    shown = "".join(page.text) + "".join(page.titles) + "".join(t for _, t in page.points)
    assert "KID ± z * std_over_subsets" in shown  # the KID interval's method, in the metric provenance
    assert not re.search(r"\\u[0-9a-fA-F]{4}", shown), re.search(r".{40}\\u[0-9a-fA-F]{4}.{20}", shown)


def test_tooltips_escape_user_strings(run):
    _, html = run
    assert 'heun "x" & <y>' in {t.splitlines()[0] for _, t in _page(html).points}
    assert 'heun "x" & <y>' not in html and "<y>" not in html


@pytest.fixture
def compare_html(tmp_path: Path) -> str:
    path = tmp_path / "c.sqlite"
    ids = make_store(path, suite="ux", samplers=SAMPLERS[:2], resolutions=(8,), hardware=("cpu",), grid=0,
                     dataset="no-such-dataset", failed=None, runs=2)
    return write_report(path, compare=ids, out=tmp_path / "c.html").read_text(encoding="utf-8")


def test_comparison_points_say_which_run(compare_html):
    tips = [t for _, t in _page(compare_html).points]
    assert tips and all(t.startswith(("A (", "B (")) for t in tips)
    assert sum(t.startswith("A (") for t in tips) == sum(t.startswith("B (") for t in tips)
