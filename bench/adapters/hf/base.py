"""What every diffusers-backed sampler shares: loading (offline first), hardware settings, seeds, checkpoints.

- Weights: `model:` is a local folder, a Hugging Face id (from the local cache unless `local_files_only: false`)
  or `tiny:<kind>`; see bench.adapters.hf.weights.
- Hardware: dtype and device from the cell's hardware spec; `compile=true` compiles the denoiser's forward with
  torch.compile (hooks stay outside the compiled code, so NFE is still counted); the attention backend comes
  from the hardware spec's `attention` entry when it has one, else the sampler option `attention`.
- NFE: `networks()` is the UNet / transformer, so the harness's hooks count every call; a classifier-free
  guidance batch that is doubled counts 2 per image.
- Seeds: image i starts from `per_image_noise(seeds)[i]` (the harness's common random numbers) passed as
  `latents`, and every stochastic step of the scheduler draws from its own per-image generator (stream 1 of
  the same seed), so image i depends only on its seed, never on batch size.
- Step-specific checkpoints (SDXL-Lightning, DMD2, Hyper-SD publish one UNet or LoRA per step count): the
  one for the requested steps is put in place before sampling; base weights are restored exactly in between.
- Recipes: how the authors sample what is loaded (scheduler and config, timesteps, eta, guidance, LoRA scale)
  comes from the family's table in bench.adapters.hf.recipes, keyed on the loaded checkpoint / LoRA / model;
  options the user sets override a row's fields; `provenance_for(nfe)` records the row used.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch

from bench.adapters.hf import recipes
from bench.adapters.hf.weights import Resolved, load_state_dict, resolve_file, resolve_model
from bench.adapters.protocol import NFESupport, SampleRequest, SamplerInfo, per_image_noise
from bench.errors import BenchError
from bench.hardware import HardwareSpec

STEP_NOISE_STREAM = 1  # per_image_noise stream 0 is the initial noise; scheduler noise uses stream 1


def step_generators(seeds: Sequence[int], stream: int = STEP_NOISE_STREAM) -> list[torch.Generator]:
    """One CPU generator per image for the scheduler's stochastic steps (the seeding rule's stream `stream`)."""
    from bench.runtime import image_generators

    return image_generators(seeds, stream, "cpu")


def _int_keys(mapping: Mapping[Any, Any] | None, option: str) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for k, v in (mapping or {}).items():
        try:
            out[int(k)] = v
        except (TypeError, ValueError):
            raise BenchError(f"option `{option}`: keys must be step counts (integers), got {k!r}") from None
    return out


def _quiet() -> None:
    """diffusers / transformers progress bars and advisory warnings would flood the run log."""
    try:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
    except ImportError:
        pass
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:
        pass


def require_diffusers() -> None:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise BenchError("this sampler needs diffusers: pip install -e '.[diffusers]' "
                         "(diffusers, transformers, accelerate, peft)") from None


class DiffusersSampler:
    """A diffusers pipeline as a sampler. Subclasses set the class attributes and `_call_kwargs`."""

    family = "ode"
    conditioning = "text"
    default_model = "stabilityai/stable-diffusion-xl-base-1.0"
    default_guidance: float | None = None  # None: the pipeline's own default
    nfe_support = NFESupport(min=1, max=1000)
    scheduler_class: str | None = None  # None: keep the pipeline's scheduler
    scheduler_overrides: ClassVar[dict[str, Any]] = {}
    unet_checkpoints: ClassVar[dict[int, str]] = {}  # step count -> published full-UNet checkpoint (spec)
    lora_checkpoints: ClassVar[dict[int, str]] = {}  # step count -> published LoRA (spec)
    default_checkpoint_format = "unet"  # unet | lora
    default_timesteps: ClassVar[dict[int, list[int]]] = {}
    recipe_family: str | None = None  # the table of bench.adapters.hf.recipes this adapter reads
    version = "hf-2"  # 2: scheduler noise streams seeded by bench.runtime.noise_seed (a hash)

    def __init__(self, model: str | None = None, *, variant: str | None = None, revision: str | None = None,
                 local_files_only: bool = True, guidance_scale: float | None = None, scheduler: str | None = None,
                 scheduler_config: dict[str, Any] | None = None, timesteps: dict[Any, list[int]] | None = None,
                 checkpoints: dict[Any, str] | str | None = None, checkpoint_format: str | None = None,
                 lora: str | None = None, lora_scale: float | None = None, attention: str | None = None,
                 compile_mode: str = "default", call_options: dict[str, Any] | None = None,
                 negative_prompt: str | None = None) -> None:
        self.model = str(model or self.default_model)
        self.variant, self.revision, self.local_files_only = variant, revision, bool(local_files_only)
        self.guidance_scale = self.default_guidance if guidance_scale is None else float(guidance_scale)
        self.scheduler_name = scheduler or self.scheduler_class
        self.scheduler_config = dict(self.scheduler_overrides) | dict(scheduler_config or {})
        self.timesteps = {**self.default_timesteps, **_int_keys(timesteps, "timesteps")}
        # What the user set (overrides a recipe row's field); the class defaults above apply without a row.
        self.user_set: dict[str, Any] = {
            k: v for k, v in (("scheduler", scheduler), ("scheduler_config", dict(scheduler_config or {}) or None),
                              ("timesteps", _int_keys(timesteps, "timesteps") or None),
                              ("guidance", guidance_scale), ("lora_scale", lora_scale)) if v is not None}
        fmt = checkpoint_format or self.default_checkpoint_format
        if fmt not in ("unet", "lora"):
            raise BenchError(f"option `checkpoint_format` must be unet or lora, got {fmt!r}")
        self.checkpoint_format = fmt
        if isinstance(checkpoints, str):  # one checkpoint for every step count
            self.checkpoints: dict[int, str] | str = checkpoints
        else:
            self.checkpoints = _int_keys(checkpoints, "checkpoints") if checkpoints is not None else \
                dict(self.lora_checkpoints if fmt == "lora" else self.unet_checkpoints)
        self.default_checkpoints_used = checkpoints is None
        self.lora = lora
        self.lora_scale = float(lora_scale) if lora_scale is not None else None
        self.attention, self.compile_mode = attention, compile_mode
        self.call_options = dict(call_options or {})
        self.negative_prompt = negative_prompt
        nfe = self.nfe_support
        if isinstance(self.checkpoints, dict) and self.checkpoints:
            nfe = NFESupport(values=frozenset(self.checkpoints))
        self.info = SamplerInfo(
            family=self.family, nfe=nfe, conditioning=self.conditioning,
            description=(self.__doc__ or "").strip().splitlines()[0] if self.__doc__ else "",
            version=f"{self.version}-{type(self).__name__}",
        )
        self.pipe: Any = None
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self._active: tuple[str, str] | None = None  # (format, spec) of the checkpoint in place
        self._base_weights: dict[str, dict[str, torch.Tensor]] | None = None
        self._sched_key: Any = None
        self._base_sched_config: Any = None
        self._model_config: dict[str, Any] = {}
        self._matches: dict[int, recipes.Match] = {}
        self.provenance: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------- weights
    def weights_needed(self) -> Iterable[tuple[str, str]]:
        """(spec, kind) of every model / file this sampler reads: for `bench doctor` and docs."""
        yield self.model, "model"
        if self.lora:
            yield self.lora, "file" if self.lora.endswith((".safetensors", ".bin")) else "lora"
        if isinstance(self.checkpoints, str):
            yield self.checkpoints, "file"
        else:
            for spec in self.checkpoints.values():
                yield spec, "file"

    def _lora_ref(self, spec: str, option: str) -> Resolved:
        # A LoRA is a file, or a folder / repository holding pytorch_lora_weights.safetensors.
        if spec.endswith((".safetensors", ".bin")):
            return resolve_file(spec, option, self.local_files_only)
        return resolve_model(spec, option, self.local_files_only)

    # --------------------------------------------------------------------------------------------- load
    def _pipeline_class(self) -> Any:
        from diffusers import DiffusionPipeline

        return DiffusionPipeline

    def _load_pipeline(self, ref: Resolved) -> Any:
        kwargs: dict[str, Any] = {"torch_dtype": self.dtype, "local_files_only": ref.local}
        if self.variant:
            kwargs["variant"] = self.variant
        if self.revision and not ref.local:
            kwargs["revision"] = self.revision
        if self.conditioning == "text":
            kwargs.update(safety_checker=None, requires_safety_checker=False)  # benchmarking: never black out images
        cls = self._pipeline_class()
        with warnings.catch_warnings():  # newer diffusers renamed torch_dtype to dtype; older ones know only this
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            try:
                return cls.from_pretrained(ref.ref, **kwargs)
            except TypeError:  # a pipeline without a safety checker refuses those keywords
                kwargs.pop("safety_checker", None)
                kwargs.pop("requires_safety_checker", None)
                return cls.from_pretrained(ref.ref, **kwargs)

    def load(self, hw: HardwareSpec) -> None:
        require_diffusers()
        _quiet()
        self.device, self.dtype = hw.torch_device(), hw.torch_dtype()
        ref = resolve_model(self.model, "model", self.local_files_only, self.revision)
        # Resolve every file first: a missing checkpoint fails here, in one line, before anything is loaded.
        files = self.checkpoints.values() if isinstance(self.checkpoints, dict) else [self.checkpoints]
        for spec in files:
            if self.checkpoint_format == "lora":
                self._lora_ref(spec, "checkpoints")
            else:
                resolve_file(spec, "checkpoints", self.local_files_only)
        lora_ref = self._lora_ref(self.lora, "lora") if self.lora else None
        pipe = self._load_pipeline(ref)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        if lora_ref is not None:
            self._apply_lora(pipe, lora_ref, self._lora_scale(self._loaded_match(self.lora or "", "lora", 0)))
        pipe.to(self.device)
        self.pipe = pipe
        self._base_sched_config = pipe.scheduler.config
        self._model_config = self._identity(pipe)
        self._matches.clear()
        self._set_attention(hw)
        if hw.compile:
            net = self.denoiser()
            net.forward = torch.compile(net.forward, mode=self.compile_mode)  # hooks stay outside
        self.provenance = {"model": ref.source, "pipeline": type(pipe).__name__, "lora": lora_ref.source if lora_ref
                           else None, "dtype": str(self.dtype), "device": str(self.device), "compile": hw.compile}

    def _apply_lora(self, pipe: Any, ref: Resolved, scale: float | None = None) -> None:
        path = ref.ref
        kwargs: dict[str, Any] = {"local_files_only": True} if ref.local else {}
        if os.path.isfile(path):
            kwargs["weight_name"] = os.path.basename(path)
            path = os.path.dirname(path)
        pipe.load_lora_weights(path, **kwargs)
        pipe.fuse_lora(lora_scale=1.0 if scale is None else float(scale))
        pipe.unload_lora_weights()  # fused into the weights: no LoRA layers left to slow the forward down

    def _set_attention(self, hw: HardwareSpec) -> None:
        backend = dict(hw.extra).get("attention") or self.attention
        if not backend or backend in ("sdpa", "default"):
            return
        net = self.denoiser()
        if backend == "xformers":
            self.pipe.enable_xformers_memory_efficient_attention()
        elif hasattr(net, "set_attention_backend"):
            net.set_attention_backend(backend)
        else:
            raise BenchError(f"attention backend {backend!r} needs a diffusers version with set_attention_backend")

    def denoiser(self) -> Any:
        net = getattr(self.pipe, "unet", None) or getattr(self.pipe, "transformer", None)
        if net is None:
            raise BenchError(f"{type(self.pipe).__name__} has no unet or transformer to count NFE on")
        return net

    def networks(self) -> Sequence[torch.nn.Module]:
        return [self.denoiser()] if self.pipe is not None else []

    # ------------------------------------------------------------------------------ per-step set-up
    def _checkpoint_for(self, nfe: int) -> str | None:
        if isinstance(self.checkpoints, str):
            return self.checkpoints
        if not self.checkpoints:
            return None
        if nfe not in self.checkpoints:
            raise BenchError(f"no checkpoint for {nfe} steps (have {sorted(self.checkpoints)})")
        return self.checkpoints[nfe]

    def _distinct_checkpoints(self) -> set[str]:
        return {self.checkpoints} if isinstance(self.checkpoints, str) else set(self.checkpoints.values())

    def _use_checkpoint(self, nfe: int) -> None:
        """Put the checkpoint for `nfe` steps in place. A full UNet replaces every weight (strict); a LoRA is
        fused into the base weights, which are kept on CPU and restored exactly before another LoRA is fused,
        so an image never depends on which cells this worker ran before."""
        spec = self._checkpoint_for(nfe)
        want = (self.checkpoint_format, spec) if spec else None
        if want == self._active:
            return
        if self.checkpoint_format == "lora" and self._active is not None:
            if self._base_weights is None:
                raise RuntimeError("internal: a fused LoRA must be replaced but base weights were not kept")
            for name, sd in self._base_weights.items():
                getattr(self.pipe, name).load_state_dict(sd)
        if want is not None:
            if self.checkpoint_format == "unet":
                net = self.denoiser()
                sd = load_state_dict(resolve_file(want[1], "checkpoints", self.local_files_only).ref)
                missing, unexpected = net.load_state_dict(sd, strict=False)
                if missing or unexpected:
                    raise BenchError(f"checkpoint {want[1]} does not fit the UNet of {self.model}: "
                                     f"{len(missing)} missing, {len(unexpected)} unexpected keys")
            else:
                if self._base_weights is None and len(self._distinct_checkpoints()) > 1:
                    self._base_weights = {
                        name: {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
                        for name, module in self.pipe.components.items() if isinstance(module, torch.nn.Module)
                    }
                self._apply_lora(self.pipe, self._lora_ref(want[1], "checkpoints"), self._lora_scale(self.recipe_for(nfe)))
        self._active = want

    # --------------------------------------------------------------------------------------------- recipes
    def _identity(self, pipe: Any) -> dict[str, Any]:
        """Config values of the loaded pipeline that identify it when its name does not (recipes' `identify`)."""
        return {"num_train_timesteps": getattr(pipe.scheduler.config, "num_train_timesteps", None)}

    def _loaded(self, nfe: int) -> tuple[str | None, str]:
        """(spec, format) of what decides the recipe at `nfe` steps: the step's checkpoint, the LoRA, or the model."""
        spec = self._checkpoint_for(nfe)
        if spec:
            return spec, self.checkpoint_format
        if self.lora:
            return self.lora, "lora"
        return self.model, "pipeline"

    def _loaded_match(self, spec: str, fmt: str, nfe: int) -> recipes.Match:
        if self.recipe_family is None:
            return recipes.Match(None, "none", "this adapter has no recipe table")
        return recipes.match(self.recipe_family, spec, fmt, nfe, self._model_config or None)

    def recipe_for(self, nfe: int) -> recipes.Match:
        """The recipe row for `nfe` steps of what is loaded (see bench.adapters.hf.recipes), cached per step count."""
        if nfe not in self._matches:
            spec, fmt = self._loaded(nfe)
            self._matches[nfe] = self._loaded_match(spec or "", fmt, nfe)
        return self._matches[nfe]

    def _lora_scale(self, m: recipes.Match) -> float | None:
        if self.lora_scale is not None:
            return self.lora_scale
        return m.recipe.lora_scale if m.recipe is not None else None

    def provenance_for(self, nfe: int) -> dict[str, Any]:
        """What a cell at `nfe` steps ran: load provenance plus the recipe row and the fields the user overrode."""
        m = self.recipe_for(nfe)
        name, overrides = self._scheduler_for(nfe)
        recipe: dict[str, Any] = {"match": m.how, **({"row": m.recipe.as_provenance()} if m.recipe else {}),
                                  **({"reason": m.reason} if m.reason else {}),
                                  "overridden": sorted(self.user_set)}
        ts = self._timestep_kwargs(nfe).get("timesteps")
        return {**self.provenance, "recipe": recipe, "scheduler": name or type(self.pipe.scheduler).__name__,
                "scheduler_config": overrides, "timesteps": ts, "eta": self._eta(nfe),
                "guidance": self.user_set.get("guidance", self._default_guidance(nfe))}

    def _scheduler_for(self, nfe: int) -> tuple[str | None, dict[str, Any]]:
        """Scheduler class name and config overrides for this step count: the recipe row's, else the class
        defaults; what the user set wins (subclasses add step rules)."""
        r = self.recipe_for(nfe).recipe
        if r is None:
            return self.scheduler_name, dict(self.scheduler_config)
        name = self.user_set.get("scheduler") or r.scheduler or self.scheduler_class
        return name, dict(r.scheduler_config) | dict(self.user_set.get("scheduler_config") or {})

    def _eta(self, nfe: int) -> float | None:
        r = self.recipe_for(nfe).recipe
        return r.eta if r is not None else None

    def _default_guidance(self, nfe: int) -> float | None:
        r = self.recipe_for(nfe).recipe
        return r.guidance if r is not None and r.guidance is not None else self.default_guidance

    def _use_scheduler(self, nfe: int) -> None:
        name, overrides = self._scheduler_for(nfe)
        key = (name, sorted(overrides.items()))
        if key == self._sched_key:
            return
        import diffusers

        if name is None:
            cls = type(self.pipe.scheduler)
        else:
            found = getattr(diffusers, name, None)
            if found is None:
                raise BenchError(f"unknown diffusers scheduler {name!r}")
            cls = found
        self.pipe.scheduler = cls.from_config(self._base_sched_config, **overrides)
        self._sched_key = key

    # ------------------------------------------------------------------------------------------- sample
    def _prompts(self, req: SampleRequest) -> list[str]:
        return [str(p) for p in req.prompts] if req.prompts else [""] * len(req)

    def _guidance(self, req: SampleRequest) -> float | None:
        if req.guidance is not None:
            return float(req.guidance)
        if "guidance" in self.user_set:
            return float(self.user_set["guidance"])
        return self._default_guidance(req.nfe)

    def _latent_shape(self, req: SampleRequest) -> tuple[int, int, int]:
        f = int(getattr(self.pipe, "vae_scale_factor", 8))
        if req.height % f or req.width % f:
            raise BenchError(f"resolution {req.height}x{req.width} is not a multiple of the VAE factor {f}")
        return int(self.denoiser().config.in_channels), req.height // f, req.width // f

    def _timestep_kwargs(self, nfe: int) -> dict[str, Any]:
        r = self.recipe_for(nfe).recipe
        user = self.user_set.get("timesteps") or {}
        table = user if nfe in user else ({nfe: list(r.timesteps)} if r is not None and r.timesteps else
                                          {} if r is not None else self.timesteps)
        if nfe in table:
            ts = [int(t) for t in table[nfe]]
            if len(ts) != nfe:
                raise BenchError(f"option `timesteps` for {nfe} steps lists {len(ts)} timesteps")
            return {"timesteps": ts}
        return {"num_inference_steps": nfe}

    def _call_kwargs(self, req: SampleRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "prompt": self._prompts(req), "height": req.height, "width": req.width,
            **self._timestep_kwargs(req.nfe),
        }
        g = self._guidance(req)
        if g is not None:
            kwargs["guidance_scale"] = g
        eta = self._eta(req.nfe)
        if eta is not None:
            kwargs["eta"] = eta
        if self.negative_prompt is not None and (g or 0) > 1:
            kwargs["negative_prompt"] = [self.negative_prompt] * len(req)
        return kwargs

    @torch.no_grad()
    def sample(self, req: SampleRequest) -> torch.Tensor:
        if self.pipe is None:
            raise BenchError("sample() before load()")
        self._use_checkpoint(req.nfe)
        self._use_scheduler(req.nfe)
        kwargs = self._call_kwargs(req)
        latents = per_image_noise(req.seeds, self._latent_shape(req), self.device, self.dtype)
        kwargs.update(latents=latents, generator=step_generators(req.seeds), output_type="pt", return_dict=True)
        kwargs.update(self.call_options)
        images = self.pipe(**kwargs).images
        if not isinstance(images, torch.Tensor) or tuple(images.shape) != (len(req), 3, req.height, req.width):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise BenchError(f"{type(self.pipe).__name__} returned {shape}, expected "
                             f"{(len(req), 3, req.height, req.width)} (does the model support this resolution?)")
        return images.float().clamp(0, 1)
