"""`bench merge`: parts of a sweep run into separate stores merge into what one run gives; conflicts write nothing."""

from __future__ import annotations

import shutil

import pytest

import bench
from bench.cli import main
from bench.store import Store

SUITE = """
name: merge-me
dataset: {{name: gmm, split: eval, components: 4}}
samples: 64
base_seed: 0
batch_size: 32
samplers:
{samplers}
axes: {{nfe: [1, 2], resolution: [4], hardware: [cpu]}}
metrics:
  fd: {{feature_space: pixels, size: 4, dim: 16, bootstrap: 20}}
  latency: {{batch_sizes: [1], min_run_time: 0.01, max_run_time: 0.02, min_runs: 2}}
report: {{enabled: false, grid: 2}}
"""
EULER = "  - {id: euler, adapter: analytic-euler, options: {components: 4}}"
HEUN = "  - {id: heun, adapter: analytic-heun, options: {components: 4}}"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Four runs made once: euler alone (a), heun alone (b), both (whole), euler measured again (again)."""
    root = tmp_path_factory.mktemp("merge")
    out = {}
    for name, samplers in (("a", EULER), ("b", HEUN), ("whole", EULER + "\n" + HEUN), ("again", EULER)):
        suite = root / f"{name}.yaml"
        suite.write_text(SUITE.format(samplers=samplers).lstrip())
        out[name] = root / name / "r.sqlite"
        assert main(["run", str(suite), "--store", str(out[name]), "--no-progress"]) == 0
    return out


def _quality(store) -> dict:
    df = bench.load_results(str(store))
    df = df[df.metric.isin(["fd", "fd_floor"])]
    return {(r.sampler, r.nfe, r.metric): (r.value, r.ci_low, r.ci_high, r.n) for r in df.itertuples()}


def test_two_halves_merge_into_the_whole_sweep_with_their_evidence(stores, tmp_path, capsys):
    a, b, whole = stores["a"], stores["b"], stores["whole"]
    out = tmp_path / "merged" / "m.sqlite"
    capsys.readouterr()
    assert main(["merge", str(a), str(b), "-o", str(out)]) == 0
    out_text = capsys.readouterr().out
    assert "2 run(s), 4 cell(s) (0 present in several stores" in out_text and "holds every merged cell" in out_text
    assert _quality(out) == _quality(whole) and len(_quality(out)) == 8
    with Store(out, readonly=True) as m, Store(whole, readonly=True) as w:
        assert m.done_keys() == w.done_keys()
        for key in m.done_keys():  # per-image evidence travels and is hash-checked on read
            ev_m, ev_w = m.evidence(key), w.evidence(key)
            assert sorted(ev_m) == sorted(ev_w) == ["fd"]
            assert (ev_m["fd"].rows == ev_w["fd"].rows).all()
    # the merged store works with the commands that read stores
    assert main(["export", "--store", str(out), "-o", str(tmp_path / "m.csv")]) == 0


def test_a_store_merged_with_its_own_copy_counts_the_shared_cells(stores, tmp_path, capsys):
    a = stores["a"]
    copy = tmp_path / "copy" / "r.sqlite"
    copy.parent.mkdir()
    for f in a.parent.iterdir():
        if f.is_file():
            shutil.copy2(f, copy.parent / f.name)
    shutil.copytree(a.parent / "evidence", copy.parent / "evidence")
    capsys.readouterr()
    assert main(["merge", str(a), str(copy), "-o", str(tmp_path / "m.sqlite")]) == 0
    assert "1 run(s), 2 cell(s) (2 present in several stores, identical)" in capsys.readouterr().out


def test_the_same_cell_measured_twice_is_a_conflict_and_nothing_is_written(stores, tmp_path, capsys):
    a, again = stores["a"], stores["again"]  # the same cells, their latency measured again
    out = tmp_path / "m.sqlite"
    capsys.readouterr()
    assert main(["merge", str(a), str(again), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: 2 conflict(s) between the stores; nothing written")
    assert "euler nfe=1 resolution=4 hardware=cpu" in err and "latency_ms_batch1 value" in err
    assert not out.exists() and not list(tmp_path.glob(".m.sqlite*"))


def test_bad_inputs_are_one_line_and_exit_2(stores, tmp_path, capsys):
    a = stores["a"]
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    for args, message in (
        ([str(tmp_path / "nope.sqlite")], "no results store at"),
        ([str(junk)], "cannot be opened"),
        ([str(a), "-o", str(a)], "already exists (merge writes a new store"),
    ):
        capsys.readouterr()
        argv = ["merge", *args] if "-o" in args else ["merge", *args, "-o", str(tmp_path / "o.sqlite")]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
