"""Quality metrics through the registry on analytic-world cells: names, uncertainty, provenance, caching, reuse."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.metrics import InsufficientSamplesError, metric_names
from bench.metrics.features import build_feature_space
from bench.metrics.fidelity import calculate_metrics
from bench.metrics.frechet import FeatureStats, frechet_distance
from bench.metrics.reference import key_digest, reference_key
from bench.metrics.registry import QualityContext, get_metric
from bench.zoo.gmm import GaussianMixtureDataset
from tests._netblock import no_network  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("no_network")

N, RES = 256, 8
PIXELS = {"feature_space": "pixels"}


def make_ctx(cache: Path, images: torch.Tensor | None = None, n: int = N, res: int = RES, components: int = 8,
             prompts: bool = True) -> QualityContext:
    ds = GaussianMixtureDataset(components=components)
    idx = list(range(n))
    cond = ds.conditions(idx)
    if images is None:  # a perfect sampler: fresh draws of the same labels (matched draw 2; the floor uses 1)
        images = ds.matched_images(idx, res, draw=2)
    return QualityContext(images=images, indices=idx, seeds=idx, prompts=cond.prompts if prompts else None,
                          labels=cond.labels, dataset=ds, resolution=res, device=torch.device("cpu"),
                          cache_dir=cache, seed=0)


def worse_images(n: int = N, res: int = RES) -> torch.Tensor:
    """An imperfect sampler: right modes, blurred detail and a colour cast."""
    x = GaussianMixtureDataset().images([i + 5_000_000 for i in range(n)], res).float()
    x = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False) + 12
    return x.clamp(0, 255).round().to(torch.uint8)


def run(ctx: QualityContext, name: str, options: dict) -> dict:
    return {r.name: r for r in get_metric(name)(ctx, dict(options))}


@pytest.fixture
def zoo_clip(tmp_path, monkeypatch) -> str:
    """shapes-clip with random weights in a temporary zoo folder (the shipped weights are not needed)."""
    from bench.zoo import checkpoints, shapes_clip

    monkeypatch.setenv("BENCH_ZOO_WEIGHTS", str(tmp_path / "zoo"))
    torch.manual_seed(0)
    return checkpoints.save_fp16(shapes_clip.to_compact(shapes_clip.build_model().state_dict()),
                                 checkpoints.weight_path("shapes-clip"), {})


def test_registry_lists_the_quality_metrics_and_resolves_variants():
    assert {"fd", "fd_floor", "kid", "precision_recall", "precision", "recall", "clip_score"} <= set(metric_names())
    assert callable(get_metric("fd:pixels")) and callable(get_metric("clip_score:ViT-B-32:openai"))
    assert callable(get_metric("tests.plugins.metrics:sample_stats"))  # module paths still work
    with pytest.raises(BenchError):
        get_metric("no_such_metric")


def test_smoke_cell_gets_every_number_with_ci_n_and_provenance(tmp_path, zoo_clip):
    ctx = make_ctx(tmp_path / "cache", worse_images())
    results = {}
    for name, opts in (("fd", {**PIXELS, "bootstrap": 100}), ("kid", PIXELS), ("precision_recall", PIXELS),
                       ("clip_score", {"bootstrap": 100})):
        results.update(run(ctx, name, opts))
    assert set(results) == {"fd", "fd_floor", "kid", "precision", "recall", "clip_score:shapes-clip"}
    lower_better = {"fd", "fd_floor", "kid"}
    for name, r in results.items():
        assert r.higher_is_better == (name not in lower_better), name
        assert r.n == N and r.value is not None and np.isfinite(r.value), name
        assert r.ci_low is not None and r.ci_low <= r.value <= r.ci_high, name
        prov = json.loads(json.dumps(r.provenance))  # stored as JSON
        assert prov["n_samples"] == N and prov["seeds"]["count"] == N and "torch-fidelity" in prov["versions"]
    fd, floor = results["fd"], results["fd_floor"]
    space = fd.provenance["feature_space"]
    assert space["feature_space"] == "pixels" and len(space["weights_sha256"]) == 64
    assert fd.provenance["noise_floor"] == floor.value and fd.provenance["ci"]["resamples"] == 100
    assert fd.value > floor.ci_high  # an imperfect sampler sits clearly above the noise floor
    clip = results["clip_score:shapes-clip"].provenance
    assert clip["weights_sha256"] == zoo_clip and clip["scale"] == 100.0 and "max(cos, 0)" in clip["clamp"]
    # features computed once per cell and space, shared by FD / KID / PR; one reference + one floor set
    assert sum(k.startswith("features:pixels") for k in ctx.shared) == 1
    assert sum(k.startswith("reference:") for k in ctx.shared) == 2


def test_perfect_sampler_scores_like_the_noise_floor_and_an_imperfect_one_does_not(tmp_path):
    good = run(make_ctx(tmp_path / "c"), "fd", {**PIXELS, "bootstrap": 50})
    bad = run(make_ctx(tmp_path / "c", worse_images()), "fd", {**PIXELS, "bootstrap": 50})
    floor = good["fd_floor"]
    assert bad["fd_floor"].value == floor.value  # one floor per (dataset, resolution, space, N)
    assert bad["fd_floor"].provenance["from_cache"] is True
    assert good["fd"].value < 2 * floor.ci_high
    assert bad["fd"].provenance["excess_fd"] > 5 * max(good["fd"].provenance["excess_fd"], floor.value)
    kid_good = run(make_ctx(tmp_path / "c"), "kid", PIXELS)["kid"]
    kid_bad = run(make_ctx(tmp_path / "c", worse_images()), "kid", PIXELS)["kid"]
    assert kid_good.ci_low <= 0.0 < kid_bad.ci_low


def test_reference_statistics_are_cached_keyed_and_never_reused_when_stale(tmp_path):
    cache = tmp_path / "cache"
    opts = {**PIXELS, "bootstrap": 0, "noise_floor": False}
    first = run(make_ctx(cache), "fd", opts)["fd"]
    files = sorted((cache / "reference_stats").glob("ref-*.npz"))
    assert len(files) == 1 and first.provenance["reference"]["from_cache"] is False
    again = run(make_ctx(cache), "fd", opts)["fd"]
    assert again.provenance["reference"]["from_cache"] is True and again.value == first.value

    # every key field makes a new entry: N, resolution, dataset identity, feature-space weights
    run(make_ctx(cache, n=200, images=make_ctx(cache).images[:200]), "fd", opts)
    run(make_ctx(cache, res=4), "fd", opts)
    run(make_ctx(cache, components=4), "fd", opts)
    run(make_ctx(cache), "fd", {**opts, "dim": 32})
    assert len(list((cache / "reference_stats").glob("ref-*.npz"))) == 5

    # a file whose stored key differs (stale, or a collision) is recomputed, not reused
    other = next(p for p in (cache / "reference_stats").glob("ref-*.npz") if p != files[0])
    shutil.copyfile(other, files[0])
    redone = run(make_ctx(cache), "fd", opts)["fd"]
    assert redone.provenance["reference"]["from_cache"] is False and redone.value == first.value
    files[0].write_bytes(b"not an npz")
    assert run(make_ctx(cache), "fd", opts)["fd"].value == first.value


def test_changing_the_extractors_weights_changes_the_reference_key(tmp_path, monkeypatch):
    from bench.zoo import checkpoints, shapes_clip

    ctx = make_ctx(tmp_path / "cache")
    digests = []
    for seed in (0, 1):
        monkeypatch.setenv("BENCH_ZOO_WEIGHTS", str(tmp_path / f"zoo{seed}"))
        torch.manual_seed(seed)
        checkpoints.save_fp16(shapes_clip.to_compact(shapes_clip.build_model().state_dict()),
                              checkpoints.weight_path("shapes-clip"), {})
        space = build_feature_space("shapes-clip")
        digests.append(key_digest(reference_key(ctx.dataset, RES, space, ctx.indices, "reference")))
    assert digests[0] != digests[1]


def test_variants_options_and_errors(tmp_path):
    ctx = make_ctx(tmp_path)
    r = run(ctx, "fd:pixels", {"bootstrap": 0, "fd_inf": 6})
    assert set(r) == {"fd:pixels", "fd_floor:pixels", "fd_inf:pixels"}
    assert r["fd:pixels"].ci_low is None and r["fd_inf:pixels"].provenance["ns"][-1] == N
    assert set(run(ctx, "kid:pixels", {})) == {"kid:pixels"}
    assert set(run(ctx, "precision:pixels", {})) == {"precision:pixels"}
    for name, opts, text in (("fd", {**PIXELS, "bootstrp": 3}, "unknown option"),
                             ("fd:pixels", {"feature_space": "inception-v3"}, "keep one"),
                             ("fd", {**PIXELS, "backend": "tf"}, "backend must be"),
                             ("fd", {**PIXELS, "bootstrap": 1}, "bootstrap must be"),
                             ("kid", {**PIXELS, "subset_size": 10_000}, "subset_size")):
        with pytest.raises(BenchError) as e:
            run(ctx, name, opts)
        assert text in str(e.value) and "\n" not in str(e.value), name
    small = make_ctx(tmp_path, n=40, images=ctx.images[:40])
    with pytest.raises(InsufficientSamplesError) as e:
        run(small, "fd", PIXELS)
    assert "N=40" in str(e.value) and "D=64" in str(e.value)


def test_kid_pr_fd_agree_with_torch_fidelity_calculate_metrics(tmp_path):
    ctx = make_ctx(tmp_path, worse_images())
    ours = {**run(ctx, "kid", {**PIXELS, "subsets": 20, "subset_size": 100}),
            **run(ctx, "precision_recall", PIXELS), **run(ctx, "fd", {**PIXELS, "bootstrap": 0})}
    space = build_feature_space("pixels")
    ref_images = ctx.dataset.images(ctx.indices, RES)
    tf = calculate_metrics(space, ctx.images, ref_images, fid=True, kid=True, prc=True, kid_subsets=20,
                           kid_subset_size=100, rng_seed=ctx.seed)
    assert ours["kid"].value == pytest.approx(tf["kernel_inception_distance_mean"], rel=1e-6)
    assert ours["precision"].value == tf["precision"] and ours["recall"].value == tf["recall"]
    assert ours["fd"].value == pytest.approx(tf["frechet_inception_distance"], rel=1e-5)  # tf's float32 mean
    feats = space.extract(ctx.images)
    assert ours["fd"].value == pytest.approx(frechet_distance(feats, space.extract(ref_images)), rel=1e-12)


def test_kid_from_kernel_rows_is_torch_fidelitys_kid(tmp_path):
    from torch_fidelity.metric_kid import kid_features_to_metric

    from bench.metrics.fidelity import kid_from_kernel_rows

    rng = np.random.default_rng(0)
    for n1, n2, d, subsets, size, degree, coef0 in ((300, 250, 16, 30, 120, 3, 1.0), (500, 500, 64, 10, 250, 2, 0.5)):
        a = rng.normal(size=(n1, d))
        b = rng.normal(size=(n2, d)) * 1.2 + 0.1
        tf = kid_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=subsets,
                                    kid_subset_size=size, kid_kernel_poly_degree=degree, kid_kernel_poly_coef0=coef0,
                                    rng_seed=7, verbose=False)
        mean, std = kid_from_kernel_rows(a, b, subsets, size, degree, coef0, seed=7)
        assert mean == pytest.approx(tf["kernel_inception_distance_mean"], rel=1e-9)
        assert std == pytest.approx(tf["kernel_inception_distance_std"], rel=1e-7)
    ctx = make_ctx(tmp_path)  # the metric's two backends agree on float32 features too
    fast = run(ctx, "kid", {**PIXELS, "backend": "bench"})["kid"]
    slow = run(ctx, "kid", {**PIXELS, "backend": "torch-fidelity"})["kid"]
    assert fast.value == pytest.approx(slow.value, rel=1e-4, abs=1e-7) and fast.provenance["backend"] == "bench"


def test_clip_score_is_the_clamped_scaled_cosine_mean(tmp_path, zoo_clip):
    from bench.zoo import shapes_clip

    ctx = make_ctx(tmp_path, n=64)
    r = run(ctx, "clip_score", {"bootstrap": 50})["clip_score:shapes-clip"]
    model, _ = shapes_clip.load_shapes_clip("cpu")
    expected = shapes_clip.clip_scores(model, ctx.images, ctx.prompts).double().mean().item()
    assert r.value == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert r.provenance["prompts"] == {"count": 64, "unique": len(set(ctx.prompts))}
    assert run(ctx, "clip_score:shapes-clip", {"bootstrap": 0})["clip_score:shapes-clip"].value == r.value
    with pytest.raises(BenchError) as e:
        run(make_ctx(tmp_path, n=64, prompts=False), "clip_score", {})
    assert "needs prompts" in str(e.value)


def test_precision_and_recall_alone_are_the_pairs_halves(tmp_path):
    ctx = make_ctx(tmp_path / "cache", worse_images())
    both = run(ctx, "precision_recall", PIXELS)
    alone = {**run(make_ctx(tmp_path / "c2", worse_images()), "precision", PIXELS),
             **run(make_ctx(tmp_path / "c3", worse_images()), "recall", PIXELS)}
    assert set(alone) == {"precision", "recall"} == set(both)
    for name in both:
        a, b = alone[name], both[name]
        assert (a.value, a.ci_low, a.ci_high, a.n) == (b.value, b.ci_low, b.ci_high, b.n), name
        assert a.higher_is_better and 0.0 <= a.ci_low <= a.value <= a.ci_high <= 1.0
    assert both["precision"].provenance["what"] == "fraction of samples inside the reference manifold"
    assert both["recall"].provenance["what"] == "fraction of reference images inside the samples' manifold"
    assert both["precision"].provenance["neighborhood"] == 3
    again = run(ctx, "precision_recall", PIXELS)  # the same context: the cached pair, not a recomputation
    assert again["precision"] is both["precision"]
    with pytest.raises(BenchError, match="needs more than neighborhood=300 samples"):
        run(make_ctx(tmp_path / "c4", worse_images()), "recall", {**PIXELS, "neighborhood": 300})


def test_a_feature_space_registers_in_torch_fidelity_once_per_object_under_a_stable_name():
    """register_torch_fidelity: the name is `bench-<space name>-<weights hash and preprocessing>` in the characters
    torch-fidelity accepts; registering the same object again is a no-op, a new object of the same identity
    replaces the old one, and the extractor returns the space's own features."""
    import re

    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    from bench.metrics.fidelity import register_torch_fidelity

    space = build_feature_space("pixels", {"size": 4, "dim": 16})
    name = register_torch_fidelity(space)
    tail = re.sub(r"[^A-Za-z0-9]+", "", f"{space.weights_sha256[:12]}{space.preprocessing}")[:40]
    assert name == f"bench-{re.sub(r'[^A-Za-z0-9_.-]+', '-', space.name)}-{tail}"
    assert re.fullmatch(r"bench-[A-Za-z0-9_.-]+-[A-Za-z0-9]{1,40}", name)
    cls = FEATURE_EXTRACTORS_REGISTRY[name]
    assert register_torch_fidelity(space) == name and FEATURE_EXTRACTORS_REGISTRY[name] is cls
    twin = build_feature_space("pixels", {"size": 4, "dim": 16})
    assert register_torch_fidelity(twin) == name and FEATURE_EXTRACTORS_REGISTRY[name].space is twin
    extractor = FEATURE_EXTRACTORS_REGISTRY[name](name, ["features"])
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    (out,) = extractor(images)
    np.testing.assert_array_equal(out.numpy(), space.extract(images))
    assert extractor.get_provided_features_list() == ("features",) and not extractor.can_be_compiled()
    assert extractor.get_default_feature_layer_for_metric("fid") == "features"


def test_precision_alone_reports_its_own_name_in_errors(tmp_path):
    with pytest.raises(BenchError, match=r"metric precision: .*neighborhood"):
        run(make_ctx(tmp_path / "c", worse_images()), "precision", {**PIXELS, "neighborhood": 0})
    with pytest.raises(BenchError, match=r"metric precision: needs more than neighborhood=300"):
        run(make_ctx(tmp_path / "c2", worse_images()), "precision", {**PIXELS, "neighborhood": 300})


def test_fd_floor_alone_is_the_floor_fd_reports_and_errors_name_fd_floor(tmp_path):
    ctx = make_ctx(tmp_path / "cache", worse_images())
    with_fd = run(ctx, "fd", {**PIXELS, "bootstrap": 30, "confidence": 0.8})["fd_floor"]
    alone = run(make_ctx(tmp_path / "cache2", worse_images()), "fd_floor", {**PIXELS, "bootstrap": 30,
                                                                           "confidence": 0.8})
    assert set(alone) == {"fd_floor"}
    floor = alone["fd_floor"]
    assert (floor.value, floor.ci_low, floor.ci_high, floor.n) == (with_fd.value, with_fd.ci_low, with_fd.ci_high,
                                                                   with_fd.n)
    assert floor.provenance["ci"]["confidence"] == 0.8 and floor.provenance["ci"]["resamples"] == 30
    assert floor.provenance["feature_space"]["feature_space"] == "pixels" and not floor.higher_is_better
    assert floor.provenance["floor_kind"] == "condition-matched" and floor.provenance["backend"] == "bench"
    for opts, text in (({**PIXELS, "noise_floor": False}, "metric fd_floor: unknown option(s) noise_floor"),
                       ({**PIXELS, "batch_size": 0}, "metric fd_floor: batch_size must be a positive integer"),
                       ({**PIXELS, "backend": "tf"}, "metric fd_floor: backend must be one of"),
                       ({"variant": "pixels", "feature_space": "clip"}, "metric fd_floor:pixels also sets")):
        with pytest.raises(BenchError, match=re.escape(text)):
            run(ctx, "fd_floor", opts)


def test_precision_recall_options_change_what_they_should(tmp_path):
    ctx = make_ctx(tmp_path / "c", worse_images())
    base = run(ctx, "precision_recall", PIXELS)
    wide_k = run(make_ctx(tmp_path / "c2", worse_images()), "precision_recall", {**PIXELS, "neighborhood": 10})
    assert wide_k["recall"].provenance["neighborhood"] == 10
    assert wide_k["recall"].value >= base["recall"].value and wide_k["precision"].value >= base["precision"].value
    assert (wide_k["recall"].value, wide_k["precision"].value) != (base["recall"].value, base["precision"].value)
    narrow = run(make_ctx(tmp_path / "c3", worse_images()), "precision_recall", {**PIXELS, "confidence": 0.5})
    for name in ("precision", "recall"):
        assert narrow[name].value == base[name].value
        assert narrow[name].ci_high - narrow[name].ci_low < base[name].ci_high - base[name].ci_low
        assert narrow[name].provenance["ci"]["confidence"] == 0.5
    assert base["precision"].n == N and base["recall"].n == N
    assert base["precision"].evidence is not None and base["recall"].evidence is not None
    for opts, text in (({**PIXELS, "neighbourhood": 3}, "metric precision_recall: unknown option(s) neighbourhood"),
                       ({**PIXELS, "neighborhood": 0}, "metric precision_recall: neighborhood must be a positive "
                                                        "integer, got 0"),
                       ({**PIXELS, "confidence": 1.0}, "confidence must be in (0, 1)"),
                       ({**PIXELS, "batch_size": -1}, "metric precision_recall: batch_size must be a positive "
                                                      "integer"),
                       ({**PIXELS, "neighborhood": N}, f"metric precision_recall: needs more than neighborhood={N} "
                                                       "samples")):
        with pytest.raises(BenchError, match=re.escape(text)):
            run(make_ctx(tmp_path / "c4", worse_images()), "precision_recall", opts)
    just = run(make_ctx(tmp_path / "c5", worse_images()), "precision_recall", {**PIXELS, "neighborhood": N - 1})
    assert just["precision"].provenance["neighborhood"] == N - 1  # N samples: k = N - 1 is the largest


def test_calculate_metrics_is_quiet_and_caches_nothing(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    space = build_feature_space("pixels", {"size": 4, "dim": 16})
    gen = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    ref = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    capfd.readouterr()
    out = calculate_metrics(space, gen, ref, fid=True)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""  # verbose off
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # torch-fidelity's disk cache off
    assert out["frechet_inception_distance"] == pytest.approx(
        frechet_distance(space.extract(gen), space.extract(ref)), rel=1e-4)


def test_kid_options_errors_name_kid_and_the_option(tmp_path):
    ctx = make_ctx(tmp_path)
    for opts, text in (({**PIXELS, "subset": 10}, "metric kid: unknown option(s) subset"),
                       ({**PIXELS, "batch_size": 0}, "metric kid: batch_size must be a positive integer"),
                       ({**PIXELS, "subsets": 0}, "metric kid: subsets must be a positive integer, got 0"),
                       ({**PIXELS, "degree": -2}, "metric kid: degree must be a positive integer, got -2"),
                       ({**PIXELS, "subset_size": 1}, f"metric kid: subset_size 1 must be between 2 and the sample "
                                                     f"count {N}"),
                       ({**PIXELS, "backend": "tf"}, "metric kid: backend must be one of auto, bench, torch-fidelity"),
                       ({"variant": "pixels", "feature_space": "clip"}, "metric kid:pixels also sets")):
        with pytest.raises(BenchError, match=re.escape(text)):
            run(ctx, "kid", opts)


def test_kid_is_the_subset_estimator_with_its_options_interval_and_evidence(tmp_path, monkeypatch):
    """kid: torch-fidelity's estimator on the cell's and the reference's features with the suite's kernel, subsets
    and seed; the interval is KID ± z · std_over_subsets · sqrt(subset_size / N) (docs/metrics.md); per-image
    rows (its influence function, with the cell's seeds and condition strata) are kept up to KID_EVIDENCE_MAX_N."""
    from statistics import NormalDist

    import bench.metrics.fidelity as fidelity
    from bench.evidence import condition_strata

    ctx = make_ctx(tmp_path / "a", worse_images())
    space = build_feature_space("pixels")
    feats = space.extract(ctx.images)
    ref = space.extract(ctx.dataset.images(ctx.indices, RES))
    opts = {**PIXELS, "subsets": 20, "subset_size": 100, "degree": 2, "coef0": 0.5, "confidence": 0.8}
    r = run(ctx, "kid", {**opts, "backend": "bench"})["kid"]
    mean, std = fidelity.kid_from_kernel_rows(feats, ref, 20, 100, 2, 0.5, seed=ctx.seed)
    assert r.value == pytest.approx(mean, rel=1e-12) and r.n == N and not r.higher_is_better
    half = NormalDist().inv_cdf(0.9) * std * np.sqrt(100 / N)
    assert (r.ci_low, r.ci_high) == (pytest.approx(mean - half, rel=1e-9), pytest.approx(mean + half, rel=1e-9))
    p = r.provenance
    assert (p["kernel"], p["subsets"], p["subset_size"], p["rng_seed"], p["backend"]) == \
        ("(x·y / D + 0.5)^2", 20, 100, ctx.seed, "bench")
    assert p["std_over_subsets"] == pytest.approx(std) and p["ci"]["confidence"] == 0.8
    assert p["ci"]["method"] == "normal: KID ± z * std_over_subsets * sqrt(subset_size / N)"
    assert p["library"].startswith("torch-fidelity's KID estimator and subsets")
    full, rows = fidelity.kid_influence_rows(feats, ref, 2, 0.5)
    assert p["paired_evidence"] == {"full_sample_kid": pytest.approx(full), "what": (
        "per-image rows of the full-sample unbiased MMD² (its influence function): paired differences resample them")}
    np.testing.assert_allclose(r.evidence.rows, rows, rtol=1e-12)
    np.testing.assert_array_equal(r.evidence.strata, condition_strata(ctx.labels, ctx.prompts))
    tf = run(make_ctx(tmp_path / "b", worse_images()), "kid", {**opts, "backend": "torch-fidelity"})["kid"]
    assert tf.value == pytest.approx(mean, rel=1e-4) and tf.provenance["library"] == \
        "torch-fidelity kid_features_to_metric" and tf.provenance["backend"] == "torch-fidelity"
    # defaults: 100 subsets of min(1000, N / 2), the cubic kernel with coef0 1, 95 %
    d = run(make_ctx(tmp_path / "c", worse_images()), "kid", PIXELS)["kid"].provenance
    assert (d["subsets"], d["subset_size"], d["kernel"], d["ci"]["confidence"]) == (100, N // 2, "(x·y / D + 1.0)^3",
                                                                                    0.95)
    whole = run(make_ctx(tmp_path / "d", worse_images()), "kid", {**PIXELS, "subset_size": N, "subsets": 3})["kid"]
    assert whole.provenance["subset_size"] == N  # a subset may be the whole set
    # auto: bench while N1² + N2² + N1·N2 < 3 · subsets · size², else torch-fidelity (equality: torch-fidelity)
    for subsets, size, want in ((4, 129, "bench"), (4, 128, "torch-fidelity"), (1, 2, "torch-fidelity")):
        got = run(make_ctx(tmp_path / f"e{subsets}{size}", worse_images()), "kid",
                  {**PIXELS, "subsets": subsets, "subset_size": size})["kid"].provenance["backend"]
        assert got == want, (subsets, size)
    monkeypatch.setattr(fidelity, "KID_EVIDENCE_MAX_N", N)
    assert run(make_ctx(tmp_path / "f", worse_images()), "kid", PIXELS)["kid"].evidence is not None
    monkeypatch.setattr(fidelity, "KID_EVIDENCE_MAX_N", N - 1)
    big = run(make_ctx(tmp_path / "g", worse_images()), "kid", PIXELS)["kid"]
    assert big.evidence is None and big.provenance["paired_evidence"] == {
        "kept": False, "why": f"N > {N - 1} (the N x N kernel is too costly)"}


def test_fd_is_the_frechet_distance_with_a_bias_shifted_bootstrap_and_its_floor(tmp_path):
    """fd: FD(sample features, reference features) with the seeded bootstrap interval docs/metrics.md describes
    (sample rows resampled with seed (cell seed, 1), reference fixed, shifted by the bootstrap bias), the noise
    floor and the excess over it in provenance, per-image features as evidence, and FD∞ on request."""
    from bench.evidence import condition_strata
    from bench.metrics.bootstrap import bias_shifted_interval
    from bench.metrics.frechet import FeatureStats, bootstrap_frechet

    ctx = make_ctx(tmp_path / "a", worse_images())
    space = build_feature_space("pixels")
    feats = space.extract(ctx.images)
    ref = space.extract(ctx.dataset.images(ctx.indices, RES))
    out = run(ctx, "fd", {**PIXELS, "bootstrap": 40, "confidence": 0.8, "fd_inf": 5})
    assert set(out) == {"fd", "fd_floor", "fd_inf"}
    fd, floor = out["fd"], out["fd_floor"]
    assert fd.value == pytest.approx(frechet_distance(feats, ref), rel=1e-12) and fd.n == N
    ref_stats = FeatureStats.from_features(ref)
    reps = bootstrap_frechet(feats, ref_stats, 40, (ctx.seed, 1))
    iv, bias = bias_shifted_interval(reps, fd.value, 0.8)
    assert (fd.ci_low, fd.ci_high) == (pytest.approx(iv.low, rel=1e-9), pytest.approx(iv.high, rel=1e-9))
    ci = fd.provenance["ci"]
    assert (ci["confidence"], ci["resamples"], ci["seed"]) == (0.8, 40, [ctx.seed, 1])
    assert ci["bias"] == pytest.approx(bias) and ci["method"] == (
        "percentile bootstrap of the sample features (reference stats fixed), shifted by the bootstrap bias "
        "estimate mean(FD*) - FD")
    p = fd.provenance
    assert p["backend"] == "bench" and p["comparable"] is True and p["fingerprint"]
    assert p["formula"].startswith("|mu_s - mu_r|^2 + tr(S_s) + tr(S_r)")
    assert p["noise_floor"] == floor.value and p["noise_floor_kind"] == "condition-matched"
    assert p["excess_fd"] == pytest.approx(fd.value - floor.value)
    assert fd.evidence.kind == "features" and fd.evidence.rows.shape == feats.shape
    np.testing.assert_allclose(fd.evidence.ref_mean, ref_stats.mean)
    np.testing.assert_array_equal(fd.evidence.strata, condition_strata(ctx.labels, ctx.prompts))
    floor_feats = space.extract(ctx.dataset.matched_images(ctx.indices, RES, draw=1))  # the floor's own draw
    assert floor.value == pytest.approx(frechet_distance(floor_feats, ref), rel=1e-12)
    floor_iv, floor_bias = bias_shifted_interval(bootstrap_frechet(floor_feats, ref_stats, 40, (0, 2)),
                                                 floor.value, 0.8)
    assert (floor.ci_low, floor.ci_high) == (pytest.approx(floor_iv.low, rel=1e-9),
                                             pytest.approx(floor_iv.high, rel=1e-9))
    fp = floor.provenance
    assert fp["ci"] == {"confidence": 0.8, "resamples": 40, "seed": 0, "bias": pytest.approx(floor_bias),
                        "method": "percentile bootstrap of the floor set's features, reference stats fixed, shifted "
                                  "by the bootstrap bias estimate"}
    assert fp["backend"] == "bench" and fp["feature_space"]["feature_space"] == "pixels"
    assert set(fp["matched_reference"]) == {"indices_range", "cache_key", "draw"}
    assert fp["matched_reference"]["draw"] == 1 and len(fp["matched_reference"]["cache_key"]) == 32
    assert fp["from_cache"] is False and "cache_recovered" not in fp
    again = run(make_ctx(tmp_path / "a", worse_images()), "fd", {**PIXELS, "bootstrap": 40, "confidence": 0.8})
    assert again["fd_floor"].provenance["from_cache"] is True and again["fd_floor"].value == floor.value
    (cached,) = (tmp_path / "a").rglob("fd_floor-*.npz")
    cached.write_bytes(b"torn")
    healed = run(make_ctx(tmp_path / "a", worse_images()), "fd", {**PIXELS, "bootstrap": 40, "confidence": 0.8})
    assert "corrupt" in healed["fd_floor"].provenance["cache_recovered"] and healed["fd_floor"].value == floor.value
    bare = run(make_ctx(tmp_path / "h", worse_images()), "fd", {**PIXELS, "bootstrap": 0})["fd_floor"]
    assert bare.ci_low is None and bare.ci_high is None and bare.provenance["ci"]["bias"] is None
    inf = out["fd_inf"]
    assert len(inf.provenance["ns"]) == 5 and inf.provenance["seed"] == [ctx.seed, 3]
    assert inf.ci_low < inf.value < inf.ci_high and inf.provenance["ci"]["confidence"] == 0.8
    assert len(run(make_ctx(tmp_path / "i", worse_images()), "fd", {**PIXELS, "bootstrap": 0, "fd_inf": True})[
        "fd_inf"].provenance["ns"]) == 15
    alone = run(make_ctx(tmp_path / "b", worse_images()), "fd", {**PIXELS, "bootstrap": 0, "noise_floor": False})
    assert set(alone) == {"fd"} and "noise_floor" not in alone["fd"].provenance
    assert alone["fd"].ci_low is None and alone["fd"].provenance["ci"] == {"resamples": 0}
    for backend in ("torch-fidelity", "clean-fid"):
        other = run(make_ctx(tmp_path / backend, worse_images()), "fd", {**PIXELS, "bootstrap": 0,
                                                                           "backend": backend})["fd"]
        assert other.value == pytest.approx(fd.value, rel=1e-5) and other.provenance["backend"] == backend
    for opts, text in (({**PIXELS, "noise_floor": "yes"}, "metric fd: noise_floor must be true or false, got 'yes'"),
                       ({**PIXELS, "fd_inf": 2}, "metric fd: fd_inf must be true, false or a number of subset sizes "
                                                 ">= 3, got 2"),
                       ({**PIXELS, "floor_offset": True}, "metric fd: floor_offset must be an integer, got True"),
                       ({**PIXELS, "floor_offset": 1.5}, "metric fd: floor_offset must be an integer, got 1.5"),
                       ({**PIXELS, "confidence": 2}, "confidence must be in (0, 1), got 2"),
                       ({**PIXELS, "batch_size": 0}, "metric fd: batch_size must be a positive integer")):
        with pytest.raises(BenchError, match=re.escape(text)):
            run(make_ctx(tmp_path / "e", worse_images()), "fd", opts)
    assert "fd_inf" in run(make_ctx(tmp_path / "f", worse_images()), "fd", {**PIXELS, "bootstrap": 0, "fd_inf": 3})
    default = run(make_ctx(tmp_path / "j", worse_images()), "fd", PIXELS)
    assert set(default) == {"fd", "fd_floor"}  # the floor by default, FD-infinity only on request
    dci = default["fd"].provenance["ci"]
    assert (dci["resamples"], dci["confidence"], default["fd"].provenance["backend"]) == (200, 0.95, "bench")
    with pytest.raises(BenchError, match="floor_offset only applies to the disjoint-block noise floor"):
        run(make_ctx(tmp_path / "g", worse_images()), "fd", {**PIXELS, "bootstrap": 0, "floor_offset": 7})


def test_fd_against_a_statistics_file_is_the_datasets_fd_without_a_floor(tmp_path):
    """`reference_stats`: FD and its bootstrap interval against a file's mu / sigma equal FD against the dataset
    the file was made from (same seed, same reference statistics); the file and whether it comes from the cell's
    pipeline are in provenance; no noise floor (it needs reference images); FD∞ is refused; the file's sha256 and
    feature dimension are checked where the metric runs."""
    from bench.metrics.statsfile import load_stats_file, pipeline_fingerprint, write_stats_file

    space = build_feature_space("pixels")
    ctx = make_ctx(tmp_path / "a", worse_images())
    ref_feats = space.extract(ctx.dataset.images(ctx.indices, RES))
    path = write_stats_file(tmp_path / "ref.npz", FeatureStats.from_features(ref_feats),
                            pipeline_fingerprint(space, N, ctx.uint8), {"test": True})
    sf = load_stats_file(path)
    opts = {**PIXELS, "bootstrap": 30, "confidence": 0.9}
    by_data = run(ctx, "fd", opts)["fd"]
    out = run(make_ctx(tmp_path / "b", worse_images()), "fd",
              {**opts, "reference_stats": str(path), "reference_stats_sha256": sf.sha256})
    assert set(out) == {"fd"}
    fd = out["fd"]
    assert fd.value == pytest.approx(by_data.value, rel=1e-12) and fd.n == N
    assert (fd.ci_low, fd.ci_high) == (pytest.approx(by_data.ci_low, rel=1e-9),
                                       pytest.approx(by_data.ci_high, rel=1e-9))
    p = fd.provenance
    assert p["reference"] == sf.provenance() and p["reference"]["sha256"] == sf.sha256
    assert p["fingerprint"] == pipeline_fingerprint(space, N, ctx.uint8) and p["fingerprint"]["n"] == N
    assert (p["comparable"], p["comparability"]) == (True, "same pipeline as ref.npz")
    assert p["noise_floor"] is None and p["noise_floor_skipped"] == (
        "not computable from a statistics file: the floor needs a second set of reference images, and the file "
        "has only mu and sigma")
    np.testing.assert_allclose(fd.evidence.ref_mean, sf.stats.mean)
    np.testing.assert_allclose(fd.evidence.ref_cov, sf.stats.cov)
    assert fd.evidence.rows.shape == (N, space.dim)
    no_floor = run(make_ctx(tmp_path / "c", worse_images()), "fd",
                   {**opts, "reference_stats": str(path), "noise_floor": False})["fd"]
    assert "noise_floor_skipped" not in no_floor.provenance and no_floor.value == fd.value

    other = write_stats_file(tmp_path / "clean.npz", FeatureStats.from_features(ref_feats),
                             pipeline_fingerprint(build_feature_space("pixels", {"resize": "clean"}), N), {})
    flagged = run(make_ctx(tmp_path / "d", worse_images()), "fd", {**opts, "reference_stats": str(other)})["fd"]
    assert flagged.provenance["comparable"] is False
    assert flagged.provenance["comparability"].startswith("not comparable with clean.npz: preprocessing")
    with pytest.raises(BenchError) as e:
        run(make_ctx(tmp_path / "e", worse_images()), "fd", {**opts, "reference_stats": str(path), "fd_inf": 5})
    assert str(e.value) == "metric fd: fd_inf needs the reference features; a statistics file has only mu, sigma"
    from dataclasses import replace

    other_rule = replace(make_ctx(tmp_path / "u", worse_images()), uint8="another quantiser")
    marked = run(other_rule, "fd", {**opts, "reference_stats": str(path)})["fd"].provenance
    assert marked["fingerprint"]["uint8"] == "another quantiser"  # how these samples became uint8
    with pytest.raises(BenchError, match="sha256"):
        run(make_ctx(tmp_path / "e", worse_images()), "fd",
            {**opts, "reference_stats": str(path), "reference_stats_sha256": "0" * 64})
    np.savez(tmp_path / "d8.npz", mu=np.zeros(8), sigma=np.eye(8))
    with pytest.raises(BenchError, match=re.escape("d8.npz")):
        run(make_ctx(tmp_path / "e", worse_images()), "fd", {**opts, "reference_stats": str(tmp_path / "d8.npz")})


def test_fd_results_come_in_order_and_fd_inf_reports_its_fit(tmp_path):
    """fd's results are [fd, fd_floor, fd_inf] (the report and the store read the first as the headline); FD∞ is
    the fit `fd_infinity` gives on stream (cell seed, 3), lower is better, with the fit's points in provenance."""
    from bench.metrics.frechet import fd_infinity

    ctx = make_ctx(tmp_path / "a", worse_images())
    space = build_feature_space("pixels")
    results = get_metric("fd")(ctx, {**PIXELS, "bootstrap": 0, "fd_inf": 4, "confidence": 0.9})
    assert [r.name for r in results] == ["fd", "fd_floor", "fd_inf"]
    inf = results[2]
    fit = fd_infinity(space.extract(ctx.images), space.extract(ctx.dataset.images(ctx.indices, RES)),
                      (ctx.seed, 3), points=4)
    assert inf.value == pytest.approx(fit.value, rel=1e-12) and inf.higher_is_better is False and inf.n == N
    p = inf.provenance
    assert (p["ns"], p["fds"]) == (list(fit.ns), pytest.approx(list(fit.fds), rel=1e-12))
    assert (p["slope"], p["stderr"]) == (pytest.approx(fit.slope, rel=1e-9), pytest.approx(fit.stderr, rel=1e-9))
    assert p["ci"] == {"confidence": 0.9, "method": "normal interval from the fit's intercept stderr"}
    assert p["method"].startswith("Chong & Forsyth FD∞: FD of random subsets of both sets at N_i")
    assert p["feature_space"]["feature_space"] == "pixels" and p["reference"]
    named = get_metric("fd")(ctx, {"variant": "pixels", "bootstrap": 0, "fd_inf": 3})
    assert [r.name for r in named] == ["fd:pixels", "fd_floor:pixels", "fd_inf:pixels"]


def test_fd_errors_name_the_metric_and_the_set_that_is_too_small(tmp_path):
    """Errors say which metric (fd or fd_floor) and which set has too few samples for the feature dimension."""
    with pytest.raises(BenchError, match=re.escape("metric fd:pixels also sets feature_space: clip")):
        run(make_ctx(tmp_path / "a", worse_images()), "fd", {"variant": "pixels", "feature_space": "clip"})
    with pytest.raises(BenchError, match=re.escape("metric fd: floor_offset only applies")):
        run(make_ctx(tmp_path / "a", worse_images()), "fd", {**PIXELS, "bootstrap": 0, "floor_offset": 3})
    with pytest.raises(BenchError, match=re.escape("metric fd_floor: floor_offset only applies")):
        run(make_ctx(tmp_path / "a", worse_images()), "fd_floor", {**PIXELS, "bootstrap": 0, "floor_offset": 3})
    with pytest.raises(BenchError, match=re.escape("metric fd: backend must be one of bench, torch-fidelity, "
                                                   "clean-fid, got 'scipy'")):
        run(make_ctx(tmp_path / "a", worse_images()), "fd", {**PIXELS, "backend": "scipy"})
    from bench.metrics.fd import feature_requests_of

    with pytest.raises(BenchError, match=re.escape("metric fd: backend must be one of")):
        feature_requests_of("fd", {**PIXELS, "backend": "scipy"})
    small = 48  # the pixels space has D = 64 features
    with pytest.raises(InsufficientSamplesError, match=re.escape("the cell's samples in pixels has N=48")):
        run(make_ctx(tmp_path / "b", worse_images(small), n=small), "fd", PIXELS)
    with pytest.raises(InsufficientSamplesError, match=re.escape("the reference set has N=48")):
        run(make_ctx(tmp_path / "b", worse_images(small), n=small), "fd_floor", PIXELS)


def test_fd_value_backends_are_quiet_and_an_unknown_one_is_named(capfd):
    from bench.metrics.fd import fd_value

    rng = np.random.default_rng(0)
    a, b = (FeatureStats.from_features(rng.normal(size=(80, 6)) + s) for s in (0.0, 0.3))
    values = {name: fd_value(a, b, name) for name in ("bench", "torch-fidelity", "clean-fid")}
    assert capfd.readouterr() == ("", "")  # torch-fidelity's verbose flag stays off
    assert values["torch-fidelity"] == pytest.approx(values["bench"], rel=1e-6)
    with pytest.raises(BenchError) as e:
        fd_value(a, b, "scipy")
    assert str(e.value) == "metric fd: backend must be one of bench, torch-fidelity, clean-fid, got 'scipy'"


def test_the_clean_fid_backend_defaults_to_clean_resizing_in_built_in_spaces_only():
    from bench.metrics.fd import feature_requests_of

    def space(options):
        (request,) = feature_requests_of("fd", options)
        return dict(request.options)

    assert space({"feature_space": "clip:ViT-B-32", "backend": "clean-fid"})["resize"] == "clean"
    assert space({"variant": "inception-v3", "backend": "clean-fid"})["resize"] == "clean"
    assert "resize" not in space({"feature_space": "clip:ViT-B-32"})
    assert space({"feature_space": "pixels", "backend": "clean-fid", "resize": "native"})["resize"] == "native"
    assert "resize" not in space({"feature_space": "some.module:space", "backend": "clean-fid"})
