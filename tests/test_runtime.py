"""bench.runtime: the one float -> uint8 quantiser and the seeding rule. Tests are written from the rules."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from bench import runtime
from bench.adapters.analytic import AnalyticEuler
from bench.adapters.protocol import SampleRequest
from bench.runtime import image_seeds, noise_seed, per_image_noise, to_uint8

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
    x = torch.tensor([-math.inf, -5.0, -1.0, -1.0 - 1e-6, 1.0, 1.0 + 1e-6, 7.0, math.inf])
    assert to_uint8(x).tolist() == [0, 0, 0, 0, 255, 255, 255, 255]
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
