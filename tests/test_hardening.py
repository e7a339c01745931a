"""Hostile-but-realistic inputs (issue 20): every bad file gets one line naming it and exit 2, nothing is lost.

Each test reproduces one case of the issue; the fuzz test over the same input boundaries is test_fuzz_inputs.py.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.store import CellResult, Store
from tests._paths import SUITES, bench_env
from tests.cells import make_cell

SUITE = """\
name: tiny
dataset: {name: gmm, split: eval, components: 4}
samples: 16
samplers:
  - {id: e, adapter: analytic-euler}
axes: {nfe: [1, 2], resolution: [4], hardware: [cpu]}
report: {grid: 2, enabled: false}
"""


def one_line_exit_2(capsys, argv: list[str], *names: str) -> str:
    """Run the CLI in-process: exit 2, exactly one line on stderr that names every string in `names`."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bench: error: "), err
    for name in names:
        assert name in err, (name, err)
    return err


def write_store(path: Path, done: bool = True) -> str:
    """A store with one finished run of one cell (through the real Store API)."""
    from bench.metrics.registry import MetricResult

    with Store(path) as st:
        run_id = st.start_run("tiny", "h" * 16, "tiny.yaml", SUITE, git_commit=None, fingerprint={}, versions={},
                              executor="local", argv=["bench", "run"])
        cell = make_cell("tiny", "e", "analytic-euler", "ode", 1, 4, "cpu")
        st.record_plan(run_id, [cell], set())
        if done:
            st.commit_cell(run_id, cell, CellResult(
                key=cell.key, status="done", nfe_counted=1.0, phases={"sample": 0.5},
                metrics=[MetricResult("fd", 1.5, False, 1.0, 2.0, 16, {"feature_space": {"name": "pixels"}})],
                samples_dir=str(st.samples_dir(cell.key))))
        st.finish_run(run_id, "done")
    return run_id


# --------------------------------------------------------------------------------------------- store files


def test_dry_run_refuses_a_corrupt_store(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    store = tmp_path / "bad.sqlite"
    store.write_bytes(b"SQLite format 3\x00" + b"\x00" * 50)  # truncated
    one_line_exit_2(capsys, ["run", str(suite), "--store", str(store), "--dry-run"], "bad.sqlite")
    assert store.read_bytes() == b"SQLite format 3\x00" + b"\x00" * 50


def test_dry_run_shows_which_cells_the_store_already_has(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    assert main(["run", str(suite), "--store", str(tmp_path / "none.sqlite"), "--dry-run"]) == 0
    assert not (tmp_path / "none.sqlite").exists()  # a dry run creates nothing
    assert "2 cells: 2 planned" in capsys.readouterr().out


def _without_dac(argv: list[str]) -> list[str]:
    """Run as a user that file permissions apply to: as root, drop the capabilities that bypass them."""
    if os.geteuid() != 0:
        return argv
    if not shutil.which("setpriv"):
        pytest.skip("root without setpriv: cannot make a folder read-only for this process")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", *argv]


def _bench(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_without_dac([sys.executable, "-m", "bench", *argv]), capture_output=True, text=True,
                          cwd=cwd, env=bench_env(), timeout=120, check=False)


@pytest.fixture
def read_only_store(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    write_store(folder / "st.sqlite")
    assert not list(folder.glob("*-wal"))  # closed: SQLite removed its WAL files
    (folder / "st.sqlite").chmod(0o444)
    folder.chmod(0o555)
    yield folder / "st.sqlite"
    folder.chmod(0o755)


def test_read_only_commands_work_on_a_read_only_store(read_only_store, tmp_path):
    before = read_only_store.read_bytes()
    p = _bench(["export", "--store", str(read_only_store), "--format", "json"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)[0]["metric"] == "fd"
    p = _bench(["runs", "--store", str(read_only_store)], tmp_path)
    assert p.returncode == 0 and "tiny" in p.stdout, p.stderr
    assert read_only_store.read_bytes() == before


def test_writing_into_a_read_only_store_is_one_line_and_exit_2(read_only_store, tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    p = _bench(["run", str(suite), "--store", str(read_only_store), "--no-progress"], tmp_path)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "st.sqlite" in p.stderr and "read-only" in p.stderr, p.stderr


def test_force_never_replaces_a_good_cell_with_a_failed_one(tmp_path):
    store = tmp_path / "st.sqlite"
    write_store(store)
    cell = make_cell("tiny", "e", "analytic-euler", "ode", 1, 4, "cpu")
    with Store(store) as st:
        run_id = st.start_run("tiny", "h" * 16, "tiny.yaml", SUITE, git_commit=None, fingerprint={}, versions={},
                              executor="local", argv=["bench", "run", "--force"])
        st.record_plan(run_id, [cell], set())
        st.commit_cell(run_id, cell, CellResult(key=cell.key, status="failed", error="EOFError: boom"))
        st.finish_run(run_id, "failed")
        assert st.done_keys() == {cell.key}  # the next run reuses the good result
        row = st.db.execute("SELECT status, error FROM cells WHERE cell_key=?", (cell.key,)).fetchone()
        assert row["status"] == "done"
        df = st.results(run_id)
    assert df["status"].tolist() == ["failed"] and "boom" in df["reason"].iloc[0]


# ------------------------------------------------------------------------------------- interrupted runs


def test_a_run_left_running_by_a_killed_driver_is_marked_interrupted_on_the_next_open(tmp_path):
    store = tmp_path / "st.sqlite"
    code = (f"import os; from bench.store import Store\n"
            f"s = Store({str(store)!r})\n"
            "s.start_run('tiny', 'h', 'p', 't', git_commit=None, fingerprint={}, versions={}, executor='local', "
            "argv=[])\n"
            "os._exit(0)  # like kill -9: no finish_run\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=bench_env(), timeout=60)
    with Store(store, readonly=True) as st:
        assert [r["status"] for r in st.runs()] == ["interrupted"]  # shown so even where it cannot be written
    with Store(store) as st:
        assert st.db.execute("SELECT status FROM runs").fetchone()[0] == "interrupted"


def test_a_live_run_stays_running(tmp_path):
    with Store(tmp_path / "st.sqlite") as st:
        st.start_run("tiny", "h", "p", "t", git_commit=None, fingerprint={}, versions={}, executor="local", argv=[])
        with Store(tmp_path / "st.sqlite") as other:
            assert [r["status"] for r in other.runs()] == ["running"]


class _GoneDriver:
    """The worker's end of a pipe whose driver was killed: sends fail, as they do after the driver exits."""

    def __init__(self, task):
        self.tasks = [task]

    def send(self, msg):
        if msg[0] != "ready":
            raise BrokenPipeError(32, "Broken pipe")

    def recv(self):
        if not self.tasks:
            raise EOFError
        return self.tasks.pop()


def test_an_orphaned_worker_exits_quietly(tmp_path, capfd):
    from bench.worker import serve

    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    from bench.plan import plan
    from bench.suite import load_suite
    from bench.worker import CellTask

    s = load_suite(suite)
    cell = plan(s)[0]
    task = CellTask(cell=cell, batch_size=16, samples_dir=str(tmp_path / "samples"), cache_dir=str(tmp_path / "c"))
    serve(_GoneDriver(task))  # returns: no BrokenPipeError
    assert "Traceback" not in capfd.readouterr().err


# --------------------------------------------------------------------------------------------- suites


def test_deeply_nested_yaml_is_one_line(tmp_path, capsys):
    suite = tmp_path / "deep.yaml"
    suite.write_text("name: x\nsamplers: " + "[" * 5000 + "]" * 5000 + "\n")
    err = one_line_exit_2(capsys, ["run", str(suite), "--dry-run"], "deep.yaml")
    assert "nest" in err


@pytest.mark.parametrize(("edit", "what"), [
    ("samples: 100000000", "samples"),
    ("samples: 16\nsamples_per_resolution: {4: 100000000}", "samples_per_resolution"),
    ("samples: 16\nbatch_size: 100000000", "batch_size"),
])
def test_resource_bombs_are_refused_at_load(tmp_path, capsys, edit, what):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.replace("samples: 16", edit))
    one_line_exit_2(capsys, ["run", str(suite), "--dry-run"], "s.yaml", what, "limits")


def test_a_huge_nfe_is_refused_at_load(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.replace("nfe: [1, 2]", "nfe: [1, 100000000000]"))
    one_line_exit_2(capsys, ["run", str(suite), "--dry-run"], "s.yaml", "axes.nfe", "max_nfe")
    one_line_exit_2(capsys, ["run", str(tmp_path / "s.yaml"), "--dry-run", "--set", "axes.nfe=[1]",
                             "--set", "samplers.0.nfe=[20000]"], "--set", "max_nfe")


def test_a_suite_can_raise_its_limits_explicitly(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.replace("nfe: [1, 2]", "nfe: [1, 20000]") + "limits: {max_nfe: 20000}\n")
    assert main(["run", str(suite), "--dry-run"]) == 0


@pytest.mark.parametrize("path", sorted(SUITES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_suites_fit_the_default_limits(path):
    from bench.suite import load_suite

    assert load_suite(path).model.limits.max_nfe >= 1  # BenchError if a shipped suite were over a limit


# --------------------------------------------------------------------------------------------- baselines


def _baseline_with(tmp_path: Path, edit) -> Path:
    """A baseline recorded from the store the gate then reads (so only the damage can stop it), damaged."""
    from bench.gate import save_baseline

    p, _ = save_baseline(tmp_path / "st.sqlite", tmp_path / "b.json")
    data = json.loads(p.read_text())
    edit(data)
    p.write_text(json.dumps(data))
    return p


def _set_cell(key, value):
    def edit(d):
        d["cells"][0][key] = value
    return edit


def _set_metric(key, value):
    def edit(d):
        m = d["cells"][0]["metrics"]
        next(iter(m.values()))[key] = value
    return edit


@pytest.mark.parametrize("edit", [
    lambda d: d.update(cells=[{}]),
    lambda d: d["cells"][0].update(metrics="zzz"),
    lambda d: d.update(calibration="x"),
    lambda d: d.update(calibration={"cpu": "x"}),
    lambda d: d.update(feature_spaces={"fd": "x"}),
    _set_cell("nfe_requested", None),
    _set_cell("axes", "x"),
    _set_cell("nfe_counted", "x"),
    _set_metric("value", "x"),
    _set_metric("ci_low", [1]),
    _set_metric("provenance", "x"),
    lambda d: d.update(run_spec="x"),
    lambda d: d.update(fingerprint="x"),
    lambda d: d.update(evidence="x"),
    lambda d: d.update(suite_text=3),
], ids=["empty-cell", "metrics-str", "calibration-str", "calibration-entry", "feature-spaces", "nfe-null",
        "axes-str", "nfe-counted-str", "value-str", "ci-list", "provenance-str", "run-spec-str", "fingerprint-str",
        "evidence-str", "suite-text-int"])
def test_damaged_baseline_content_is_one_line_and_exit_2(tmp_path, capsys, edit):
    store = tmp_path / "st.sqlite"
    write_store(store)
    assert main(["gate", "--baseline", str(_baseline_with(tmp_path, lambda d: None)), "--store", str(store)]) == 0
    capsys.readouterr()  # the undamaged baseline passes
    baseline = _baseline_with(tmp_path, edit)
    one_line_exit_2(capsys, ["gate", "--baseline", str(baseline), "--store", str(store)], "b.json")


def test_deeply_nested_baseline_json_is_one_line(tmp_path, capsys):
    p = tmp_path / "b.json"
    p.write_text('{"format": ' + "[" * 100000 + "]" * 100000 + "}")
    one_line_exit_2(capsys, ["gate", "--baseline", str(p), "--store", str(tmp_path / "x.sqlite")], "b.json")


def test_gate_names_the_override_not_the_file_when_only_set_differs():
    from bench.gate import identity_problems

    text = "name: x\nsamples: 8\n"
    base = {"suite": "x", "suite_hash": "a", "suite_text": text, "cells": []}
    run = {"suite": "x", "suite_hash": "b", "suite_text": text + "\n# --set base_seed=1\n", "cells": []}
    (problem,) = identity_problems(base, run)
    assert "suite file changed" not in problem and "--set" in problem and "base_seed=1" in problem
    run["suite_text"] = "name: x\nsamples: 9\n"
    (problem,) = identity_problems(base, run)
    assert "suite file changed" in problem


# --------------------------------------------------------------------------------------------- zoo manifest


@pytest.mark.parametrize("content", [
    b"{not json", b"[]", b'{"models": []}', b'{"models": {"teacher": "x"}}',
    b'{"models": {"teacher": {"file": 3, "sha256": "ab"}}}',
    b'{"models": {"teacher": {"file": "../../etc/passwd", "sha256": "ab"}}}', b"\xff\xfe\x00",
    b'{"models": {"teacher": {"file": "t.safetensors", "sha256": "ab", "recipe": "x", "bytes": "x"}}}',
], ids=["json", "list", "models-list", "entry-str", "file-int", "file-path", "binary", "recipe-str"])
@pytest.mark.parametrize("command", [["zoo", "verify"], ["zoo", "card"]])
def test_a_malformed_zoo_manifest_is_one_line(tmp_path, monkeypatch, capsys, content, command):
    (tmp_path / "manifest.json").write_bytes(content)
    monkeypatch.setenv("BENCH_ZOO_WEIGHTS", str(tmp_path))
    one_line_exit_2(capsys, command, "manifest.json")


def test_a_malformed_zoo_manifest_stops_planning_with_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "manifest.json").write_text('{"models": {"teacher": []}}')
    monkeypatch.setenv("BENCH_ZOO_WEIGHTS", str(tmp_path))
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.replace("analytic-euler", "teacher-euler").replace("resolution: [4]", "resolution: [16]"))
    one_line_exit_2(capsys, ["run", str(suite), "--dry-run"], "manifest.json")


# --------------------------------------------------------------------------------------------- weight files


def test_a_safetensors_header_too_large_names_the_file(tmp_path):
    from bench.errors import BenchError
    from bench.weightfiles import load_state_dict

    p = tmp_path / "w.safetensors"
    p.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    with pytest.raises(BenchError, match=r"w\.safetensors"):
        load_state_dict(p)


def test_a_pickle_that_runs_code_is_refused_without_torchs_advice(tmp_path):
    import torch

    from bench.errors import BenchError
    from bench.weightfiles import load_state_dict

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "w.pt"
    torch.save({"w": Evil()}, p)
    with pytest.raises(BenchError) as e:
        load_state_dict(p)
    msg = str(e.value)
    assert "w.pt" in msg and "weights_only=False" not in msg and "\n" not in msg


@pytest.mark.parametrize("loader", ["bench.metrics.features:load_state_dict_file",
                                    "bench.adapters.hf.weights:load_state_dict",
                                    "bench.zoo.checkpoints:load"])
def test_every_weight_loader_names_the_file(tmp_path, loader):
    import importlib

    from bench.errors import BenchError

    mod, fn = loader.split(":")
    p = tmp_path / "w.safetensors"
    p.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    with pytest.raises(BenchError, match=r"w\.safetensors"):
        getattr(importlib.import_module(mod), fn)(p if "zoo" in mod else str(p))


def test_a_binary_prompts_file_names_the_file(tmp_path):
    from bench.datasets_prompts import PromptDataset
    from bench.errors import BenchError

    p = tmp_path / "prompts.txt"
    p.write_bytes(b"\xff\xfe\x00\x80binary")
    with pytest.raises(BenchError, match=r"prompts\.txt.*UTF-8"):
        PromptDataset(file=str(p))


# --------------------------------------------------------------------------------------------- cache files


class _Space:
    def key_fields(self):
        return {"feature_space": "fake", "feature_dim": 2}

    def extract(self, images, batch_size):
        return images.reshape(len(images), -1)[:, :2].float().numpy().astype(np.float32)


class _Dataset:
    split = "eval"

    def key(self):
        return "fake-dataset"

    def images(self, indices, resolution):
        import torch

        g = torch.Generator().manual_seed(0)
        return torch.randint(0, 255, (len(indices), 3, resolution, resolution), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04truncated", "half"])
def test_a_corrupt_reference_cache_is_moved_aside_and_recomputed(tmp_path, damage):
    from types import SimpleNamespace

    from bench.metrics.reference import reference_set

    ctx = SimpleNamespace(dataset=_Dataset(), resolution=4, cache_dir=str(tmp_path))
    first = reference_set(ctx, _Space(), range(8), "reference")
    assert not first.from_cache and first.recovered is None
    good = first.path.read_bytes()
    first.path.write_bytes(good[: len(good) // 2] if damage == "half" else damage)
    again = reference_set(ctx, _Space(), range(8), "reference")
    assert not again.from_cache and np.array_equal(again.features, first.features)
    aside = list(first.path.parent.glob(first.path.name + ".corrupt-*"))
    assert len(aside) == 1 and str(aside[0].name) in again.recovered and first.path.name in again.recovered
    with zipfile.ZipFile(first.path):  # a whole file again
        pass
    from bench.metrics.common import base_provenance

    prov = base_provenance(SimpleNamespace(images=np.zeros((8, 1)), count=8, resolution=4, seeds=[0], seed=0,
                                           dataset=_Dataset()), None, again)
    assert "corrupt" in prov["reference"]["cache_recovered"]


def test_a_corrupt_small_numbers_cache_is_recomputed(tmp_path):
    from bench.metrics.reference import cached_numbers

    numbers, hit, note = cached_numbers(tmp_path, "fd_floor", {"a": 1}, lambda: {"value": 2.0})
    assert (numbers, hit, note) == ({"value": 2.0}, False, None)
    (path,) = (tmp_path / "reference_stats").glob("fd_floor-*.npz")
    path.write_bytes(b"")
    numbers, hit, note = cached_numbers(tmp_path, "fd_floor", {"a": 1}, lambda: {"value": 2.0})
    assert numbers == {"value": 2.0} and not hit and "corrupt" in note


# ----------------------------------------------------------------------------------------- runs & export


def test_bench_runs_lists_shows_and_removes(tmp_path, capsys):
    store = tmp_path / "st.sqlite"
    run_id = write_store(store)
    assert main(["runs", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert run_id in out and "tiny" in out and "done" in out
    assert main(["runs", "--store", str(store), "show", run_id]) == 0
    out = capsys.readouterr().out
    assert run_id in out and "e nfe=1" in out
    one_line_exit_2(capsys, ["runs", "--store", str(store), "show", "nope"], "nope", "bench runs")
    assert main(["runs", "--store", str(store), "rm", run_id]) == 0
    capsys.readouterr()
    with Store(store, readonly=True) as st:
        assert st.runs() == []
        assert st.db.execute("SELECT COUNT(*) FROM run_cells").fetchone()[0] == 0
        # cell results stay: another run may reuse them (they are keyed by the cell, not the run)
        assert st.db.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 1


def test_sample_paths_are_store_relative_and_export_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deep").mkdir()
    write_store(Path("deep/st.sqlite"))
    with Store("deep/st.sqlite", readonly=True) as st:
        stored = st.db.execute("SELECT samples_dir FROM cells").fetchone()[0]
        df = st.results()
    assert not Path(stored).is_absolute() and Path(stored).parts[0] == "samples"
    assert Path(df["samples_dir"].iloc[0]) == (tmp_path / "deep" / stored)


def test_json_export_is_typed(tmp_path, capsys):
    store = tmp_path / "st.sqlite"
    write_store(store)
    assert main(["export", "--store", str(store), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert isinstance(row["phases"], dict) and row["phases"]["sample"] == 0.5
    assert isinstance(row["provenance"], dict) and isinstance(row["cell_axes"], dict)
    assert row["nfe_counted"] == 1 and isinstance(row["nfe_counted"], int)
    assert row["n"] == 16 and isinstance(row["n"], int) and isinstance(row["value"], float)


def test_store_opened_by_sqlite_itself_is_unchanged_by_read_only_commands(tmp_path, capsys):
    store = tmp_path / "st.sqlite"
    write_store(store)
    before = store.read_bytes()
    for argv in (["export"], ["runs"], ["runs", "show", "latest"]):
        assert main([*argv, "--store", str(store)]) == 0, argv
    assert store.read_bytes() == before
    assert sqlite3.connect(store).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_the_report_after_a_run_follows_the_store_and_the_command_line(tmp_path, monkeypatch, capsys):
    from bench.report.command import report_after_run

    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):  # two stores, two reports: neither overwrites the other
        (tmp_path / name).mkdir()
        run_id = write_store(tmp_path / name / "st.sqlite")
        assert report_after_run(f"{name}/st.sqlite", run_id) == Path(f"{name}/reports/tiny.html")
        assert (tmp_path / name / "reports" / "tiny.html").is_file()
    assert report_after_run("b/st.sqlite", run_id, out="mine.html") == Path("mine.html")
    assert report_after_run("b/st.sqlite", run_id, enabled=False) is None
    assert not (tmp_path / "reports").exists()
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    capsys.readouterr()
    one_line_exit_2(capsys, ["run", str(suite), "--report", "x.html", "--no-report"], "--no-report")
