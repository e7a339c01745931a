"""Density and coverage: equal to the authors' prdc package, a hand-worked case, CIs, rows, options and errors."""

from __future__ import annotations

import numpy as np
import pytest
from prdc import compute_prdc

from bench.errors import BenchError
from bench.metrics import density_coverage as dc
from bench.metrics.bootstrap import wilson_interval
from bench.metrics.common import get_reference, get_space, sample_features
from bench.metrics.registry import get_metric
from tests._netblock import no_network  # noqa: F401  (fixture)
from tests.test_metrics_quality import make_ctx, worse_images

pytestmark = pytest.mark.usefixtures("no_network")

PIXELS = {"feature_space": "pixels"}


def run(ctx, name: str, options: dict) -> dict:
    return {r.name: r for r in get_metric(name)(ctx, dict(options))}


def test_equal_to_prdc_on_the_same_features():
    rng = np.random.default_rng(0)
    for n_real, n_fake, d, k, shift, scale in ((400, 300, 16, 5, 0.3, 1.0), (250, 350, 8, 3, 0.0, 1.6),
                                               (300, 300, 32, 10, 0.5, 0.7)):
        real = rng.normal(size=(n_real, d))
        fake = rng.normal(size=(n_fake, d)) * scale + shift
        want = compute_prdc(real, fake, k)
        rows, cov = dc.density_coverage_rows(real, fake, k)
        assert rows.shape == (n_fake,) and cov.shape == (n_real,)
        assert rows.mean() == pytest.approx(want["density"], rel=1e-12, abs=1e-12)
        assert cov.mean() == want["coverage"]
        small = dc.density_coverage_rows(real, fake, k, block=37)  # several distance blocks: same numbers
        assert np.array_equal(small[0], rows) and np.array_equal(small[1], cov)


def test_a_hand_worked_case_with_strict_balls():
    # k = 1: radii 1, 1, 0.5, 0.5. Sample 0.5 lies in the balls of 0 and 1; 2.5 sits exactly on 3's radius
    # (|2.5 - 3| = 0.5, not < 0.5) and in no other ball; 10 in none. Density (2 + 0 + 0) / (1 * 3); reference
    # images 0 and 1 are covered, 3 and 3.5 are not (their nearest sample is 0.5 and 1.0 away).
    real = np.array([[0.0], [1.0], [3.0], [3.5]])
    fake = np.array([[0.5], [2.5], [10.0]])
    rows, cov = dc.density_coverage_rows(real, fake, 1)
    assert rows.tolist() == [2.0, 0.0, 0.0] and cov.tolist() == [1.0, 1.0, 0.0, 0.0]
    want = compute_prdc(real, fake, 1)
    assert (rows.mean(), cov.mean()) == (pytest.approx(2 / 3), 0.5) == (want["density"], want["coverage"])


def test_metric_on_a_cell_equals_prdc_with_cis_rows_and_provenance(tmp_path):
    ctx = make_ctx(tmp_path, worse_images())
    r = run(ctx, "density_coverage", {**PIXELS, "bootstrap": 300})
    assert set(r) == {"density", "coverage"}
    space = get_space(ctx, "density_coverage", PIXELS)
    feats = sample_features(ctx, space, 256).astype(np.float64)
    ref = get_reference(ctx, space, "reference", 256).features.astype(np.float64)
    want = compute_prdc(ref, feats, 5)
    density, coverage = r["density"], r["coverage"]
    assert density.value == pytest.approx(want["density"], rel=1e-12) and coverage.value == want["coverage"]
    for m in (density, coverage):
        assert m.higher_is_better is True and m.n == len(ctx.indices)
        assert m.ci_low <= m.value <= m.ci_high and m.provenance["nearest_k"] == 5
        assert m.evidence is not None and m.evidence.rows.mean() == pytest.approx(m.value, rel=1e-12)
    iv = wilson_interval(coverage.value, coverage.n, 0.95)
    assert (coverage.ci_low, coverage.ci_high) == (iv.low, iv.high)
    assert density.provenance["ci"]["resamples"] == 300 and density.provenance["ci"]["seed"] == [0, dc.DC_SEED_STREAM]
    again = run(make_ctx(tmp_path, worse_images()), "density_coverage", {**PIXELS, "bootstrap": 300})["density"]
    assert (again.ci_low, again.ci_high) == (density.ci_low, density.ci_high)  # seeded
    assert run(ctx, "density_coverage", {**PIXELS, "bootstrap": 0})["density"].ci_low is None


def test_a_perfect_sampler_covers_more_than_a_worse_one(tmp_path):
    good = run(make_ctx(tmp_path), "density_coverage", PIXELS)
    bad = run(make_ctx(tmp_path, worse_images()), "density_coverage", PIXELS)
    assert good["coverage"].ci_low > bad["coverage"].ci_high
    assert good["density"].ci_low > bad["density"].ci_high
    assert 0.7 < good["density"].value < 1.3  # samples distributed like the reference: density near 1


def test_variant_names_options_and_one_line_errors(tmp_path):
    ctx = make_ctx(tmp_path)
    r = run(ctx, "density_coverage:pixels", {"nearest_k": 3})
    assert set(r) == {"density:pixels", "coverage:pixels"} and r["coverage:pixels"].provenance["nearest_k"] == 3
    assert set(dc.DC_OPTIONS) >= {"feature_space", "nearest_k", "bootstrap", "confidence"}
    for name, opts, text in (("density_coverage", {**PIXELS, "k": 5}, "unknown option(s) k"),
                             ("density_coverage:pixels", {"feature_space": "inception-v3"}, "keep one"),
                             ("density_coverage", {**PIXELS, "nearest_k": 0}, "nearest_k must be a positive"),
                             ("density_coverage", {**PIXELS, "nearest_k": "5"}, "nearest_k must be a positive"),
                             ("density_coverage", {**PIXELS, "bootstrap": 1}, "bootstrap must be"),
                             ("density_coverage", {**PIXELS, "nearest_k": 256}, "needs more than nearest_k=256")):
        with pytest.raises(BenchError) as e:
            run(ctx, name, opts)
        assert text in str(e.value) and "\n" not in str(e.value), name
    few = make_ctx(tmp_path, n=5, images=ctx.images[:5])
    with pytest.raises(BenchError, match="needs more than nearest_k=5 samples and reference images, got 5 and 5"):
        run(few, "density_coverage", PIXELS)
