"""Tiny random-weight pipelines built from configs, for offline tests and `suites/tiny_diffusers.yaml`.

Every adapter of `bench.adapters.hf` accepts `model: tiny:<kind>`; the pipeline is built here once,
deterministically (fixed seeds), saved with `save_pretrained` and then loaded by path like any user's
checkpoint. Kinds:

  sd        StableDiffusionPipeline (tiny UNet2DConditionModel, CLIPTextModel, AutoencoderKL, PNDM) + an LCM-LoRA-style LoRA
  sd-lcm    LatentConsistencyModelPipeline (UNet with a guidance (w) embedding, LCMScheduler)
  sdxl      StableDiffusionXLPipeline (two text encoders, text_time embedding, Euler) + step-specific
            UNet checkpoints and LoRAs (`unet_<n>step.safetensors`, `lora_<n>step.safetensors`)
  cm        ConsistencyModelPipeline (class-conditional UNet2DModel, CMStochasticIterativeScheduler with the
            40 training steps of consistency distillation, CD)
  cm-ct     the same UNet with the 201-step scheduler of consistency training (CT) on ImageNet-64
  flowmap   a generic flow map X_{s,t}(x) in pixel space: safetensors + config.json (flow-map adapter)
  flowmap-latent  an average-velocity u(z, r, t) network in the latent space of a tiny AutoencoderKL

Where: `$BENCH_TINY_DIR/<kind>` if that variable is set, else `~/.cache/flowmap-bench/tiny/<kind>`
(`$XDG_CACHE_HOME` respected). A folder is built atomically (temporary folder + rename), so concurrent
workers never see a half-written pipeline. Regenerate by hand with

    python -m bench.adapters.hf.tiny --out DIR [--kind sd sdxl ...]

The tokenizers are written locally (a byte-level vocabulary of 514 tokens, no merges), so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

TINY_VERSION = 1
ENV_VAR = "BENCH_TINY_DIR"
MARKER = "tiny.json"
KINDS = ("sd", "sd-lcm", "sdxl", "cm", "cm-ct", "flowmap", "flowmap-latent")
LATENT_STEPS = (1, 2, 4, 8)  # step-specific checkpoints written next to the tiny SDXL pipeline
NUM_CLASSES = 1000  # class-conditional tiny models take ImageNet-sized label sets
TINY_CONDITIONING = {"sd": "text", "sd-lcm": "text", "sdxl": "text", "cm": "class", "cm-ct": "class", "flowmap": "class",
                     "flowmap-latent": "none"}  # readable before a model is built (the planner needs it)


def tiny_root() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "flowmap-bench" / "tiny"


# ------------------------------------------------------------------------------------------- components
def _diffusers(name: str) -> Any:
    """A diffusers class by name (diffusers imports lazily; typed Any so the builders stay readable)."""
    import diffusers

    return getattr(diffusers, name)


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def write_tokenizer(folder: Path) -> None:
    """A CLIP tokenizer with a byte-level vocabulary (every byte, alone or word-final) and no merges."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in chars:
            vocab[c + suffix] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tok = CLIPTokenizer.from_pretrained(str(folder), model_max_length=77, local_files_only=True)
    tok.save_pretrained(str(folder))


def _vocab_size() -> int:
    return 2 + 2 * 256


def _text_encoder(seed: int, projection: bool = False) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                         layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2,
                         vocab_size=_vocab_size(), max_position_embeddings=77, projection_dim=32, hidden_act="gelu")
    _seeded(seed)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def _vae(seed: int) -> Any:
    AutoencoderKL = _diffusers("AutoencoderKL")

    _seeded(seed)
    return AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         latent_channels=4, norm_num_groups=8, layers_per_block=1, sample_size=32).eval()


def _unet_sd(seed: int, time_cond_proj_dim: int | None = None) -> Any:
    UNet2DConditionModel = _diffusers("UNet2DConditionModel")

    _seeded(seed)
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8, time_cond_proj_dim=time_cond_proj_dim,
    ).eval()


def _unet_sdxl(seed: int) -> Any:
    UNet2DConditionModel = _diffusers("UNet2DConditionModel")

    _seeded(seed)
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=8 * 6 + 32, cross_attention_dim=64, norm_num_groups=8,
    ).eval()


def _sd_scheduler_config() -> dict[str, Any]:
    return {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
            "steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False}


def _lora_state_dict(unet: Any, seed: int) -> dict[str, torch.Tensor]:
    """A random rank-4 LoRA on the attention projections of `unet` (peft format, as diffusers saves it)."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    _seeded(seed)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    sd = {k: v.detach().clone() for k, v in get_peft_model_state_dict(unet).items()}
    unet.delete_adapters(unet.active_adapters())
    return sd


# ------------------------------------------------------------------------------------------- pipelines
def _build_sd(out: Path) -> None:
    PNDMScheduler = _diffusers("PNDMScheduler")
    StableDiffusionPipeline = _diffusers("StableDiffusionPipeline")
    from transformers import CLIPTokenizer

    write_tokenizer(out / "_tok")
    tok = CLIPTokenizer.from_pretrained(str(out / "_tok"), local_files_only=True)
    pipe = StableDiffusionPipeline(
        unet=_unet_sd(0), text_encoder=_text_encoder(1), tokenizer=tok, vae=_vae(2),
        scheduler=PNDMScheduler.from_config({**_sd_scheduler_config(), "skip_prk_steps": True}),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out), safe_serialization=True)
    shutil.rmtree(out / "_tok")
    lora = _lora_state_dict(_unet_sd(0), seed=10)
    StableDiffusionPipeline.save_lora_weights(str(out / "lcm-lora"), unet_lora_layers=lora,
                                              weight_name="pytorch_lora_weights.safetensors")


def _build_sd_lcm(out: Path) -> None:
    LatentConsistencyModelPipeline = _diffusers("LatentConsistencyModelPipeline")
    LCMScheduler = _diffusers("LCMScheduler")
    from transformers import CLIPTokenizer

    write_tokenizer(out / "_tok")
    tok = CLIPTokenizer.from_pretrained(str(out / "_tok"), local_files_only=True)
    cfg = {**_sd_scheduler_config(), "set_alpha_to_one": True, "original_inference_steps": 50,
           "timestep_spacing": "leading"}
    pipe = LatentConsistencyModelPipeline(
        unet=_unet_sd(3, time_cond_proj_dim=32), text_encoder=_text_encoder(1), tokenizer=tok, vae=_vae(2),
        scheduler=LCMScheduler.from_config(cfg), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out), safe_serialization=True)
    shutil.rmtree(out / "_tok")


def _build_sdxl(out: Path) -> None:
    EulerDiscreteScheduler = _diffusers("EulerDiscreteScheduler")
    StableDiffusionXLPipeline = _diffusers("StableDiffusionXLPipeline")
    from safetensors.torch import save_file
    from transformers import CLIPTokenizer

    write_tokenizer(out / "_tok")
    tok = CLIPTokenizer.from_pretrained(str(out / "_tok"), local_files_only=True)
    sched = EulerDiscreteScheduler.from_config({**_sd_scheduler_config(), "timestep_spacing": "leading",
                                                "interpolation_type": "linear", "use_karras_sigmas": False})
    pipe = StableDiffusionXLPipeline(
        unet=_unet_sdxl(4), text_encoder=_text_encoder(5), text_encoder_2=_text_encoder(6, projection=True),
        tokenizer=tok, tokenizer_2=tok, vae=_vae(2), scheduler=sched, force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(str(out), safe_serialization=True)
    shutil.rmtree(out / "_tok")
    # Step-specific distilled checkpoints (as SDXL-Lightning / DMD2 / Hyper-SD publish them): full UNets and LoRAs.
    for n in LATENT_STEPS:
        unet = _unet_sdxl(100 + n)
        save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(out / f"unet_{n}step.safetensors"))
        lora = _lora_state_dict(_unet_sdxl(4), seed=200 + n)
        StableDiffusionXLPipeline.save_lora_weights(str(out), unet_lora_layers=lora,
                                                    weight_name=f"lora_{n}step.safetensors")
    lora = _lora_state_dict(_unet_sdxl(4), seed=300)
    StableDiffusionXLPipeline.save_lora_weights(str(out / "lcm-lora"), unet_lora_layers=lora,
                                                weight_name="pytorch_lora_weights.safetensors")


# Scheduler configs of the converted OpenAI checkpoints (diffusers scripts/convert_consistency_to_diffusers.py:
# CD_SCHEDULER_CONFIG, CT_IMAGENET_64_SCHEDULER_CONFIG): only the number of training steps differs.
CM_SCHEDULERS = {"cm": {"num_train_timesteps": 40, "sigma_min": 0.002, "sigma_max": 80.0},
                 "cm-ct": {"num_train_timesteps": 201, "sigma_min": 0.002, "sigma_max": 80.0}}


def _build_cm(out: Path, kind: str = "cm") -> None:
    CMStochasticIterativeScheduler = _diffusers("CMStochasticIterativeScheduler")
    ConsistencyModelPipeline = _diffusers("ConsistencyModelPipeline")
    UNet2DModel = _diffusers("UNet2DModel")

    _seeded(7)
    unet = UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "ResnetUpsampleBlock2D"), attention_head_dim=8, norm_num_groups=8,
        resnet_time_scale_shift="scale_shift", num_class_embeds=NUM_CLASSES,
    ).eval()
    sched = CMStochasticIterativeScheduler(**CM_SCHEDULERS[kind])
    ConsistencyModelPipeline(unet=unet, scheduler=sched).save_pretrained(str(out), safe_serialization=True)


class TinyFlowMapNet(torch.nn.Module):
    """A small conv net f(x, s, t, cond): with `residual`, returns x + (t - s) v (a flow map X_{s,t}(x)),
    else the raw output (an average velocity u(z, r, t) when called as f(z, r, t, cond))."""

    def __init__(self, channels: int = 3, width: int = 16, num_classes: int = 0, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.inp = torch.nn.Conv2d(channels, width, 3, padding=1)
        self.time = torch.nn.Linear(2, width)
        self.label = torch.nn.Embedding(num_classes + 1, width) if num_classes else None
        self.mid = torch.nn.Conv2d(width, width, 3, padding=1)
        self.out = torch.nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        s = s.to(x.dtype).reshape(-1).expand(x.shape[0])
        t = t.to(x.dtype).reshape(-1).expand(x.shape[0])
        emb = self.time(torch.stack([s, t], dim=1))
        if self.label is not None:
            labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device) if cond is None else \
                torch.as_tensor(cond, device=x.device).long() + 1
            emb = emb + self.label(labels)
        h = torch.nn.functional.silu(self.inp(x) + emb[:, :, None, None])
        h = torch.nn.functional.silu(self.mid(h))
        v = self.out(h)
        return x + (t - s).view(-1, 1, 1, 1) * v if self.residual else v


def _save_net(out: Path, net: torch.nn.Module, config: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")


def _build_flowmap(out: Path) -> None:
    kwargs: dict[str, Any] = {"channels": 3, "width": 16, "num_classes": NUM_CLASSES, "residual": True}
    _seeded(8)
    net = TinyFlowMapNet(**kwargs)
    _save_net(out, net, {
        "network": "bench.adapters.hf.tiny:TinyFlowMapNet", "kwargs": kwargs, "weights": "model.safetensors",
        "parameterization": "map", "noise_time": 0.0, "data_time": 1.0, "conditioning": "class", "channels": 3,
    })


def _build_flowmap_latent(out: Path) -> None:
    kwargs: dict[str, Any] = {"channels": 4, "width": 16, "num_classes": 0, "residual": False}
    _seeded(9)
    net = TinyFlowMapNet(**kwargs)
    _save_net(out, net, {
        "network": "bench.adapters.hf.tiny:TinyFlowMapNet", "kwargs": kwargs, "weights": "model.safetensors",
        "parameterization": "average_velocity", "noise_time": 1.0, "data_time": 0.0, "conditioning": "none",
        "channels": 4, "latent": {"vae": "vae"},
    })
    _vae(2).save_pretrained(str(out / "vae"), safe_serialization=True)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "sd": _build_sd, "sd-lcm": _build_sd_lcm, "sdxl": _build_sdxl, "cm": _build_cm,
    "cm-ct": lambda out: _build_cm(out, "cm-ct"),
    "flowmap": _build_flowmap, "flowmap-latent": _build_flowmap_latent,
}


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MARKER:
            h.update(str(p.relative_to(folder)).encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def build(kind: str, root: Path | None = None) -> Path:
    """The folder of tiny pipeline `kind` under `root` (default `tiny_root()`), built once and reused."""
    if kind not in BUILDERS:
        from bench.errors import BenchError

        raise BenchError(f"unknown tiny model 'tiny:{kind}' (kinds: {', '.join(KINDS)})")
    root = Path(root) if root is not None else tiny_root()
    target = root / kind
    marker = _marker(target)
    if marker and marker.get("version") == TINY_VERSION:
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{kind}.", dir=root))
    try:
        with torch.random.fork_rng(devices=[]):
            BUILDERS[kind](tmp)
        (tmp / MARKER).write_text(json.dumps({"kind": kind, "version": TINY_VERSION, "sha256": _digest(tmp)}) + "\n")
        if target.exists():  # an older version (or a concurrent builder finished first)
            if (_marker(target) or {}).get("version") == TINY_VERSION:
                return target
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:  # a concurrent builder renamed its copy first
            if (_marker(target) or {}).get("version") != TINY_VERSION:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.adapters.hf.tiny",
                                description="Build the tiny random-weight pipelines used by tests and "
                                            "suites/tiny_diffusers.yaml (offline, deterministic).")
    p.add_argument("--out", default=None, help=f"root folder (default ${ENV_VAR} or ~/.cache/flowmap-bench/tiny)")
    p.add_argument("--kind", nargs="*", default=list(KINDS), choices=KINDS)
    args = p.parse_args(argv)
    root = Path(args.out) if args.out else tiny_root()
    for kind in args.kind:
        path = build(kind, root)
        print(f"{kind}: {path} (sha256 {(_marker(path) or {}).get('sha256', '?')[:16]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
