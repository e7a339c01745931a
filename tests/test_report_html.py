"""The HTML report without a browser: content, self-containment, escaping, robustness, the CLI."""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from bench.cli import main
from bench.report.data import fmt_ci, load_run
from bench.report.html import write_report
from bench.store import Store
from tests.synthetic import FakeSampler, make_store

EVIL_ID = 'fm"x&y<i>'
SAMPLERS = (
    FakeSampler(EVIL_ID, "flow_map", 9.0, 0.9, 2.1, nfe=(1, 2, 4)),
    FakeSampler("cd", "consistency", 12.0, 0.5, 2.0, nfe=(1, 2, 4)),
    FakeSampler("heun", "ode", 45.0, 1.6, 2.0, nfe_per_step=2.0, intercept=1.0, nfe=(2, 4)),
)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, list[str]]:
    path = tmp_path_factory.mktemp("report") / "bench.sqlite"
    ids = make_store(path, suite="mini", samplers=SAMPLERS, resolutions=(8, 16), grid=3, dataset="no-such-dataset",
                     failed=("cd", 4), runs=2, extra_text="# <script>alert('suite')</script>\n")
    return path, ids


@pytest.fixture(scope="module")
def html(store, tmp_path_factory) -> str:
    path, ids = store
    out = write_report(path, run_id=ids[0], out=tmp_path_factory.mktemp("out") / "mini.html")
    return out.read_text(encoding="utf-8")


def test_self_contained_no_network(html):
    refs = re.findall(r'(?<![\w-])(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r for r in refs if not r.startswith(("data:", "#"))]
    assert "http://" not in html.replace("http://www.w3.org/", "")  # SVG/XLink namespaces are names, not fetches
    assert "https://" not in html
    assert "@import" not in html and "<link rel=\"stylesheet\"" not in html
    ids = Counter(re.findall(r'\sid="([^"]+)"', html))
    assert not [k for k, v in ids.items() if v > 1], "duplicate ids across inlined SVGs"


def test_plots_tables_grids_and_provenance(store, html):
    path, ids = store
    data = load_run(path, run_id=ids[0])
    # per measured hardware x resolution (2): FD and CLIP vs latency (per image and batch 1) and vs NFE, latency vs
    # NFE; + memory (1)
    assert html.count('<svg') == 2 * 7 + 1
    assert html.count('class="plot"') == 15
    # image grids: per resolution, one strip per measured cell (no reference: the dataset does not exist here)
    done_per_res = data.cells[data.cells.status == "done"].groupby("resolution").size()
    assert html.count('class="grid-row"') == int(done_per_res.sum())
    # best FD per panel highlighted
    for res in (8, 16):
        cells = data.cells[(data.cells.status == "done") & (data.cells.resolution == res)]
        best = min(data.value(k, "fd").value for k in cells.cell_key)
        assert f'class="num best" data-v="{best}"' in html
        key = next(k for k in cells.cell_key if data.value(k, "fd").value == best)
        assert fmt_ci(data.value(key, "fd")) in html
    # skipped and failed cells with their reasons
    assert "no CUDA device" in html and "sampler diverged at step 3" in html
    # Pareto analysis in words, budget table, unknown metrics rendered generically
    assert "dominates" in html and "Pareto front by latency (ms/image, batch 16), fastest first" in html and "budget ≥" in html
    # the synthetic store keeps per-image evidence: paired comparisons per panel, every one paired
    assert html.count('<h3 class="paired-title">Paired comparisons</h3>') == 2
    assert 'class="paired-steps"' in html and 'class="paired-nfe"' in html
    assert "keeps no per-image evidence" not in html and 'class="badge unpaired"' not in html
    assert "sharpness" in html and "calibration" in html
    # provenance: fingerprint, versions, commit, suite text
    assert "made-up CPU" in html and "flowmap-bench" in html and "0123456789abcdef" in html
    assert '<pre class="suite-text"># Synthetic sweep' in html


def test_user_strings_are_escaped(html):
    assert EVIL_ID not in html
    assert "fm&#34;x&amp;y&lt;i&gt;" in html or "fm&quot;x&amp;y&lt;i&gt;" in html
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#39;suite&#39;)&lt;/script&gt;" in html
    scripts = re.findall(r"<script[^>]*>", html)
    assert all(s == "<script>" or re.fullmatch(r'<script type="application/json" id="[\w-]+">', s) for s in scripts)
    assert html.count("<script>") == 1  # the report's own JS; the JSON blobs are inert data
    # JSON inside <script> cannot close the element
    for blob in re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', html, flags=re.S):
        assert "<" not in blob and ">" not in blob


def test_default_output_path_and_latest_run(store, tmp_path, monkeypatch):
    path, ids = store
    monkeypatch.chdir(tmp_path)
    out = write_report(path, suite="mini")
    assert out == Path("reports/mini.html") and out.is_file()
    assert ids[1] in out.read_text()  # the latest run of the suite by default


def test_missing_samples_and_no_latency_still_render(tmp_path):
    path = tmp_path / "s.sqlite"
    make_store(path, suite="gaps", samplers=SAMPLERS[:2], resolutions=(8,), hardware=("cpu",), grid=2,
               dataset="no-such-dataset", failed=None)
    data = load_run(path)
    victim = data.cells.cell_key.iloc[0]
    shutil.rmtree(tmp_path / "samples" / victim)
    with sqlite3.connect(path) as db:  # drop latency: no front, no budget table, tables still there
        db.execute("DELETE FROM metrics WHERE name LIKE 'latency%'")
    html = write_report(path, out=tmp_path / "r.html").read_text()
    assert "no latency metric" in html
    assert "image(s) not saved" in html
    assert html.count('class="grid-row"') == len(data.cells)
    assert "FD" in html and "dominates" not in html
    assert "peak memory (MB) vs counted NFE" in html  # one resolution: memory is drawn against NFE instead


def test_run_with_only_an_unknown_metric(tmp_path):
    from bench.metrics.registry import MetricResult
    from bench.store import CellResult
    from tests.cells import make_cell

    path = tmp_path / "u.sqlite"
    with Store(path) as s:
        run = s.start_run("odd", "h", "odd.yaml", "name: odd\n", git_commit=None, fingerprint={}, versions={},
                          executor="local", argv=[])
        cell = make_cell("odd", "s1", "x", "weird_family", 1, 8, "cpu")
        s.record_plan(run, [cell], set())
        s.commit_cell(run, cell, CellResult(cell.key, "done", nfe_counted=1.0,
                                            metrics=[MetricResult("wobble", 0.5, True, 0.4, 0.6, 10)]))
        s.finish_run(run, "done")
    html = write_report(path, out=tmp_path / "u.html").read_text()
    assert "wobble" in html and "0.50 ± 0.10" in html and "weird_family" in html


def test_cli_and_compare_report(store, tmp_path, capsys):
    path, ids = store
    out = tmp_path / "c.html"
    assert main(["report", "--store", str(path), "--compare", *ids, "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out}"
    html = out.read_text()
    assert ids[0] in html and ids[1] in html
    assert "Pareto front, A" in html and "Pareto front, B" in html
    assert html.count('class="plot"') == 2 * 2  # FD and CLIP vs latency per measured panel
    assert 'class="num better' in html  # run B is a little better by construction
    assert "sampler diverged" in html and "(as <code>bench gate</code> prints it)" in html
    assert EVIL_ID not in html
    for bad in (["--store", str(tmp_path / "missing.sqlite")],
                ["--store", str(path), "--run", "no-such-run"],
                ["--store", str(path), "--suite", "no-such-suite"],
                ["--store", str(path), "--compare", ids[0], "nope"],
                ["--store", str(path), "--compare", *ids, "--run", ids[0]],
                ["--store", str(path), "-o", str(tmp_path)]):
        capsys.readouterr()
        assert main(["report", *bad]) == 2, bad
        err = capsys.readouterr().err
        assert err.startswith("bench: error:") and len(err.strip().splitlines()) == 1, err
