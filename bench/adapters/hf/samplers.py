"""Published few-step samplers on diffusers pipelines, configured as their model cards say.

Each class is a registered sampler (entry points in pyproject.toml). Options common to all are documented in
bench.adapters.hf.base.DiffusersSampler and docs/real-models.md. How each published checkpoint is sampled
(scheduler, timesteps, eta, guidance, prediction type) is data: the family's table in bench.adapters.hf.recipes,
keyed on what is loaded (`bench recipes` prints them); the class attributes below are the fallback for a model
no row fits. A suite's `guidance:` (per sampler) overrides `guidance_scale`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from bench.adapters.hf import recipes
from bench.adapters.hf.base import DiffusersSampler
from bench.adapters.protocol import NFESupport, SampleRequest
from bench.errors import BenchError

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"


class _Text2Image(DiffusersSampler):
    def _pipeline_class(self) -> Any:
        from diffusers import AutoPipelineForText2Image

        return AutoPipelineForText2Image


class SDXLTurbo(_Text2Image):
    """SDXL-Turbo (adversarial diffusion distillation): Euler ancestral on trailing timesteps, no CFG, 1-4 steps at 512 px."""

    family = "adversarial"
    default_model = "stabilityai/sdxl-turbo"
    default_guidance = 0.0
    nfe_support = NFESupport(min=1, max=4)
    scheduler_class = "EulerAncestralDiscreteScheduler"
    scheduler_overrides: ClassVar[dict[str, Any]] = {"timestep_spacing": "trailing"}
    recipe_family = "sdxl-turbo"


def _row(recipe_id: str) -> recipes.Recipe:
    return next(r for r in recipes.all_recipes() if r.id == recipe_id)


class LCM(_Text2Image):
    """Latent consistency models: LCMScheduler; guidance through the w-embedding (LCM) or low CFG (LCM-LoRA)."""

    family = "lcm"
    default_model = "SimianLuo/LCM_Dreamshaper_v7"
    nfe_support = NFESupport(min=1, max=50)
    scheduler_class = "LCMScheduler"
    recipe_family = "lcm"

    def __init__(self, model: str | None = None, lora: str | None = None, guidance_scale: float | None = None,
                 **kwargs: Any) -> None:
        # LCM_Dreamshaper_v7's card samples with guidance 8.0, fed to the UNet's w-embedding (1 evaluation per step);
        # the LCM-LoRA cards say: disable guidance (1.0) or keep it between 1.0 and 2.0 (real CFG, 2 evaluations).
        # The recipe rows carry both; this is the fallback (and what `guidance_scale` shows before loading).
        self.default_guidance = _row("lcm/lora-sdxl" if lora else "lcm/dreamshaper-v7").guidance
        if lora and model is None:
            model = SDXL_BASE
        super().__init__(model, lora=lora, guidance_scale=guidance_scale, **kwargs)


class ConsistencyModel(DiffusersSampler):
    """OpenAI consistency models: CMStochasticIterativeScheduler, class-conditional, the card's timesteps per step count."""

    family = "consistency"
    conditioning = "class"
    default_model = "openai/diffusers-cd_imagenet64_l2"
    nfe_support = NFESupport(min=1, max=40)
    # Timesteps per checkpoint come from the recipe table (CD ImageNet-64 2 steps: [22, 0] on 40 training steps;
    # CT: [106, 0] on 201), matched by model name or by the loaded scheduler's training steps; none: the scheduler's.
    recipe_family = "consistency-model"
    version = "hf-2"  # hf-1 ran CT checkpoints on CD's 2-step timesteps

    def _pipeline_class(self) -> Any:
        from diffusers import DiffusionPipeline

        return DiffusionPipeline

    def _identity(self, pipe: Any) -> dict[str, Any]:
        return {**super()._identity(pipe), "class_conditional": bool(pipe.unet.config.num_class_embeds)}

    def _latent_shape(self, req: SampleRequest) -> tuple[int, int, int]:
        cfg = self.denoiser().config
        size = int(cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0])
        if (req.height, req.width) != (size, size):
            raise BenchError(f"{self.model} generates {size}x{size} images; this cell asks for "
                             f"{req.height}x{req.width} (set the suite's resolution to {size})")
        return int(cfg.in_channels), size, size

    def _labels(self, req: SampleRequest) -> torch.Tensor | None:
        n_classes = self.denoiser().config.num_class_embeds
        if not n_classes:
            return None
        # Without dataset labels, image i's class comes from its own seed (never from a global RNG).
        labels = list(req.labels) if req.labels is not None else [int(s) % int(n_classes) for s in req.seeds]
        bad = [v for v in labels if not 0 <= int(v) < int(n_classes)]
        if bad:
            raise BenchError(f"class label {bad[0]} out of range for {self.model} ({n_classes} classes)")
        return torch.tensor([int(v) for v in labels], device=self.device)

    def _call_kwargs(self, req: SampleRequest) -> dict[str, Any]:
        kwargs = self._timestep_kwargs(req.nfe)
        if "timesteps" in kwargs:
            kwargs["num_inference_steps"] = None
        return {"batch_size": len(req), "class_labels": self._labels(req), **kwargs}


class _StepDistilledSDXL(_Text2Image):
    """SDXL with one published UNet / LoRA per step count (SDXL-Lightning, DMD2, Hyper-SD)."""

    default_model = SDXL_BASE
    default_guidance = 0.0
    unet_prediction_types: ClassVar[dict[int, str]] = {}  # of the published UNets, per step count

    def __init__(self, model: str | None = None, prediction_types: dict[Any, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        # Only what the user sets: the prediction type of a published checkpoint is part of its recipe row.
        self.step_prediction = {int(k): str(v) for k, v in (prediction_types or {}).items()}
        if self.step_prediction:
            self.user_set["prediction_types"] = dict(self.step_prediction)

    def _scheduler_for(self, nfe: int) -> tuple[str | None, dict[str, Any]]:
        name, overrides = super()._scheduler_for(nfe)
        if nfe in self.step_prediction:
            overrides["prediction_type"] = self.step_prediction[nfe]
        elif self.recipe_for(nfe).recipe is None and nfe in self.unet_prediction_types \
                and self.checkpoint_format == "unet":
            overrides["prediction_type"] = self.unet_prediction_types[nfe]
        return name, overrides


LIGHTNING = "ByteDance/SDXL-Lightning"


class SDXLLightning(_StepDistilledSDXL):
    """SDXL-Lightning (progressive adversarial distillation): step-specific UNets / LoRAs, Euler on trailing timesteps, no CFG."""

    family = "adversarial"
    scheduler_class = "EulerDiscreteScheduler"
    scheduler_overrides: ClassVar[dict[str, Any]] = {"timestep_spacing": "trailing"}
    recipe_family = "sdxl-lightning"
    version = "hf-2"  # hf-1 dropped the 1-step UNet's prediction_type="sample" when `checkpoints:` was set
    unet_checkpoints: ClassVar[dict[int, str]] = {
        1: f"{LIGHTNING}/sdxl_lightning_1step_unet_x0.safetensors",
        **{n: f"{LIGHTNING}/sdxl_lightning_{n}step_unet.safetensors" for n in (2, 4, 8)},
    }
    lora_checkpoints: ClassVar[dict[int, str]] = {
        n: f"{LIGHTNING}/sdxl_lightning_{n}step_lora.safetensors" for n in (2, 4, 8)}
    # The 1-step UNet predicts x0 (card: prediction_type="sample").
    unet_prediction_types: ClassVar[dict[int, str]] = {1: "sample"}


DMD2_REPO = "tianweiy/DMD2"


class DMD2(_StepDistilledSDXL):
    """DMD2 (distribution matching distillation + GAN): SDXL UNet / LoRA with LCMScheduler on explicit timesteps, no CFG."""

    family = "adversarial"
    scheduler_class = "LCMScheduler"
    recipe_family = "dmd2"
    unet_checkpoints: ClassVar[dict[int, str]] = {
        1: f"{DMD2_REPO}/dmd2_sdxl_1step_unet_fp16.bin", 4: f"{DMD2_REPO}/dmd2_sdxl_4step_unet_fp16.bin"}
    lora_checkpoints: ClassVar[dict[int, str]] = {4: f"{DMD2_REPO}/dmd2_sdxl_4step_lora_fp16.safetensors"}
    # The card's timesteps: LCMScheduler's own differ from the ones DMD2 was trained on.
    default_timesteps: ClassVar[dict[int, list[int]]] = {1: [399], 4: [999, 749, 499, 249]}


HYPER = "ByteDance/Hyper-SD"


class HyperSD(_StepDistilledSDXL):
    """Hyper-SD (trajectory-segmented consistency distillation): SDXL step LoRAs with TCDScheduler (eta), no CFG."""

    family = "consistency"
    scheduler_class = "TCDScheduler"
    recipe_family = "hyper-sd"
    version = "hf-2"  # hf-1 ran the 2/4/8-step LoRAs with TCD and eta 1.0 (the unified 1-step LoRA's recipe)
    default_checkpoint_format = "lora"
    lora_checkpoints: ClassVar[dict[int, str]] = {
        1: f"{HYPER}/Hyper-SDXL-1step-lora.safetensors",
        **{n: f"{HYPER}/Hyper-SDXL-{n}steps-lora.safetensors" for n in (2, 4, 8)},
    }
    # checkpoint_format: unet -> the 1-step UNet, which its card samples with LCMScheduler at timestep 800.
    unet_checkpoints: ClassVar[dict[int, str]] = {1: f"{HYPER}/Hyper-SDXL-1step-Unet.safetensors"}

    def __init__(self, *args: Any, eta: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eta = None if eta is None else float(eta)  # None: the recipe's (TCD: 1.0; DDIM: not passed, 0)
        if self.eta is not None:
            self.user_set["eta"] = self.eta

    def _eta(self, nfe: int) -> float | None:
        if self.eta is not None:
            name, _ = self._scheduler_for(nfe)
            return self.eta if name in ("TCDScheduler", "DDIMScheduler") else None
        return super()._eta(nfe)


class DiffusersODE(DiffusersSampler):
    """Any diffusers pipeline with its own (or a named) scheduler at many steps: the training-free reference."""

    family = "ode"
    default_model = SDXL_BASE
    nfe_support = NFESupport(min=1, max=1000)
    recipe_family = "diffusers-ode"
