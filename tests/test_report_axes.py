"""The report over extra axes (guidance here): one line / row per sampler x axis value, verdicts within equal values,
the guidance trade-off section, one colour + marker per sampler. The browser test (test_report_browser.py) checks
the trade-off plot as rendered."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from bench.report import plots
from bench.report.compare import compare_runs
from bench.report.data import load_run
from bench.report.html import write_report
from tests.synthetic import FakeSampler, make_store

GUIDANCE = (1.0, 1.5, 3.0)
SAMPLERS = (
    FakeSampler("euler", "ode", 60.0, 1.0, 2.0, nfe=(2, 4), guidance="cfg"),
    FakeSampler("heun", "ode", 45.0, 1.6, 2.0, nfe_per_step=2.0, intercept=1.0, nfe=(2, 4), guidance="cfg"),
    FakeSampler("lcm", "lcm", 14.0, 0.6, 2.2, nfe=(2, 4), guidance="embedded"),
    FakeSampler("cd", "consistency", 12.0, 0.5, 2.0, nfe=(2, 4)),  # takes no guidance: w != 1 skipped
)


def guidance_store(path: Path, guidance: tuple[float, ...] = GUIDANCE) -> Path:
    make_store(path, suite="guidance_mini", samplers=SAMPLERS, resolutions=(16,), hardware=("cpu",), grid=2,
               failed=None, guidance=guidance, samples=128)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return guidance_store(tmp_path_factory.mktemp("guidance") / "bench.sqlite")


@pytest.fixture(scope="module")
def html(store) -> str:
    return write_report(store, out=store.parent / "r.html").read_text(encoding="utf-8")


def _section(html: str, ident: str) -> str:
    i = html.index(f'<section id="{ident}">')
    return html[i:html.index("</section>", i)]


def test_cells_carry_their_axes(store):
    data = load_run(store)
    assert data.axes == ["guidance"]
    euler = data.cells[data.cells.sampler == "euler"]
    assert sorted(euler.guidance) == sorted([*GUIDANCE, *GUIDANCE]) and len(set(euler.line)) == 3
    assert data.slices() == ["guidance=1", "guidance=1.5", "guidance=3"]
    # cfg doubles the counted NFE for w != 1, embedded guidance does not
    counted = {(r.sampler, r.guidance, r.nfe): r.nfe_counted for r in data.cells.itertuples() if r.status == "done"}
    assert counted[("euler", 1.0, 2)] == 2 and counted[("euler", 1.5, 2)] == 4 and counted[("lcm", 3.0, 4)] == 4


def test_a_row_and_a_line_per_guidance_value(html):
    table = html[html.index('class="sortable results"'):]
    table = table[:table.index("</table>")]
    assert '<th class="num axis" data-sortable>guidance</th>' in table
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table, flags=re.S)
    euler = [re.findall(r'<td class="num axis">([^<]*)</td>', r) for r in rows if "</span> euler" in r]
    assert sorted(v[0] for v in euler) == ["1", "1", "1.5", "1.5", "3", "3"]
    # the FD-vs-NFE plot: one legend entry (a line) per sampler x guidance value
    for w in ("1", "1.5", "3"):
        assert f">euler guidance={w}<" in html and f">lcm guidance={w}<" in html
    assert ">cd guidance=1<" in html and ">cd guidance=3<" not in html


def test_verdicts_never_pair_cells_at_different_guidance(html):
    for table in re.findall(r'<table class="paired-(?:nfe|steps)">(.*?)</table>', html, flags=re.S):
        for row in re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)[1:]:
            ws = set(re.findall(r"guidance=([\d.]+)", row))
            assert len(ws) == 1, row
    budgets = re.findall(r"<h3>cpu · 16×16 px · (guidance=[\d.]+) — best FD \(lower is better\) per budget of latency \(ms/image", html)
    assert budgets == ["guidance=1", "guidance=1.5", "guidance=3"]
    for d in re.findall(r"<li><strong>(.*?)</li>", html, flags=re.S):  # dominance sentences
        assert len(set(re.findall(r"guidance=([\d.]+)", d))) <= 1, d


def test_guidance_trade_off_section(html):
    sec = _section(html, "guidance")
    assert "Guidance: quality vs prompt alignment" in sec
    # a plot per step count, in it one curve per sampler that takes >1 guidance value (euler, heun, lcm), a point per w
    assert sec.count("<svg") == 2
    assert re.findall(r'data-steps="(\d+)" data-curves="(\d+)" data-points="(\d+)"', sec) == [("2", "3", "9"),
                                                                                             ("4", "3", "9")]
    legend = re.findall(r">([a-z]+ @ \d steps)<", sec)
    assert sorted(legend) == sorted(f"{s} @ {n} steps" for s in ("euler", "heun", "lcm") for n in (2, 4))
    labels = re.findall(r">w=([\d.]+)<", sec)
    assert sorted(labels) == sorted(["1", "1.5", "3"] * 6)
    assert "one guidance value only (no curve): cd @ 2 steps" in sec


def test_no_guidance_section_without_a_sweep_or_clip_score(tmp_path):
    one = guidance_store(tmp_path / "one" / "bench.sqlite", guidance=(1.5,))
    assert 'id="guidance"' not in write_report(one, out=tmp_path / "one.html").read_text(encoding="utf-8")
    noclip = guidance_store(tmp_path / "noclip" / "bench.sqlite")
    with sqlite3.connect(noclip) as db:
        db.execute("DELETE FROM metrics WHERE name LIKE 'clip_score%'")
    text = write_report(noclip, out=tmp_path / "noclip.html").read_text(encoding="utf-8")
    assert 'id="guidance"' not in text and "euler guidance=1.5" in text


def test_compare_matches_cells_on_guidance(store):
    data = load_run(store)
    cmp = compare_runs(data.df, data.df, data.evidence, data.evidence)
    fd = cmp[cmp.metric == "fd"]
    assert "guidance" in cmp.columns and set(fd.slice) == {"guidance=1", "guidance=1.5", "guidance=3"}
    assert len(fd) == (data.cells.status == "done").sum() == 20  # one row per cell: w = 1 never matched with w = 3
    assert (fd[fd.change.notna() & fd.value_a.notna()].delta == 0).all()


def test_one_colour_and_marker_per_sampler():
    pairs = [("teacher-euler", "ode"), ("teacher-heun", "ode"), ("teacher-dpmpp", "ode"), ("lcm", "lcm"),
             ("flowmap-lmd", "flow_map"), ("flowmap-meanflow", "flow_map"), ("hyper-sd", "adversarial"),
             ("hyper-sd[eta=0.5]", "adversarial"), ("mine", "custom"), ("other", "custom2")]
    styles = plots.sampler_styles(pairs)
    bases = [s for s, _ in pairs if "[" not in s]
    assert len({styles[s] for s in bases}) == len(bases)  # distinct base samplers: distinct colour + marker
    assert len({styles[s][1] for s in ("teacher-euler", "teacher-heun", "teacher-dpmpp")}) == 3
    assert styles["teacher-euler"] == plots.FAMILY_STYLE["ode"]  # a family's first sampler keeps its style
    assert styles["hyper-sd[eta=0.5]"] == styles["hyper-sd"]  # a variant shares its base's pair ...
    lines = plots.line_styles([("hyper-sd", "hyper-sd"), ("hyper-sd[eta=0.5]", "hyper-sd[eta=0.5]"),
                               ("lcm guidance=1", "lcm"), ("lcm guidance=3", "lcm"), ("teacher-heun", "teacher-heun")])
    assert lines["hyper-sd"] != lines["hyper-sd[eta=0.5]"]  # ... and differs by line style
    assert lines["lcm guidance=1"] != lines["lcm guidance=3"] and lines["teacher-heun"] == "-"
