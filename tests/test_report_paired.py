"""The report's verdicts come from bench.analysis: paired quality tests, IQR-separated latencies, unstable latencies
kept out, and old stores (no per-image evidence) labelled unpaired.

The stores are written through the real Store API with chosen numbers; FD comes from synthetic per-image features
(tests.synthetic.synthetic_fd) whose image i shares a common part across cells, as common random numbers
make it in a real sweep: the cells' own bootstrap intervals are wide, the paired interval of a difference narrow.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.metrics.registry import MetricResult
from bench.report.compare import compare_runs, format_compare
from bench.report.data import load_run
from bench.report.html import write_report
from bench.report.verdicts import Judge, intervals_overlap
from bench.store import CellResult, Store
from tests.cells import make_cell
from tests.synthetic import synthetic_fd

N = 512
REASON = "only 3 timed runs (need 5)"
SUITE = "name: paired\nsamples: 512\nbase_seed: 0\n"


@dataclass
class C:
    """One cell: FD excess over the floor (per-image features), latency median with its IQR."""

    sampler: str
    nfe: int
    excess: float
    latency: float
    iqr: float = 0.02  # relative half-width of the IQR
    unstable: bool = False
    image_seed: int = 0  # other seeds: the cell no longer pairs with the others
    evidence: bool = True


def _seed(sampler: str, nfe: int) -> tuple[int]:
    """The seed of a cell's own noise (its shared image part comes from the image seeds)."""
    return (int(hashlib.sha256(f"{sampler}|{nfe}".encode()).hexdigest()[:8], 16),)


def write_run(path: Path, cells: list[C], tag: str = "") -> str:
    with Store(path) as st:
        run = st.start_run("paired", "h" * 16, "paired.yaml", SUITE, git_commit="abc", fingerprint={}, versions={},
                           executor="local", argv=["bench", "run"])
        plan = [make_cell("paired", c.sampler, "x", "flow_map", c.nfe, 16, "cpu", tag=tag) for c in cells]
        st.record_plan(run, plan, set())
        for cell, c in zip(plan, cells, strict=True):
            fd, lo, hi, ev = synthetic_fd(c.excess, N, _seed(c.sampler, c.nfe), image_seed=c.image_seed)
            flag = {"unstable": True, "unstable_reason": REASON} if c.unstable else {}
            t, w = c.latency, c.iqr
            metrics = [MetricResult("fd", fd, False, lo, hi, N, {"feature_space": "synthetic"}),
                       MetricResult("latency_ms_per_image", t, False, t * (1 - w), t * (1 + w), 20,
                                    {"batch_size": 16, **flag})]
            st.commit_cell(run, cell, CellResult(cell.key, "done", nfe_counted=float(c.nfe), metrics=metrics,
                                                 evidence={"fd": ev} if c.evidence else {}))
        st.finish_run(run, "done")
    return run


def drop_evidence(path: Path) -> None:
    """Make the store look like one of the first release (schema version 1: no evidence, no meta table)."""
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE evidence")
        db.execute("DROP TABLE meta")


def rows(html: str, table_class: str) -> list[str]:
    """The <tr> elements of the first table with this class, as text with tags."""
    m = re.search(rf'<table class="{table_class}"[^>]*>(.*?)</table>', html, flags=re.S)
    assert m, f"no table.{table_class}"
    return re.findall(r"<tr[^>]*>.*?</tr>", m.group(1), flags=re.S)


def row_with(html: str, table_class: str, *needles: str) -> str:
    found = [r for r in rows(html, table_class) if all(n in r for n in needles)]
    assert len(found) == 1, (needles, found)
    return found[0]


# a: the best cell at 1 NFE; b: 0.25 FD worse, a shift the paired test sees but the cells' own intervals hide
SHIFT = [C("a", 1, 4.0, 10.0), C("b", 1, 4.25, 20.0), C("a", 2, 2.0, 40.0), C("b", 2, 2.0, 41.0)]


@pytest.fixture(scope="module")
def shift_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("shift") / "bench.sqlite"
    write_run(path, SHIFT)
    return path


def test_small_paired_shift_is_worse_where_the_old_rule_said_tie(shift_store, tmp_path):
    data = load_run(shift_store)
    key = {(str(c.sampler), int(c.nfe)): str(c.cell_key) for c in data.cells.itertuples()}
    a1, b1 = key[("a", 1)], key[("b", 1)]
    # the first release's rule (unpaired intervals) calls it a tie ...
    assert intervals_overlap(data.value(a1, "fd"), data.value(b1, "fd"))
    # ... the paired test does not
    fd = data.metric("fd")
    assert fd is not None
    v = Judge(data).quality(fd, a1, b1)
    assert v is not None and v.paired and v.verdict == "worse" and v.ci_low > 0, v

    html = write_report(shift_store, out=tmp_path / "r.html").read_text()
    assert "Paired comparisons" in html
    row = row_with(html, "paired-nfe", "b @ 1 NFE")
    assert 'class="verdict worse"' in row and "paired" in row and "unpaired" not in row
    # more steps of the same sampler: a @ 2 is better than a @ 1, paired
    step = row_with(html, "paired-steps", "a @ 1 NFE", "a @ 2 NFE")
    assert 'class="verdict better"' in step
    # the All cells table no longer shades b @ 1 as tied with the best FD
    fd_cells = re.findall(r'<td class="num ([^"]*)" data-v="[^"]*" title="[^"]*">',
                          row_with(html, "sortable results", 'data-v="b"', '<td class="num">1</td>'))
    assert fd_cells[0].strip() == "", fd_cells
    # a cell whose images come from other seeds does not pair: labelled unpaired, old rule
    other = tmp_path / "other.sqlite"
    write_run(other, [C("a", 1, 4.0, 10.0), C("b", 1, 4.25, 20.0, image_seed=5000)])
    html = write_report(other, out=tmp_path / "o.html").read_text()
    row = row_with(html, "paired-nfe", "b @ 1 NFE")
    assert 'class="verdict tie"' in row and "unpaired" in row and "different seeds" in row


def test_compare_uses_the_paired_interval(tmp_path):
    path = tmp_path / "bench.sqlite"
    run_a = write_run(path, [C("a", 1, 4.0, 10.0), C("c", 1, 3.0, 10.0)], tag="A")
    run_b = write_run(path, [C("a", 1, 4.25, 10.0), C("c", 1, 3.0, 10.0, image_seed=7000)], tag="B")
    a, b = load_run(path, run_id=run_a), load_run(path, run_id=run_b)
    paired = compare_runs(a.df, b.df, a.evidence, b.evidence)
    unpaired = compare_runs(a.df, b.df)
    pa = paired[(paired.sampler == "a") & (paired.metric == "fd")].iloc[0]
    ua = unpaired[(unpaired.sampler == "a") & (unpaired.metric == "fd")].iloc[0]
    assert pa.ci_method == "paired" and pa.significant and pa.change == "worse"
    assert pa.delta_ci_low > 0 and pa.delta == pytest.approx(ua.delta)
    assert ua.ci_method == "unpaired" and not ua.significant  # the combined interval called it a tie
    # other seeds in run B: no pairing, the conservative interval, labelled
    assert paired[(paired.sampler == "c") & (paired.metric == "fd")].iloc[0].ci_method == "unpaired"
    text = format_compare(paired)
    assert re.search(r"^a@1 .* fd .* paired\s+worse$", text, flags=re.M), text
    html = write_report(path, compare=(run_a, run_b), out=tmp_path / "c.html").read_text()
    assert '<span class="ci-method small muted">paired</span>' in html
    assert '<span class="ci-method small muted">unpaired</span>' in html


def test_budget_row_with_overlapping_latencies_is_not_decided(tmp_path):
    # fast is the quickest cell; slow has better FD at a latency whose IQR overlaps fast's: no single winner
    path = tmp_path / "bench.sqlite"
    write_run(path, [C("fast", 1, 6.0, 10.0, iqr=0.05), C("slow", 1, 3.0, 10.6, iqr=0.05),
                     C("far", 2, 1.0, 30.0)])
    data = load_run(path)
    fd, lat = data.metric("fd"), data.latency_metric
    assert fd is not None and lat is not None
    judge = Judge(data)
    budgets = judge.budgets(judge.candidates(list(data.cells.itertuples()), fd, lat, lambda c: str(c.sampler)), fd)
    by_best = {row.best.label: row for row, _ in budgets}
    assert not by_best["fast"].decided and by_best["fast"].latency_ties == ["slow"]
    assert by_best["slow"].decided and by_best["far"].decided
    html = write_report(path, out=tmp_path / "r.html").read_text()
    row = row_with(html, "budget", "fast @ 1 NFE")
    assert "not decided" in row and "latency tie with slow @ 1 NFE: not separated" in row
    assert "<strong>fast" not in row
    assert "<strong>slow @ 1 NFE</strong>" in html  # its own row names it: nothing faster is better


def test_unstable_latency_gets_a_badge_and_is_never_best(tmp_path):
    # quick is the fastest and best cell, but its latency is flagged unstable
    path = tmp_path / "bench.sqlite"
    write_run(path, [C("quick", 1, 1.0, 5.0, unstable=True), C("slow", 1, 3.0, 20.0), C("slow", 2, 2.0, 40.0)])
    html = write_report(path, out=tmp_path / "r.html").read_text()
    row = row_with(html, "sortable results", 'data-v="quick"')
    assert f'<span class="badge unstable" title="unstable latency: {REASON}">unstable</span>' in row
    lat_td = re.search(r'<td class="num ([^"]*)"[^>]*title="([^"]*unstable latency[^"]*)"', row)
    assert lat_td and "best" not in lat_td.group(1) and REASON in lat_td.group(2)
    assert 'class="badge front"' not in row  # fastest and best FD, but not on the front: its latency is unstable
    budget = rows(html, "budget")
    assert budget and not any("quick" in r for r in budget)  # never the best of a budget
    assert "Left out (unstable latency): quick @ 1 NFE" in html
    assert "<strong>slow @ 1 NFE</strong>" in html
    # the latency column's best is the stable slow @ 1 NFE
    slow = row_with(html, "sortable results", 'data-v="slow"', '<td class="num">1</td>')
    assert 'class="num best"' in slow
    # plots: the point is drawn hollow, with the legend saying why
    assert "hollow: unstable latency (no verdict)" in html


def test_old_store_without_evidence_is_labelled_unpaired(tmp_path):
    path = tmp_path / "bench.sqlite"
    run = write_run(path, SHIFT)
    drop_evidence(path)
    with Store(path, readonly=True) as st:
        assert st.schema_version == 1
    data = load_run(path)
    assert not data.has_evidence()
    html = write_report(path, run_id=run, out=tmp_path / "r.html").read_text()
    assert "This run keeps no per-image evidence" in html
    row = row_with(html, "paired-nfe", "b @ 1 NFE")
    assert 'class="verdict tie"' in row  # the old interval-overlap rule
    assert "unpaired: no per-image evidence" in row
    assert "quality tied (interval overlap, unpaired)" in html
    cmp = compare_runs(data.df, data.df, data.evidence, data.evidence)
    assert set(cmp.loc[cmp.metric == "fd", "ci_method"]) == {"unpaired"}


def test_budget_quality_ties_are_paired_or_labelled_unpaired(tmp_path):
    # r is the fastest; p is better by a small shift the cells' own intervals hide: with evidence the paired test
    # separates them (no tie), in an old store the interval-overlap rule ties them and says it is unpaired
    cells = [C("r", 1, 4.25, 5.0), C("p", 1, 4.0, 10.0)]
    new, old = tmp_path / "new.sqlite", tmp_path / "old.sqlite"
    write_run(new, cells)
    write_run(old, cells)
    drop_evidence(old)
    html = write_report(new, out=tmp_path / "n.html").read_text()
    p_row = row_with(html, "budget", "<strong>p @ 1 NFE</strong>")
    assert "r @ 1 NFE" not in p_row
    html = write_report(old, out=tmp_path / "o.html").read_text()
    p_row = row_with(html, "budget", "<strong>p @ 1 NFE</strong>")
    assert "r @ 1 NFE (unpaired)" in p_row


def test_dominance_checks_latency_by_iqr_and_quality_paired(tmp_path):
    # w dominates l (lower FD, lower latency); the latencies' IQRs overlap, the FD gain is real (paired)
    path = tmp_path / "bench.sqlite"
    write_run(path, [C("w", 1, 3.0, 10.0, iqr=0.05), C("l", 1, 6.0, 10.4, iqr=0.05)])
    html = write_report(path, out=tmp_path / "r.html").read_text()
    sentence = re.search(r"<li><strong>w @ 1 NFE</strong> dominates l @ 1 NFE:(.*?)</li>", html, flags=re.S)
    assert sentence, html
    assert "latency IQRs overlap" in sentence.group(1) and "statistical tie" not in sentence.group(1)
    # separated latencies and an FD gain inside the paired CI (equal excess, only the cells' own noise differs):
    # the sentence says the FD gain is not real
    first, second = sorted(["u", "v"], key=lambda s: synthetic_fd(4.0, N, _seed(s, 1))[0])
    path2 = tmp_path / "b2.sqlite"
    write_run(path2, [C(first, 1, 4.0, 10.0), C(second, 1, 4.0, 30.0)])
    data = load_run(path2)
    keys = {str(c.sampler): str(c.cell_key) for c in data.cells.itertuples()}
    fd = data.metric("fd")
    assert fd is not None
    v = Judge(data).quality(fd, keys[first], keys[second])
    assert v is not None and v.paired and v.verdict == "tie" and v.delta > 0, v
    html = write_report(path2, out=tmp_path / "r2.html").read_text()
    sentence = re.search(rf"<li><strong>{first} @ 1 NFE</strong> dominates {second} @ 1 NFE:(.*?)</li>", html,
                         flags=re.S)
    assert sentence and "(FD within the paired CI)" in sentence.group(1), sentence


def test_corrupt_evidence_falls_back_and_says_why(tmp_path):
    path = tmp_path / "bench.sqlite"
    write_run(path, SHIFT)
    victim = next((tmp_path / "evidence").glob("*.npz"))
    victim.write_bytes(b"not an npz")
    data = load_run(path)
    assert len(data.evidence_problems) == 1 and len(data.evidence) == len(SHIFT) - 1
    html = write_report(path, out=tmp_path / "r.html").read_text()
    assert "3 of 4 measured cells keep" not in html and "1 of 4 measured cells keep no per-image evidence" in html
    assert "does not match the sha256" in html  # the reason, in the note and in the unpaired rows' tooltips
