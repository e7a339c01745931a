"""Student objectives against ground truth: the Gaussian-mixture world, whose exact flow map we integrate.

Exact objects (float64; closed form for one mixture component, RK4 for the whole mixture): X_{s,t}(x) = integrate(x, s, t); the average velocity
(X_{s,t}(x) - x) / (t - s); the consistency function f(x, t) = X_{t,1}(x). Each loss must be ~0 for the exact
object and clearly positive for a perturbed one.
"""

from __future__ import annotations

import pytest
import torch

from bench.adapters.analytic import integrate
from bench.zoo.gmm import templates, velocity
from bench.zoo.students import objectives as obj
from bench.zoo.students import sampling

K, RES, STD = 4, 4, 0.15
S2 = STD**2
SUBSTEPS = 16


@pytest.fixture(scope="module")
def world():
    g = torch.Generator().manual_seed(0)
    mu = templates(K, RES, seed=0).double()
    n = 8
    comp = torch.randint(0, K, (n,), generator=g)
    x1 = mu[comp] + STD * torch.randn(n, 3, RES, RES, generator=g, dtype=torch.float64)
    x0 = torch.randn(n, 3, RES, RES, generator=g, dtype=torch.float64)
    return {"mu": mu, "comp": comp, "x1": x1, "x0": x0, "n": n, "g": g}


def _b(w):
    return lambda x, t: velocity(x, t, torch.full((x.shape[0],), -1), w["mu"], S2)


def _X(w, substeps=SUBSTEPS):
    return lambda x, s, t: integrate(x, s, t, torch.full((x.shape[0],), -1), w["mu"], S2, substeps)


def _bk(w):
    """Conditional velocity of each row's own mixture component (a Gaussian: its flow map is closed form)."""
    return lambda x, t: velocity(x, t, w["comp"][: x.shape[0]], w["mu"], S2)


def _Xk(w):
    """X_{s,t}(x) = t mu + (sigma_t / sigma_s)(x - s mu), sigma_t^2 = (1 - t)^2 + t^2 std^2."""
    def X(x, s, t):
        mu = w["mu"][w["comp"][: x.shape[0]]]
        s4, t4 = s.view(-1, 1, 1, 1), t.view(-1, 1, 1, 1)
        sig = lambda u: ((1 - u) ** 2 + u**2 * S2).sqrt()  # noqa: E731
        return t4 * mu + sig(t4) / sig(s4) * (x - s4 * mu)
    return X


def _on_path(w, t):
    tc = t.view(-1, 1, 1, 1)
    return (1 - tc) * w["x0"] + tc * w["x1"]


def _pairs(w, min_gap=0.0):
    g = torch.Generator().manual_seed(1)
    s = torch.rand(w["n"], generator=g, dtype=torch.float64) * (1 - min_gap)
    t = s + min_gap + torch.rand(w["n"], generator=g, dtype=torch.float64) * (1 - min_gap - s)
    return s, t


def test_lmd_loss_zero_for_exact_map_positive_for_perturbed(world):
    s, t = _pairs(world)
    s[:3] = t[:3]  # some diagonal rows
    x_s = _on_path(world, s)
    X = _Xk(world)
    exact, _ = obj.lmd_loss(X, _bk(world), x_s, s, t)

    def perturbed(x, ss, tt):
        return X(x, ss, tt) + 0.1 * (tt - ss).view(-1, 1, 1, 1) * torch.sin(3 * x)

    def euler(x, ss, tt):
        return x + (tt - ss).view(-1, 1, 1, 1) * _bk(world)(x, ss)

    bad, _ = obj.lmd_loss(perturbed, _bk(world), x_s, s, t)
    eul, _ = obj.lmd_loss(euler, _bk(world), x_s, s, t)
    assert float(exact) < 1e-20
    assert float(bad) > 1e-3
    assert float(eul) > 1e-3
    # adaptive weighting (p = 1): exact stays ~0, a wrong map costs ~1 per row
    exact_w, _ = obj.lmd_loss(X, _bk(world), x_s, s, t, p=1.0)
    bad_w, _ = obj.lmd_loss(perturbed, _bk(world), x_s, s, t, p=1.0)
    assert float(exact_w) < 1e-15 and float(bad_w) > 0.5


def test_lsd_uses_own_diagonal_off_diagonal_and_teacher_on_it(world):
    s, t = _pairs(world)
    s[:3] = t[:3]
    x_s = _on_path(world, s)
    X = _Xk(world)
    exact, _ = obj.lmd_loss(X, _bk(world), x_s, s, t, self_velocity=_bk(world))
    assert float(exact) < 1e-20
    # a wrong self-velocity off the diagonal shows up; on the diagonal only the teacher counts
    wrong = obj.lmd_loss(X, _bk(world), x_s, s, t, self_velocity=lambda x, tt: _bk(world)(x, tt) + 0.3)[0]
    assert float(wrong) > 0.05
    s2, t2 = s.clone(), s.clone()  # all rows diagonal
    diag_only = obj.lmd_loss(X, _bk(world), _on_path(world, s2), s2, t2,
                             self_velocity=lambda x, tt: _bk(world)(x, tt) + 0.3)[0]
    assert float(diag_only) < 1e-20


def test_meanflow_target_is_true_average_velocity(world):
    s, t = _pairs(world, min_gap=0.2)
    x_s = _on_path(world, s)
    X = _X(world, 8)  # RK4 error ~1e-4 relative: enough to tell exact from wrong

    def u_exact(x, ss, tt):
        return (X(x, ss, tt) - x) / (tt - ss).view(-1, 1, 1, 1)

    v, target = obj.meanflow_target(u_exact, _b(world), x_s, s, t)
    rel = (target - v).norm() / v.norm()
    assert float(rel) < 1e-3, rel
    loss, _ = obj.meanflow_loss(u_exact, _b(world), x_s, s, t)
    assert float(loss) < 1e-5

    def u_bad(x, ss, tt):
        return u_exact(x, ss, tt) + 0.1 * torch.sin(3 * x)

    bad, stats = obj.meanflow_loss(u_bad, _b(world), x_s, s, t)
    assert stats["meanflow_mse"] > 1e-3
    assert float(bad) > 100 * float(loss)
    assert target.abs().max() > 0.5  # so clipping at 1e-3 changes the target and the loss
    assert float(obj.meanflow_loss(u_exact, _b(world), x_s, s, t, target_clip=1e-3)[0]) > 100 * float(loss)


def test_meanflow_translation_matches_the_paper_convention(world):
    """MeanFlow's own time T = 1 - t (T = 0 data), V(z, T) = -b(z, 1 - T), u(z, r, T) = -v(z, 1 - T, 1 - r):
    its identity target V - (T - r) du/dT (tangent (V, 0, 1) on (z, r, T)) must be minus ours."""
    s, t = _pairs(world, min_gap=0.2)
    x_s = _on_path(world, s)
    X = _X(world, 8)  # RK4 error ~1e-4 relative: enough to tell exact from wrong

    def v_ours(x, ss, tt):
        return (X(x, ss, tt) - x) / (tt - ss).view(-1, 1, 1, 1)

    _, ours = obj.meanflow_target(v_ours, _b(world), x_s, s, t)

    T_mf, r_mf = 1 - s, 1 - t

    def V(z, TT):
        return -_b(world)(z, 1 - TT)

    def u_mf(z, r, TT):
        return -v_ours(z, 1 - TT, 1 - r)

    vz = V(x_s, T_mf)
    _, du_dT = torch.func.jvp(u_mf, (x_s, r_mf, T_mf), (vz, torch.zeros_like(r_mf), torch.ones_like(T_mf)))
    paper = vz - (T_mf - r_mf).view(-1, 1, 1, 1) * du_dT
    assert torch.allclose(paper, -ours, atol=1e-8, rtol=1e-6)


def test_cd_loss_zero_for_exact_consistency_function(world):
    X = _Xk(world)

    def f_exact(x, t):
        return X(x, t, torch.ones_like(t))

    def exact_step(x, ta, tb):
        return X(x, ta, tb)

    grid = 20
    j = torch.arange(world["n"]) % grid
    t_a, t_b = (j / grid).double(), ((j + 1) / grid).double()
    x_a = _on_path(world, t_a)
    exact, _ = obj.consistency_distillation_loss(f_exact, f_exact, exact_step, x_a, t_a, t_b)
    euler, _ = obj.consistency_distillation_loss(f_exact, f_exact, obj.euler_step(_bk(world)), x_a, t_a, t_b)
    heun, _ = obj.consistency_distillation_loss(f_exact, f_exact, obj.heun_step(_bk(world)), x_a, t_a, t_b)

    def f_bad(x, t):
        return f_exact(x, t) + 0.1 * (1 - t).view(-1, 1, 1, 1) * torch.sin(3 * x)

    bad, _ = obj.consistency_distillation_loss(f_bad, f_exact, exact_step, x_a, t_a, t_b)
    assert float(exact) < 1e-20
    assert float(heun) < float(euler) < 1e-2  # the teacher step's own error, O(h^2)
    assert float(bad) > 1e-3


def test_rf_boundary_and_euler_is_ddim(world):
    x = world["x0"][:4]
    out = torch.randn_like(x)
    one = torch.ones(4, dtype=x.dtype)
    assert torch.equal(sampling.denoise_rf(x, one, out), x)  # f(x, 1) = x
    # One Euler step on our path == DDIM on the equivalent VP path (alpha = t / n, sigma = (1 - t) / n).
    t, tn = torch.full((4,), 0.3, dtype=x.dtype), torch.full((4,), 0.55, dtype=x.dtype)
    b = _b(world)(x, t)
    eul = obj.euler_step(_b(world))(x, t, tn)
    x1_hat, x0_hat = x + (1 - 0.3) * b, x - 0.3 * b
    a, sg = sampling.vp_alpha_bar(0.55) ** 0.5, (1 - sampling.vp_alpha_bar(0.55)) ** 0.5
    ddim_vp = a * x1_hat + sg * x0_hat
    assert torch.allclose(eul, ddim_vp * sampling.vp_scale(0.55), atol=1e-12)


def test_exact_samplers(world):
    X = _Xk(world)
    noise = world["x0"][:6]
    one_jump = X(noise, torch.zeros(6, dtype=noise.dtype), torch.ones(6, dtype=noise.dtype))

    def jump(x, s, t):
        return X(x, torch.full((6,), s, dtype=x.dtype), torch.full((6,), t, dtype=x.dtype))

    four = sampling.flowmap_sample(jump, noise, sampling.uniform_times(4))
    assert torch.allclose(four, one_jump, atol=1e-12)  # semigroup: X_{0,1} = X_{3/4,1} o ... o X_{0,1/4}

    def f(x, t):
        return X(x, t, torch.ones_like(t))

    d1 = sampling.consistency_multistep(f, noise, [0.0], lambda k: torch.zeros_like(noise))
    assert torch.allclose(d1, one_jump, atol=1e-12)
    trace: list[torch.Tensor] = []
    zs = {k: torch.randn(noise.shape, generator=torch.Generator().manual_seed(k), dtype=noise.dtype)
          for k in (1, 2)}
    sampling.consistency_multistep(f, noise, [0.0, 0.5, 0.75], zs.__getitem__, trace=trace)
    x_half = 0.5 * trace[0] + 0.5 * zs[1]  # re-noise: x_t = t d + (1 - t) z
    assert torch.allclose(trace[1], f(x_half, torch.full((6,), 0.5, dtype=noise.dtype)))


def test_adversarial_losses():
    real, fake = torch.tensor([2.0, 1.5]), torch.tensor([-1.5, -3.0])
    assert float(obj.hinge_d_loss(real, fake)) == 0.0
    assert float(obj.hinge_d_loss(-real, -fake)) > 4
    assert float(obj.hinge_g_loss(fake)) > 0 > float(obj.hinge_g_loss(real))


def test_add_distill_zero_when_teacher_denoises_to_the_estimate(world):
    """If the teacher's denoiser returns the data point itself (a one-point data set), the ADD term is 0."""
    point = world["x1"][:1]

    def point_velocity(x, t):  # exact velocity of a data set with one point: (point - x) / (1 - t)
        return (point - x) / (1 - t).view(-1, 1, 1, 1)

    x_hat = point.expand(5, -1, -1, -1).clone()
    tr = torch.linspace(0.1, 0.9, 5, dtype=x_hat.dtype)
    z = torch.randn(x_hat.shape, generator=torch.Generator().manual_seed(0), dtype=x_hat.dtype)
    zero, _ = obj.add_distill_loss(x_hat, point_velocity, tr, z)
    off, _ = obj.add_distill_loss(x_hat + 0.1, point_velocity, tr, z)
    assert float(zero) < 1e-20 and float(off) > 1e-3
    solved = obj.teacher_solve(point_velocity, z, torch.zeros(5, dtype=z.dtype) + 0.2, 3, "euler")
    assert torch.allclose(solved, x_hat, atol=1e-10)
