"""The zoo teacher: loading the shipped flow-matching U-Net and sampling it with the ODE solvers.

`load_teacher(device)` returns a `ShapesTeacher` (eval mode): `.text` encodes captions once per batch and
`.unet(x, t, cond)` is the velocity network (the only module whose calls count as NFE).
`generate(...)` draws images for prompts and per-image seeds with classifier-free guidance done as one
doubled batch per step (so it counts 2 NFE per step, as the harness counts it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.runtime import per_image_noise, to_uint8
from bench.zoo import checkpoints, solvers
from bench.zoo.nets import ShapesTeacher

# to_uint8 is bench.runtime's quantiser, importable from here for callers that took it from the teacher
__all__ = ["generate", "guided_velocity", "load_teacher", "to_uint8"]


def load_teacher(device: Any = "cpu", path: Path | None = None, dtype: torch.dtype = torch.float32,
                 name: str = "teacher") -> ShapesTeacher:
    """Teacher weights from fp16 safetensors (the shipped file unless `path` is given)."""
    path = path or checkpoints.require(name)
    state, meta = checkpoints.load(path)
    model = ShapesTeacher.from_config(meta["config"])
    model.load_state_dict(state)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def guided_velocity(model: ShapesTeacher, cond: torch.Tensor, guidance: float) -> solvers.Velocity:
    """v(x, t) with classifier-free guidance uncond + w (cond - uncond) as ONE doubled-batch call."""
    null = model.text.null_cond(cond.shape[0]).to(cond)
    both = torch.cat([cond, null]) if guidance != 1.0 else None

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
        if both is None:
            return model.unet(x, tt, cond)
        c, u = model.unet(torch.cat([x, x]), torch.cat([tt, tt]), both).chunk(2)
        return u + guidance * (c - u)

    return velocity


@torch.no_grad()
def generate(model: ShapesTeacher, prompts: Sequence[str], seeds: Sequence[int], steps: int,
             solver: str = "euler", guidance: float = 1.0, shift: float = 1.0, resolution: int = 16,
             noise: torch.Tensor | None = None) -> torch.Tensor:
    """Samples in model space [-1, 1] (float, N x 3 x R x R); image i starts from the noise of seeds[i]."""
    p = next(model.parameters())
    x = noise if noise is not None else per_image_noise(seeds, (3, resolution, resolution), p.device, p.dtype)
    cond = model.text(list(prompts)).to(p.dtype)
    return solvers.SOLVERS[solver](guided_velocity(model, cond, guidance), x.to(p.device, p.dtype), steps, shift)

