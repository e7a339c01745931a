"""Teacher network, ODE solvers, teacher adapters (NFE counting, CFG, common random numbers), zoo CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bench.adapters.protocol import SampleRequest
from bench.adapters.teacher import TeacherDPMSolver, TeacherEuler, TeacherHeun
from bench.errors import MissingWeightsError
from bench.hardware import HardwareSpec
from bench.metrics.nfe import NFECounter
from bench.zoo import checkpoints, cli_impl, solvers
from bench.zoo.nets import FlowUNet, ShapesTeacher, UNetConfig, count_parameters

CPU = HardwareSpec.parse("cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomised(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


@pytest.fixture()
def random_teacher_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A weights folder holding a randomly perturbed teacher, so adapter tests never need shipped weights."""
    torch.manual_seed(0)
    model = _randomised(ShapesTeacher())
    checkpoints.save_fp16(model.state_dict(), tmp_path / "teacher.safetensors", {"config": model.config()})
    monkeypatch.setenv(checkpoints.ENV_VAR, str(tmp_path))
    return tmp_path


def test_unet_shapes_size_and_zero_init_second_time() -> None:
    torch.manual_seed(0)
    net = _randomised(FlowUNet())
    with torch.no_grad():
        net.s_embed[2].weight.zero_()
        net.s_embed[2].bias.zero_()
    c = torch.randn(2, 128)
    for res in (16, 32):
        x, t = torch.randn(2, 3, res, res), torch.rand(2)
        out = net(x, t, c)
        assert out.shape == x.shape
        assert torch.allclose(out, net(x, t, c, s=torch.rand(2)))
    assert count_parameters(net) < 1_500_000


def test_unet_supports_forward_mode_ad() -> None:
    torch.manual_seed(0)
    net = _randomised(FlowUNet(UNetConfig()), 0.1).double()
    x, t, c = torch.randn(2, 3, 16, 16, dtype=torch.double), torch.rand(2, dtype=torch.double), torch.randn(2, 128, dtype=torch.double)

    def f(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return net(x, t, c, s=0.5 * t)

    dx, dt = torch.randn_like(x), torch.ones_like(t)
    _, tangent = torch.func.jvp(f, (x, t), (dx, dt))
    eps = 1e-6
    with torch.no_grad():
        fd = (f(x + eps * dx, t + eps * dt) - f(x - eps * dx, t - eps * dt)) / (2 * eps)
    assert ((tangent - fd).norm() / tangent.norm()) < 1e-5


def _gaussian_velocity(m: float, sd: float):
    def v(x: torch.Tensor, t: float) -> torch.Tensor:
        var = (1 - t) ** 2 + t**2 * sd**2
        return m + (t * sd**2 - (1 - t)) / var * (x - t * m)
    return v


def test_solvers_converge_on_a_gaussian() -> None:
    v = _gaussian_velocity(1.0, 0.3)
    x0 = torch.randn(20000, dtype=torch.float64)
    exact = 1.0 + 0.3 * x0
    err = {name: [(f(v, x0, n) - exact).abs().mean().item() for n in (4, 16)] for name, f in solvers.SOLVERS.items()}
    for name, (e4, e16) in err.items():
        assert e16 < e4, name
    assert err["heun"][1] < err["euler"][1] and err["dpm++"][1] < err["euler"][1]
    # DPM-Solver++ is first order for its first and last steps: identical to Euler with 2 steps
    assert torch.allclose(solvers.dpm_solver_pp(v, x0, 2), solvers.euler(v, x0, 2))
    assert solvers.time_grid(4, 0.5)[0] == 0.0 and solvers.time_grid(4, 0.5)[-1] == 1.0


@pytest.mark.parametrize(("cls", "steps", "per_image"), [(TeacherEuler, 3, 3), (TeacherHeun, 3, 5),
                                                         (TeacherDPMSolver, 3, 3)])
def test_adapter_nfe_counting_and_cfg(random_teacher_dir: Path, cls: type, steps: int, per_image: int) -> None:
    s = cls()
    assert s.info.family == "ode" and s.info.conditioning == "text"
    s.load(CPU)
    prompts = ["a red circle", "a small blue square at the top left", "a green cross", "a cyan triangle"]
    for guidance, factor in ((None, 1), (1.0, 1), (2.0, 2)):
        req = SampleRequest(seeds=[0, 1, 2, 3], nfe=steps, height=16, width=16, prompts=prompts, guidance=guidance)
        with NFECounter(s.networks()) as counter:
            out = s.sample(req)
        assert out.dtype == torch.uint8 and out.shape == (4, 3, 16, 16)
        assert counter.per_image(4) == per_image * factor


def test_adapter_common_random_numbers(random_teacher_dir: Path) -> None:
    s = TeacherEuler()
    s.load(CPU)
    prompts = ["a red circle", "a blue square", "a green cross", "a cyan triangle"]
    full = s.sample(SampleRequest(seeds=[10, 11, 12, 13], nfe=2, height=16, width=16, prompts=prompts))
    part = s.sample(SampleRequest(seeds=[12, 13], nfe=2, height=16, width=16, prompts=prompts[2:]))
    assert (full[2:].int() - part.int()).abs().max() <= 1
    other = s.sample(SampleRequest(seeds=[99, 98], nfe=2, height=16, width=16, prompts=prompts[2:]))
    assert not torch.equal(part, other)
    assert s.sample(SampleRequest(seeds=[1], nfe=1, height=32, width=32, prompts=None)).shape == (1, 3, 32, 32)


def test_missing_teacher_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(checkpoints.ENV_VAR, str(tmp_path))
    s = TeacherHeun()
    with pytest.raises(MissingWeightsError, match="bench zoo train teacher"):
        s.load(CPU)


def test_train_smoke_records_recipe(tmp_path: Path) -> None:
    from bench.zoo.train import train_teacher

    recipe = train_teacher(tmp_path, "cpu", log=lambda m: None, steps=2, batch=4, batch32=2, warmup=1)
    entry = cli_impl.record(tmp_path, "teacher", recipe)
    assert entry["recipe"]["steps"] == 2 and entry["recipe"]["hardware"]["device"] == "cpu"
    name, ok, message = cli_impl.verify(tmp_path)[0]
    assert (name, ok) == ("teacher", True) and "ok" in message
    weights = tmp_path / entry["file"]
    weights.write_bytes(weights.read_bytes() + b"\0")  # a changed file no longer verifies
    name, ok, message = cli_impl.verify(tmp_path)[0]
    assert (name, ok) == ("teacher", False) and "does not match" in message
    assert "teacher" in cli_impl.card(tmp_path)


def test_train_replays_recorded_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorded, out = tmp_path / "recorded", tmp_path / "out"
    recorded.mkdir()
    tiny = {"seed": 0, "steps": 2, "batch": 4, "batch32": 2, "lr": 1e-3, "warmup": 1}
    stages = [tiny, {**tiny, "seed": 1, "lr": 1e-4, "init": "teacher.safetensors@abc"}]
    manifest = {"version": 1, "models": {"teacher": {"file": "teacher.safetensors", "sha256": "0",
                                                     "recipe": {"stages": stages}}}}
    (recorded / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv(checkpoints.ENV_VAR, str(recorded))
    entry = cli_impl.train("teacher", out, "cpu")
    got = entry["recipe"]["stages"]
    assert [st["seed"] for st in got] == [0, 1] and got[1]["init"].startswith("teacher.safetensors@")
    assert entry["recipe"]["steps"] == 4 and (out / "teacher.safetensors").is_file()
    assert all(ok for _, ok, _ in cli_impl.verify(out))


def test_shipped_weights_verify_and_card() -> None:
    results = cli_impl.verify()
    assert all(ok for _, ok, _ in results), results
    names = {name for name, _, _ in results}
    assert {"shapes-clip", "teacher", "size-budget"} <= names
    text = cli_impl.card()
    for needle in ("zero-shot attribute accuracy", "noise floor", "stage 1", "dpm++"):
        assert needle in text


def test_verify_detects_tampering(tmp_path: Path) -> None:
    src = checkpoints.weights_dir()
    for f in ("manifest.json", "teacher.safetensors"):
        shutil.copyfile(src / f, tmp_path / f)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["models"] = {"teacher": manifest["models"]["teacher"]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert all(ok for _, ok, _ in cli_impl.verify(tmp_path))
    data = bytearray((tmp_path / "teacher.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (tmp_path / "teacher.safetensors").write_bytes(bytes(data))
    assert not cli_impl.verify(tmp_path)[0][1]


def test_shipped_teacher_beats_one_step_blur() -> None:
    from bench.zoo import shapes, shapes_clip
    from bench.zoo.teacher import generate, load_teacher, to_uint8

    teacher = load_teacher("cpu")
    clip, _ = shapes_clip.load_shapes_clip("cpu")
    ds = shapes.ShapesDataset("eval")
    idx = list(range(48))
    prompts = ds.conditions(idx).prompts or []
    one = to_uint8(generate(teacher, prompts, idx, 1, "euler"))
    many = to_uint8(generate(teacher, prompts, idx, 6, "dpm++"))
    s_one = shapes_clip.clip_scores(clip, one, prompts).mean()
    s_many = shapes_clip.clip_scores(clip, many, prompts).mean()
    assert s_many > s_one + 5
    assert one.float().std(dim=(2, 3)).mean() < many.float().std(dim=(2, 3)).mean()  # 1 step: blurry mean
