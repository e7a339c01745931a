"""The analytic Gaussian-mixture world is a ground truth: solver error shrinks with NFE, the oracle is exact."""

from __future__ import annotations

import itertools

import torch

from bench.adapters.analytic import AnalyticEuler, AnalyticHeun, OracleFlowMap, integrate
from bench.adapters.protocol import SampleRequest, per_image_noise
from bench.hardware import HardwareSpec
from bench.metrics.nfe import NFECounter
from bench.zoo.gmm import GaussianMixtureDataset, templates, velocity

RES = 4
SEEDS = list(range(16))


def _float_sample(sampler_cls, nfe: int, labels=None, **opts) -> torch.Tensor:
    """Run a sampler but keep model-space floats (intercept to_uint8) to measure solver error precisely."""
    import bench.adapters.analytic as mod

    captured = {}
    orig = mod.to_uint8
    mod.to_uint8 = lambda x: captured.setdefault("x", x.double())
    try:
        s = sampler_cls(components=4, **opts)
        s.load(HardwareSpec())
        s.sample(SampleRequest(seeds=SEEDS, nfe=nfe, height=RES, width=RES, labels=labels))
    finally:
        mod.to_uint8 = orig
    return captured["x"]


def _reference(labels=None) -> torch.Tensor:
    mu = templates(4, RES).double()
    x0 = per_image_noise(SEEDS, (3, RES, RES), dtype=torch.float64)
    lab = torch.as_tensor(labels) if labels is not None else torch.full((len(SEEDS),), -1)
    n = len(SEEDS)
    return integrate(x0, torch.zeros(n), torch.ones(n), lab, mu, 0.15**2, substeps=400)


LABELS = [0, 1, 2, 3] * 4


def test_euler_error_shrinks_with_nfe():
    ref = _reference(LABELS)  # one Gaussian per image: a smooth ODE, so the error falls at every doubling
    errors = [float((_float_sample(AnalyticEuler, n, LABELS) - ref).pow(2).mean().sqrt()) for n in (1, 2, 4, 8, 16, 32)]
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < errors[0] / 10
    # unconditional: few steps can send an image to the wrong mode, but enough steps converge
    ref_u = _reference()
    assert float((_float_sample(AnalyticEuler, 64) - ref_u).pow(2).mean().sqrt()) < 0.1 * float(
        (_float_sample(AnalyticEuler, 1) - ref_u).pow(2).mean().sqrt())


def test_heun_beats_euler_at_equal_steps():
    ref = _reference()
    for n in (8, 16):
        e = float((_float_sample(AnalyticEuler, n) - ref).pow(2).mean())
        h = float((_float_sample(AnalyticHeun, n) - ref).pow(2).mean())
        assert h < e


def test_oracle_flow_map_matches_fine_reference_in_one_call():
    ref = _reference()
    one = _float_sample(OracleFlowMap, 1, substeps=200)
    assert float((one - ref).abs().max()) < 1e-3
    assert float((_float_sample(OracleFlowMap, 2, LABELS, substeps=200) - _reference(LABELS)).abs().max()) < 1e-3


def test_velocity_is_the_conditional_expectation():
    """Monte Carlo check of the closed form at one (x_t, t): E[x1 - x0 | x_t] for a single component."""
    mu = templates(2, 2).double()
    t, s2 = 0.6, 0.15**2
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(400_000, 3, 2, 2, generator=g, dtype=torch.float64)
    x1 = mu[0] + 0.15 * torch.randn(400_000, 3, 2, 2, generator=g, dtype=torch.float64)
    xt = (1 - t) * x0 + t * x1
    # linear regression of the target on x_t recovers the conditional mean for a Gaussian pair
    target = (x1 - x0).flatten(1)
    xf = xt.flatten(1)
    point = xf[:1]
    v_closed = velocity(point.view(1, 3, 2, 2), torch.tensor([t]), torch.tensor([0]), mu, s2).flatten()
    cov = ((xf - xf.mean(0)) * (target - target.mean(0))).mean(0) / xf.var(0)
    v_mc = target.mean(0) + cov * (point[0] - xf.mean(0))
    assert torch.allclose(v_closed, v_mc, atol=0.02)


def _count(sampler, nfe: int, labels=None, guidance=None) -> float:
    sampler.load(HardwareSpec())
    req = SampleRequest(seeds=SEEDS[:5], nfe=nfe, height=RES, width=RES, labels=labels, guidance=guidance)
    with NFECounter(sampler.networks()) as c:
        sampler.sample(req)
    return c.per_image(5)


def test_counted_nfe_euler_heun_cfg():
    labels = [0, 1, 2, 3, 0]
    for n in (1, 2, 3, 8):
        assert _count(AnalyticEuler(components=4), n) == n
        assert _count(AnalyticHeun(components=4), n) == 2 * n - 1
        assert _count(AnalyticEuler(components=4), n, labels, guidance=2.0) == 2 * n
        assert _count(AnalyticHeun(components=4), n, labels, guidance=2.0) == 2 * (2 * n - 1)
        assert _count(OracleFlowMap(components=4, substeps=2), n) == n


def test_samples_do_not_depend_on_batch_composition():
    s = AnalyticEuler(components=4)
    s.load(HardwareSpec())
    ds = GaussianMixtureDataset(components=4)
    labels = ds.labels(range(8))
    full = s.sample(SampleRequest(seeds=range(8), nfe=3, height=RES, width=RES, labels=labels))
    part = s.sample(SampleRequest(seeds=range(4, 8), nfe=3, height=RES, width=RES, labels=labels[4:]))
    assert torch.equal(full[4:], part)


def test_dataset_is_deterministic_and_splits_differ():
    a = GaussianMixtureDataset(split="eval").images(range(6), 8)
    b = GaussianMixtureDataset(split="eval").images(range(6), 8)
    c = GaussianMixtureDataset(split="train").images(range(6), 8)
    assert torch.equal(a, b) and not torch.equal(a, c)
