"""CMMD: the google-research estimator reproduced, its bootstrap and per-image rows, options and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.errors import BenchError
from bench.metrics import cmmd as cm
from bench.metrics.common import get_reference, get_space, sample_features
from bench.metrics.registry import get_metric
from tests._netblock import no_network  # noqa: F401  (fixture)
from tests.test_metrics_quality import make_ctx, worse_images

pytestmark = pytest.mark.usefixtures("no_network")

PIXELS = {"feature_space": "pixels"}


def reference_cmmd(x: np.ndarray, y: np.ndarray) -> float:
    """google-research cmmd distance.py's formula, written out in numpy float64 with the full kernel matrices."""
    sigma, scale = 10, 1000
    gamma = 1 / (2 * sigma**2)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x_sq, y_sq = np.diag(x @ x.T), np.diag(y @ y.T)
    k_xx = np.mean(np.exp(-gamma * (-2 * x @ x.T + x_sq[:, None] + x_sq[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2 * x @ y.T + x_sq[:, None] + y_sq[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2 * y @ y.T + y_sq[:, None] + y_sq[None, :])))
    return float(scale * (k_xx + k_yy - 2 * k_xy))


def embeddings(seed: int, n: int, d: int = 32, shift: float = 0.0) -> np.ndarray:
    """A fixed synthetic CLIP-like embedding set: unit-length rows."""
    e = np.random.default_rng(seed).normal(size=(n, d)) + shift
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def run(ctx, name: str, options: dict) -> dict:
    return {r.name: r for r in get_metric(name)(ctx, dict(options))}


def test_cmmd_reproduces_the_reference_formula_on_fixed_embeddings(monkeypatch):
    x, y = embeddings(0, 300), embeddings(1, 250, shift=0.15)
    expected = reference_cmmd(x, y)
    assert expected > 0.1  # the two sets differ: a wrong gamma or scale would not agree below
    assert cm.cmmd(x, y) == pytest.approx(expected, abs=1e-6, rel=1e-9)
    assert cm.cmmd(x, x) == pytest.approx(0.0, abs=1e-9)
    monkeypatch.setattr(cm, "_BLOCK_BYTES", 8 * 300 * 7)  # blocks of 7 columns: the blocked sums agree
    assert cm.cmmd(x, y) == pytest.approx(expected, abs=1e-6, rel=1e-9)
    # a closed form: one point each, |x - y|² = 50: 1000 * (1 + 1 - 2 exp(-50 / 200))
    a, b = np.zeros((1, 4)), np.array([[5.0, 5.0, 0.0, 0.0]])
    assert cm.cmmd(a, b) == pytest.approx(1000 * (2 - 2 * math.exp(-0.25)), rel=1e-12)


def test_cmmd_metric_is_the_reference_on_the_cells_normalised_features(tmp_path):
    ctx = make_ctx(tmp_path, worse_images())
    r = run(ctx, "cmmd", {**PIXELS, "bootstrap": 50})["cmmd"]
    space = get_space(ctx, "cmmd", PIXELS)
    feats = sample_features(ctx, space, 256)
    ref = get_reference(ctx, space, "reference", 256).features
    unit = lambda f: f / np.linalg.norm(f.astype(np.float64), axis=1, keepdims=True)  # noqa: E731
    assert r.value == pytest.approx(reference_cmmd(unit(feats), unit(ref)), abs=1e-6, rel=1e-9)
    assert r.higher_is_better is False and r.n == feats.shape[0]
    assert r.ci_low <= r.value <= r.ci_high and r.provenance["ci"]["resamples"] == 50
    prov = r.provenance
    assert prov["sigma"] == 10 and prov["gamma"] == 0.005 and prov["scale"] == 1000 and prov["dtype"] == "float64"
    assert prov["feature_space"]["feature_space"] == "pixels" and "google-research" in prov["reference_implementation"]
    raw = run(make_ctx(tmp_path, worse_images()), "cmmd", {**PIXELS, "bootstrap": 0, "normalize": False})["cmmd"]
    assert raw.value == pytest.approx(reference_cmmd(feats, ref), abs=1e-6, rel=1e-9) and raw.ci_low is None


def test_bootstrap_replicates_are_cmmd_of_resampled_rows_and_seeded():
    x, y = embeddings(2, 120), embeddings(3, 100, shift=0.1)
    counts = cm.bootstrap_counts(120, 5, (0, cm.CMMD_SEED_STREAM))
    assert (counts.sum(1) == 120).all()
    means = cm.kernel_means(x, y, counts=counts)
    reps = cm.CMMD_SCALE * (means.replicates_xx + means.kyy - 2 * (counts @ means.h) / 120)
    for b in range(5):
        resampled = np.repeat(x, counts[b].astype(int), axis=0)
        assert reps[b] == pytest.approx(reference_cmmd(resampled, y), rel=1e-9)
    assert np.array_equal(counts, cm.bootstrap_counts(120, 5, (0, cm.CMMD_SEED_STREAM)))
    assert not np.array_equal(counts, cm.bootstrap_counts(120, 5, (1, cm.CMMD_SEED_STREAM)))


def test_per_image_rows_average_to_cmmd_and_are_its_influence_function():
    x, y = embeddings(4, 80), embeddings(5, 90, shift=0.2)
    means = cm.kernel_means(x, y)
    rows = cm.cmmd_influence_rows(means)
    value = cm.cmmd_value(means)
    assert rows.mean() == pytest.approx(value, rel=1e-12)

    def weighted(w: np.ndarray) -> float:  # the biased MMD² with sample weights w (reference fixed)
        gamma = 1 / 200
        d = lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1)  # noqa: E731
        return 1000 * (w @ np.exp(-gamma * d(x, x)) @ w + np.exp(-gamma * d(y, y)).mean()
                       - 2 * w @ np.exp(-gamma * d(x, y)).mean(1))

    eps, uniform = 1e-4, np.full(80, 1 / 80)
    for i in (0, 17, 79):  # d/de T((1 - e) P + e delta_i) at e = 0 is row_i - value (central difference: T is
        step = np.eye(80)[i] - uniform  # quadratic in the weights, so it is exact up to rounding)
        slope = (weighted(uniform + eps * step) - weighted(uniform - eps * step)) / (2 * eps)
        assert slope == pytest.approx(rows[i] - value, rel=1e-6, abs=1e-9)


def test_a_worse_sampler_scores_higher_and_evidence_is_kept(tmp_path):
    good = run(make_ctx(tmp_path), "cmmd", PIXELS)["cmmd"]
    bad = run(make_ctx(tmp_path, worse_images()), "cmmd", PIXELS)["cmmd"]
    assert bad.ci_low > good.ci_high
    assert bad.evidence is not None and bad.evidence.kind == "values" and bad.evidence.n == bad.n
    assert bad.evidence.rows.mean() == pytest.approx(bad.value, rel=1e-9)
    again = run(make_ctx(tmp_path, worse_images()), "cmmd", PIXELS)["cmmd"]
    assert (again.value, again.ci_low, again.ci_high) == (bad.value, bad.ci_low, bad.ci_high)  # seeded


def test_variant_names_options_and_one_line_errors(tmp_path):
    ctx = make_ctx(tmp_path)
    assert set(run(ctx, "cmmd:pixels", {"bootstrap": 0})) == {"cmmd:pixels"}
    assert set(cm.CMMD_OPTIONS) >= {"feature_space", "normalize", "bootstrap", "confidence"}
    for name, opts, text in (("cmmd", {**PIXELS, "sigma": 5}, "unknown option(s) sigma"),
                             ("cmmd:pixels", {"feature_space": "inception-v3"}, "keep one"),
                             ("cmmd", {**PIXELS, "normalize": "yes"}, "normalize must be true or false"),
                             ("cmmd", {**PIXELS, "bootstrap": 1}, "bootstrap must be"),
                             ("cmmd", {**PIXELS, "confidence": 2}, "confidence must be"),
                             ("cmmd", {**PIXELS, "batch_size": 0}, "batch_size must be")):
        with pytest.raises(BenchError) as e:
            run(ctx, name, opts)
        assert text in str(e.value) and "\n" not in str(e.value), name
    one = make_ctx(tmp_path, n=1, images=ctx.images[:1])
    with pytest.raises(BenchError, match="needs at least 2 samples"):
        run(one, "cmmd", PIXELS)
    with pytest.raises(BenchError, match="zero feature vector"):
        cm.l2_normalize(np.zeros((3, 4)), "a sample")


def test_the_report_labels_the_new_metrics_as_quality_with_their_directions():
    from bench.report.data import MetricInfo, metric_kind

    for name, hib, label in (("cmmd", False, "CMMD"), ("cmmd:pixels", False, "CMMD [pixels]"),
                             ("density", True, "density"), ("coverage:pixels", True, "coverage [pixels]")):
        info = MetricInfo(name, hib, metric_kind(name, hib))
        assert (info.kind, info.label) == ("quality", label)
