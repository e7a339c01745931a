"""Cells as data (issue 15): frozen specs, axes as data, cell keys as a contract, store schema 3 migration."""

from __future__ import annotations

import json
import shutil
import sqlite3
import warnings
from pathlib import Path

import pandas as pd
import pytest

import bench
from bench.cli import main
from bench.plan import plan
from bench.results import Results
from bench.spec import register_axis, unregister_axis
from bench.store import SCHEMA_VERSION, Store
from bench.suite import load_suite, parse_suite

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def grey_axis():
    from tests.plugins.toy_axis import GREY

    register_axis(GREY)
    yield GREY
    unregister_axis(GREY.name)


GREY_SUITE = """
name: toy-axis
dataset: {{name: gmm, split: eval, components: 4}}
samples: 160
base_seed: 0
batch_size: 160
timeout: 120
samplers:
  - {{id: euler, adapter: "tests.plugins.toy_axis:GreyAxisEuler", options: {{components: 4}}}}
axes: {{nfe: [2], resolution: [4], hardware: ["cpu:threads=1"], grey: {grey}}}
metrics:
  fd: {{feature_space: pixels, bootstrap: 20}}
report: {{grid: 0, enabled: false}}
"""


def test_a_toy_axis_needs_only_its_schema_entry_and_an_adapter(grey_axis, write_suite, tmp_path, capsys):
    """The axis is declared (tests/plugins/toy_axis.py) and read by one adapter; run, export, baseline, gate
    and report handle it with no change of their own: a column per axis, cells matched by every axis value."""
    suite = write_suite(GREY_SUITE.format(grey="[0.0, 0.3]"))
    store = tmp_path / "a" / "bench.sqlite"
    assert main(["run", str(suite), "--store", str(store), "--no-progress"]) == 0
    df = bench.load_results(str(store))
    assert df.attrs["axes"] == ["nfe", "resolution", "hardware", "grey"]
    fd = df[df.metric == "fd"].set_index("grey")["value"]
    assert sorted(fd.index) == [0.0, 0.3]
    assert fd[0.3] > 2 * fd[0.0]  # the axis reached the sampler: pulling toward grey moves FD far
    assert {json.loads(a)["grey"] for a in df.cell_axes} == {0.0, 0.3}

    baseline = tmp_path / "base.json"
    assert main(["baseline", "save", "--store", str(store), "-o", str(baseline)]) == 0
    cells = json.loads(baseline.read_text())["cells"]
    assert sorted(c["axes"]["grey"] for c in cells) == [0.0, 0.3]
    capsys.readouterr()
    assert main(["gate", "--baseline", str(baseline), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "grey=0 " in out + " " and "grey=0.3" in out  # one check line per cell, each named by its axes

    assert main(["report", "--store", str(store), "-o", str(tmp_path / "r.html")]) == 0
    with Store(store) as st, st.db:  # the run loses its grey=0.3 cell: the gate must miss exactly that one
        st.db.execute("DELETE FROM run_cells WHERE json_extract(axes, '$.grey') = 0.3")
    capsys.readouterr()
    assert main(["gate", "--baseline", str(baseline), "--store", str(store)]) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL ")]
    assert len(failed) == 1 and "grey=0.3" in failed[0] and "missing" in failed[0]


KEY_SUITE = """
name: keys
dataset: {name: gmm, split: eval, components: 4}
samples: 32
batch_size: 16
samplers:
  - {id: euler, adapter: "tests.plugins.toy_axis:VersionedEuler", options: {components: 4}}
axes: {nfe: [1, 2], resolution: [4], hardware: [cpu]}
metrics:
  fd: {feature_space: pixels, bootstrap: 20}
"""


def _keys(text: str) -> list[str]:
    return [c.key for c in plan(parse_suite(text), check_hardware=False)]


def test_cell_key_is_what_determines_the_numbers(monkeypatch):
    import tests.plugins.toy_axis as toy

    keys = _keys(KEY_SUITE)
    assert len(set(keys)) == 2
    monkeypatch.setattr(bench, "__version__", "99.0.0")  # a release alone keeps stored cells reusable
    assert _keys(KEY_SUITE) == keys
    assert _keys(KEY_SUITE.replace("batch_size: 16", "batch_size: 8")) == keys  # per-image seeds: same numbers
    monkeypatch.setattr(toy, "VERSION", "2")  # a sampler's version is part of the key
    assert not set(_keys(KEY_SUITE)) & set(keys)
    monkeypatch.setattr(toy, "VERSION", "1")
    for edit in ("bootstrap: 20", "samples: 32", "components: 4}}"):
        changed = {"bootstrap: 20": "bootstrap: 21", "samples: 32": "samples: 33",
                   "components: 4}}": "components: 5}}"}[edit]
        assert not set(_keys(KEY_SUITE.replace(edit, changed))) & set(keys), edit


GUIDANCE_SUITE = """
name: guidance
dataset: {name: shapes, split: eval}
samples: 8
batch_size: 8
samplers:
  - {id: euler, adapter: teacher-euler}
  - {id: lcm, adapter: zoo-lcm, options: {model: lcm}}
  - {id: lmd, adapter: zoo-flowmap, options: {model: flowmap-lmd}}
  - {id: euler-w, adapter: teacher-euler, guidance: [1.5]}
  - {id: shifted, adapter: teacher-euler, sweep: {shift: [0.5, 1.0]}, nfe: [2]}
axes: {nfe: [2], resolution: [16], hardware: [cpu], guidance: [1, 2, 4]}
metrics: {}
"""


def test_guidance_is_an_axis_each_sampler_takes_as_it_can():
    cells = plan(parse_suite(GUIDANCE_SUITE), check_hardware=False)
    by = {(c.sampler_id, c.guidance): c for c in cells}
    assert all(by[("euler", w)].status == "planned" for w in (1.0, 2.0, 4.0))  # cfg: any w
    assert by[("lcm", 2.0)].status == "planned"  # embedded w, trained on [1, 3]
    assert "outside the range it supports [1, 3]" in by[("lcm", 4.0)].reason
    assert by[("lmd", 1.0)].status == "planned"  # distilled at w = 1
    assert "takes no guidance scale (distilled at w = 1)" in by[("lmd", 2.0)].reason
    assert [c.guidance for c in cells if c.sampler_id == "euler-w"] == [1.5]  # a sampler's own list wins
    variants = sorted({c.sampler_id for c in cells if c.sampler_id.startswith("shifted")})
    assert variants == ["shifted[shift=0.5]", "shifted[shift=1]"]
    opts = {c.sampler_id: c.options for c in cells if c.sampler_id.startswith("shifted")}
    assert opts["shifted[shift=0.5]"] == {"shift": 0.5}
    assert len({c.key for c in cells}) == len(cells)
    assert all("guidance" in c.axes for c in cells)


@pytest.mark.parametrize(("snippet", "message"), [
    ("guidance: [1, 1]", "guidance has duplicate values"),
    ("guidance: [-1]", "guidance values must be finite numbers >= 0"),
    ("grain: [1]", "unknown axis 'grain'"),
])
def test_bad_axes_are_one_line_errors(write_suite, snippet, message, capsys):
    text = GUIDANCE_SUITE.replace("guidance: [1, 2, 4]}", snippet + "}")
    assert main(["run", str(write_suite(text)), "--dry-run", "--store", "/nonexistent/x.sqlite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "axes" in err[0]


def test_cfg_counts_both_branches_and_embedded_guidance_does_not(write_suite, tmp_path):
    text = """
    name: cfg-count
    dataset: {name: shapes, split: eval}
    samples: 4
    batch_size: 4
    samplers:
      - {id: euler, adapter: teacher-euler}
      - {id: lcm, adapter: zoo-lcm, options: {model: lcm}}
    axes: {nfe: [2], resolution: [16], hardware: ["cpu:threads=1"], guidance: [1, 2]}
    metrics: {}
    report: {grid: 0, enabled: false}
    """
    store = tmp_path / "bench.sqlite"
    assert main(["run", str(write_suite(text)), "--store", str(store), "--no-progress"]) == 0
    df = bench.load_results(str(store)).drop_duplicates("cell_key")
    counted = {(r.sampler, r.guidance): r.nfe_counted for r in df.itertuples()}
    assert counted == {("euler", 1.0): 2, ("euler", 2.0): 4, ("lcm", 1.0): 2, ("lcm", 2.0): 2}


def test_schema_2_store_and_baseline_still_work(tmp_path, capsys):
    """A store and baseline the previous release wrote (tests/fixtures/v2) migrate to schema 3: export,
    report and gate read them; their evidence files are not committed, so the gate says it falls back."""
    store = tmp_path / "bench.sqlite"
    with sqlite3.connect(store) as db:
        db.executescript((FIXTURES / "v2" / "store.sql").read_text())
    shutil.copy(FIXTURES / "v2" / "baseline.json", tmp_path / "baseline.json")
    with Store(store) as st:
        assert st.schema_version == SCHEMA_VERSION == 3
        axes = [json.loads(r[0]) for r in st.db.execute("SELECT axes FROM cells")]
        assert sorted(a["nfe"] for a in axes) == [1, 2] and {a["hardware"] for a in axes} == {"cpu:threads=1"}
        assert st.db.execute("SELECT value FROM meta WHERE key='migrated_from'").fetchone()[0] == "2"
    out = tmp_path / "x.csv"
    assert main(["export", "--store", str(store), "-o", str(out)]) == 0
    assert sorted(pd.read_csv(out).drop_duplicates("cell_key").nfe) == [1, 2]
    assert main(["report", "--store", str(store), "-o", str(tmp_path / "r.html")]) == 0
    capsys.readouterr()
    assert main(["gate", "--baseline", str(tmp_path / "baseline.json"), "--store", str(store)]) == 0
    assert "PASS" in capsys.readouterr().out


def test_old_column_name_still_reads_with_a_warning():
    df = Results(pd.DataFrame({"nfe": [1, 2], "value": [0.5, 0.25]}))
    with pytest.warns(FutureWarning, match="'nfe_requested' is now 'nfe'"):
        assert list(df["nfe_requested"]) == [1, 2]
    with pytest.warns(FutureWarning):
        assert list(df.nfe_requested) == [1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(df["nfe"]) == [1, 2]


def test_every_shipped_suite_stores_a_json_spec_per_cell():
    root = Path(__file__).resolve().parents[1] / "suites"
    for path in sorted(root.glob("*.yaml")):
        for c in plan(load_suite(path), check_hardware=False):
            text = json.dumps(c.spec.to_dict())
            assert type(c.spec).from_dict(json.loads(text)).key == c.key, (path.name, c.label)
