"""Cross-checks of our multistep samplers against code no one here wrote: diffusers' LCMScheduler and
CMStochasticIterativeScheduler, fed the same model predictions and the same noise.

Translation (docs/students.md, bench/zoo/students/sampling.py), our t in [0, 1] with t = 1 data:
- LCMScheduler (VP, prediction_type="sample"): timestep tau <-> t = 1 - (tau + 1) / 1000; the scheduler gets
  trained_betas whose alphas_cumprod is t^2 / (t^2 + (1 - t)^2), so its state is ours divided by
  n(t) = sqrt(t^2 + (1 - t)^2); its model prediction is our data estimate x + (1 - t) v.
- CMStochasticIterativeScheduler (VE): sigma <-> t = 1 / (1 + sigma), its state is ours divided by t; its model
  prediction is the raw network output, combined with its c_skip / c_out (our "edm" parameterisation).
The adapters' own `sample_float` (per-image noise streams, grids, conditioning) is what is compared.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import CMStochasticIterativeScheduler, EulerDiscreteScheduler, LCMScheduler

from bench.adapters.protocol import SampleRequest, per_image_noise
from bench.adapters.students import ZooAdversarial, ZooConsistency, ZooLCM
from bench.zoo.students import models, sampling
from bench.zoo.students.tiny import tiny_teacher

SEEDS = [3, 11, 12]
PROMPTS = ["a red circle", "a small blue square at the top", "a green cross"]
RES = 8


@pytest.fixture(scope="module")
def net():
    return tiny_teacher(seed=0, random_output=True)


def _req(nfe: int, guidance: float | None = None) -> SampleRequest:
    return SampleRequest(seeds=SEEDS, nfe=nfe, height=RES, width=RES, prompts=PROMPTS, guidance=guidance)


def _patch_noise(monkeypatch, module: str) -> None:
    """diffusers' step() draws its noise with randn_tensor; hand it our per-image stream k (k = step + 1)."""
    calls = {"k": 0}

    def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
        calls["k"] += 1
        return per_image_noise(SEEDS, tuple(shape)[1:], device or "cpu", dtype, offset=calls["k"])

    monkeypatch.setattr(f"diffusers.schedulers.{module}.randn_tensor", randn_tensor)


def _lcm_scheduler(clip: bool, timestep_scaling: float = 10.0) -> LCMScheduler:
    T = sampling.T_TRAIN
    ab = torch.tensor([sampling.vp_alpha_bar(sampling.tau_to_t(tau, T)) for tau in range(T)], dtype=torch.float64)
    betas = torch.cat([1 - ab[:1], 1 - ab[1:] / ab[:-1]])
    return LCMScheduler(num_train_timesteps=T, original_inference_steps=50, prediction_type="sample",
                        trained_betas=betas.tolist(), clip_sample=clip, clip_sample_range=1.0,
                        timestep_scaling=timestep_scaling, set_alpha_to_one=True)


def test_timestep_grids_match_diffusers():
    lcm = _lcm_scheduler(False)
    cm = CMStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=0.002, sigma_max=80.0, rho=7.0)
    euler = EulerDiscreteScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    for n in (1, 2, 3, 4, 8, 13, 50):
        lcm.set_timesteps(n)
        assert lcm.timesteps.tolist() == sampling.lcm_timesteps(n, 50)
    for n in (1, 2, 3, 4, 8, 40):
        cm.set_timesteps(n)
        assert torch.allclose(cm.sigmas[:-1].double(), torch.tensor(sampling.karras_sigmas(n), dtype=torch.float64),
                              rtol=1e-6)
    for n in (1, 2, 3, 4, 8):
        euler.set_timesteps(n)
        assert [int(v) for v in euler.timesteps.tolist()] == sampling.trailing_timesteps(n)
    # the VP translation: the scheduler's alpha_bar is ours to float32 precision
    t = torch.tensor([sampling.tau_to_t(tau) for tau in range(1000)], dtype=torch.float64)
    assert torch.allclose(lcm.alphas_cumprod.double(), sampling.vp_alpha_bar(t), atol=2e-6)


# timestep_scaling 10 (LCM's) makes c_skip < 1e-5 on every sampled timestep; 0.05 makes it matter.
@pytest.mark.parametrize(("nfe", "clip", "w", "scaling"),
                         [(1, False, 1.0, 10.0), (4, False, 2.0, 10.0), (3, True, 1.5, 0.05), (2, False, 1.0, 0.05)])
def test_lcm_adapter_matches_lcm_scheduler(monkeypatch, net, nfe, clip, w, scaling):
    ours = ZooLCM(checkpoint="/nonexistent/lcm.safetensors", clip_denoised=clip)
    meta = {"family": "lcm", "student": {"parameterisation": "lcm", "original_steps": 50, "T": 1000,
                                         "timestep_scaling": scaling, "w_min": 1.0, "w_max": 3.0, "w_default": 1.0}}
    ours.use(net, meta)
    got = ours.sample_float(_req(nfe, guidance=w))

    _patch_noise(monkeypatch, "scheduling_lcm")
    sched = _lcm_scheduler(clip, scaling)
    sched.set_timesteps(nfe)
    assert sched.timesteps.tolist() == ours.timesteps(nfe)
    with torch.no_grad():
        cond = net.text(PROMPTS)
        sample = per_image_noise(SEEDS, (3, RES, RES)) * sched.init_noise_sigma
        denoised = sample
        for tau in sched.timesteps:
            t = float(sampling.tau_to_t(int(tau)))
            x_rf = sample * sampling.vp_scale(t)
            tt = torch.full((len(SEEDS),), t)
            v = net.unet(x_rf, tt, cond, s=models.guidance_code(w, x_rf))
            x1_hat = x_rf + (1 - t) * v  # the model's prediction, prediction_type="sample"
            sample, denoised = sched.step(x1_hat, tau, sample, return_dict=False)
    assert denoised.abs().max() > 0.05
    torch.testing.assert_close(got, denoised, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("nfe", [1, 2, 4])
def test_consistency_adapter_matches_cm_scheduler(monkeypatch, net, nfe):
    ours = ZooConsistency(checkpoint="/nonexistent/cd.safetensors", grid="karras", clip_denoised=True)
    meta = {"family": "consistency", "student": {"parameterisation": "edm", "sigma_min": 0.002, "sigma_data": 0.5}}
    ours.use(net, meta)
    got = ours.sample_float(_req(nfe))

    _patch_noise(monkeypatch, "scheduling_consistency_models")
    sched = CMStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=0.002, sigma_max=80.0,
                                           sigma_data=0.5, rho=7.0, clip_denoised=True)
    sched.set_timesteps(nfe)
    assert torch.allclose(torch.tensor(ours.times(nfe), dtype=torch.float64), 1 / (1 + sched.sigmas[:-1].double()), rtol=1e-6)
    with torch.no_grad():
        cond = net.text(PROMPTS)
        sample = per_image_noise(SEEDS, (3, RES, RES)) * sched.init_noise_sigma
        for i, ts in enumerate(sched.timesteps):
            t = 1 / (1 + float(sched.sigmas[i]))
            sched.scale_model_input(sample, ts)  # diffusers' pipeline calls it; our model reads x_rf instead
            out = net.unet(sample * t, torch.full((len(SEEDS),), t), cond)
            sample = sched.step(out, ts, sample).prev_sample
    assert sample.abs().max() > 0.05
    torch.testing.assert_close(got, sample, atol=2e-5, rtol=1e-4)


def test_trailing_adversarial_grid_and_honest_nfe(net):
    ours = ZooAdversarial(checkpoint="/nonexistent/turbo.safetensors")
    ours.use(net, {"family": "adversarial", "student": {"timesteps": sampling.trailing_timesteps(4), "T": 1000}})
    assert ours.info.nfe.values == frozenset({1, 2, 4})
    with pytest.raises(ValueError, match="NFE 3"):
        ours.sample_float(_req(3))
