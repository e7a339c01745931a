"""`flow-map`: a user's own flow-map network, sampled along a time grid, in pixel space or a VAE's latent space.

Time convention (default): noise at t = 0, data at t = 1 (the zoo's rectified flow, x_t = (1 - t) x0 + t x1), on a
uniform grid. SD3 / FLUX-style networks run the other way, noise t = 1 -> data t = 0: set `noise_time: 1,
data_time: 0`. `time_shift: s` (SD3 uses 3.0) warps the grid, uniform or `times`, as those pipelines do, on the
noise level n (1 at noise_time, 0 at data_time): n -> s n / (1 + (s - 1) n), ends fixed; s > 1 spends more steps
near the noise. Unset (or 1): no shift.

The network is one of
  map               f(x, s, t, cond) -> X_{s,t}(x)            the state at time t, from the state x at time s
  map_velocity      f(x, s, t, cond) -> v, X_{s,t}(x) = x + (t - s) v
  average_velocity  u(z, r, t, cond) -> u, z_r = z_t - (t - r) u   (MeanFlow: called with r the target time)
and the sampler walks the grid noise_time = t_0, t_1, ..., t_n = data_time with one call per step (NFE = n).
`cond` is the class labels (LongTensor), the prompts (list of str) or None, as `conditioning` says.

Configure it with a small JSON file (`config:`), with options, or both (options win):

    {"network": "my_pkg.nets:FlowMapUNet",          # importable class or factory ("module:attr")
     "kwargs": {"channels": 4, "width": 128},       # its constructor arguments
     "weights": "model.safetensors",                # relative to the config file; .safetensors or a torch
                                                    #   state dict loaded with weights_only=True
     "parameterization": "map",                     # map | map_velocity | average_velocity
     "noise_time": 0.0, "data_time": 1.0,           # which end of [0, 1] is noise (default: 0 noise, 1 data)
     "times": {"2": [0.0, 0.7, 1.0]},               # optional explicit grids per step count (else uniform)
     "time_shift": 3.0,                             # optional SD3/FLUX-style shift of the grid (default none)
     "conditioning": "class",                       # none | class | text
     "channels": 4,                                 # channels of the state the network sees
     "data_range": [-1, 1],                         # pixel range of decoded / pixel-space outputs
     "latent": {"vae": "stabilityai/sdxl-vae", "subfolder": null, "scaling_factor": null}}  # optional

`network` may also name a factory that builds the module with its weights already loaded (omit `weights`).
With `latent`, the state is a latent of shape (channels, H/f, W/f), f the VAE's down-sampling factor, and the
final state is decoded with the diffusers AutoencoderKL (`vae.decode(z / scaling_factor + shift)`); decoding is
not counted as an NFE. Models: `tiny:flowmap`, `tiny:flowmap-latent` are small random examples.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.adapters.protocol import NFESupport, SampleRequest, SamplerInfo, per_image_noise
from bench.errors import BenchError, MissingWeightsError
from bench.hardware import HardwareSpec
from bench.importing import MalformedTarget, MissingAttribute, import_target, split_target

PARAMETERIZATIONS = ("map", "map_velocity", "average_velocity")
_KEYS = ("network", "kwargs", "weights", "parameterization", "noise_time", "data_time", "times", "time_shift",
         "conditioning", "channels", "data_range", "latent")


def _import(target: str) -> Any:
    try:
        return import_target(target)
    except MalformedTarget:
        raise BenchError(f"flow-map: network {target!r} must be 'module.path:ClassOrFactory'") from None
    except ImportError as e:
        raise BenchError(f"flow-map: cannot import {split_target(target)[0]!r} ({e})") from None
    except MissingAttribute:
        module_name, attr = split_target(target)
        raise BenchError(f"flow-map: module {module_name!r} has no attribute {attr!r}") from None


def shift_times(grid: torch.Tensor, shift: Any, noise_time: float, data_time: float) -> torch.Tensor:
    """SD3 / FLUX-style time shift of a grid: on the noise level n = (t - data_time) / (noise_time - data_time),
    n -> s n / (1 + (s - 1) n); the ends stay where they are. `shift` None or 1: the grid unchanged."""
    if shift is None:
        return grid
    try:
        s = float(shift)
    except (TypeError, ValueError):
        raise BenchError(f"flow-map: time_shift must be a positive number, got {shift!r}") from None
    if not s > 0:
        raise BenchError(f"flow-map: time_shift must be a positive number, got {shift!r}")
    if s == 1.0:
        return grid
    if noise_time == data_time:
        raise BenchError("flow-map: time_shift needs noise_time != data_time")
    n = (grid - data_time) / (noise_time - data_time)
    return data_time + s * n / (1 + (s - 1) * n) * (noise_time - data_time)


class FlowMapSampler:
    """A user's flow map f(x, s, t, cond) or average velocity u(z, r, t), on a time grid (NFE = steps), optional VAE."""

    def __init__(self, config: str | None = None, model: str | None = None, local_files_only: bool = True,
                 **options: Any) -> None:
        unknown = sorted(set(options) - set(_KEYS))
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(unknown)} (allowed: config, model, {', '.join(_KEYS)})")
        self.config_spec = config or model
        self.local_files_only = local_files_only
        self.options = options
        self.cfg: dict[str, Any] = {}
        self.base_dir: Path | None = None
        cfg = self._read_config(required=False)
        conditioning = str(cfg.get("conditioning", "none"))
        self.info = SamplerInfo(
            family="flow_map", nfe=NFESupport(min=1, max=1000), conditioning=conditioning,
            description=(self.__doc__ or "").strip().splitlines()[0], version="flow-map-generic-1",
        )
        self.net: torch.nn.Module | None = None
        self.vae: Any = None
        self.device, self.dtype = torch.device("cpu"), torch.float32

    # ------------------------------------------------------------------------------------------- config
    def _config_path(self) -> Path | None:
        spec = self.config_spec
        if not spec:
            return None
        if str(spec).startswith("tiny:"):
            from bench.adapters.hf.weights import resolve_model

            return Path(resolve_model(str(spec), "config").ref) / "config.json"
        p = Path(str(spec)).expanduser()
        return p / "config.json" if p.is_dir() else p

    def _read_config(self, required: bool) -> dict[str, Any]:
        cfg: dict[str, Any] = {}
        spec = self.config_spec
        is_tiny = bool(spec) and str(spec).startswith("tiny:")
        if spec and (required or not is_tiny):  # a tiny model is built in load(), not while planning
            path = self._config_path()
            assert path is not None
            if not path.is_file():
                if required:
                    raise MissingWeightsError(f"flow-map config {path} (option `config`) does not exist")
            else:
                try:
                    cfg = json.loads(path.read_text(encoding="utf-8"))
                except ValueError as e:
                    raise BenchError(f"flow-map config {path}: not valid JSON ({e})") from None
                if not isinstance(cfg, dict):
                    raise BenchError(f"flow-map config {path}: must be a JSON object")
                bad = sorted(set(cfg) - set(_KEYS))
                if bad:
                    raise BenchError(f"flow-map config {path}: unknown key(s) {', '.join(bad)}")
                self.base_dir = path.parent
        elif is_tiny:
            from bench.adapters.hf.tiny import TINY_CONDITIONING

            cfg = {"conditioning": TINY_CONDITIONING.get(str(spec)[len("tiny:"):], "none")}
        return {**cfg, **self.options}

    def weights_needed(self) -> list[tuple[str, str]]:
        """(spec, kind) of the config / weights folder and VAE this sampler reads (for `bench doctor`)."""
        out: list[tuple[str, str]] = []
        if self.config_spec:
            spec = str(self.config_spec)
            out.append((spec, "model" if spec.startswith("tiny:") else "local"))
        vae = (self.options.get("latent") or {}).get("vae")
        if vae:
            out.append((str(vae), "vae"))
        return out

    # --------------------------------------------------------------------------------------------- load
    def load(self, hw: HardwareSpec) -> None:
        self.device, self.dtype = hw.torch_device(), hw.torch_dtype()
        cfg = self.cfg = self._read_config(required=True)
        if not cfg.get("network"):
            raise BenchError("flow-map: no `network` (set it in the config file or the options)")
        param = cfg.get("parameterization", "map")
        if param not in PARAMETERIZATIONS:
            raise BenchError(f"flow-map: parameterization must be one of {', '.join(PARAMETERIZATIONS)}, got {param!r}")
        shift_times(torch.zeros(1, dtype=torch.float64), cfg.get("time_shift"),  # a bad shift fails at load
                    float(cfg.get("noise_time", 0.0)), float(cfg.get("data_time", 1.0)))
        build = _import(cfg["network"])
        try:
            net = build(**dict(cfg.get("kwargs") or {}))
        except TypeError as e:
            raise BenchError(f"flow-map: {cfg['network']}(**kwargs) failed: {e}") from None
        if not isinstance(net, torch.nn.Module):
            raise BenchError(f"flow-map: {cfg['network']} did not build a torch.nn.Module")
        if cfg.get("weights"):
            from bench.adapters.hf.weights import load_state_dict

            path = Path(str(cfg["weights"])).expanduser()
            if not path.is_absolute() and self.base_dir is not None:
                path = self.base_dir / path
            if not path.is_file():
                raise MissingWeightsError(f"flow-map weights {path} (config key `weights`) do not exist")
            missing, unexpected = net.load_state_dict(load_state_dict(str(path)), strict=False)
            if missing or unexpected:
                raise BenchError(f"flow-map weights {path} do not fit {cfg['network']}: {len(missing)} missing, "
                                 f"{len(unexpected)} unexpected keys (first: {(missing or unexpected)[0]})")
        self.net = net.to(self.device, self.dtype).eval()
        if hw.compile:
            self.net.forward = torch.compile(self.net.forward)  # hooks stay outside the compiled code
        latent = cfg.get("latent")
        if latent:
            self.vae = self._load_vae(dict(latent)).to(self.device, self.dtype).eval()

    def _load_vae(self, latent: dict[str, Any]) -> Any:
        from bench.adapters.hf.base import require_diffusers
        from bench.adapters.hf.weights import resolve_model

        require_diffusers()
        from diffusers import AutoencoderKL

        spec = str(latent.get("vae") or "")
        if not spec:
            raise BenchError("flow-map: `latent` needs `vae` (a diffusers AutoencoderKL folder or model id)")
        if self.base_dir is not None and not spec.startswith("tiny:") and (self.base_dir / spec).is_dir():
            spec = str(self.base_dir / spec)
        ref = resolve_model(spec, "latent.vae", self.local_files_only)
        kwargs: dict[str, Any] = {"local_files_only": ref.local}
        if latent.get("subfolder"):
            kwargs["subfolder"] = latent["subfolder"]
        vae = AutoencoderKL.from_pretrained(ref.ref, **kwargs)
        self.scaling = float(latent.get("scaling_factor") or vae.config.scaling_factor or 1.0)
        self.shift = float(latent.get("shift_factor") or getattr(vae.config, "shift_factor", None) or 0.0)
        self.vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        return vae

    def networks(self) -> Sequence[torch.nn.Module]:
        return [self.net] if self.net is not None else []

    # ------------------------------------------------------------------------------------------- sample
    def _grid(self, nfe: int) -> torch.Tensor:
        cfg = self.cfg
        explicit = {int(k): v for k, v in (cfg.get("times") or {}).items()}
        t0, t1 = float(cfg.get("noise_time", 0.0)), float(cfg.get("data_time", 1.0))
        if nfe in explicit:
            ts = [float(v) for v in explicit[nfe]]
            if len(ts) != nfe + 1:
                raise BenchError(f"flow-map: times for {nfe} steps must list {nfe + 1} values, got {len(ts)}")
            grid = torch.tensor(ts, dtype=torch.float64)
        else:
            grid = torch.linspace(t0, t1, nfe + 1, dtype=torch.float64)
        return shift_times(grid, cfg.get("time_shift"), t0, t1)

    def _cond(self, req: SampleRequest) -> Any:
        kind = self.info.conditioning
        if kind == "class":
            if req.labels is None:
                raise BenchError("flow-map: a class-conditional network needs a dataset with class labels")
            return torch.as_tensor(list(req.labels), device=self.device).long()
        if kind == "text":
            return [str(p) for p in req.prompts] if req.prompts else [""] * len(req)
        return None

    @torch.no_grad()
    def sample(self, req: SampleRequest) -> torch.Tensor:
        if self.net is None:
            raise BenchError("sample() before load()")
        net, n = self.net, len(req)
        channels = int(self.cfg.get("channels", 3))
        if self.vae is not None:
            f = self.vae_factor
            if req.height % f or req.width % f:
                raise BenchError(f"flow-map: resolution {req.height} is not a multiple of the VAE factor {f}")
            shape = (channels, req.height // f, req.width // f)
        else:
            shape = (channels, req.height, req.width)
        x = per_image_noise(req.seeds, shape, self.device, self.dtype)
        cond = self._cond(req)
        ts = self._grid(req.nfe).to(self.device, self.dtype)
        param = self.cfg.get("parameterization", "map")
        for i in range(req.nfe):
            a, b = ts[i].expand(n), ts[i + 1].expand(n)
            if param == "average_velocity":
                u = net(x, b, a, cond)  # u(z, r, t): r is the target time, t the current one
                x = x - (a - b).view(-1, 1, 1, 1) * u
            else:
                out = net(x, a, b, cond)
                x = out if param == "map" else x + (b - a).view(-1, 1, 1, 1) * out
        if self.vae is not None:
            x = self.vae.decode(x / self.scaling + self.shift).sample
        lo, hi = (float(v) for v in self.cfg.get("data_range", (-1.0, 1.0)))
        return ((x.float() - lo) / (hi - lo)).clamp(0, 1)
