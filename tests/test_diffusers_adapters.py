"""diffusers-backed adapters and the generic flow map on tiny random pipelines: offline, CPU, no sockets.

Tiny pipelines are built once per session under a temporary BENCH_TINY_DIR (bench.adapters.hf.tiny) and
loaded with from_pretrained like users' checkpoints. In-process tests run under `no_network`; `bench run`
workers (spawned processes) get the same guard through a sitecustomize on PYTHONPATH, which logs every
attempt to a file the test then checks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import bench
from bench.adapters.protocol import SampleRequest
from bench.adapters.registry import build_sampler
from bench.cli import main
from bench.errors import BenchError, MissingWeightsError
from bench.hardware import HardwareSpec
from bench.metrics.nfe import NFECounter
from tests._netblock import no_network  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
CPU = HardwareSpec.parse("cpu:threads=1")
PROMPTS = ["a red bus on a street", "two dogs in a park", "a bowl of fruit"]

_GUARD = '''
import os, socket
_LOG = os.environ["BENCH_NETBLOCK_LOG"]
_real_connect, _real_connect_ex = socket.socket.connect, socket.socket.connect_ex

def _refuse(what):
    with open(_LOG, "a") as f:
        f.write(f"{os.getpid()}: {what}\\n")
    raise OSError(f"network access blocked in this test: {what}")

def _connect(self, address):
    if self.family == getattr(socket, "AF_UNIX", None):
        return _real_connect(self, address)
    _refuse(f"connect {address!r}")

def _connect_ex(self, address):
    if self.family == getattr(socket, "AF_UNIX", None):
        return _real_connect_ex(self, address)
    _refuse(f"connect_ex {address!r}")
    return 1

socket.socket.connect, socket.socket.connect_ex = _connect, _connect_ex
socket.create_connection = lambda address, *a, **k: _refuse(f"create_connection {address!r}")
socket.getaddrinfo = lambda host, *a, **k: _refuse(f"getaddrinfo {host!r}")
'''


@pytest.fixture(scope="module", autouse=True)
def _tiny(tiny_env: Path) -> Path:
    """Every test here uses the tiny pipelines (conftest's tiny_env)."""
    return tiny_env


@pytest.fixture
def worker_netblock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Spawned `bench run` workers refuse sockets too; the test fails if any worker tried."""
    guard = tmp_path / "netguard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(_GUARD)
    log = tmp_path / "net-attempts.log"
    log.touch()
    monkeypatch.setenv("BENCH_NETBLOCK_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(guard), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    yield log
    assert log.read_text() == "", f"a worker attempted network access: {log.read_text()}"


def _req(nfe: int, seeds: list[int], guidance: float | None = None) -> SampleRequest:
    return SampleRequest(seeds=seeds, nfe=nfe, height=32, width=32, guidance=guidance,
                         prompts=[PROMPTS[s % 3] for s in seeds], labels=[s % 1000 for s in seeds])


def _loaded(adapter: str, options: dict) -> object:
    s = build_sampler(adapter, options)
    s.load(CPU)
    return s


LIGHTNING = {"model": "tiny:sdxl", "prediction_types": {1: "sample"},
             "checkpoints": {1: "tiny:sdxl/unet_1step.safetensors", 4: "tiny:sdxl/unet_4step.safetensors"}}
DMD2_LORA = {"model": "tiny:sdxl", "checkpoint_format": "lora",
             "checkpoints": {1: "tiny:sdxl/lora_1step.safetensors", 4: "tiny:sdxl/lora_4step.safetensors"}}

# (adapter, options, suite guidance, steps, NFE per image the hooks must count)
CASES = {
    "sdxl-turbo-1": ("sdxl-turbo", {"model": "tiny:sdxl"}, None, 1, 1),
    "lcm-w-embedding-4": ("lcm", {"model": "tiny:sd-lcm"}, None, 4, 4),
    "lcm-lora-sdxl-cfg1.5-2": ("lcm", {"model": "tiny:sdxl", "lora": "tiny:sdxl/lcm-lora"}, 1.5, 2, 4),
    "lcm-lora-sd-2": ("lcm", {"model": "tiny:sd", "lora": "tiny:sd/lcm-lora"}, None, 2, 2),
    "consistency-model-2": ("consistency-model", {"model": "tiny:cm"}, None, 2, 2),
    "sdxl-lightning-4": ("sdxl-lightning", LIGHTNING, None, 4, 4),
    "dmd2-lora-1": ("dmd2", DMD2_LORA, None, 1, 1),
    "hyper-sd-2": ("hyper-sd", {"model": "tiny:sdxl", "checkpoints": {2: "tiny:sdxl/lora_2step.safetensors"}},
                   None, 2, 2),
    "flow-map-3": ("flow-map", {"model": "tiny:flowmap"}, None, 3, 3),
    "flow-map-latent-2": ("flow-map", {"model": "tiny:flowmap-latent"}, None, 2, 2),
    "sdxl-cfg5-4": ("diffusers-ode", {"model": "tiny:sdxl"}, 5.0, 4, 8),
    "sd-pndm-cfg-2": ("diffusers-ode", {"model": "tiny:sd"}, 7.5, 2, 6),
}


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("case", list(CASES))
def test_adapter_counts_nfe_and_images_depend_only_on_their_seed(case: str) -> None:
    adapter, options, guidance, nfe, expected = CASES[case]
    sampler = _loaded(adapter, options)
    with NFECounter(sampler.networks()) as counter:
        out = sampler.sample(_req(nfe, [3, 4, 5], guidance))
    assert counter.per_image(3) == expected
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.equal(out[0], out[1])  # different seeds, different images
    assert torch.equal(sampler.sample(_req(nfe, [3, 4, 5], guidance)), out)  # same seeds, same images
    alone = sampler.sample(_req(nfe, [5], guidance))  # image 3 does not depend on its batch
    torch.testing.assert_close(alone, out[2:], atol=2e-4, rtol=0)


@pytest.mark.usefixtures("no_network")
def test_step_specific_loras_are_swapped_and_base_weights_restored_exactly() -> None:
    sampler = _loaded("dmd2", DMD2_LORA)
    one = sampler.sample(_req(1, [0, 1]))
    four = sampler.sample(_req(4, [0, 1]))
    assert torch.equal(sampler.sample(_req(1, [0, 1])), one)  # 1 -> 4 -> 1 steps: the 1-step LoRA again, exactly
    fresh = _loaded("dmd2", DMD2_LORA)
    assert torch.equal(fresh.sample(_req(4, [0, 1])), four)  # no trace of the LoRA used before
    # The LoRA is really applied: the same schedule on the base weights gives other images.
    base = _loaded("diffusers-ode", {"model": "tiny:sdxl", "scheduler": "LCMScheduler", "guidance_scale": 0.0,
                                     "timesteps": {1: [399]}})
    assert not torch.equal(base.sample(_req(1, [0, 1])), one)


@pytest.mark.usefixtures("no_network")
def test_card_defaults() -> None:
    turbo = _loaded("sdxl-turbo", {"model": "tiny:sdxl"})
    turbo.sample(_req(1, [0]))
    sched = turbo.pipe.scheduler
    assert type(sched).__name__ == "EulerAncestralDiscreteScheduler" and sched.config.timestep_spacing == "trailing"
    assert turbo.guidance_scale == 0.0
    lcm = build_sampler("lcm", {})
    assert lcm.model == "SimianLuo/LCM_Dreamshaper_v7" and lcm.guidance_scale == 8.0
    lora = build_sampler("lcm", {"lora": "latent-consistency/lcm-lora-sdxl"})
    assert lora.model == "stabilityai/stable-diffusion-xl-base-1.0" and lora.guidance_scale == 1.0
    cm = build_sampler("consistency-model", {})
    assert cm.model == "openai/diffusers-cd_imagenet64_l2" and cm.recipe_for(2).recipe.timesteps == (22, 0)
    dmd2 = build_sampler("dmd2", {})
    assert [dmd2.recipe_for(n).recipe.timesteps for n in (1, 4)] == [(399,), (999, 749, 499, 249)]
    assert dmd2.info.nfe.values == {1, 4}
    assert build_sampler("sdxl-lightning", {}).recipe_for(1).recipe.prediction_type == "sample"
    hyper = build_sampler("hyper-sd", {})
    assert hyper.recipe_for(1).recipe.scheduler == "TCDScheduler" and hyper.recipe_for(2).recipe.scheduler == \
        "DDIMScheduler"  # tests/test_recipes.py checks what the denoiser sees


@pytest.mark.usefixtures("no_network")
def test_missing_model_offline_is_one_line_naming_it_and_the_fix(tmp_path: Path) -> None:
    s = build_sampler("sdxl-turbo", {"model": "flowmap-bench-tests/not-on-this-machine"})
    with pytest.raises(MissingWeightsError) as e:
        s.load(CPU)
    msg = str(e.value)
    assert "\n" not in msg and "flowmap-bench-tests/not-on-this-machine" in msg and "hf download" in msg
    s = build_sampler("sdxl-lightning", {"model": "tiny:sdxl", "checkpoints": {4: "ByteDance/nope/x.safetensors"}})
    with pytest.raises(MissingWeightsError, match=r"'x.safetensors' of 'ByteDance/nope'.*hf download"):
        s.load(CPU)
    with pytest.raises(MissingWeightsError, match="does not exist"):
        build_sampler("lcm", {"model": str(tmp_path / "absent")}).load(CPU)


class ConstantVelocity(torch.nn.Module):
    """f(x, s, t, cond) = c: a known answer for every parameterisation (the state moves by c per unit time)."""

    def __init__(self, c: float = 0.25) -> None:
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(float(c)))

    def forward(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, cond: object = None) -> torch.Tensor:
        return torch.zeros_like(x) + self.c


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("param", ["map_velocity", "average_velocity"])
def test_flow_map_grid_arithmetic(tmp_path: Path, param: str) -> None:
    from safetensors.torch import save_file

    save_file({"c": torch.tensor(0.25)}, str(tmp_path / "w.safetensors"))
    cfg = {"network": f"{__name__}:ConstantVelocity", "weights": "w.safetensors", "parameterization": param,
           "noise_time": 0.0 if param == "map_velocity" else 1.0, "data_time": 1.0 if param == "map_velocity" else 0.0,
           "data_range": [-4, 4], "times": {"2": [0.0, 0.9, 1.0] if param == "map_velocity" else [1.0, 0.1, 0.0]}}
    (tmp_path / "config.json").write_text(__import__("json").dumps(cfg))
    s = _loaded("flow-map", {"config": str(tmp_path)})
    x0 = bench.adapters.protocol.per_image_noise([9], (3, 8, 8))
    # a constant velocity over one unit of time, whatever the grid: x0 + c forwards in time (t: 0 -> 1);
    # MeanFlow's z_r = z_t - (t - r) u from t = 1 to r = 0 gives x0 - c
    expected = x0 + 0.25 if param == "map_velocity" else x0 - 0.25
    for nfe in (1, 2, 5):
        out = s.sample(SampleRequest(seeds=[9], nfe=nfe, height=8, width=8))
        torch.testing.assert_close(out, ((expected + 4) / 8).clamp(0, 1), atol=1e-6, rtol=0)
    with pytest.raises(BenchError, match="parameterization"):
        _loaded("flow-map", {"config": str(tmp_path), "parameterization": "velocity"})


def _cells(store: Path, hardware: str = "cpu:threads=1") -> dict[tuple[str, int], tuple[str, float | None]]:
    df = bench.load_results(str(store))
    df = df[df.hardware == hardware].drop_duplicates(["sampler", "nfe"])
    return {(r.sampler, int(r.nfe)): (r.status, r.nfe_counted) for r in df.itertuples()}


@pytest.mark.slow
@pytest.mark.usefixtures("no_network")
def test_tiny_diffusers_suite_end_to_end(tmp_path: Path, worker_netblock: Path, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`bench run suites/tiny_diffusers.yaml`: every adapter, counted NFE as the issue's acceptance states."""
    monkeypatch.chdir(tmp_path)  # the HTML report goes to ./reports
    store = tmp_path / "r.sqlite"
    assert main(["run", str(ROOT / "suites" / "tiny_diffusers.yaml"), "--store", str(store), "--no-progress"]) == 0
    capsys.readouterr()
    cells = _cells(store)
    assert len(cells) == 20 and all(status == "done" for status, _ in cells.values())
    counted = {k: v for k, (_, v) in cells.items()}
    assert counted[("sdxl-base-cfg", 4)] == 8  # SDXL, CFG 5.0, 4 steps: 8 evaluations per image
    assert counted[("sdxl-turbo", 1)] == 1
    assert counted[("lcm", 4)] == 4  # guidance through the w-embedding: no doubled batch
    assert counted[("lcm-lora-sdxl", 4)] == 8 and counted[("sd-pndm", 4)] == 10
    for (sampler, nfe), value in counted.items():
        if sampler not in ("sdxl-base-cfg", "lcm-lora-sdxl", "sd-pndm"):
            assert value == nfe, (sampler, nfe, value)
    df = bench.load_results(str(store))
    assert set(df[df.hardware == "cpu:threads=1"].metric) >= {"latency_ms_per_image", "latency_ms_batch1",
                                                              "peak_memory_mb"}
    if not torch.cuda.is_available():
        assert set(df[df.hardware == "cuda"].status) == {"skipped"}
    assert len(list((tmp_path / "samples").glob("*/003.png"))) >= 20


@pytest.mark.usefixtures("no_network")
def test_pipeline_saved_by_user_loads_by_path_from_a_suite_and_a_missing_model_fails_its_cells(
        tmp_path: Path, write_suite) -> None:
    """A user's save_pretrained folder named in a suite YAML, run through plan -> worker (in this process, to
    spare a second worker start-up; the spawned path is covered by the tiny suite above)."""
    from diffusers import StableDiffusionXLPipeline

    from bench.adapters.hf.tiny import build
    from bench.plan import plan
    from bench.run import make_tasks
    from bench.store import Store
    from bench.suite import load_suite
    from bench.worker import Worker

    mine = tmp_path / "my-sdxl"
    StableDiffusionXLPipeline.from_pretrained(str(build("sdxl")), local_files_only=True).save_pretrained(str(mine))
    suite = load_suite(write_suite(f"""
        name: by-path
        dataset: {{name: prompts}}
        samples: 4
        batch_size: 4
        samplers:
          - {{id: mine, adapter: sdxl-turbo, options: {{model: "{mine}"}}}}
          - {{id: absent, adapter: sdxl-turbo, options: {{model: "flowmap-bench-tests/absent"}}}}
        axes: {{nfe: [1, 2], resolution: [32], hardware: ["cpu:threads=1"]}}
        metrics: {{memory: {{}}}}
        report: {{grid: 0, enabled: false}}
    """))
    with Store(tmp_path / "r.sqlite") as store:
        tasks = make_tasks(suite, plan(suite), store)
    worker = Worker()
    results = {(t.cell.sampler_id, t.cell.nfe): worker.run(t) for t in tasks}
    for nfe in (1, 2):
        assert (results[("mine", nfe)].status, results[("mine", nfe)].nfe_counted) == ("done", float(nfe))
        err = results[("absent", nfe)].error or ""
        assert results[("absent", nfe)].status == "failed" and "\n" not in err
        assert err.startswith("MissingWeightsError: model 'flowmap-bench-tests/absent'") and "hf download" in err


def test_tiny_builds_are_deterministic(tmp_path: Path) -> None:
    from bench.adapters.hf.tiny import MARKER, build

    a, b = build("flowmap", tmp_path / "a"), build("flowmap", tmp_path / "b")
    assert (a / MARKER).read_text() == (b / MARKER).read_text()
    assert build("flowmap", tmp_path / "a") == a  # reused, not rebuilt
