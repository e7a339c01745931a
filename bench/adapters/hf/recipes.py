"""Real-model recipes as data: how each published checkpoint is sampled, per step count, with its source.

One table per model family. A row says how its authors run one checkpoint (a pipeline, a full UNet or a LoRA)
at some step counts: scheduler class and config overrides, explicit timesteps, eta, guidance, prediction type,
resolution, dtype / variant and LoRA scale, and where that was read (card or file URL, commit or date).
`bench recipes` prints every table.

A recipe is keyed on what is loaded, never on whether the user overrode a path. For one step count the row is
the first of these that applies:
  1. name      the loaded file / model has the published name (`sdxl_lightning_1step_unet_x0.safetensors`,
               a local copy included; `diffusers-` and `openai/` prefixes are ignored for pipelines);
  2. config    the loaded pipeline's own config identifies it (consistency models: the scheduler's number of
               training steps and whether the UNet is class-conditional), when every row it matches agrees;
  3. step      a step-specific checkpoint with another name (a renamed local file, a tiny test file) is taken
               to be the published one for the step count it is mapped to (`checkpoints: {1: ...}` in unet
               format is the 1-step UNet).
Options the user sets (scheduler, scheduler_config, timesteps, eta, prediction_types, guidance) override the row;
the cell's provenance records the row's id, how it matched and which fields were overridden.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Sources (the URL of the card or file, and the commit read; dates are when a session read it).
LIGHTNING_CARD = "https://huggingface.co/ByteDance/SDXL-Lightning/blob/59acc6c9b8d0697c2c1b05d50231637e0930aa87/README.md"
HYPER_CARD = "https://huggingface.co/ByteDance/Hyper-SD/blob/831b8638bb0189829f00a87958b6a5fae15d92bc/README.md"
DMD2_CARD = "https://huggingface.co/tianweiy/DMD2 (README)"
TURBO_CARD = "https://huggingface.co/stabilityai/sdxl-turbo (README)"
LCM_CARD = "https://huggingface.co/SimianLuo/LCM_Dreamshaper_v7 (README)"
LCM_LORA_SDXL_CARD = "https://huggingface.co/latent-consistency/lcm-lora-sdxl (README)"
LCM_LORA_SD15_CARD = "https://huggingface.co/latent-consistency/lcm-lora-sdv1-5 (README)"
SDXL_CARD = "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0 (README)"
CM_LAUNCH = "https://github.com/openai/consistency_models/blob/e32b69ee436d518377db86fb2127a3972d0d8716/scripts/launch.sh"
CM_CONVERT = ("https://github.com/huggingface/diffusers/blob/0240407868440682e57e0a1f130b3aefbbfe53e6/"
              "scripts/convert_consistency_to_diffusers.py")
ISSUE_18 = "checked against the card for issue 18 (2026-11)"


@dataclass(frozen=True)
class Recipe:
    id: str  # family/what-is-loaded/steps, unique
    family: str  # the table: the adapter's name
    loads: str  # what is loaded: a published file, LoRA or pipeline (hub spec)
    format: str  # pipeline | unet | lora
    steps: tuple[int, ...]  # step counts the row covers; () = any
    scheduler: str | None = None  # diffusers class; None: the pipeline's own
    scheduler_config: Mapping[str, Any] = field(default_factory=dict)  # from_config overrides
    timesteps: tuple[int, ...] | None = None  # explicit timesteps (diffusers `timesteps=`); None: num_inference_steps
    eta: float | None = None  # passed to the pipeline call; None: not passed (the scheduler's default)
    guidance: float | None = None  # guidance_scale; None: the pipeline's default
    resolution: int | None = None  # the card's image size (a suite's resolution axis decides what runs)
    dtype: str = "float16"
    variant: str | None = "fp16"
    lora_scale: float | None = None  # fuse_lora(lora_scale=...) for a LoRA row
    identify: Mapping[str, Any] = field(default_factory=dict)  # config values that identify the loaded model
    fallback: bool = False  # a file / model of another name covering these steps is taken to be this one
    source: str = ""
    read: str = ""  # commit or date read
    note: str = ""

    @property
    def prediction_type(self) -> str | None:
        v = self.scheduler_config.get("prediction_type")
        return str(v) if v is not None else None

    def as_provenance(self) -> dict[str, Any]:
        return {"id": self.id, "loads": self.loads, "scheduler": self.scheduler,
                "scheduler_config": dict(self.scheduler_config),
                "timesteps": list(self.timesteps) if self.timesteps is not None else None, "eta": self.eta,
                "guidance": self.guidance, "source": self.source, "read": self.read}


def _steps(*n: int) -> tuple[int, ...]:
    return tuple(n)


# ------------------------------------------------------------------------------------------- SDXL-Lightning
_LIGHTNING = "ByteDance/SDXL-Lightning"
_EULER_TRAILING = {"timestep_spacing": "trailing"}
SDXL_LIGHTNING: tuple[Recipe, ...] = (
    Recipe("sdxl-lightning/unet-1step-x0", "sdxl-lightning", f"{_LIGHTNING}/sdxl_lightning_1step_unet_x0.safetensors",
           "unet", _steps(1), "EulerDiscreteScheduler", {**_EULER_TRAILING, "prediction_type": "sample"},
           guidance=0.0, resolution=1024, fallback=True, source=LIGHTNING_CARD, read="59acc6c",
           note="1-step UNet predicts x0 (card: prediction_type='sample'); 'more experimental'"),
    *(Recipe(f"sdxl-lightning/unet-{n}step", "sdxl-lightning", f"{_LIGHTNING}/sdxl_lightning_{n}step_unet.safetensors",
             "unet", _steps(n), "EulerDiscreteScheduler", dict(_EULER_TRAILING), guidance=0.0, resolution=1024,
             fallback=True, source=LIGHTNING_CARD, read="59acc6c") for n in (2, 4, 8)),
    *(Recipe(f"sdxl-lightning/lora-{n}step", "sdxl-lightning", f"{_LIGHTNING}/sdxl_lightning_{n}step_lora.safetensors",
             "lora", _steps(n), "EulerDiscreteScheduler", dict(_EULER_TRAILING), guidance=0.0, resolution=1024,
             lora_scale=1.0, fallback=True, source=LIGHTNING_CARD, read="59acc6c") for n in (2, 4, 8)),
)

# ------------------------------------------------------------------------------------------------- Hyper-SD
_HYPER = "ByteDance/Hyper-SD"
# Row order matters for rule 3 (step): the step-specific LoRAs come before the unified one, which covers any steps.
HYPER_SD: tuple[Recipe, ...] = (
    *(Recipe(f"hyper-sd/lora-{n}step", "hyper-sd", f"{_HYPER}/Hyper-SDXL-{n}steps-lora.safetensors", "lora",
             _steps(n), "DDIMScheduler", {"timestep_spacing": "trailing"}, guidance=0.0, resolution=1024,
             lora_scale=1.0, fallback=True, source=HYPER_CARD, read="831b863",
             note="card: DDIMScheduler.from_config(..., timestep_spacing='trailing'), guidance 0, no eta (0)")
      for n in (2, 4, 8)),
    Recipe("hyper-sd/lora-1step-unified", "hyper-sd", f"{_HYPER}/Hyper-SDXL-1step-lora.safetensors", "lora", (),
           "TCDScheduler", {}, eta=1.0, guidance=0.0, resolution=1024, lora_scale=1.0, fallback=True,
           source=HYPER_CARD, read="831b863",
           note="unified LoRA, any step count; card: eta=1.0, 'lower eta results in more detail' at more steps"),
    Recipe("hyper-sd/unet-1step", "hyper-sd", f"{_HYPER}/Hyper-SDXL-1step-Unet.safetensors", "unet", _steps(1),
           "LCMScheduler", {}, timesteps=(800,), guidance=0.0, resolution=1024, fallback=True,
           source=HYPER_CARD, read="831b863", note="card: LCMScheduler, timesteps=[800]"),
)

# ----------------------------------------------------------------------------------------------------- DMD2
_DMD2 = "tianweiy/DMD2"
DMD2: tuple[Recipe, ...] = (
    Recipe("dmd2/unet-1step", "dmd2", f"{_DMD2}/dmd2_sdxl_1step_unet_fp16.bin", "unet", _steps(1), "LCMScheduler",
           {}, timesteps=(399,), guidance=0.0, resolution=1024, fallback=True, source=DMD2_CARD,
           read=ISSUE_18),
    Recipe("dmd2/unet-4step", "dmd2", f"{_DMD2}/dmd2_sdxl_4step_unet_fp16.bin", "unet", _steps(4), "LCMScheduler",
           {}, timesteps=(999, 749, 499, 249), guidance=0.0, resolution=1024, fallback=True,
           source=DMD2_CARD, read=ISSUE_18),
    Recipe("dmd2/lora-4step", "dmd2", f"{_DMD2}/dmd2_sdxl_4step_lora_fp16.safetensors", "lora", _steps(4),
           "LCMScheduler", {}, timesteps=(999, 749, 499, 249), guidance=0.0, resolution=1024, lora_scale=1.0,
           fallback=True, source=DMD2_CARD, read=ISSUE_18),
)

# ----------------------------------------------------------------------------------------------- SDXL-Turbo
SDXL_TURBO: tuple[Recipe, ...] = (
    Recipe("sdxl-turbo/pipeline", "sdxl-turbo", "stabilityai/sdxl-turbo", "pipeline", _steps(1, 2, 3, 4),
           "EulerAncestralDiscreteScheduler", {"timestep_spacing": "trailing"}, guidance=0.0, resolution=512,
           fallback=True, source=TURBO_CARD, read=ISSUE_18, note="the repository's own scheduler config; guidance_scale=0.0"),
)

# ------------------------------------------------------------------------------------------------------ LCM
LCM_TABLE: tuple[Recipe, ...] = (
    Recipe("lcm/dreamshaper-v7", "lcm", "SimianLuo/LCM_Dreamshaper_v7", "pipeline", (), "LCMScheduler", {},
           guidance=8.0, resolution=768, dtype="float32", variant=None, fallback=True, source=LCM_CARD, read=ISSUE_18,
           note="guidance through the UNet's w-embedding: 1 evaluation per step"),
    Recipe("lcm/lora-sdxl", "lcm", "latent-consistency/lcm-lora-sdxl", "lora", (), "LCMScheduler", {},
           guidance=1.0, resolution=1024, lora_scale=1.0, fallback=True, source=LCM_LORA_SDXL_CARD, read=ISSUE_18,
           note="guidance <= 1 disables CFG; 1-2 real CFG (2 evaluations per step)"),
    Recipe("lcm/lora-sd15", "lcm", "latent-consistency/lcm-lora-sdv1-5", "lora", (), "LCMScheduler", {},
           guidance=1.0, resolution=512, lora_scale=1.0, source=LCM_LORA_SD15_CARD, read=ISSUE_18,
           note="guidance <= 1 disables CFG"),
)

# --------------------------------------------------------------------------------------- consistency models
_CD40 = {"num_train_timesteps": 40}
_IMAGENET = {"class_conditional": True}
_LSUN = {"class_conditional": False}


def _cm(name: str, ts2: int | None, train_steps: int, classes: bool, resolution: int) -> tuple[Recipe, ...]:
    ident = {"num_train_timesteps": train_steps, **(_IMAGENET if classes else _LSUN)}
    one = Recipe(f"consistency-model/{name}/1step", "consistency-model", f"openai/diffusers-{name}", "pipeline",
                 _steps(1), "CMStochasticIterativeScheduler", {}, resolution=resolution, identify=ident,
                 source=CM_CONVERT, read="0240407", note=f"scheduler: {train_steps} training steps",
                 dtype="float16", variant=None)
    if ts2 is None:
        return (one,)
    two = Recipe(f"consistency-model/{name}/2step", "consistency-model", f"openai/diffusers-{name}", "pipeline",
                 _steps(2), "CMStochasticIterativeScheduler", {}, timesteps=(ts2, 0), resolution=resolution,
                 identify=ident, source=CM_LAUNCH, read="e32b69e",
                 note=f"--ts 0,{ts2},{train_steps - 1} --steps {train_steps}", variant=None)
    return one, two


CONSISTENCY: tuple[Recipe, ...] = (
    *_cm("cd_imagenet64_l2", 22, 40, True, 64),
    *_cm("cd_imagenet64_lpips", 22, 40, True, 64),
    *_cm("ct_imagenet64", 106, 201, True, 64),
    *_cm("cd_bedroom256_l2", 18, 40, False, 256),
    *_cm("cd_bedroom256_lpips", 17, 40, False, 256),
    *_cm("ct_bedroom256", 67, 151, False, 256),
    *_cm("ct_cat256", 62, 151, False, 256),
    *_cm("cd_cat256_l2", None, 40, False, 256),
    *_cm("cd_cat256_lpips", None, 40, False, 256),
)

# --------------------------------------------------------------------------------------- teacher reference
DIFFUSERS_ODE: tuple[Recipe, ...] = (
    Recipe("diffusers-ode/sdxl-base", "diffusers-ode", "stabilityai/stable-diffusion-xl-base-1.0", "pipeline", (),
           None, {}, resolution=1024, fallback=True, source=SDXL_CARD, read=ISSUE_18,
           note="the pipeline's own scheduler (Euler) and default guidance (5.0); steps are the sweep's"),
)

TABLES: dict[str, tuple[Recipe, ...]] = {
    "sdxl-turbo": SDXL_TURBO, "lcm": LCM_TABLE, "consistency-model": CONSISTENCY, "sdxl-lightning": SDXL_LIGHTNING,
    "dmd2": DMD2, "hyper-sd": HYPER_SD, "diffusers-ode": DIFFUSERS_ODE,
}


def all_recipes() -> list[Recipe]:
    return [r for rows in TABLES.values() for r in rows]


# ------------------------------------------------------------------------------------------------ matching
def _name(spec: str) -> str:
    """The comparable name of a spec: its last path part, lower case, without the `diffusers-` prefix."""
    tail = str(spec).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    if tail.startswith("tiny:"):
        tail = tail[len("tiny:"):]
    tail = tail.lower()
    return tail[len("diffusers-"):] if tail.startswith("diffusers-") else tail


def _covers(row: Recipe, steps: int) -> bool:
    return not row.steps or steps in row.steps


_APPLIED = ("scheduler", "scheduler_config", "timesteps", "eta", "guidance", "lora_scale")


def _same_effect(rows: Sequence[Recipe]) -> bool:
    first = rows[0]
    return all(all(getattr(r, k) == getattr(first, k) for k in _APPLIED) for r in rows[1:])


@dataclass(frozen=True)
class Match:
    recipe: Recipe | None
    how: str  # name | config | step | none
    reason: str = ""


def match(family: str, loaded: str | None, fmt: str, steps: int,
          config: Mapping[str, Any] | None = None) -> Match:
    """The recipe row for `steps` steps of what is loaded (`loaded`: the checkpoint / LoRA / model spec)."""
    rows = [r for r in TABLES.get(family, ()) if r.format == fmt]
    if loaded:
        name = _name(loaded)
        named = [r for r in rows if _name(r.loads) == name and _covers(r, steps)]
        if named:
            return Match(named[0], "name")
        if any(_name(r.loads) == name for r in rows):
            return Match(None, "none", f"{loaded} has no published recipe at {steps} steps")
    if config:
        ident = [r for r in rows if r.identify and _covers(r, steps)
                 and all(config.get(k) == v for k, v in r.identify.items())]
        if ident and _same_effect(ident):
            return Match(ident[0], "config")
        if ident:
            return Match(None, "none", f"the loaded config fits {len(ident)} rows that differ at {steps} steps "
                                       f"({', '.join(r.id for r in ident)}): name the model or set `timesteps`")
    fallback = [r for r in rows if r.fallback and _covers(r, steps)]
    if fallback:
        return Match(fallback[0], "step")
    return Match(None, "none", f"no {family} recipe for {fmt} {loaded or ''} at {steps} steps".replace("  ", " "))


# ------------------------------------------------------------------------------------------------- display
def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()) or "-"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(str(x) for x in v) + "]" if v else "any"
    return str(v)


def format_tables(family: str | None = None) -> str:
    """Every table (or one family's) as text: one block per row, for `bench recipes`."""
    out: list[str] = []
    for fam, rows in TABLES.items():
        if family and fam != family:
            continue
        out.append(f"{fam}")
        for r in rows:
            out.append(f"  {r.id}")
            out.append(f"    loads      {r.format}: {r.loads}")
            out.append(f"    steps      {_fmt(r.steps)}")
            out.append(f"    scheduler  {r.scheduler or 'pipeline default'} ({_fmt(dict(r.scheduler_config))})")
            out.append(f"    timesteps  {_fmt(r.timesteps) if r.timesteps else 'scheduler (num_inference_steps)'}"
                       f"   eta {_fmt(r.eta)}   guidance {_fmt(r.guidance)}"
                       f"   prediction {r.prediction_type or 'scheduler config'}")
            out.append(f"    runs at    {r.resolution or '-'} px, {r.dtype}"
                       f"{', variant ' + r.variant if r.variant else ''}"
                       f"{', lora_scale ' + _fmt(r.lora_scale) if r.lora_scale is not None else ''}")
            if r.identify:
                out.append(f"    identify   {_fmt(dict(r.identify))}")
            out.append(f"    source     {r.source} (read: {r.read})")
            if r.note:
                out.append(f"    note       {r.note}")
    return "\n".join(out)
