"""The cell-key contract and the store's resume rules, checked in-process and fast (no worker is spawned), so
that mutation testing (`nox -s mutants`, docs/mutation.md) can run them for every mutant of bench/spec.py and
bench/store.py. Each test states the rule it protects, from docs (README's fairness rules, the CellSpec
docstring's key contract, docs/failure-modes.md's resume rules), not the code's constants."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace

import pytest

from bench.errors import BenchError
from bench.metrics.registry import MetricResult
from bench.plan import Cell
from bench.spec import CellSpec, axes_identity, axes_label, variant_label
from bench.store import CellResult, Store

BASE = CellSpec(suite="s", sampler="euler", adapter="analytic-euler", family="ode", version="1",
                options={"components": 4, "shift": 1.0}, axes={"nfe": 2, "resolution": 8, "hardware": "cpu"},
                dataset={"name": "gmm", "split": "eval"}, samples=64, base_seed=0,
                metrics={"fd": {"feature_space": "pixels", "bootstrap": 20}}, grid=4, variant={},
                dataset_key="gmm-v1", save_samples=None)

# one edit per field that decides the numbers (the CellSpec docstring lists them)
EDITS = {
    "suite": {"suite": "t"}, "sampler": {"sampler": "euler2"}, "adapter": {"adapter": "analytic-heun"},
    "version": {"version": "2"}, "options": {"options": {"components": 4, "shift": 2.0}},
    "axes": {"axes": {"nfe": 4, "resolution": 8, "hardware": "cpu"}},
    "hardware": {"axes": {"nfe": 2, "resolution": 8, "hardware": "cpu:threads=1"}},
    "extra axis": {"axes": {"nfe": 2, "resolution": 8, "hardware": "cpu", "guidance": 1.5}},
    "dataset": {"dataset": {"name": "gmm", "split": "train"}}, "dataset_key": {"dataset_key": "gmm-v2"},
    "samples": {"samples": 65}, "base_seed": {"base_seed": 1},
    "metric option": {"metrics": {"fd": {"feature_space": "pixels", "bootstrap": 21}}},
    "metric": {"metrics": {"fd": {"feature_space": "pixels", "bootstrap": 20}, "kid": {}}},
    "grid": {"grid": 5}, "variant": {"variant": {"shift": 1.0}},
    "save_samples": {"save_samples": {"format": "png", "max": 10}},
}


@pytest.mark.parametrize("field", list(EDITS))
def test_every_field_that_decides_the_numbers_changes_the_key(field):
    assert replace(BASE, **EDITS[field]).key != BASE.key, field


def test_the_key_ignores_what_cannot_change_a_number():
    assert replace(BASE, family="flow-map").key == BASE.key  # read from the sampler's info; version covers it
    reordered = replace(BASE, options={"shift": 1.0, "components": 4},
                        metrics={"fd": {"bootstrap": 20, "feature_space": "pixels"}})
    assert reordered.key == BASE.key  # mappings are compared by content, not by the order the YAML gave
    assert len(BASE.key) == 20 and int(BASE.key, 16) >= 0


def test_a_spec_survives_its_json_form_with_the_same_key():
    for spec in (BASE, replace(BASE, **EDITS["save_samples"]), replace(BASE, **EDITS["extra axis"])):
        back = CellSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert back == spec and back.key == spec.key
        assert back.to_dict() == spec.to_dict()


def test_a_spec_stored_before_save_samples_existed_keeps_its_key():
    body = BASE.to_dict()
    assert "save_samples" not in body  # absent when off: keys made before the option existed are unchanged
    assert replace(BASE, save_samples={}).key == BASE.key


def test_labels_name_the_sampler_and_every_axis():
    spec = replace(BASE, **EDITS["extra axis"])
    assert spec.label() == "euler nfe=2 res=8 hw=cpu guidance=1.5"
    assert (spec.nfe, spec.resolution, spec.hardware, spec.guidance) == (2, 8, "cpu", 1.5)
    assert BASE.guidance is None and BASE.extra_axes == {}
    assert axes_label({"nfe": 2, "resolution": 8, "hardware": "cpu", "toy": 2, "guidance": 1.5}) == " toy=2 guidance=1.5"
    assert variant_label("hyper-sd", {"eta": 0.5, "mode": "x"}) == "hyper-sd[eta=0.5,mode=x]"
    assert variant_label("hyper-sd", {}) == "hyper-sd"
    a, b = axes_identity("euler", {"nfe": 2, "resolution": 8}), axes_identity("euler", {"resolution": 8, "nfe": 2})
    assert a == b and a != axes_identity("euler", {"nfe": 4, "resolution": 8}) and a[0] == "euler"


# -- store: what counts as done, so a rerun recomputes exactly the rest --------------------------------------
def _result(spec: CellSpec, status: str, value: float | None = 1.0) -> CellResult:
    metrics = [MetricResult("fd", value, ci_low=0.5, ci_high=1.5, n=64, higher_is_better=False)] if value else []
    return CellResult(key=spec.key, status=status, error=None if status == "done" else "boom", nfe_counted=2.0,
                      phases={"total": 1.0}, metrics=metrics, started=1.0, finished=2.0)


def _run(store: Store) -> str:
    return store.start_run("s", "hash", "s.yaml", "name: s", git_commit=None, fingerprint={}, versions={},
                           executor="local", argv=["bench"])


def test_only_done_cells_are_reused(tmp_path):
    done, failed, never = BASE, replace(BASE, samples=65), replace(BASE, samples=66)
    with Store(tmp_path / "r.sqlite") as st:
        run = _run(st)
        st.record_plan(run, [Cell(done), Cell(failed), Cell(never)], set())
        st.commit_cell(run, Cell(done), _result(done, "done"))
        st.commit_cell(run, Cell(failed), _result(failed, "failed", None))
        assert st.done_keys() == {done.key}  # a failed cell is retried; a cell never run is run
        assert st.done_keys([failed.key, never.key]) == set()
        assert st.done_keys([done.key, never.key]) == {done.key}
        st.finish_run(run, "failed")


def test_a_failure_never_replaces_a_done_result(tmp_path):
    """`bench run --force` that fails (a cache problem, say) records the failure in its run and keeps the good
    result for the next run."""
    with Store(tmp_path / "r.sqlite") as st:
        first = _run(st)
        st.record_plan(first, [Cell(BASE)], set())
        st.commit_cell(first, Cell(BASE), _result(BASE, "done", 3.25))
        second = _run(st)
        st.record_plan(second, [Cell(BASE)], set())
        st.commit_cell(second, Cell(BASE), _result(BASE, "failed", None))
        assert st.done_keys() == {BASE.key}
        (value,) = st.db.execute("SELECT value FROM metrics WHERE cell_key=?", (BASE.key,)).fetchone()
        assert value == 3.25
        (status,) = st.db.execute("SELECT status FROM run_cells WHERE run_id=? AND cell_key=?",
                                  (second, BASE.key)).fetchone()
        assert status == "failed"


def test_a_done_result_replaces_a_failed_one_and_its_metrics(tmp_path):
    with Store(tmp_path / "r.sqlite") as st:
        run = _run(st)
        st.record_plan(run, [Cell(BASE)], set())
        st.commit_cell(run, Cell(BASE), _result(BASE, "failed", None))
        st.commit_cell(run, Cell(BASE), _result(BASE, "done", 2.5))
        st.commit_cell(run, Cell(BASE), _result(BASE, "done", 2.75))
        assert st.done_keys() == {BASE.key}
        rows = st.db.execute("SELECT value FROM metrics WHERE cell_key=?", (BASE.key,)).fetchall()
        assert [r[0] for r in rows] == [2.75]  # the recomputed cell's numbers, once


def test_the_plan_records_which_cells_were_reused_and_which_skipped(tmp_path):
    skipped = Cell(replace(BASE, samples=70), status="skipped", reason="no CUDA device")
    with Store(tmp_path / "r.sqlite") as st:
        run = _run(st)
        st.record_plan(run, [Cell(BASE), Cell(replace(BASE, samples=65)), skipped], {BASE.key})
        rows = {k: (s, r, reused) for k, s, r, reused in
                st.db.execute("SELECT cell_key, status, reason, reused FROM run_cells WHERE run_id=?", (run,))}
    assert rows[BASE.key] == ("done", None, 1)
    assert rows[replace(BASE, samples=65).key] == ("planned", None, 0)
    assert rows[skipped.key] == ("skipped", "no CUDA device", 0)


def test_a_run_whose_driver_died_is_interrupted_and_a_live_one_is_running(tmp_path):
    """kill -9 of the driver leaves its run `running` in the file; the next open says `interrupted`. A run whose
    driver still runs (this process) stays `running`."""
    path = tmp_path / "r.sqlite"
    code = ("import sys; from bench.store import Store\n"
            "with Store(sys.argv[1]) as st:\n"
            "    print(st.start_run('s', 'h', 's.yaml', '', git_commit=None, fingerprint={}, versions={},"
            " executor='local', argv=[]))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    dead = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True,
                          env=env).stdout.strip()
    with Store(path) as st:
        live = _run(st)
        statuses = {r["run_id"]: r["status"] for r in st.runs()}
        assert statuses == {dead: "interrupted", live: "running"}
        st.finish_run(live, "done")
        assert {r["run_id"]: r["status"] for r in st.runs()}[live] == "done"
    with Store(path, readonly=True) as st:
        assert st.run(dead)["status"] == "interrupted"


# -- plan: which cells are sharded and how (bench.plan._sharded; the numbers never depend on it) ---------------
SHARD_SUITE = """
name: shard-plan
dataset: {name: gmm, split: eval, components: 4}
samples: 100
samples_per_resolution: {8: 16}
batch_size: 16
samplers:
  - {id: euler, adapter: analytic-euler, options: {components: 4}}
  - {id: gpu, adapter: analytic-euler, options: {components: 4}, hardware: [cuda]}
axes: {nfe: [2], resolution: [4, 8], hardware: ["cpu:threads=1"]}
metrics:
  fd: {feature_space: pixels, bootstrap: 0}
report: {enabled: false, grid: 0}
"""


def _plan(extra: str = "", workers=None, text: str = SHARD_SUITE):
    from bench.plan import plan
    from bench.suite import parse_suite

    cells = plan(parse_suite(text + extra, "s.yaml"), check_hardware=True, workers=workers)
    return {(c.sampler_id, c.resolution): c for c in cells}


def test_a_suite_without_shard_size_plans_whole_cells():
    cells = _plan()
    assert all(c.shards == () and c.shard_note is None for c in cells.values())


def test_shard_size_splits_planned_cells_on_batch_boundaries_and_leaves_small_and_skipped_ones():
    import torch

    cells = _plan("shard_size: 40\n")
    assert cells[("euler", 4)].shards == ((0, 48), (48, 96), (96, 100))  # 40 rounded up to 3 batches of 16
    assert cells[("euler", 8)].shards == ()  # 16 images: one shard is no split
    assert cells[("euler", 4)].key == _plan()[("euler", 4)].key  # not part of the key: the numbers are the same
    if not torch.cuda.is_available():
        gpu = cells[("gpu", 4)]
        assert gpu.status == "skipped" and gpu.shards == () and gpu.shard_note is None


def test_shard_size_auto_asks_how_many_workers_run_the_cells_hardware():
    asked: list[str] = []

    def workers(hardware: str) -> int:
        asked.append(hardware)
        return 3

    cells = _plan("shard_size: auto\n", workers=workers)
    assert cells[("euler", 4)].shards == ((0, 48), (48, 96), (96, 100))  # ceil(100 / 3) = 34 -> 48
    assert "cpu:threads=1" in asked
    assert _plan("shard_size: auto\n", workers=lambda hw: 1)[("euler", 4)].shards == ()
    unknown = _plan("shard_size: auto\n", workers=None)[("euler", 4)]
    assert unknown.shards == () and unknown.shard_note == "shard_size auto: split when the run knows its workers"


def test_cells_whose_metrics_need_the_images_or_keep_them_stay_whole_and_say_why():
    reads = SHARD_SUITE.replace("  fd: {feature_space: pixels, bootstrap: 0}",
                                "  fd: {feature_space: pixels, bootstrap: 0}\n  tests.plugins.metrics:sample_stats: {}")
    cell = _plan("shard_size: 40\n", text=reads)[("euler", 4)]
    assert cell.shards == () and cell.shard_note.startswith(
        "not sharded: metric 'tests.plugins.metrics:sample_stats' reads the images themselves")
    saved = _plan("shard_size: 40\nsave_samples: {format: png, max: 10}\n")[("euler", 4)]
    assert saved.shards == () and saved.shard_note == "not sharded: save_samples keeps the whole cell's images"


def test_fd_reads_the_space_its_settings_resolve():
    from bench.metrics.fd import feature_requests_of

    (plain,) = feature_requests_of("fd", {"feature_space": "pixels", "size": 4, "dim": 16})
    assert plain.metric == "fd" and dict(plain.options) == {"feature_space": "pixels", "size": 4, "dim": 16}
    (clean,) = feature_requests_of("fd", {"feature_space": "inception-v3", "backend": "clean-fid"})
    assert dict(clean.options)["resize"] == "clean"  # clean-fid's protocol resizes with PIL bicubic
    (kept,) = feature_requests_of("fd", {"feature_space": "inception-v3", "backend": "clean-fid", "resize": "torch"})
    assert dict(kept.options)["resize"] == "torch"
    (tf,) = feature_requests_of("fd", {"feature_space": "inception-v3", "backend": "torch-fidelity"})
    assert "resize" not in dict(tf.options)


def test_a_run_is_declared_interrupted_only_when_its_driver_provably_died(tmp_path):
    """docs/failure-modes.md: a run left `running` is `interrupted` only when its driver ran on this host and no
    process with its pid and start time exists; anything unknown (another host, no record, a malformed record,
    an old store) keeps it `running` rather than declare a live run dead."""
    import socket

    import psutil

    from bench.store import _DRIVER, _process_alive

    me = psutil.Process()
    with Store(tmp_path / "r.sqlite") as st:
        run = _run(st)

        def driver(record: object) -> bool:
            with st.db:
                st.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_DRIVER + run, json.dumps(record)))
            return st._driver_alive(run)

        here = {"host": socket.gethostname(), "pid": os.getpid(), "created": me.create_time()}
        assert driver(here) is True
        assert driver({**here, "created": me.create_time() + 1.5}) is False  # the pid was reused by another process
        assert driver({**here, "created": me.create_time() - 1.5}) is False
        assert driver({**here, "created": me.create_time() + 0.5}) is True  # start times are rounded
        assert driver({**here, "host": "elsewhere"}) is True  # cannot look at another machine's processes
        assert driver({**here, "created": None}) is True  # no start time: the pid alone decides
        assert driver(["not", "a", "record"]) is True
        with st.db:
            st.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_DRIVER + run, "{torn"))
        assert st._driver_alive(run) is True
        with st.db:
            st.db.execute("DELETE FROM meta WHERE key=?", (_DRIVER + run,))
        assert st._driver_alive(run) is True  # no record (a run from before records existed)
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
        assert driver({**here, "pid": int(gone.stdout)}) is False
        st.schema_version = 1
        assert driver({**here, "pid": int(gone.stdout)}) is True  # a first-release store has no driver records
    assert _process_alive("123", 0.0) is True and _process_alive(None, None) is True
    assert _process_alive(os.getpid(), "yesterday") is True


def test_an_axis_can_be_registered_and_removed_and_removing_twice_is_harmless():
    from bench.spec import AXES, register_axis, unregister_axis
    from tests.plugins.toy_axis import GREY

    register_axis(GREY)
    try:
        assert AXES[GREY.name] is GREY
    finally:
        unregister_axis(GREY.name)
    assert GREY.name not in AXES
    unregister_axis(GREY.name)  # already gone: no error
    assert "guidance" in AXES  # the built-in extra axis stays


def test_a_spec_from_an_older_store_gets_the_documented_defaults():
    """Specs stored before a field existed lack it; reading them gives the value the field had before (0 samples
    and seed when unknown, no grid, no variant, no dataset key, no saved samples)."""
    minimal = {k: v for k, v in BASE.to_dict().items()
               if k in ("suite", "sampler", "adapter", "family", "version", "axes")}
    old = CellSpec.from_dict(minimal)
    assert (old.samples, old.base_seed, old.grid, old.variant, old.dataset_key, old.save_samples) == \
        (0, 0, 0, {}, "", None)
    assert (old.options, old.dataset, old.metrics) == ({}, {}, {})
    full = replace(BASE, base_seed=7, grid=9, variant={"shift": 1.0}, dataset_key="k2", samples=77,
                   save_samples={"format": "png", "max": 3})
    assert CellSpec.from_dict(json.loads(json.dumps(full.to_dict()))) == full


def test_guidance_values_are_finite_numbers_from_zero_up():
    from bench.spec import AXES

    guidance = AXES["guidance"]
    assert [guidance.validate(v) for v in (0, 0.5, 7)] == [0.0, 0.5, 7.0]
    for bad in (-0.1, float("nan"), float("inf"), True, "2"):
        with pytest.raises(ValueError, match="guidance values must be finite numbers >= 0, got"):
            guidance.validate(bad)


def test_built_in_and_malformed_axis_names_cannot_be_registered():
    from bench.spec import AXES, register_axis
    from tests.plugins.toy_axis import GREY

    for name in ("nfe", "resolution", "hardware", "not-an-identifier", "2x"):
        with pytest.raises(ValueError, match=f"cannot register axis {name!r}"):
            register_axis(replace(GREY, name=name))
        assert name not in AXES


def test_axes_without_a_request_field_reach_the_sampler_as_extra():
    from bench.spec import register_axis, unregister_axis
    from tests.plugins.toy_axis import GREY

    register_axis(GREY)
    try:
        spec = replace(BASE, axes={**BASE.axes, "guidance": 2.0, GREY.name: 0.5, "unregistered": 3})
        extra = spec.request_extra()
        assert "guidance" not in extra  # guidance has its own request field
        assert GREY.request_field is None and extra == {GREY.name: 0.5, "unregistered": 3}
        assert spec.label() == f"euler nfe=2 res=8 hw=cpu guidance=2 {GREY.name}=0.5 unregistered=3"
    finally:
        unregister_axis(GREY.name)


def test_a_cell_that_splits_into_exactly_two_shards_is_sharded():
    cells = _plan("shard_size: 50\n")  # 100 images, batches of 16: 64 + 36
    assert cells[("euler", 4)].shards == ((0, 64), (64, 100))



PLAN_SUITE = """
name: plan-fields
dataset: {name: gmm, split: eval, components: 4}
samples: 32
samples_per_resolution: {8: 16}
base_seed: 7
batch_size: 16
samplers:
  - {id: euler, adapter: analytic-euler, options: {components: 4}, sweep: {data_std: [0.15, 0.2]}}
  - {id: compiled, adapter: analytic-euler, options: {components: 4}, resolution: [4], nfe: [1],
     hardware: ["cpu:compile=true"]}
axes: {nfe: [2, 1], resolution: [4, 8], hardware: ["cpu:threads=1"], guidance: [1.5]}
metrics:
  fd: {feature_space: pixels, bootstrap: 0}
  kid: null
report: {enabled: false, grid: 3}
save_samples: {format: png, max: 2}
"""


def _plan_of(text: str):
    from bench.plan import plan
    from bench.suite import parse_suite

    return plan(parse_suite(text, "s.yaml"), check_hardware=False)


def test_plan_fills_every_cell_spec_field_from_the_suite():
    """Each cell's spec is what the suite says for that cell: the fields the key hashes (bench/spec.py)."""
    from bench.adapters.registry import build_sampler
    from bench.plan import _dataset_key

    cells = _plan_of(PLAN_SUITE)
    euler = [c for c in cells if c.sampler_id.startswith("euler")]
    # 2 variants x 2 resolutions x 2 nfe (sorted) x 1 guidance
    assert [(c.sampler_id, c.resolution, c.nfe) for c in euler] == [
        (v, r, n) for v in ("euler[data_std=0.15]", "euler[data_std=0.2]") for r in (4, 8) for n in (1, 2)]
    spec = euler[0].spec
    assert (spec.suite, spec.adapter, spec.base_seed, spec.grid) == ("plan-fields", "analytic-euler", 7, 3)
    assert spec.options == {"components": 4, "data_std": 0.15} and spec.variant == {"data_std": 0.15}
    assert spec.axes == {"nfe": 1, "resolution": 4, "hardware": "cpu:threads=1", "guidance": 1.5}
    assert spec.dataset == {"name": "gmm", "split": "eval", "components": 4}
    assert spec.dataset_key == _dataset_key("gmm", {"split": "eval", "components": 4})
    assert spec.dataset_key and not spec.dataset_key.startswith("unavailable")
    assert spec.metrics == {"fd": {"feature_space": "pixels", "bootstrap": 0}, "kid": {}}
    assert spec.save_samples == {"format": "png", "max": 2}
    assert [c.spec.samples for c in euler[:4]] == [32, 32, 16, 16]  # samples_per_resolution at 8 px
    info = build_sampler("analytic-euler", {"components": 4, "data_std": 0.15}).info
    assert (spec.family, spec.version) == (info.family, info.version)
    assert all(c.status == "planned" and c.reason is None for c in euler)
    assert _dataset_key("no-such-dataset", {}).startswith("unavailable here: ")


def test_plan_skips_with_the_reason_and_refuses_duplicate_cells():
    (compiled,) = [c for c in _plan_of(PLAN_SUITE) if c.sampler_id == "compiled"]
    assert (compiled.status, compiled.reason) == (
        "skipped", "cannot run with compile=true: the closed-form velocity runs eagerly (the adapter does not compile "
                   "it)")
    assert compiled.spec.axes == {"nfe": 1, "resolution": 4, "hardware": "cpu:compile=true", "guidance": 1.5}
    twice = PLAN_SUITE.replace("  - {id: compiled, adapter: analytic-euler, options: {components: 4}, resolution: [4],"
                               " nfe: [1],\n     hardware: [\"cpu:compile=true\"]}",
                               "  - {id: twice, adapter: analytic-euler, options: {components: 4}, resolution: [4], "
                               "nfe: [1],\n     hardware: [cpu, 'cpu:dtype=float32']}")  # one hardware, two spellings
    assert twice != PLAN_SUITE
    with pytest.raises(BenchError) as e:
        _plan_of(twice)
    assert str(e.value) == ("s.yaml: cells 'twice nfe=1 res=4 hw=cpu guidance=1.5' and 'twice nfe=1 res=4 hw=cpu "
                            "guidance=1.5' are the same cell (same adapter, options and axes): give one of the samplers "
                            "other options or remove it")
    with pytest.raises(BenchError, match=re.escape("s.yaml: sampler 'euler[data_std=0.15]': ")):
        _plan_of(PLAN_SUITE.replace("options: {components: 4}, sweep", "options: {colour: 4}, sweep"))


def test_a_committed_cell_stores_its_evidence_sidecar_spec_info_and_metrics(tmp_path):
    """What commit_cell writes is what later readers get back: the per-image evidence (a sidecar named by the cell
    key, its sha256, metrics and size recorded), the spec, the info (non-JSON values as text), every metric."""
    import hashlib
    import sqlite3
    from pathlib import Path

    import numpy as np

    from bench.evidence import values_evidence

    ev = {"clip_score": values_evidence(np.arange(4.0), [0, 1, 2, 3])}
    result = CellResult(key=BASE.key, status="done", error=None, nfe_counted=2.0, phases={"total": 1.0},
                        metrics=[MetricResult("fd", 1.5, ci_low=1.0, ci_high=2.0, n=64, higher_is_better=False,
                                              provenance={"where": Path("/x")})],
                        started=1.0, finished=2.0, info={"weights": Path("/w.safetensors")}, evidence=ev)
    with Store(tmp_path / "s.sqlite") as st:
        run = _run(st)
        st.record_plan(run, [Cell(BASE)], set())
        st.commit_cell(run, Cell(BASE), result)
        record = st.evidence_record(BASE.key)
        path = st.evidence_path(BASE.key)
        assert path.exists() and record["file"] == path.name == f"{BASE.key}.npz"
        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert record["metrics"] == ["clip_score"] and record["bytes"] == path.stat().st_size
        np.testing.assert_array_equal(st.evidence(BASE.key)["clip_score"].rows, np.arange(4.0))
        # a done result without evidence drops the old evidence row
        st.commit_cell(run, Cell(BASE), replace(result, evidence=None,
                                                samples_dir=str(tmp_path / "samples" / BASE.key)))
        assert st.evidence_record(BASE.key) is None
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        info, spec, axes, samples = db.execute("SELECT info, spec, axes, samples_dir FROM cells WHERE cell_key=?",
                                               (BASE.key,)).fetchone()
        prov = db.execute("SELECT provenance FROM metrics WHERE cell_key=?", (BASE.key,)).fetchone()[0]
    assert samples == f"samples/{BASE.key}"  # relative to the store's folder, so the store can move
    assert json.loads(info) == {"weights": "/w.safetensors"} and json.loads(prov) == {"where": "/x"}
    assert CellSpec.from_dict(json.loads(spec)) == BASE and json.loads(axes) == BASE.axes
