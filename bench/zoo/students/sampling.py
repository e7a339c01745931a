"""Sampling math of the students: time grids, boundary-condition parameterisations, multistep loops.

Our convention everywhere: x_t = (1 - t) x0 + t x1, x0 ~ N(0, I) noise at t = 0, data x1 at t = 1.
Other conventions are translated here, once, explicitly (docs/students.md has the derivations):

- VP / DDPM (diffusers' LCMScheduler, discrete timesteps tau = 0 .. T-1, tau = T-1 the noisiest):
  t = 1 - (tau + 1) / T, and a VP state x_vp = sqrt(ab) x1 + sqrt(1 - ab) eps is our state rescaled,
  x_rf = n(t) x_vp with n(t) = sqrt(t^2 + (1 - t)^2) and alpha_bar(t) = t^2 / n(t)^2.
  DDIM on that VP path is exactly Euler on ours.
- VE / EDM (diffusers' CMStochasticIterativeScheduler, sigma in [sigma_min, sigma_max]):
  x_ve = x1 + sigma eps = x_rf / t with sigma = (1 - t) / t, i.e. t = 1 / (1 + sigma).
- MeanFlow (Geng et al. 2025) runs time the other way (its t = 0 is data): see `objectives.meanflow_loss`.

The loops take plain callables so the same code serves the adapters, the training objectives' tests and the
diffusers cross-checks (tests/test_students_diffusers.py).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

T_TRAIN = 1000  # discrete timesteps of the VP translation (diffusers' num_train_timesteps)

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # f(x, t) -> data estimate (t per row)
NoiseFn = Callable[[int], torch.Tensor]  # k -> independent standard normal draw number k (k >= 1)


# ------------------------------------------------------------------------------------------- time grids


def uniform_times(n: int) -> list[float]:
    """n + 1 points 0 = t_0 < ... < t_n = 1: the jump grid of an n-step flow-map sampler."""
    if n < 1:
        raise ValueError(f"steps must be >= 1, not {n}")
    return [i / n for i in range(n + 1)]


def shifted_times(n: int, shift: float = 1.0) -> list[float]:
    """Uniform grid warped SD3-style in sigma = 1 - t (shift > 1 spends more steps near the noise)."""
    out = []
    for t in uniform_times(n):
        sigma = 1.0 - t
        out.append(1.0 - shift * sigma / (1.0 + (shift - 1.0) * sigma))
    out[0], out[-1] = 0.0, 1.0
    return out


def snapped_times(n: int, grid: int) -> list[float]:
    """n start times of a multistep consistency sampler on a training grid of `grid` intervals:
    t_i = floor(i * grid / n) / grid, i = 0 .. n-1 (t_0 = 0 is pure noise; all points are training points)."""
    if not 1 <= n <= grid:
        raise ValueError(f"steps must be in 1..{grid} (the training grid), not {n}")
    return [math.floor(i * grid / n) / grid for i in range(n)]


def tau_to_t(tau: float | np.ndarray | torch.Tensor, T: int = T_TRAIN) -> float | np.ndarray | torch.Tensor:
    """Discrete VP timestep (T-1 = noisiest) -> our t. tau = T-1 -> 0 (noise), tau = -1 -> 1 (data)."""
    return 1.0 - (tau + 1) / T


def vp_alpha_bar(t: float | np.ndarray | torch.Tensor) -> float | np.ndarray | torch.Tensor:
    """alpha_bar of the VP process equivalent to our path at time t: t^2 / (t^2 + (1 - t)^2)."""
    return t**2 / (t**2 + (1 - t) ** 2)


def vp_scale(t: float | torch.Tensor) -> float | torch.Tensor:
    """n(t): x_rf = n(t) * x_vp."""
    return (t**2 + (1 - t) ** 2) ** 0.5


def lcm_origin_timesteps(original_steps: int = 50, T: int = T_TRAIN) -> list[int]:
    """The LCM distillation schedule (skipping interval k = T // original_steps): tau_j = j k - 1, j = 1..N."""
    k = T // original_steps
    return [j * k - 1 for j in range(1, original_steps + 1)]


def lcm_timesteps(n: int, original_steps: int = 50, T: int = T_TRAIN) -> list[int]:
    """LCMScheduler.set_timesteps(n) (default, strength 1): n of the origin timesteps, evenly spaced by index,
    descending (the first is always T - 1: pure noise)."""
    if not 1 <= n <= original_steps:
        raise ValueError(f"steps must be in 1..{original_steps} (original_steps), not {n}")
    origin = lcm_origin_timesteps(original_steps, T)[::-1]
    idx = np.floor(np.linspace(0, len(origin), num=n, endpoint=False)).astype(np.int64)
    return [origin[i] for i in idx]


def trailing_timesteps(n: int, T: int = T_TRAIN) -> list[int]:
    """'trailing' timestep spacing (as SDXL-Turbo samples): round(arange(T, 0, -T/n)) - 1, descending."""
    if n < 1:
        raise ValueError(f"steps must be >= 1, not {n}")
    return [int(v) for v in (np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1)]


def trailing_union(step_counts: Sequence[int], T: int = T_TRAIN) -> list[int]:
    """The trailing timesteps of every step count in `step_counts`, descending (what a Turbo-style student
    that samples with any of those counts must be trained on)."""
    return sorted({tau for n in step_counts for tau in trailing_timesteps(int(n), T)}, reverse=True)


TURBO_STEP_COUNTS = (1, 2, 3, 4)


def karras_sigmas(n: int, num_train_timesteps: int = 40, sigma_min: float = 0.002, sigma_max: float = 80.0,
                  rho: float = 7.0) -> list[float]:
    """CMStochasticIterativeScheduler.set_timesteps(n) sigmas (without the appended sigma_min), descending."""
    if not 1 <= n <= num_train_timesteps:
        raise ValueError(f"steps must be in 1..{num_train_timesteps}, not {n}")
    step_ratio = num_train_timesteps // n
    idx = (np.arange(0, n) * step_ratio).round().astype(np.int64)  # ascending = noisiest first
    ramp = idx / (num_train_timesteps - 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [float(s) for s in (hi + ramp * (lo - hi)) ** rho]


def sigma_to_t(sigma: float | torch.Tensor) -> float | torch.Tensor:
    """VE noise level -> our t (x_ve = x_rf / t)."""
    return 1.0 / (1.0 + sigma)


# ------------------------------------------------------------------------------ boundary parameterisations
# Each maps (state x in OUR convention, per-row time t, raw network output) to the data estimate f(x, t).


def _col(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


def denoise_rf(x: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """f = c_skip x + c_out out with c_skip = 1, c_out = 1 - t: the network predicts a velocity (so a student
    initialised from the teacher starts as the teacher's one-step Euler estimate) and f(x, 1) = x exactly."""
    return x + (1 - _col(t, x)) * out


def edm_scalings(sigma: torch.Tensor, sigma_min: float = 0.002, sigma_data: float = 0.5
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Consistency-model boundary scalings (Song et al. 2023, App. C; diffusers' get_scalings_for_boundary_condition)."""
    c_skip = sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)
    c_out = (sigma - sigma_min) * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


def denoise_edm(x: torch.Tensor, t: torch.Tensor, out: torch.Tensor, sigma_min: float = 0.002,
                sigma_data: float = 0.5) -> torch.Tensor:
    """The EDM/CM parameterisation translated: f = c_skip(sigma) x_ve + c_out(sigma) out, x_ve = x / t,
    sigma = (1 - t) / t. Boundary: f = x_ve at sigma = sigma_min (t = 1 / (1 + sigma_min))."""
    tc = _col(t, x)
    c_skip, c_out = edm_scalings((1 - tc) / tc, sigma_min, sigma_data)
    return c_skip * (x / tc) + c_out * out


def lcm_scalings(tau: torch.Tensor, timestep_scaling: float = 10.0, sigma_data: float = 0.5
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """LCMScheduler.get_scalings_for_boundary_condition_discrete at (possibly fractional) timestep tau."""
    s = tau * timestep_scaling
    return sigma_data**2 / (s**2 + sigma_data**2), s / (s**2 + sigma_data**2) ** 0.5


def denoise_lcm(x: torch.Tensor, t: torch.Tensor, out: torch.Tensor, T: int = T_TRAIN,
                timestep_scaling: float = 10.0, clip: float | None = None) -> torch.Tensor:
    """LCM's parameterisation translated: the network's data prediction x1_hat = x + (1 - t) out (diffusers
    prediction_type='sample'), then f = c_out(tau) x1_hat + c_skip(tau) x_vp with x_vp = x / n(t) and
    tau = T (1 - t) - 1 (f = x_vp at tau = 0). `clip` clamps x1_hat before the combination, as
    LCMScheduler's clip_sample does (CMStochasticIterativeScheduler clips after it: consistency_multistep).

    The per-row scalars (tau, c_skip, c_out, n(t)) are computed in float32 and cast to x's dtype at the end:
    in float16, (tau * timestep_scaling)^2 overflows for every tau >= 26 (10 * 26 = 260, 260^2 > 65504), so
    c_skip = c_out = 0 and f = 0 (a uniform grey image) at every LCM timestep. In float32 the casts are
    no-ops, so float32 output is unchanged bit for bit."""
    t32 = t.float().reshape(-1, *([1] * (x.dim() - 1)))
    c_skip, c_out = lcm_scalings(T * (1 - t32) - 1, timestep_scaling)
    scale32 = torch.as_tensor(vp_scale(t32))
    tc, c_skip, c_out, scale = (v.to(x.dtype) for v in (t32, c_skip, c_out, scale32))
    x1_hat = x + (1 - tc) * out
    if clip is not None:
        x1_hat = x1_hat.clamp(-clip, clip)
    return c_out * x1_hat + c_skip * (x / scale)


# ------------------------------------------------------------------------------------------ samplers


def flowmap_sample(jump: Callable[[torch.Tensor, float, float], torch.Tensor], noise: torch.Tensor,
                   times: Sequence[float]) -> torch.Tensor:
    """x_{t_{i+1}} = X_{t_i, t_{i+1}}(x_{t_i}) from x_0 = noise: one network call per jump."""
    x = noise
    for s, t in itertools.pairwise(times):
        x = jump(x, s, t)
    return x


def renoise(denoised: torch.Tensor, t: float, z: torch.Tensor, sigma_boundary: float = 0.0) -> torch.Tensor:
    """Put a data estimate back on the path at time t with fresh noise z.

    With the boundary at t = 1 (sigma_boundary = 0): x_t = t d + (1 - t) z. If the consistency function's
    boundary is sigma_boundary > 0 (EDM: sigma_min), d counts as a sample at that noise level and only the
    missing variance is added: x_ve = d + sqrt(sigma_t^2 - sigma_b^2) z, i.e.
    x_t = t d + sqrt((1 - t)^2 - t^2 sigma_b^2) z.
    """
    std = max((1.0 - t) ** 2 - (t * sigma_boundary) ** 2, 0.0) ** 0.5
    return t * denoised + std * z


def consistency_multistep(denoise: Denoiser, noise: torch.Tensor, times: Sequence[float], noise_fn: NoiseFn,
                          sigma_boundary: float = 0.0, clip: float | None = None,
                          trace: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. 2023, Alg. 1): denoise, then re-noise to the next time.

    `times` ascending (t_0 first, the noisiest). The start state is (1 - t_0) * noise: pure noise at t_0 = 0,
    and the VE convention x = sigma_max * eps when t_0 = 1 / (1 + sigma_max). Re-noise draw i (before step
    i, i >= 1) is `noise_fn(i)`. One call of `denoise` per time: NFE = len(times).
    """
    x = (1.0 - times[0]) * noise
    d = noise
    for i, t in enumerate(times):
        tt = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
        d = denoise(x, tt)
        if clip is not None:
            d = d.clamp(-clip, clip)
        if trace is not None:
            trace.append(d)
        if i + 1 < len(times):
            x = renoise(d, float(times[i + 1]), noise_fn(i + 1), sigma_boundary)
    return d
