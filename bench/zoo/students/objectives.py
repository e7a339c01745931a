"""Training objectives of the students, as pure functions of a batch.

Convention: x_t = (1 - t) x0 + t x1, t = 0 noise, t = 1 data; b(x, t) the teacher's velocity (with
classifier-free guidance folded in where a family uses it). Callables, not modules, go in, so each loss
can be checked against closed-form worlds (tests/test_students_objectives.py uses the Gaussian mixture):

- flow_map(x, s, t) -> X_{s,t}(x)            (the student's map; X_{s,s} = id)
- avg_velocity(x, s, t) -> v(x, s, t)        (X_{s,t}(x) = x + (t - s) v(x, s, t))
- velocity(x, t) -> b(x, t)                  (teacher; evaluated without gradient)
- f(x, t) -> data estimate                   (consistency function, f(x, 1) = x)

Times are per-row tensors of shape (N,). Each loss returns (scalar loss, dict of float diagnostics).
Squared errors are means over pixels, then over the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Map = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ConsistencyFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OdeStep = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _col(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


def _per_row(err: torch.Tensor) -> torch.Tensor:
    return err.float().square().flatten(1).mean(1)


def sample_pairs(n: int, diag_frac: float, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(s, t) with 0 <= s <= t <= 1: sorted pairs of uniforms; a fraction `diag_frac` of rows has s = t."""
    u = torch.rand(2, n, generator=generator, device=device)
    s, t = u.min(0).values, u.max(0).values
    diag = torch.rand(n, generator=generator, device=device) < diag_frac
    return s, torch.where(diag, s, t)


# ---------------------------------------------------------------------------------------------- flow maps


def lmd_loss(flow_map: Map, velocity: Velocity, x_s: torch.Tensor, s: torch.Tensor, t: torch.Tensor,
             self_velocity: Velocity | None = None, p: float = 0.0, c: float = 1e-3
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """Lagrangian map distillation (Boffi, Albergo, Vanden-Eijnden 2024, "Flow map matching"):

        E || d/dt X_{s,t}(x_s) - sg(b(X_{s,t}(x_s), t)) ||^2,

    d/dt by one forward-mode JVP in t (tangent 1). At s = t it is the teacher's velocity matching,
    v(x, s, s) = b(x, s). With `self_velocity` (the student's own diagonal v(x, t, t)) the target off the
    diagonal is that instead of the teacher: Lagrangian self-distillation (LSD, Boffi et al. 2025), the
    diagonal rows still match the teacher. The teacher term is under stop-gradient (no backprop through b).
    With p > 0, rows are weighted by sg(1 / (||delta||^2 + c)^p) as in MeanFlow (p = 0: plain mean).
    """
    def along_t(tt: torch.Tensor) -> torch.Tensor:
        return flow_map(x_s, s, tt)

    x_t, dx_dt = torch.func.jvp(along_t, (t,), (torch.ones_like(t),))[:2]
    with torch.no_grad():
        target = velocity(x_t.detach(), t)
        if self_velocity is not None:
            own = self_velocity(x_t.detach(), t)
            target = torch.where((s == t).reshape(-1, *([1] * (target.dim() - 1))), target, own)
    per = _per_row(dx_dt - target)
    w = (per.detach() + c).pow(-p) if p else torch.ones_like(per)
    return (w * per).mean(), {"lmd": float(per.detach().mean())}


def meanflow_target(avg_velocity: Map, velocity: Velocity, x_s: torch.Tensor, s: torch.Tensor,
                    t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(v(x_s, s, t), the MeanFlow target b(x_s, s) + (t - s) dv/ds) with d/ds the total derivative along
    the trajectory (tangent (b, 1) on (x, s), t fixed), under stop-gradient.

    MeanFlow's identity in our time: (t - s) v(x_s, s, t) = int_s^t b(x_tau, tau) dtau; differentiating in s
    gives v = b(x_s, s) + (t - s) dv/ds, exact for the true average velocity. In MeanFlow's own convention
    (its time T = 1 - t runs from data T = 0 to noise T = 1, its velocity V = -b), its average velocity is
    u(z, r, T) = -v(z, 1 - T, 1 - r) and its identity u = V - (T - r) du/dT maps onto ours term by term
    (tests/test_students_objectives.py checks the two targets agree).
    """
    with torch.no_grad():
        b = velocity(x_s, s)

    def along_path(x: torch.Tensor, ss: torch.Tensor) -> torch.Tensor:
        return avg_velocity(x, ss, t)

    v, dv_ds = torch.func.jvp(along_path, (x_s, s), (b, torch.ones_like(s)))[:2]
    return v, (b + _col(t - s, b) * dv_ds).detach()


def meanflow_loss(avg_velocity: Map, velocity: Velocity, x_s: torch.Tensor, s: torch.Tensor, t: torch.Tensor,
                  p: float = 1.0, c: float = 1e-3, target_clip: float | None = None
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """MeanFlow (Geng et al. 2025), distilled from the teacher: || v - sg(target) ||^2 with the adaptive
    weight sg(1 / (||delta||^2 + c)^p) per row (||.||^2 a mean over pixels here, so c is per pixel). The
    target is clipped elementwise to [-target_clip, target_clip] if given (a guard against JVP spikes)."""
    v, target = meanflow_target(avg_velocity, velocity, x_s, s, t)
    if target_clip is not None:
        target = target.clamp(-target_clip, target_clip)
    sq = _per_row(v - target)
    w = (sq.detach() + c).pow(-p)
    return (w * sq).mean(), {"meanflow_mse": float(sq.detach().mean())}


# -------------------------------------------------------------------------------------- consistency, LCM


def euler_step(velocity: Velocity) -> OdeStep:
    """One teacher Euler step t_a -> t_b (per row). On our path this is exactly DDIM."""
    def step(x: torch.Tensor, t_a: torch.Tensor, t_b: torch.Tensor) -> torch.Tensor:
        return x + _col(t_b - t_a, x) * velocity(x, t_a)
    return step


def heun_step(velocity: Velocity) -> OdeStep:
    """One teacher Heun step t_a -> t_b (2 evaluations)."""
    def step(x: torch.Tensor, t_a: torch.Tensor, t_b: torch.Tensor) -> torch.Tensor:
        h = _col(t_b - t_a, x)
        d0 = velocity(x, t_a)
        d1 = velocity(x + h * d0, t_b)
        return x + h * 0.5 * (d0 + d1)
    return step


ODE_STEPS = {"euler": euler_step, "heun": heun_step}


def consistency_distillation_loss(f: ConsistencyFn, f_target: ConsistencyFn, ode_step: OdeStep,
                                  x_a: torch.Tensor, t_a: torch.Tensor, t_b: torch.Tensor
                                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """Consistency distillation (Song et al. 2023) in our time: x_a on the path at the noisier t_a, one
    teacher ODE step to t_b > t_a, then || f(x_a, t_a) - sg(f_target(x_b, t_b)) ||^2 with f_target the EMA
    target network. LCM (Luo et al. 2023) is this loss with a guided teacher step that skips k grid points
    and f conditioned on the guidance scale."""
    with torch.no_grad():
        x_b = ode_step(x_a, t_a, t_b)
        target = f_target(x_b, t_b)
    per = _per_row(f(x_a, t_a) - target)
    return per.mean(), {"cd": float(per.detach().mean())}


# -------------------------------------------------------------------------------------------- adversarial


def teacher_solve(velocity: Velocity, x: torch.Tensor, t: torch.Tensor, steps: int,
                  solver: str = "heun") -> torch.Tensor:
    """The teacher's ODE solution at t = 1 from x at per-row time t, in `steps` uniform steps."""
    step = ODE_STEPS[solver](velocity)
    h = (1 - t) / steps
    with torch.no_grad():
        for i in range(steps):
            x = step(x, t + i * h, t + (i + 1) * h)
    return x


def ode_distill_loss(x_hat: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Regression of the one-step estimate onto the teacher's ODE solution from the same state."""
    per = _per_row(x_hat - target.detach())
    return per.mean(), {"distill": float(per.detach().mean())}


def add_distill_loss(x_hat: torch.Tensor, velocity: Velocity, t_renoise: torch.Tensor, z: torch.Tensor
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """ADD's distillation term (Sauer et al. 2023): re-noise the student's estimate to t' with fresh noise,
    let the teacher denoise it, x1_hat_teacher = x' + (1 - t') b(x', t'), and regress onto that, weighted
    by t' (less weight where the teacher sees mostly noise, like ADD's c(t) = alpha_bar_t)."""
    tc = _col(t_renoise, x_hat)
    with torch.no_grad():
        x_r = tc * x_hat.detach() + (1 - tc) * z
        target = x_r + (1 - tc) * velocity(x_r, t_renoise)
    per = _per_row(x_hat - target) * t_renoise.float()
    return per.mean(), {"distill": float(per.detach().mean())}


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()
