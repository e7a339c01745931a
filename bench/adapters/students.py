"""Samplers of the embedded students (distilled from the zoo teacher): flow maps, consistency, LCM, Turbo-style.

Every sampler reads one fp16 safetensors file (the shipped zoo weights by name, or `checkpoint: PATH`), whose
metadata says how it samples (parameterisation, training grid, guidance range). Only the U-Net counts as a
network function evaluation; every family below makes exactly one U-Net call per requested step, so
counted NFE = requested steps (LCM's guidance scale is an input, not a doubled batch).

| adapter          | family      | NFE                   | sampling                                                  |
| ---------------- | ----------- | --------------------- | --------------------------------------------------------- |
| zoo-flowmap      | flow_map    | any >= 1              | jumps X_{t_i, t_{i+1}} on a uniform (or shifted) grid     |
| zoo-consistency  | consistency | 1 .. training grid    | denoise, re-noise to the next time (snapped or Karras)    |
| zoo-lcm          | lcm         | 1 .. original_steps   | LCMScheduler's skipping timesteps, w as a condition       |
| zoo-adversarial  | adversarial | counts whose trailing | denoise / re-noise on trailing timesteps                  |
|                  |             | timesteps were trained|                                                           |

Re-noising draws per_image_noise(seeds, ..., offset=k) for step k, so an image's noise depends only on its
seed. Time conventions and their translation to diffusers' schedulers: bench/zoo/students/sampling.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bench.adapters.protocol import NFESupport, SampleRequest, SamplerInfo, per_image_noise
from bench.errors import BenchError, MissingWeightsError
from bench.hardware import HardwareSpec
from bench.runtime import to_uint8
from bench.zoo import checkpoints
from bench.zoo.nets import ShapesTeacher
from bench.zoo.students import models, sampling

SAMPLING_VERSION = "2"  # 2: re-noise streams seeded by a hash (bench.runtime.noise_seed)


def _peek_metadata(path: Path) -> dict[str, Any]:
    """The decoded metadata of a safetensors file (header only; {} if unreadable)."""
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    except Exception:
        return {}


class _ZooStudent:
    """Shared loading, conditioning and noise. Options: `model` (zoo name), `checkpoint` (a path instead of the
    shipped file), `resolutions` (declared capability, default the teacher's training resolutions)."""

    family = ""
    default_model = ""

    def __init__(self, model: str | None = None, checkpoint: str | None = None,
                 resolutions: Sequence[int] = (16, 32)) -> None:
        self.model_name = model or self.default_model
        self.checkpoint = checkpoint
        self.resolutions = tuple(int(r) for r in resolutions)
        path = self._path(must_exist=False)
        self.meta: dict[str, Any] = _peek_metadata(path) if path.is_file() else {}
        digest = checkpoints.sha256(path)[:12] if path.is_file() else "noweights"
        self.info = SamplerInfo(
            family=self.family, nfe=self._nfe(self.meta.get("student", {})), resolutions=self.resolutions,
            conditioning="text", devices=("cpu", "cuda", "mps"), compile=False,
            compile_note="the zoo students' U-Net runs eagerly (the adapter does not compile it)",
            guidance=self._guidance_mode(), guidance_range=self._guidance_range(self.meta.get("student", {})),
            description=(self.__doc__ or "").splitlines()[0], version=f"students-{SAMPLING_VERSION}-{self.model_name}-"
            f"{self._options_key()}-{digest}")
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.model: ShapesTeacher | None = None

    # -- per family
    def _nfe(self, student_meta: dict[str, Any]) -> NFESupport:
        raise NotImplementedError

    def _guidance_mode(self) -> str:
        return "none"  # distilled at one w (the teacher's, recorded in the checkpoint)

    def _guidance_range(self, student_meta: dict[str, Any]) -> tuple[float, float]:
        g = float(student_meta.get("guidance", 1.0))
        return (g, g)

    def _options_key(self) -> str:
        return ""

    def _sample(self, x: torch.Tensor, cond: torch.Tensor, req: SampleRequest) -> torch.Tensor:
        raise NotImplementedError

    # -- protocol
    def _path(self, must_exist: bool = True) -> Path:
        if self.checkpoint:
            path = Path(self.checkpoint).expanduser()
            if must_exist and not path.is_file():
                raise MissingWeightsError(
                    f"student weights not found: {path} (run `bench zoo train {self.model_name}` and point the "
                    f"`checkpoint` option at its output, or drop `checkpoint` to use the shipped file)")
            return path
        return checkpoints.require(self.model_name) if must_exist else checkpoints.weight_path(self.model_name)

    def load(self, hw: HardwareSpec) -> None:
        path = self._path()
        state, meta = checkpoints.load(path)
        if meta.get("family") != self.family:
            raise BenchError(f"{path}: a {meta.get('family')!r} checkpoint, not {self.family!r} "
                             f"(adapter {type(self).__name__})")
        model = ShapesTeacher.from_config(meta["config"])
        model.load_state_dict(state)
        self.use(model, meta, hw.torch_device(), hw.torch_dtype())

    def use(self, model: ShapesTeacher, meta: dict[str, Any], device: Any = "cpu",
            dtype: torch.dtype = torch.float32) -> None:
        """Sample with an in-memory student (what `load` does after reading the file; tests use it too)."""
        self.device, self.dtype = torch.device(device), dtype
        self.meta = meta
        self.info = replace(self.info, nfe=self._nfe(meta.get("student", {})))
        self.model = model.to(self.device, dtype).eval().requires_grad_(False)

    def networks(self) -> Sequence[torch.nn.Module]:
        return [self.model.unet] if self.model is not None else []

    @property
    def unet(self) -> torch.nn.Module:
        if self.model is None:
            raise RuntimeError("load() first")
        return self.model.unet

    @torch.no_grad()
    def sample_float(self, req: SampleRequest) -> torch.Tensor:
        """Samples in model space (float, about [-1, 1])."""
        if self.model is None:
            raise RuntimeError("load() first")
        if not req.prompts:
            raise ValueError(f"{self.model_name} is text-conditioned: the dataset gives no prompts")
        if req.height != req.width or req.height % 4:
            raise ValueError(f"square resolutions divisible by 4 only, not {req.height}x{req.width}")
        if not self.info.nfe.supports(req.nfe):
            raise ValueError(f"{self.model_name}: NFE {req.nfe} not supported ({self.info.nfe.describe()})")
        cond = self.model.text(list(req.prompts)).to(self.dtype)
        x = per_image_noise(req.seeds, (3, req.height, req.width), self.device, self.dtype)
        return self._sample(x, cond, req)

    def sample(self, req: SampleRequest) -> torch.Tensor:
        return to_uint8(self.sample_float(req))

    def _fixed_guidance(self, req: SampleRequest) -> None:
        g = float(self.meta.get("student", {}).get("guidance", 1.0))
        if req.guidance is not None and abs(float(req.guidance) - g) > 1e-9:
            raise ValueError(f"{self.model_name} was distilled at guidance {g}; it cannot sample at guidance "
                             f"{req.guidance} (leave `guidance` unset)")

    def _renoise_fn(self, req: SampleRequest, shape: Sequence[int]) -> sampling.NoiseFn:
        def draw(k: int) -> torch.Tensor:
            return per_image_noise(req.seeds, shape, self.device, self.dtype, offset=k)
        return draw


class ZooFlowMap(_ZooStudent):
    """Embedded flow-map student: X_{s,t}(x) = x + (t - s) v(x, s, t), one jump per step on a uniform grid.

    Options: `model` (flowmap-lmd | flowmap-meanflow | flowmap-lsd), `shift` (grid warp in sigma = 1 - t as the
    teacher's solvers use it; 1 = uniform), `checkpoint`, `resolutions`.
    """

    family = "flow_map"
    default_model = "flowmap-lmd"

    def __init__(self, model: str | None = None, shift: float = 1.0, **kwargs: Any) -> None:
        self.shift = float(shift)
        super().__init__(model, **kwargs)

    def _nfe(self, student_meta: dict[str, Any]) -> NFESupport:
        return NFESupport(min=1)

    def _options_key(self) -> str:
        return f"shift{self.shift:g}"

    def _sample(self, x: torch.Tensor, cond: torch.Tensor, req: SampleRequest) -> torch.Tensor:
        self._fixed_guidance(req)
        unet = self.unet

        def jump(x: torch.Tensor, s: float, t: float) -> torch.Tensor:
            return models.flowmap_jump(unet, x, models.rows(s, x), models.rows(t, x), cond)

        return sampling.flowmap_sample(jump, x, sampling.shifted_times(req.nfe, self.shift))


class ZooConsistency(_ZooStudent):
    """Embedded consistency model (CD): multistep consistency sampling, denoise then re-noise to the next time.

    Options: `grid` = "snapped" (default: t_i = floor(i N / n) / N on the N-point training grid) or "karras"
    (CMStochasticIterativeScheduler's default schedule, translated by t = 1 / (1 + sigma); with
    `num_train_timesteps`, `sigma_min`, `sigma_max`, `rho`), `clip_denoised` (default True, as diffusers).
    """

    family = "consistency"
    default_model = "consistency"

    def __init__(self, model: str | None = None, grid: str = "snapped", clip_denoised: bool = True,
                 num_train_timesteps: int = 40, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 rho: float = 7.0, **kwargs: Any) -> None:
        if grid not in ("snapped", "karras"):
            raise ValueError(f"grid must be 'snapped' or 'karras', not {grid!r}")
        self.grid, self.clip = grid, clip_denoised
        self.karras: dict[str, Any] = {"num_train_timesteps": num_train_timesteps, "sigma_min": sigma_min,
                                       "sigma_max": sigma_max, "rho": rho}
        super().__init__(model, **kwargs)

    def _nfe(self, student_meta: dict[str, Any]) -> NFESupport:
        if self.grid == "karras":
            return NFESupport(min=1, max=int(self.karras["num_train_timesteps"]))
        return NFESupport(min=1, max=int(student_meta.get("grid", 20)))

    def _options_key(self) -> str:
        k = self.karras
        return (f"{self.grid}-clip{int(self.clip)}" + (
            f"-{k['num_train_timesteps']}-{k['sigma_min']:g}-{k['sigma_max']:g}-{k['rho']:g}"
            if self.grid == "karras" else ""))

    def times(self, nfe: int) -> list[float]:
        if self.grid == "karras":
            return [float(sampling.sigma_to_t(s)) for s in sampling.karras_sigmas(nfe, **self.karras)]
        return sampling.snapped_times(nfe, int(self.meta.get("student", {}).get("grid", 20)))

    def _sample(self, x: torch.Tensor, cond: torch.Tensor, req: SampleRequest) -> torch.Tensor:
        self._fixed_guidance(req)
        sm = self.meta.get("student", {})
        param = sm.get("parameterisation", "rf")
        kw: dict[str, float] = {}
        sigma_b = float(sm.get("sigma_boundary", 0.0))
        if param == "edm":
            kw = {"sigma_min": float(sm.get("sigma_min", 0.002)), "sigma_data": float(sm.get("sigma_data", 0.5))}
            sigma_b = kw["sigma_min"]
        unet = self.unet

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return models.consistency_fn(unet, x, t, cond, param, **kw)

        return sampling.consistency_multistep(denoise, x, self.times(req.nfe), self._renoise_fn(req, x.shape[1:]),
                                              sigma_b, 1.0 if self.clip else None)


class ZooLCM(_ZooStudent):
    """Embedded LCM-style student: guidance scale w as a condition, LCMScheduler's skipping timesteps.

    Options: `guidance` (w when the suite sets none; default the checkpoint's `w_default`), `clip_denoised`
    (default False, as diffusers' LCMScheduler).
    """

    family = "lcm"
    default_model = "lcm"

    def __init__(self, model: str | None = None, guidance: float | None = None, clip_denoised: bool = False,
                 **kwargs: Any) -> None:
        self.guidance, self.clip = guidance, clip_denoised
        super().__init__(model, **kwargs)

    def _nfe(self, student_meta: dict[str, Any]) -> NFESupport:
        return NFESupport(min=1, max=int(student_meta.get("original_steps", 50)))

    def _guidance_mode(self) -> str:
        return "embedded"  # w is an input of the U-Net: one evaluation per step whatever w is

    def _guidance_range(self, student_meta: dict[str, Any]) -> tuple[float, float]:
        return float(student_meta.get("w_min", 1.0)), float(student_meta.get("w_max", 1.0))

    def _options_key(self) -> str:
        return f"w{self.guidance}-clip{int(self.clip)}"

    def timesteps(self, nfe: int) -> list[int]:
        sm = self.meta.get("student", {})
        return sampling.lcm_timesteps(nfe, int(sm.get("original_steps", 50)), int(sm.get("T", sampling.T_TRAIN)))

    def _sample(self, x: torch.Tensor, cond: torch.Tensor, req: SampleRequest) -> torch.Tensor:
        sm = self.meta.get("student", {})
        w = req.guidance if req.guidance is not None else self.guidance
        w = float(sm.get("w_default", 1.0) if w is None else w)
        lo, hi = float(sm.get("w_min", 1.0)), float(sm.get("w_max", 1.0))
        if not lo - 1e-9 <= w <= hi + 1e-9:
            raise ValueError(f"{self.model_name} was distilled for guidance in [{lo}, {hi}], not {w}")
        T = int(sm.get("T", sampling.T_TRAIN))
        kw = {"T": T, "timestep_scaling": float(sm.get("timestep_scaling", 10.0)), "clip": 1.0 if self.clip else None}
        unet = self.unet

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # clips the x-prediction, as LCMScheduler
            return models.consistency_fn(unet, x, t, cond, "lcm", w=w, **kw)

        times = [float(sampling.tau_to_t(tau, T)) for tau in self.timesteps(req.nfe)]
        return sampling.consistency_multistep(denoise, x, times, self._renoise_fn(req, x.shape[1:]), 0.0, None)


class ZooAdversarial(_ZooStudent):
    """Embedded Turbo-style student (adversarial + distillation): denoise / re-noise on trailing timesteps.

    Supports exactly the step counts whose trailing timesteps were all trained (1..4 for the shipped recipe).
    Options: `clip_denoised` (default True).
    """

    family = "adversarial"
    default_model = "turbo"

    def __init__(self, model: str | None = None, clip_denoised: bool = True, **kwargs: Any) -> None:
        self.clip = clip_denoised
        super().__init__(model, **kwargs)

    def _nfe(self, student_meta: dict[str, Any]) -> NFESupport:
        T = int(student_meta.get("T", sampling.T_TRAIN))
        trained = set(student_meta.get("timesteps", sampling.trailing_union(sampling.TURBO_STEP_COUNTS, T)))
        ok = {n for n in range(1, len(trained) + 1) if set(sampling.trailing_timesteps(n, T)) <= trained}
        return NFESupport(values=frozenset(ok))

    def _options_key(self) -> str:
        return f"clip{int(self.clip)}"

    def _sample(self, x: torch.Tensor, cond: torch.Tensor, req: SampleRequest) -> torch.Tensor:
        self._fixed_guidance(req)
        T = int(self.meta.get("student", {}).get("T", sampling.T_TRAIN))
        unet = self.unet

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return models.consistency_fn(unet, x, t, cond, "rf")

        times = [float(sampling.tau_to_t(tau, T)) for tau in sampling.trailing_timesteps(req.nfe, T)]
        return sampling.consistency_multistep(denoise, x, times, self._renoise_fn(req, x.shape[1:]), 0.0,
                                              1.0 if self.clip else None)
