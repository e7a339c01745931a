"""ODE solvers for the flow-matching teacher (the sampling math, kept apart from networks and adapters).

Convention: x_t = (1 - t) x0 + t x1, x0 ~ N(0, I) at t = 0, data at t = 1, velocity v = x1 - x0.
`velocity(x, t)` is any callable returning v at the scalar time t (guidance is done inside it).
`steps` is the number of solver steps; network evaluations (before guidance doubling) are
steps (Euler, DPM-Solver++) and 2 * steps - 1 (Heun, whose last step is an Euler step as in EDM).

Time grid: uniform in t, optionally warped by `shift` (SD3-style, in terms of sigma = 1 - t:
sigma' = shift * sigma / (1 + (shift - 1) * sigma); shift > 1 spends more steps near the noise).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch

Velocity = Callable[[torch.Tensor, float], torch.Tensor]


def time_grid(steps: int, shift: float = 1.0) -> list[float]:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, not {steps}")
    out = []
    for i in range(steps + 1):
        sigma = 1.0 - i / steps
        sigma = shift * sigma / (1.0 + (shift - 1.0) * sigma)
        out.append(1.0 - sigma)
    out[0], out[-1] = 0.0, 1.0
    return out


def euler(velocity: Velocity, x: torch.Tensor, steps: int, shift: float = 1.0) -> torch.Tensor:
    ts = time_grid(steps, shift)
    for s, t in itertools.pairwise(ts):
        x = x + (t - s) * velocity(x, s)
    return x


def heun(velocity: Velocity, x: torch.Tensor, steps: int, shift: float = 1.0) -> torch.Tensor:
    """Heun's second-order method; the final step is plain Euler (NFE = 2 * steps - 1)."""
    ts = time_grid(steps, shift)
    for i, (s, t) in enumerate(itertools.pairwise(ts)):
        d0 = velocity(x, s)
        x_pred = x + (t - s) * d0
        last = i == steps - 1
        x = x_pred if last else x + (t - s) * 0.5 * (d0 + velocity(x_pred, t))
    return x


def _lam(t: float) -> float:
    """log-SNR-like time lambda = log(alpha / sigma) with alpha = t, sigma = 1 - t."""
    if t <= 0.0:
        return -math.inf
    if t >= 1.0:
        return math.inf
    return math.log(t / (1.0 - t))


def dpm_solver_pp(velocity: Velocity, x: torch.Tensor, steps: int, shift: float = 1.0,
                  order: int = 2) -> torch.Tensor:
    """DPM-Solver++(2M): multistep exponential integrator on the data prediction x1_hat = x + (1 - t) v.

    One network evaluation per step. A step from s to t is
    x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^{-h}) D,  h = lambda_t - lambda_s,
    with D = x1_hat(s) (first order; identical to Euler on this path) or the second-order multistep
    D = (1 + 1/(2r)) x1_hat(s) - 1/(2r) x1_hat(s_prev), r = h_prev / h. The first step (from pure noise,
    h_prev infinite) and the last step (to t = 1, h infinite) are first order, as usual.
    """
    ts = time_grid(steps, shift)
    prev_x1: torch.Tensor | None = None
    prev_h = math.inf
    for s, t in itertools.pairwise(ts):
        x1 = x + (1.0 - s) * velocity(x, s)
        h = _lam(t) - _lam(s)
        if t >= 1.0:
            x = x1
            break
        if order >= 2 and prev_x1 is not None and math.isfinite(prev_h) and math.isfinite(h):
            r = prev_h / h
            d = (1 + 0.5 / r) * x1 - (0.5 / r) * prev_x1
        else:
            d = x1
        e_h = 0.0 if not math.isfinite(h) else math.exp(-h)
        x = ((1.0 - t) / (1.0 - s)) * x + t * (1.0 - e_h) * d
        prev_x1, prev_h = x1, h
    return x


SOLVERS = {"euler": euler, "heun": heun, "dpm++": dpm_solver_pp}


def nfe_per_image(solver: str, steps: int, guided: bool) -> int:
    n = 2 * steps - 1 if solver == "heun" else steps
    return 2 * n if guided else n
