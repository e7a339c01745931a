"""bench.runtime: the per-cell runtime state the harness owns (threads and process knobs, dtype and compile as
sampler capabilities, the one float -> uint8 quantiser, the seeding rule). Tests are written from the rules."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from bench import runtime
from bench.adapters.analytic import AnalyticEuler
from bench.adapters.protocol import SampleRequest, SamplerInfo
from bench.hardware import HardwareSpec
from bench.runtime import (
    NonFiniteImagesError,
    cell_runtime,
    image_seeds,
    noise_seed,
    per_image_noise,
    to_uint8,
)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ quantiser
def test_there_is_one_quantiser_and_every_sampler_and_dataset_uses_it():
    import bench.adapters.analytic
    import bench.adapters.students
    import bench.zoo.gmm
    import bench.zoo.shapes
    import bench.zoo.teacher

    for module in (bench.adapters.analytic, bench.adapters.students, bench.zoo.gmm, bench.zoo.shapes,
                   bench.zoo.teacher):
        assert module.to_uint8 is runtime.to_uint8, module.__name__
    # nothing else in the package defines its own: every `def to_uint8` lives in bench/runtime.py
    defs = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "bench").rglob("*.py"))
            for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
            if isinstance(node, ast.FunctionDef) and node.name == "to_uint8"]
    assert defs == ["bench/runtime.py"]


def test_float_output_the_worker_receives_is_quantised_by_the_same_rule():
    from bench import contract

    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 0.5, 0.25])
    assert torch.equal(contract.quantise(x), to_uint8(x, lo=0.0))
    u = torch.randint(0, 256, (1, 3, 4, 4), dtype=torch.uint8)
    assert torch.equal(contract.quantise(u), u)  # uint8 passes through


def test_datasets_quantise_their_float_images_with_it():
    from bench.zoo import shapes
    from bench.zoo.gmm import GaussianMixtureDataset

    ds = GaussianMixtureDataset(components=4)
    assert torch.equal(ds.images(range(6), 8), to_uint8(ds.float_images(range(6), 8)))
    assert torch.equal(ds.matched_images(range(6), 8), to_uint8(ds.float_matched(range(6), 8)))
    sh = shapes.ShapesDataset("eval")
    assert torch.equal(sh.images(range(6), 16), to_uint8(shapes.render(sh.scenes(range(6)), 16), lo=0.0))


def test_exact_halves_round_up():
    # a range of width 255 scales by exactly 1: k + 0.5 is exact in float32 and must give k + 1 for every k
    k = torch.arange(255, dtype=torch.float32)
    assert torch.equal(to_uint8(k + 0.5, lo=0.0, hi=255.0), (k + 1).to(torch.uint8))
    assert torch.equal(to_uint8(k + 0.49, lo=0.0, hi=255.0), k.to(torch.uint8))
    # model space [-1, 1]: wherever the float32 scaling lands exactly on a half, the result is the level above
    # (round half to even would give the even neighbour for half of them)
    x = ((torch.arange(255, dtype=torch.float64) + 0.5) / 127.5 - 1).float()
    scaled = (x + 1) * 127.5  # what the float32 rule computes
    exact = scaled == scaled.floor() + 0.5
    assert int(exact.sum()) >= 50  # the check bites: many levels land exactly on a half
    assert (scaled.floor()[exact].long() % 2 == 0).any() and (scaled.floor()[exact].long() % 2 == 1).any()
    assert torch.equal(to_uint8(x)[exact].long(), scaled.floor()[exact].long() + 1)
    # and in [0, 1]
    y = ((torch.arange(255, dtype=torch.float64) + 0.5) / 255).float()
    s = y * 255
    ex = s == s.floor() + 0.5
    assert int(ex.sum()) >= 50
    assert torch.equal(to_uint8(y, lo=0.0)[ex].long(), s.floor()[ex].long() + 1)


def test_values_outside_the_range_clamp_and_the_result_is_uint8_on_the_cpu():
    x = torch.tensor([-1e30, -5.0, -1.0, -1.0 - 1e-6, 1.0, 1.0 + 1e-6, 7.0, 1e30])
    assert to_uint8(x).tolist() == [0, 0, 0, 0, 255, 255, 255, 255]
    for bad in (-math.inf, math.inf, math.nan):  # not clamped: a diverged sample must fail, not turn black/white
        with pytest.raises(NonFiniteImagesError, match="before quantising to uint8; images must be finite"):
            to_uint8(torch.tensor([0.0, bad]))
    assert to_uint8(torch.tensor([-0.1, 0.0, 1.0, 1.2]), lo=0.0).tolist() == [0, 0, 255, 255]
    out = to_uint8(torch.zeros(2, 3, 4, 4, dtype=torch.float16))
    assert out.dtype == torch.uint8 and out.device.type == "cpu" and out.shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match="hi must exceed lo"):
        to_uint8(x, lo=1.0, hi=1.0)


def test_the_quantiser_is_float32_round_half_up_within_half_a_level():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(10_000, generator=g, dtype=torch.float64) * 2.2 - 1.1
    q = to_uint8(x)
    # computed in float32 whatever the input dtype
    assert torch.equal(q, to_uint8(x.float())) and torch.equal(to_uint8(x.half()), to_uint8(x.half().float()))
    ideal = (x.clamp(-1, 1) + 1) * 127.5
    assert float((q.double() - ideal).abs().max()) <= 0.5 + 1e-4
    order = torch.argsort(x)
    assert bool((q[order][1:].long() >= q[order][:-1].long()).all())  # monotone


# ------------------------------------------------------------------------------------------------- seeding
def test_image_i_gets_seed_base_seed_plus_i():
    assert image_seeds(1000, [0, 1, 5]) == [1000, 1001, 1005]
    assert image_seeds(0, range(3)) == [0, 1, 2]


def test_per_image_noise_depends_on_the_image_seed_and_stream_only():
    import bench.adapters
    import bench.adapters.protocol

    assert bench.adapters.protocol.per_image_noise is per_image_noise  # re-exported where adapters import it
    assert bench.adapters.per_image_noise is per_image_noise
    batch = per_image_noise([3, 7, 11], (2, 4, 4))
    assert torch.equal(batch[1], per_image_noise([7], (2, 4, 4))[0])  # not its place in the batch
    assert torch.equal(per_image_noise([11, 3], (2, 4, 4)), batch[[2, 0]])
    # stream 0 is the seed's own generator; stream k draws from noise_seed(seed, k)
    assert torch.equal(batch[0], torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(3)))
    s2 = per_image_noise([3], (2, 4, 4), offset=2)[0]
    assert torch.equal(s2, torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(noise_seed(3, 2))))
    assert not torch.equal(s2, batch[0]) and noise_seed(3, 0) == 3 and noise_seed(3, 2) != noise_seed(3, 1)
    half = per_image_noise([3], (2, 4, 4), dtype=torch.float16)
    assert half.dtype == torch.float16 and torch.equal(half[0], batch[0].half())  # drawn in float32, then cast
    with pytest.raises(ValueError, match="non-negative"):
        noise_seed(3, -1)


class SeedRecorder(AnalyticEuler):
    """Records the seeds of every request it is asked to sample."""

    seen: ClassVar[list[list[int]]] = []

    def sample(self, req: SampleRequest) -> Any:
        SeedRecorder.seen.append(list(req.seeds))
        return super().sample(req)


def _run_cells(write_suite, tmp_path, samplers: list[str], hardware: str = "cpu:threads=1", base_seed: int = 0,
               metrics: str = "{'tests.plugins.metrics:sample_stats': {}}") -> tuple[list[Any], dict]:
    """Plan a tiny gmm suite; run its planned cells through an in-process bench.worker.Worker."""
    from bench.plan import plan
    from bench.run import make_tasks
    from bench.store import Store
    from bench.suite import load_suite
    from bench.worker import Worker

    body = "\n".join([
        "name: runtime", "dataset: {name: gmm, split: eval, components: 4}", "samples: 6",
        f"base_seed: {base_seed}", "batch_size: 4", "samplers:", *(f"  - {line}" for line in samplers),
        f"axes: {{nfe: [1], resolution: [8], hardware: ['{hardware}']}}", f"metrics: {metrics}",
        "report: {grid: 0, enabled: false}",
    ])
    suite = load_suite(write_suite(body))
    cells = plan(suite)
    with Store(tmp_path / "r.sqlite") as store:
        tasks = make_tasks(suite, cells, store)
    worker = Worker()
    return cells, {t.cell.sampler_id: worker.run(t) for t in tasks}


def test_the_worker_gives_image_i_the_seed_base_seed_plus_i(write_suite, tmp_path, one_thread):
    SeedRecorder.seen.clear()
    _, results = _run_cells(write_suite, tmp_path, ["{id: rec, adapter: 'tests.test_runtime:SeedRecorder', "
                                                    "options: {components: 4}}"], base_seed=500)
    assert results["rec"].status == "done", results["rec"].error
    # two quality batches of 4 + 2, then the determinism probe's batch of 1 (an image of the first batch)
    assert SeedRecorder.seen[:2] == [[500, 501, 502, 503], [504, 505]]
    assert len(SeedRecorder.seen[2]) == 1 and SeedRecorder.seen[2][0] in range(500, 504)


# ---------------------------------------------------------------------------------- dtype and compile
def test_sampler_info_defaults_take_every_dtype_and_compile():
    info = SamplerInfo(family="other")  # a third-party adapter that says nothing keeps running as before
    for text in ("cpu", "cpu:dtype=float16", "cpu:dtype=bfloat16", "cuda:dtype=float16,compile=true"):
        assert info.unsupported(1, 16, HardwareSpec.parse(text)) is None, text
    assert set(info.dtypes) == set(runtime.DTYPES) and info.compile is True


def test_a_sampler_that_cannot_honour_dtype_or_compile_says_why():
    info = SamplerInfo(family="other", dtypes=("float32",), dtype_note="integrates in float64",
                       compile=False, compile_note="runs eagerly")
    assert info.unsupported(1, 16, HardwareSpec.parse("cpu")) is None
    assert info.unsupported(1, 16, HardwareSpec.parse("cpu:dtype=float16")) == \
        "cannot run in float16: integrates in float64 (supports float32)"
    assert info.unsupported(1, 16, HardwareSpec.parse("cpu:compile=true")) == "cannot run with compile=true: runs eagerly"
    bare = SamplerInfo(family="other", dtypes=("float32", "bfloat16"), compile=False)
    assert bare.unsupported(1, 16, HardwareSpec.parse("cpu:dtype=float16")) == \
        "cannot run in float16: the adapter does not compute in it (supports float32, bfloat16)"
    assert bare.unsupported(1, 16, HardwareSpec.parse("cpu:compile=true")) == \
        "cannot run with compile=true: the adapter does not apply torch.compile"


def _cells(write_suite, samplers: list[str], hardware: list[str]) -> dict[tuple[str, str], Any]:
    from bench.plan import plan
    from bench.suite import load_suite

    body = "\n".join([
        "name: caps", "dataset: {name: gmm, split: eval, components: 4}", "samples: 4", "samplers:",
        *(f"  - {line}" for line in samplers), f"axes: {{nfe: [1], resolution: [8], hardware: {hardware}}}",
        "metrics: {'tests.plugins.metrics:sample_stats': {}}", "report: {grid: 0, enabled: false}",
    ])
    return {(c.sampler_id, c.hardware): c for c in plan(load_suite(write_suite(body)), check_hardware=False)}


def test_the_planner_skips_cells_a_sampler_cannot_honour_with_the_reason(write_suite):
    from bench.adapters.registry import build_sampler

    cells = _cells(write_suite, ["{id: euler, adapter: analytic-euler}", "{id: oracle, adapter: analytic-oracle-flowmap}",
                                 "{id: generic, adapter: flow-map}"],
                   ["cpu", "cpu:dtype=float16", "cpu:compile=true"])
    oracle = build_sampler("analytic-oracle-flowmap", {}).info
    euler = build_sampler("analytic-euler", {}).info
    expect = {
        ("euler", "cpu"): None, ("euler", "cpu:dtype=float16"): None,  # Euler computes in the noise's dtype
        ("euler", "cpu:compile=true"): f"cannot run with compile=true: {euler.compile_note}",
        ("oracle", "cpu"): None,
        ("oracle", "cpu:dtype=float16"): f"cannot run in float16: {oracle.dtype_note} (supports float32)",
        ("oracle", "cpu:compile=true"): f"cannot run with compile=true: {oracle.compile_note}",
        ("generic", "cpu"): None, ("generic", "cpu:dtype=float16"): None,  # compiles its network, any dtype
        ("generic", "cpu:compile=true"): None,
    }
    assert {k: c.reason for k, c in cells.items()} == expect
    assert all((c.status == "skipped") == (c.reason is not None) for c in cells.values())


def test_built_in_adapters_declare_what_they_do_with_dtype_and_compile():
    from bench.adapters import students, teacher

    # the zoo samplers compute in the spec's dtype but never compile; their skip reason says so
    assert teacher.TeacherEuler().info.compile is False and "eagerly" in teacher.TeacherEuler().info.compile_note
    assert set(teacher.TeacherHeun().info.dtypes) == set(runtime.DTYPES)
    s = students.ZooFlowMap()
    assert s.info.compile is False and "eagerly" in s.info.compile_note and set(s.info.dtypes) == set(runtime.DTYPES)


class CompileOnlyBeforeLoad(AnalyticEuler):
    """Claims compile while planning, then (having read its weights, say) finds it cannot."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from dataclasses import replace

        self.info = replace(self.info, compile=True)

    def load(self, hw: HardwareSpec) -> None:
        from dataclasses import replace

        super().load(hw)
        self.info = replace(self.info, compile=False, compile_note="found out in load()")

    def sample(self, req: SampleRequest) -> Any:
        raise AssertionError("sample() must not run for a cell the sampler cannot honour")


def test_the_worker_refuses_a_cell_the_loaded_sampler_cannot_honour(write_suite, tmp_path, one_thread):
    cells, results = _run_cells(write_suite, tmp_path, ["{id: late, adapter: 'tests.test_runtime:CompileOnlyBeforeLoad', "
                                                        "options: {components: 4}}"], hardware="cpu:compile=true")
    assert [c.status for c in cells] == ["planned"]
    r = results["late"]
    assert r.status == "failed" and r.error == ("BenchError: sampler 'late' (tests.test_runtime:CompileOnlyBeforeLoad) "
                                                "cannot run with compile=true: found out in load()")


# ------------------------------------------------------------------------------------------- process state
def test_cell_runtime_restores_threads_after_an_error_and_after_a_cell_changed_them():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        try:
            with cell_runtime(threads=1) as state:
                assert state["threads"] == 1 and torch.get_num_threads() == 1
                raise RuntimeError("cell failed")
        except RuntimeError:
            pass
        assert torch.get_num_threads() == 2
        with cell_runtime():  # a plain cell that sets threads itself (a sampler calling set_num_threads)
            torch.set_num_threads(1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_cell_runtime_restores_every_knob_a_cell_changed():
    before = {k.name: k.get() for k in runtime.knobs()}
    assert set(before) == {"threads", "default_dtype", "grad_enabled"}
    with cell_runtime(dtype="float16", compile=True) as state:
        assert (state["dtype"], state["compile"]) == ("float16", True)
        # the cell's dtype reaches the sampler through its hardware spec, never the process default
        assert state["default_dtype"] == torch.float32 == torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # a sampler that changes process state and does not put it back
        torch.set_grad_enabled(False)
    assert {k.name: k.get() for k in runtime.knobs()} == before
    with pytest.raises(RuntimeError), cell_runtime():
        torch.set_default_dtype(torch.float64)
        raise RuntimeError("cell failed")
    assert torch.get_default_dtype() == before["default_dtype"]
    with cell_runtime() as state:
        assert (state["dtype"], state["compile"]) == ("float32", False)


@pytest.mark.parametrize("kwargs, match", [
    ({"threads": 0}, "threads"), ({"threads": True}, "threads"), ({"dtype": "float8"}, "dtype must be one of"),
    ({"compile": "yes"}, "compile must be"),
])
def test_cell_runtime_rejects_bad_values_before_touching_anything(kwargs, match):
    before = {k.name: k.get() for k in runtime.knobs()}
    with pytest.raises(ValueError, match=match), cell_runtime(**kwargs):
        pass
    assert {k.name: k.get() for k in runtime.knobs()} == before


def test_the_worker_runs_a_cell_inside_its_runtime(write_suite, tmp_path, one_thread, monkeypatch):
    import bench.runtime as rt

    seen: list[dict[str, Any]] = []
    real = rt.cell_runtime

    def spy(**kwargs: Any):
        seen.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(rt, "cell_runtime", spy)
    _, results = _run_cells(write_suite, tmp_path, ["{id: euler, adapter: analytic-euler, options: {components: 4}}"],
                            hardware="cpu:threads=1,dtype=bfloat16")
    assert results["euler"].status == "done", results["euler"].error
    assert seen == [{"threads": 1, "dtype": "bfloat16", "compile": False}]
    assert torch.get_num_threads() == 1  # one_thread's value, restored after the cell
