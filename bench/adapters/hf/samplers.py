"""Published few-step samplers on diffusers pipelines, configured as their model cards say.

Each class is a registered sampler (entry points in pyproject.toml). Options common to all are documented in
bench.adapters.hf.base.DiffusersSampler and docs/real-models.md; the defaults below are the cards' settings.
A suite's `guidance:` (per sampler) overrides `guidance_scale`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

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


class LCM(_Text2Image):
    """Latent consistency models: LCMScheduler; guidance through the w-embedding (LCM) or low CFG (LCM-LoRA)."""

    family = "lcm"
    default_model = "SimianLuo/LCM_Dreamshaper_v7"
    nfe_support = NFESupport(min=1, max=50)
    scheduler_class = "LCMScheduler"

    def __init__(self, model: str | None = None, lora: str | None = None, guidance_scale: float | None = None,
                 **kwargs: Any) -> None:
        # LCM_Dreamshaper_v7's card samples with guidance 8.0, fed to the UNet's w-embedding (1 evaluation per step);
        # the LCM-LoRA cards say: disable guidance (1.0) or keep it between 1.0 and 2.0 (real CFG, 2 evaluations).
        if guidance_scale is None:
            guidance_scale = 1.0 if lora else 8.0
        if lora and model is None:
            model = SDXL_BASE
        super().__init__(model, lora=lora, guidance_scale=guidance_scale, **kwargs)


class ConsistencyModel(DiffusersSampler):
    """OpenAI consistency models: CMStochasticIterativeScheduler, class-conditional, the card's timesteps per step count."""

    family = "consistency"
    conditioning = "class"
    default_model = "openai/diffusers-cd_imagenet64_l2"
    nfe_support = NFESupport(min=1, max=40)
    # The card's 2-step schedule (from openai/consistency_models scripts/launch.sh); 1 step: the scheduler's.
    default_timesteps: ClassVar[dict[int, list[int]]] = {2: [22, 0]}

    def _pipeline_class(self) -> Any:
        from diffusers import DiffusionPipeline

        return DiffusionPipeline

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
        default = self.unet_prediction_types if self.default_checkpoints_used and self.checkpoint_format == "unet" \
            else {}
        self.step_prediction = {int(k): str(v) for k, v in (prediction_types or default).items()}

    def _scheduler_for(self, nfe: int) -> tuple[str | None, dict[str, Any]]:
        name, overrides = super()._scheduler_for(nfe)
        if nfe in self.step_prediction:
            overrides["prediction_type"] = self.step_prediction[nfe]
        return name, overrides


LIGHTNING = "ByteDance/SDXL-Lightning"


class SDXLLightning(_StepDistilledSDXL):
    """SDXL-Lightning (progressive adversarial distillation): step-specific UNets / LoRAs, Euler on trailing timesteps, no CFG."""

    family = "adversarial"
    scheduler_class = "EulerDiscreteScheduler"
    scheduler_overrides: ClassVar[dict[str, Any]] = {"timestep_spacing": "trailing"}
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
    default_checkpoint_format = "lora"
    lora_checkpoints: ClassVar[dict[int, str]] = {
        1: f"{HYPER}/Hyper-SDXL-1step-lora.safetensors",
        **{n: f"{HYPER}/Hyper-SDXL-{n}steps-lora.safetensors" for n in (2, 4, 8)},
    }
    # checkpoint_format: unet -> the 1-step UNet, which its card samples with LCMScheduler at timestep 800.
    unet_checkpoints: ClassVar[dict[int, str]] = {1: f"{HYPER}/Hyper-SDXL-1step-Unet.safetensors"}

    def __init__(self, *args: Any, eta: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eta = float(eta)  # the card's value; lower eta gives more detail at more steps
        if self.checkpoint_format == "unet":
            self.scheduler_name = kwargs.get("scheduler") or "LCMScheduler"
            self.timesteps = {1: [800], **self.timesteps}

    def _call_kwargs(self, req: SampleRequest) -> dict[str, Any]:
        kwargs = super()._call_kwargs(req)
        if self.scheduler_name == "TCDScheduler":
            kwargs["eta"] = self.eta
        return kwargs


class DiffusersODE(DiffusersSampler):
    """Any diffusers pipeline with its own (or a named) scheduler at many steps: the training-free reference."""

    family = "ode"
    default_model = SDXL_BASE
    nfe_support = NFESupport(min=1, max=1000)
