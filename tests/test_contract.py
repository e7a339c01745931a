"""The sampler output contract (bench/contract.py): each check alone, then through the real worker."""

from __future__ import annotations

import pytest
import torch

from bench import contract
from bench.adapters.analytic import AnalyticEuler
from bench.adapters.protocol import SampleRequest
from bench.errors import BenchError
from bench.hardware import HardwareSpec

WHO = "sampler 'x' (pkg:X)"


def _raises(cls: type, images, n=2, h=8, w=8) -> str:
    with pytest.raises(cls) as e:
        contract.check_images(images, n, h, w, WHO)
    msg = str(e.value)
    assert isinstance(e.value, contract.ContractError) and isinstance(e.value, BenchError)
    assert "\n" not in msg and msg.startswith(WHO + ": ")
    return msg


# ------------------------------------------------------------------------------------------- unit: checks
def test_good_outputs_pass_and_quantise_like_the_stored_numbers():
    u8 = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(contract.checked_uint8(u8, 2, 8, 8, WHO), u8)
    x = torch.rand(2, 3, 8, 8)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = -0.0009, 1.0009  # inside the tolerance: accepted, then clamped
    out = contract.checked_uint8(x, 2, 8, 8, WHO)
    assert out.dtype == torch.uint8 and out.device.type == "cpu"
    assert torch.equal(out, (x.float().clamp(0, 1) * 255).round().to(torch.uint8))  # the rounding stored results use
    assert out[0, 0, 0, 0] == 0 and out[0, 0, 0, 1] == 255
    for dt in (torch.float16, torch.bfloat16, torch.float64):
        contract.check_images(x.clamp(0, 1).to(dt), 2, 8, 8, WHO)


def test_shape_violations_name_expected_and_got():
    msg = _raises(contract.OutputShapeError, torch.rand(4, 3, 4, 4), n=4)
    assert msg == f"{WHO}: sample() returned images of shape (4, 3, 4, 4); the cell asks for (4, 3, 8, 8)"
    assert "(1, 3, 8, 8)" in _raises(contract.OutputShapeError, torch.rand(1, 3, 8, 8))  # too few images
    assert "(2, 1, 8, 8)" in _raises(contract.OutputShapeError, torch.rand(2, 1, 8, 8))  # grey
    assert "(2, 8, 8, 3)" in _raises(contract.OutputShapeError, torch.rand(2, 8, 8, 3))  # NHWC
    assert "(3, 8, 8)" in _raises(contract.OutputShapeError, torch.rand(3, 8, 8))
    assert "(2, 3, 8, 6)" in _raises(contract.OutputShapeError, torch.rand(2, 3, 8, 6))


def test_type_violations():
    assert "returned a list" in _raises(contract.OutputTypeError, [torch.rand(3, 8, 8)] * 2)
    msg = _raises(contract.OutputTypeError, torch.zeros(2, 3, 8, 8, dtype=torch.int64))
    assert "returned int64 images; the contract asks for uint8, or float in [0, 1]" in msg


def test_non_finite_output():
    x = torch.rand(3, 3, 8, 8)
    x[1, 0, 0, 0] = float("nan")
    x[2, 1, 2, 2] = float("inf")
    msg = _raises(contract.NonFiniteOutputError, x, n=3)
    assert msg.endswith("sample() returned 1 NaN and 1 inf values in 2 of 3 images; images must be finite")
    assert "NaN values in 3 of 3" in _raises(contract.NonFiniteOutputError, torch.full((3, 3, 8, 8), float("nan")), n=3)


def test_range_violations():
    msg = _raises(contract.OutputRangeError, torch.linspace(-1, 1, 2 * 3 * 64).reshape(2, 3, 8, 8))
    assert msg.endswith("sample() returned float images with values in [-1, 1]; the contract asks for [0, 1] "
                        "(tolerance 0.001) or uint8")
    assert "[0, 255]" in _raises(contract.OutputRangeError, torch.linspace(0, 255, 2 * 3 * 64).reshape(2, 3, 8, 8))
    _raises(contract.OutputRangeError, torch.full((2, 3, 8, 8), 1.0 + 2 * contract.RANGE_TOLERANCE))


def test_nfe_check():
    contract.check_nfe(4.0, 1, who=WHO)
    with pytest.raises(contract.UncountedNFEError, match=r"none of the 2 module\(s\) networks\(\) lists"):
        contract.check_nfe(0.0, 2, who=WHO)
    with pytest.raises(contract.UncountedNFEError, match=r"networks\(\) returned no modules"):
        contract.check_nfe(0.0, 0, who=WHO)
    with pytest.raises(contract.UncountedNFEError, match=r"was empty when sample\(\) started"):
        contract.check_nfe(0.0, 0, listed=1, who=WHO)


def test_probe_tolerance_by_device_and_dtype():
    assert contract.probe_tolerance("cpu", "float32") == contract.PROBE_TOLERANCE_CPU_FP32 == 1
    assert contract.probe_tolerance(torch.device("cpu"), torch.float64) == 1
    for dev, dt in (("cpu", "float16"), ("cpu", torch.bfloat16), ("cuda:1", "float32"), ("mps", "float32"),
                    (torch.device("cuda"), torch.float16)):
        assert contract.probe_tolerance(dev, dt) == contract.PROBE_TOLERANCE_REDUCED > 1


def test_compare_probe_allows_one_level_on_cpu():
    a = torch.randint(1, 255, (3, 8, 8), dtype=torch.uint8)
    b = a.clone()
    b[0, 0, 0] += 1
    assert contract.compare_probe(a, b, 1, 3, 4, WHO) == 1
    b[0, 0, 1] -= 2  # uint8 arithmetic must not wrap around in the comparison
    with pytest.raises(contract.NondeterministicSamplerError) as e:
        contract.compare_probe(a, b, 1, 3, 4, WHO)
    assert str(e.value).startswith(f"{WHO}: image 3 sampled alone differs from image 3 of its batch of 4 by up "
                                   "to 2 uint8 levels (tolerance 1)")


def test_single_request_keeps_everything_but_the_batch():
    req = SampleRequest(seeds=[5, 6, 7], nfe=3, height=8, width=4, prompts=["a", "b", "c"], guidance=2.0,
                        extra={"k": 1})
    one = contract.single_request(req, 2)
    assert (list(one.seeds), one.prompts, one.labels, one.nfe, one.height, one.width, one.guidance, one.extra) == \
        ([7], ["c"], None, 3, 8, 4, 2.0, {"k": 1})
    assert contract.single_request(SampleRequest(seeds=[1, 2], nfe=1, height=4, width=4, labels=[3, 4]), 0).labels \
        == [3]


def test_probe_passes_per_image_noise_and_catches_the_global_rng():
    s = AnalyticEuler(components=4)
    s.load(HardwareSpec())
    req = SampleRequest(seeds=[10, 11, 12, 13], nfe=2, height=8, width=8, labels=[0, 1, 2, 3])
    batch = contract.checked_uint8(s.sample(req), 4, 8, 8, WHO)
    r = contract.determinism_probe(s, req, batch, tolerance=1, who=WHO)
    assert (r.index, r.batch, r.max_abs_diff, r.tolerance) == (3, 4, 0, 1)
    assert r.as_info()["ran"] is True and r.mean_abs_diff == 0.0
    assert contract.determinism_probe(s, req, batch, tolerance=1, index=0, who=WHO).index == 0

    class GlobalRNG(AnalyticEuler):
        def _noise(self, req):
            return torch.randn(len(req), 3, req.height, req.width)

    g = GlobalRNG(components=4)
    g.load(HardwareSpec())
    batch = contract.checked_uint8(g.sample(req), 4, 8, 8, WHO)
    with pytest.raises(contract.NondeterministicSamplerError, match="image 3 sampled alone differs"):
        contract.determinism_probe(g, req, batch, tolerance=1, who=WHO)


# ------------------------------------------------------------------------------- through the real worker
BAD = "tests.plugins.bad_samplers"


def _run_cells(write_suite, tmp_path, samplers: list[str], nfe=(2,), batch_size: int = 4) -> dict:
    """Plan a tiny gmm suite and run its cells through an in-process bench.worker.Worker."""
    from bench.plan import plan
    from bench.run import make_tasks
    from bench.store import Store
    from bench.suite import load_suite
    from bench.worker import Worker

    body = "\n".join([
        "name: contract",
        "dataset: {name: gmm, split: eval, components: 4}",
        "samples: 8",
        "base_seed: 0",
        f"batch_size: {batch_size}",
        "samplers:",
        *(f"  - {line}" for line in samplers),
        f"axes: {{nfe: {list(nfe)}, resolution: [8], hardware: ['cpu:threads=1']}}",
        "metrics: {'tests.plugins.metrics:sample_stats': {}}",
        "report: {grid: 0, enabled: false}",
    ])
    suite = load_suite(write_suite(body))
    with Store(tmp_path / "r.sqlite") as store:
        tasks = make_tasks(suite, plan(suite), store)
    worker = Worker()
    return {(t.cell.sampler_id, t.cell.nfe): worker.run(t) for t in tasks}


def _failed(result, cls: type, tail: str, sampler_id: str, adapter: str) -> None:
    err = result.error or ""
    assert result.status == "failed", (result.status, err)
    assert "\n" not in err
    assert err == f"{cls.__name__}: sampler {sampler_id!r} ({adapter}): {tail}", err


@pytest.mark.parametrize("name, cls, tail", [
    ("NaNImages", contract.NonFiniteOutputError,
     "sample() returned 192 NaN values in 1 of 4 images; images must be finite"),
    ("SmallImages", contract.OutputShapeError,
     "sample() returned images of shape (4, 3, 4, 4); the cell asks for (4, 3, 8, 8)"),
    ("SignedFloats", contract.OutputRangeError,
     "sample() returned float images with values in [-0.8275, 0.8039]; the contract asks for [0, 1] (tolerance 0.001) "
     "or uint8"),
    ("UnlistedNetwork", contract.UncountedNFEError,
     "counted NFE is 0: sample() called none of the 1 module(s) networks() lists (list every network sample() "
     "calls in networks())"),
])
def test_worker_fails_a_cell_that_breaks_the_contract(write_suite, tmp_path, one_thread, name, cls, tail):
    adapter = f"{BAD}:{name}"
    results = _run_cells(write_suite, tmp_path, [f'{{id: bad, adapter: "{adapter}", options: {{components: 4}}}}'])
    _failed(results[("bad", 2)], cls, tail, "bad", adapter)
    assert not results[("bad", 2)].metrics  # nothing was scored


def test_worker_fails_an_embedded_sampler_that_diverges_before_quantising(write_suite, tmp_path, one_thread):
    # uint8 output cannot hold NaN, so the check sits in the quantiser the embedded samplers call themselves
    # (bench.runtime.to_uint8); clamp-then-cast used to turn the NaN image into a black one and the cell was scored
    adapter = f"{BAD}:DivergedInModelSpace"
    result = _run_cells(write_suite, tmp_path, [f'{{id: nan, adapter: "{adapter}", options: {{components: 4}}}}'])[
        ("nan", 2)]
    assert result.status == "failed" and not result.metrics
    assert result.error == ("NonFiniteImagesError: 192 NaN values in 1 of 4 images before quantising to uint8; "
                            "images must be finite"), result.error


def test_the_quantiser_refuses_non_finite_and_keeps_finite_bytes():
    from bench.runtime import NonFiniteImagesError, to_uint8

    x = torch.linspace(-1.2, 1.2, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    assert torch.equal(to_uint8(x), ((x.clamp(-1, 1) + 1) * 127.5 + 0.5).floor().to(torch.uint8))
    for bad, what in ((float("nan"), "1 NaN"), (float("inf"), "1 inf"), (-float("inf"), "1 inf")):
        y = x.clone()
        y[1, 2, 3, 3] = bad
        with pytest.raises(NonFiniteImagesError, match=f"^{what} values in 1 of 2 images before quantising"):
            to_uint8(y)
        with pytest.raises(NonFiniteImagesError):
            to_uint8(y.half(), lo=0.0)


@pytest.mark.parametrize("name", ["GlobalRNG", "BatchGenerator"])
def test_worker_fails_a_sampler_that_ignores_per_image_seeds(write_suite, tmp_path, one_thread, name):
    adapter = f"{BAD}:{name}"
    result = _run_cells(write_suite, tmp_path, [f'{{id: rng, adapter: "{adapter}", options: {{components: 4}}}}'])[
        ("rng", 2)]
    assert result.status == "failed" and "\n" not in (result.error or "")
    prefix = f"NondeterministicSamplerError: sampler 'rng' ({adapter}): image 3 sampled alone differs from image 3 " \
             "of its batch of 4 by up to "
    assert (result.error or "").startswith(prefix), result.error
    assert (result.error or "").endswith("uint8 levels (tolerance 1); image i must start from the noise of its own "
                                         "seed (per_image_noise(req.seeds, ...)), not the global RNG or its place "
                                         "in the batch")


def test_good_analytic_samplers_pass_and_record_the_probe(write_suite, tmp_path, one_thread):
    results = _run_cells(write_suite, tmp_path, [
        "{id: euler, adapter: analytic-euler, options: {components: 4}}",
        "{id: heun, adapter: analytic-heun, options: {components: 4}, guidance: 2.0}",
        "{id: oracle, adapter: analytic-oracle-flowmap, options: {components: 4, substeps: 4}}",
    ], nfe=(1, 3))
    assert len(results) == 6
    for (sid, nfe), r in results.items():
        assert r.status == "done", (sid, nfe, r.error)
        probe = r.info["determinism_probe"]
        assert probe["ran"] is True and probe["max_abs_diff"] <= probe["tolerance"] == 1, probe
        assert probe["mean_abs_diff"] <= probe["max_abs_diff"]
        assert (probe["index"], probe["batch"]) == (3, 4)
        assert r.phases["probe"] >= 0
    assert results[("euler", 3)].nfe_counted == 3 and results[("heun", 3)].nfe_counted == 10
