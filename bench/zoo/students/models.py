"""How each student family calls the teacher's U-Net, and the Turbo-style student's discriminator.

Every student is a `ShapesTeacher` bundle (caption encoder `.text` + `FlowUNet` `.unet`) initialised from
the teacher's weights; the U-Net's zero-initialised second time input `s` carries what a family adds:

- flow map: v(x, s, t) = unet(x, t=s, cond, s=t - s), the average velocity over [s, t] (the primary time is
  the start time, the extra input the jump, so at initialisation v(x, s, t) = b(x, s) and
  X_{s,t}(x) = x + (t - s) v(x, s, t) is the teacher's Euler step);
- consistency / adversarial: out = unet(x, t, cond), f(x, t) = x + (1 - t) out (c_skip = 1, c_out = 1 - t);
- lcm: out = unet(x, t, cond, s=(w - 1) * W_SCALE), the guidance scale w as a condition, LCM's c_skip/c_out.

Only `.unet` counts as a network function evaluation (the caption is encoded once per batch).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from bench.zoo.nets import ShapesTeacher
from bench.zoo.students import sampling

W_SCALE = 0.1  # guidance code fed to the sinusoidal embedding: (w - 1) * W_SCALE (w = 1 -> 0)


def _col(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


def rows(t: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A time (scalar or per row) as a (N,) tensor on x's device."""
    if isinstance(t, torch.Tensor) and t.numel() == x.shape[0]:
        return t.reshape(-1).to(x.device, x.dtype)
    return torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)


def copy_of(teacher: ShapesTeacher) -> ShapesTeacher:
    """A fresh bundle with the teacher's configuration and weights (float32, train mode, trainable U-Net)."""
    student = ShapesTeacher.from_config(teacher.config())
    student.load_state_dict(teacher.state_dict())
    student = student.to(next(teacher.parameters()).device, torch.float32)
    student.text.requires_grad_(False)
    return student.train()


# --------------------------------------------------------------------------------------------- calls


def teacher_velocity(teacher: ShapesTeacher, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                     guidance: float | torch.Tensor = 1.0) -> torch.Tensor:
    """b(x, t) = u + w (c - u), one doubled batch when guided (w per row allowed); no gradient."""
    with torch.no_grad():
        if not isinstance(guidance, torch.Tensor) and guidance == 1.0:
            return teacher.unet(x, t, cond)
        null = teacher.text.null_cond(x.shape[0]).to(cond)
        c, u = teacher.unet(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null])).chunk(2)
        w = _col(guidance, x) if isinstance(guidance, torch.Tensor) else guidance
        return u + w * (c - u)


def flowmap_velocity(unet: nn.Module, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor,
                     cond: torch.Tensor) -> torch.Tensor:
    """Average velocity v(x, s, t) of the flow-map student."""
    return unet(x, t=s, cond=cond, s=t - s)


def flowmap_jump(unet: nn.Module, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor,
                 cond: torch.Tensor) -> torch.Tensor:
    """X_{s,t}(x) = x + (t - s) v(x, s, t)."""
    return x + _col(t - s, x) * flowmap_velocity(unet, x, s, t, cond)


def guidance_code(w: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (rows(w, x) - 1.0) * W_SCALE


def consistency_fn(unet: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                   parameterisation: str = "rf", w: float | torch.Tensor | None = None,
                   **kwargs: Any) -> torch.Tensor:
    """f(x, t) -> data estimate for a consistency-type student ('rf', 'edm' or 'lcm' boundary condition)."""
    out = unet(x, t, cond) if w is None else unet(x, t, cond, s=guidance_code(w, x))
    if parameterisation == "rf":
        return sampling.denoise_rf(x, t, out)
    if parameterisation == "edm":
        return sampling.denoise_edm(x, t, out, **kwargs)
    if parameterisation == "lcm":
        return sampling.denoise_lcm(x, t, out, **kwargs)
    raise ValueError(f"unknown parameterisation {parameterisation!r} (rf, edm, lcm)")


# ------------------------------------------------------------------------------------------ discriminator


class Discriminator(nn.Module):
    """A small projection discriminator on images (any resolution divisible by 4), conditioned on the
    caption embedding. Its own conv net, not shapes-clip: shapes-clip is the FD feature space, and training
    a generator against the evaluation features would flatter its FD."""

    def __init__(self, cond_dim: int = 128, channels: tuple[int, ...] = (32, 64, 128), groups: int = 8) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels[0], 3, padding=1), nn.SiLU()]
        for cin, cout in itertools.pairwise(channels):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(min(groups, cout), cout), nn.SiLU()]
        layers += [nn.Conv2d(channels[-1], channels[-1], 3, padding=1), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels[-1], 1)
        self.proj = nn.Linear(cond_dim, channels[-1])

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean((2, 3))
        return (self.head(h) + (self.proj(cond.to(h.dtype)) * h).sum(1, keepdim=True)).squeeze(1)
