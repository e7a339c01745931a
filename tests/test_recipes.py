"""Real-model recipes exactly as their authors run them, checked where it matters: at the denoiser's call.

Each test hooks the denoiser's forward on a tiny offline pipeline (bench.adapters.hf.tiny) and records, at call
time, the timestep the network sees, its batch (guidance doubles it), the scheduler class and config in force
and the `eta` its step receives. The expected values are written from the authors' sources, not from the
adapters' tables:

- openai/consistency_models scripts/launch.sh (commit e32b69e), "Two-step sampling for CT on ImageNet-64":
  `--ts 0,106,200 --steps 201`, Karras sigmas with sigma_min 0.002, sigma_max 80, rho 7; diffusers'
  CMStochasticIterativeScheduler feeds the UNet t = 250 ln(sigma) (its `sigma_to_t`).
- ByteDance/Hyper-SD README, "2-Steps, 4-Steps, 8-steps LoRA": DDIMScheduler with timestep_spacing="trailing",
  guidance 0 (eta not passed: DDIM's 0); the unified 1-step LoRA: TCDScheduler, eta=1.0, guidance 0.
- ByteDance/SDXL-Lightning README, "1-Step UNet": EulerDiscreteScheduler, timestep_spacing="trailing",
  prediction_type="sample", guidance 0.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.adapters.protocol import SampleRequest
from bench.adapters.registry import build_sampler
from bench.hardware import HardwareSpec
from tests._netblock import no_network  # noqa: F401

CPU = HardwareSpec.parse("cpu:threads=1")


@pytest.fixture(scope="module", autouse=True)
def _tiny(tiny_env: Path) -> Path:
    """Every test here uses the tiny pipelines (conftest's tiny_env)."""
    return tiny_env


def _loaded(adapter: str, options: dict[str, Any]) -> Any:
    s = build_sampler(adapter, options)
    s.load(CPU)
    return s


def _req(nfe: int, n: int = 2) -> SampleRequest:
    seeds = list(range(n))
    return SampleRequest(seeds=seeds, nfe=nfe, height=32, width=32, prompts=["a red bus"] * n,
                         labels=[3] * n)


def denoiser_calls(sampler: Any, req: SampleRequest) -> list[dict[str, Any]]:
    """Sample once; one record per denoiser call: the timestep it saw, its batch, and the scheduler (class,
    config, the eta its step() received) in force at that moment."""
    calls: list[dict[str, Any]] = []

    def pre(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        t = args[1] if len(args) > 1 else kwargs.get("timestep")
        sched = sampler.pipe.scheduler
        if not getattr(sched.step, "_recorded", False):
            step = sched.step

            @functools.wraps(step)  # keeps the signature: pipelines pass eta only if step() takes it
            def recording_step(*a: Any, **k: Any) -> Any:
                calls[-1]["eta"] = k.get("eta")
                return step(*a, **k)

            recording_step._recorded = True  # type: ignore[attr-defined]
            sched.step = recording_step
        calls.append({"t": float(torch.as_tensor(t).flatten()[0]), "batch": int(args[0].shape[0]),
                      "scheduler": type(sched).__name__, "config": dict(sched.config), "eta": "not stepped"})

    handle = sampler.denoiser().register_forward_pre_hook(pre, with_kwargs=True)
    try:
        sampler.sample(req)
    finally:
        handle.remove()
    return calls


def _karras_sigma(ts: int, steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> float:
    """openai/consistency_models karras_sample (multistep): the sigma of index `ts` on a grid of `steps`."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ts / (steps - 1) * (lo - hi)) ** rho


@pytest.mark.usefixtures("no_network")
def test_ct_imagenet64_two_steps_sees_the_authors_sigmas() -> None:
    sampler = _loaded("consistency-model", {"model": "tiny:cm-ct"})
    calls = denoiser_calls(sampler, _req(2))
    expected = [250.0 * math.log(_karras_sigma(ts, 201)) for ts in (0, 106)]  # --ts 0,106,200 --steps 201
    assert [c["scheduler"] for c in calls] == ["CMStochasticIterativeScheduler"] * 2
    assert all(c["config"]["num_train_timesteps"] == 201 for c in calls)
    assert [c["t"] for c in calls] == pytest.approx(expected, rel=1e-4)
    assert _karras_sigma(106, 201) == pytest.approx(1.913, abs=1e-3)  # not the 42.7 of CD's [22, 0] on CT's grid


@pytest.mark.usefixtures("no_network")
def test_cd_imagenet64_two_steps_unchanged() -> None:
    sampler = _loaded("consistency-model", {"model": "tiny:cm"})
    calls = denoiser_calls(sampler, _req(2))
    expected = [250.0 * math.log(_karras_sigma(ts, 40)) for ts in (0, 22)]  # --ts 0,22,39 --steps 40
    assert all(c["config"]["num_train_timesteps"] == 40 for c in calls)
    assert [c["t"] for c in calls] == pytest.approx(expected, rel=1e-4)


def _trailing(steps: int, train: int = 1000) -> list[float]:
    """diffusers' "trailing" spacing: round(arange(train, 0, -train / steps)) - 1."""
    return [float(round(train - i * train / steps) - 1) for i in range(steps)]


HYPER_LORAS = {n: f"tiny:sdxl/lora_{n}step.safetensors" for n in (1, 2, 4, 8)}


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("steps", [2, 4, 8])
def test_hyper_sd_step_loras_run_trailing_ddim_eta0_no_cfg(steps: int) -> None:
    sampler = _loaded("hyper-sd", {"model": "tiny:sdxl", "checkpoints": HYPER_LORAS})
    calls = denoiser_calls(sampler, _req(steps))
    assert [c["scheduler"] for c in calls] == ["DDIMScheduler"] * steps
    assert all(c["config"]["timestep_spacing"] == "trailing" for c in calls)
    assert all(c["eta"] in (None, 0.0) for c in calls)  # the card passes none: DDIM's default, 0
    assert all(c["batch"] == 2 for c in calls)  # guidance 0: no doubled CFG batch
    assert [c["t"] for c in calls] == _trailing(steps)


@pytest.mark.usefixtures("no_network")
def test_hyper_sd_unified_one_step_lora_runs_tcd_eta1() -> None:
    sampler = _loaded("hyper-sd", {"model": "tiny:sdxl", "checkpoints": HYPER_LORAS})
    calls = denoiser_calls(sampler, _req(1))
    assert [c["scheduler"] for c in calls] == ["TCDScheduler"]
    assert calls[0]["eta"] == 1.0 and calls[0]["batch"] == 2 and calls[0]["t"] == 999.0


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("checkpoints", [
    {1: "tiny:sdxl/unet_1step.safetensors", 4: "tiny:sdxl/unet_4step.safetensors"},  # the user's own files
    "tiny:sdxl/unet_1step.safetensors",  # one file for every step count
])
def test_sdxl_lightning_one_step_unet_predicts_x0_with_user_checkpoints(checkpoints: Any) -> None:
    sampler = _loaded("sdxl-lightning", {"model": "tiny:sdxl", "checkpoints": checkpoints})
    calls = denoiser_calls(sampler, _req(1))
    assert [c["scheduler"] for c in calls] == ["EulerDiscreteScheduler"]
    cfg = calls[0]["config"]
    assert cfg["prediction_type"] == "sample" and cfg["timestep_spacing"] == "trailing"
    assert calls[0]["batch"] == 2 and calls[0]["t"] == 999.0


# ------------------------------------------------------------------------------------- the tables themselves
def test_every_row_has_a_source_and_every_recipe_adapter_a_table(capsys: pytest.CaptureFixture) -> None:
    from bench.adapters.hf import recipes, samplers
    from bench.cli import main

    rows = recipes.all_recipes()
    assert len({r.id for r in rows}) == len(rows)
    assert all(r.source.startswith("https://") and r.read for r in rows)
    for cls in (samplers.SDXLTurbo, samplers.LCM, samplers.ConsistencyModel, samplers.SDXLLightning, samplers.DMD2,
                samplers.HyperSD, samplers.DiffusersODE):
        assert cls.recipe_family in recipes.TABLES
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert all(r.id in out and r.source in out for r in rows)
    assert main(["recipes", "no-such-family"]) == 2


def test_a_recipe_is_keyed_on_what_is_loaded_not_on_who_named_the_path() -> None:
    from bench.adapters.hf.recipes import match

    x0 = "sdxl-lightning/unet-1step-x0"
    for spec in ("ByteDance/SDXL-Lightning/sdxl_lightning_1step_unet_x0.safetensors",  # the default
                 "/offline/cluster/sdxl_lightning_1step_unet_x0.safetensors"):  # the user's local copy
        m = match("sdxl-lightning", spec, "unet", 1)
        assert (m.recipe.id if m.recipe else None, m.how) == (x0, "name")
    m = match("sdxl-lightning", "/data/renamed.safetensors", "unet", 1)  # another name, mapped to 1 step
    assert (m.recipe.id if m.recipe else None, m.how) == (x0, "step")
    # The unified 1-step LoRA keeps its TCD recipe at any step count it is run at; a 4-step LoRA is DDIM.
    assert match("hyper-sd", "/w/Hyper-SDXL-1step-lora.safetensors", "lora", 4).recipe.scheduler == "TCDScheduler"
    assert match("hyper-sd", "/w/renamed.safetensors", "lora", 4).recipe.scheduler == "DDIMScheduler"
    # Consistency models: by name (hub id or local folder), else by the loaded scheduler's training steps.
    assert match("consistency-model", "openai/diffusers-ct_imagenet64", "pipeline", 2).recipe.timesteps == (106, 0)
    assert match("consistency-model", "/models/ct_imagenet64/", "pipeline", 2).recipe.timesteps == (106, 0)
    m = match("consistency-model", "/models/mine", "pipeline", 2, {"num_train_timesteps": 201,
                                                                   "class_conditional": True})
    assert m.how == "config" and m.recipe.timesteps == (106, 0)
    m = match("consistency-model", "/models/mine", "pipeline", 2, {"num_train_timesteps": 40,
                                                                   "class_conditional": False})
    assert m.recipe is None and "differ" in m.reason  # bedroom L2 [18, 0] vs LPIPS [17, 0]: name it


@pytest.mark.usefixtures("no_network")
def test_cell_provenance_records_the_row_and_user_options_win() -> None:
    sampler = _loaded("hyper-sd", {"model": "tiny:sdxl", "checkpoints": HYPER_LORAS})
    prov = sampler.provenance_for(2)
    assert prov["recipe"]["row"]["id"] == "hyper-sd/lora-2step" and prov["recipe"]["match"] == "step"
    assert prov["recipe"]["row"]["source"].startswith("https://huggingface.co/ByteDance/Hyper-SD/")
    assert prov["scheduler"] == "DDIMScheduler" and prov["recipe"]["overridden"] == []
    assert json.loads(json.dumps(prov)) == prov  # stored as the cell's info.sampler
    mine = _loaded("hyper-sd", {"model": "tiny:sdxl", "checkpoints": HYPER_LORAS, "scheduler": "TCDScheduler",
                                "eta": 0.3})
    calls = denoiser_calls(mine, _req(2))
    assert [(c["scheduler"], c["eta"]) for c in calls] == [("TCDScheduler", 0.3)] * 2
    assert mine.provenance_for(2)["recipe"]["overridden"] == ["eta", "scheduler"]
