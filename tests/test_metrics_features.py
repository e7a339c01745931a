"""Feature spaces: offline weights (Inception, open_clip, DINOv2, shapes-clip), resize policies, registry errors.

Every test that loads weights runs with sockets blocked: a download attempt fails the test.
"""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.errors import BenchError, MissingWeightsError
from bench.metrics import features as fs
from bench.metrics.features import ClipSpace, build_feature_space
from bench.zoo.gmm import GaussianMixtureDataset
from tests._netblock import no_network  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("no_network")

TINY_CLIP = "bench-test-tiny-clip"


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    """No user cache can satisfy a look-up by accident: torch hub and zoo weights point at empty folders."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(fs.INCEPTION_ENV, raising=False)
    monkeypatch.delenv(fs.DINOV2_REPO_ENV, raising=False)
    monkeypatch.delenv(fs.DINOV2_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("BENCH_ZOO_WEIGHTS", str(tmp_path / "no-zoo-weights"))


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> Path:
    """A randomly initialised Inception-v3 state dict saved to disk (the real file is not needed offline)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    original = FeatureExtractorInceptionV3.load_state_dict
    FeatureExtractorInceptionV3.load_state_dict = lambda self, *a, **k: None  # keep the random init
    try:
        torch.manual_seed(0)
        net = FeatureExtractorInceptionV3("random", ["64"], feature_extractor_weights_path=empty)
    finally:
        FeatureExtractorInceptionV3.load_state_dict = original
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny open_clip config registered from JSON, and two different random checkpoints of it."""
    import open_clip

    folder = tmp_path_factory.mktemp("tiny-clip")
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "patch_size": 8,
                                           "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder / f"{TINY_CLIP}.json")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = open_clip.create_model(TINY_CLIP)
        paths.append(folder / f"tiny-{seed}.pt")
        torch.save(model.state_dict(), paths[-1])
    return paths[0], paths[1]


def _images(n: int, res: int, start: int = 0) -> torch.Tensor:
    return GaussianMixtureDataset().images(list(range(start, start + n)), res)


# ----------------------------------------------------------------------------------------------- pixels


def test_pixels_space_is_deterministic_batch_invariant_and_small():
    x = _images(40, 16)
    a = build_feature_space("pixels")
    b = build_feature_space("pixels", {"size": 8, "dim": 64})
    fa, fb = a.extract(x, batch_size=7), b.extract(x, batch_size=40)
    assert fa.shape == (40, 64) and fa.dtype == np.float32
    np.testing.assert_allclose(fa, fb, rtol=1e-5, atol=1e-6)
    assert a.weights_sha256 == b.weights_sha256 and a.id == b.id
    other = build_feature_space("pixels", {"dim": 32})
    assert other.dim == 32 and other.weights_sha256 != a.weights_sha256
    clean = build_feature_space("pixels", {"resize": "clean"})
    assert clean.preprocessing != a.preprocessing
    assert np.isfinite(clean.extract(x)).all()
    assert "not perceptual" in a.provenance()["description"]


def test_clean_resize_is_clean_fids_pil_bicubic():
    from cleanfid.resize import make_resizer

    x = _images(3, 8)
    out = fs.resize_clean(x, 20)
    ref = make_resizer("PIL", False, "bicubic", (20, 20))(x[1].permute(1, 2, 0).numpy())
    np.testing.assert_array_equal(out[1].permute(1, 2, 0).numpy(), ref)
    assert out.dtype == torch.float32 and torch.equal(fs.resize_clean(x, 8), x.float())


def test_registry_errors_are_one_line_bench_errors():
    cases = [("no-such-space", {}, "unknown feature space"), ("pixels", {"layer": "64"}, "do not apply"),
             ("pixels", {"resize": "lanczos"}, "resize must be one of"), ("dinov2:vitx99", {}, "unknown variant"),
             ("clip:ViT-B-32", {}, "needs weights"), ("clip:not-a-model:x.pt", {}, "unknown open_clip model")]
    for spec, opts, text in cases:
        with pytest.raises(BenchError) as e:
            build_feature_space(spec, opts)
        assert text in str(e.value) and "\n" not in str(e.value), spec


# ----------------------------------------------------------------------------------------------- inception


def test_inception_without_weights_names_the_file_and_the_settings(monkeypatch):
    with pytest.raises(MissingWeightsError) as e:
        build_feature_space("inception-v3")
    msg = str(e.value)
    assert "\n" not in msg
    assert fs.INCEPTION_FILE in msg and fs.INCEPTION_ENV in msg and "weights:" in msg
    monkeypatch.setenv(fs.INCEPTION_ENV, "/nowhere/inception.pth")
    with pytest.raises(MissingWeightsError) as e:
        build_feature_space("inception-v3")
    assert "/nowhere/inception.pth" in str(e.value) and fs.INCEPTION_ENV in str(e.value)
    with pytest.raises(MissingWeightsError) as e:
        build_feature_space("inception-v3", {"weights": "/elsewhere/w.pth"})
    assert "/elsewhere/w.pth" in str(e.value) and "`weights`" in str(e.value)


def test_inception_from_a_local_file_runs_offline_and_clean_path_matches_torch_fidelity(inception_weights,
                                                                                       monkeypatch):
    monkeypatch.setenv(fs.INCEPTION_ENV, str(inception_weights))
    space = build_feature_space("inception-v3", {"layer": "64"})
    assert space.weights_sha256 == fs.file_sha256(inception_weights)
    assert fs.INCEPTION_ENV in space.weights_source
    feats = space.extract(_images(3, 8))
    assert feats.shape == (3, 64) and np.isfinite(feats).all()
    # Our float forward (used for the 'clean' policy) is torch-fidelity's network: same features at 299 x 299.
    x = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        native = space.net(x)[0]
        ours = space.forward_float(x.float())
    torch.testing.assert_close(ours, native, rtol=1e-4, atol=1e-5)
    clean = build_feature_space("inception-v3", {"layer": "64", "resize": "clean", "weights": str(inception_weights)})
    assert clean.preprocessing != space.preprocessing and clean.extract(_images(2, 8)).shape == (2, 64)


def test_inception_refuses_pickles_that_are_not_plain_tensors(tmp_path, monkeypatch):
    bad = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "obj": GaussianMixtureDataset()}, bad)
    monkeypatch.setenv(fs.INCEPTION_ENV, str(bad))
    with pytest.raises(BenchError) as e:
        build_feature_space("inception-v3")
    assert "cannot load weights" in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------------- open_clip


def test_clip_space_from_a_local_checkpoint_and_weights_change_the_identity(tiny_clip):
    first, second = tiny_clip
    a = build_feature_space(f"clip:{TINY_CLIP}:{first}")
    b = build_feature_space(f"clip:{TINY_CLIP}", {"pretrained": str(second)})
    assert isinstance(a, ClipSpace) and a.dim == 32 and a.input_size == 16
    assert a.name == f"clip:{TINY_CLIP}:{first.name}"
    assert a.weights_sha256 == fs.file_sha256(first) != b.weights_sha256
    x = _images(5, 8)
    fa, fb = a.extract(x), b.extract(x)
    assert fa.shape == (5, 32) and not np.allclose(fa, fb)
    t = a.clip.encode_texts(["mode 1", "mode 2"])
    assert t.shape == (2, 32) and torch.allclose(t.norm(dim=-1), torch.ones(2))
    assert a.key_fields()["weights_sha256"] != b.key_fields()["weights_sha256"]


def test_clip_tag_not_in_the_local_cache_fails_without_downloading():
    import open_clip

    cfg = open_clip.get_pretrained_cfg("ViT-B-32", "openai")
    if fs._cached_open_clip_file(cfg) is not None:
        pytest.skip("ViT-B-32:openai is cached on this machine")
    with pytest.raises(MissingWeightsError) as e:
        build_feature_space("clip:ViT-B-32:openai")
    assert "downloads are off" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(MissingWeightsError):
        build_feature_space("clip:ViT-B-32:/no/such/checkpoint.pt")


# ----------------------------------------------------------------------------------------------- dinov2


def test_dinov2_from_a_local_hub_repo_and_weights_file(tmp_path):
    repo = tmp_path / "dinov2-repo"
    repo.mkdir()
    (repo / "hubconf.py").write_text(textwrap.dedent("""
        import torch

        class Tiny(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv2d(3, 6, 14, stride=14)

            def forward(self, x):
                return self.conv(x).mean((2, 3))

        def dinov2_vits14(pretrained=True, **kwargs):
            assert not pretrained, "the harness must not ask the hub code to download weights"
            return Tiny()
    """))
    with pytest.raises(MissingWeightsError) as e:
        build_feature_space("dinov2:vits14", {"repo": str(repo)})
    assert "dinov2_vits14_pretrain.pth" in str(e.value) and fs.DINOV2_WEIGHTS_ENV in str(e.value)
    weights = tmp_path / "dinov2_vits14.pth"
    torch.manual_seed(0)
    torch.save(torch.nn.Conv2d(3, 6, 14, stride=14).state_dict(), weights)
    sd = {f"conv.{k}": v for k, v in torch.load(weights, weights_only=True).items()}
    torch.save(sd, weights)
    space = build_feature_space("dinov2:vit-s-14", {"repo": str(repo), "weights": str(weights)})
    assert space.name == "dinov2:vits14" and space.dim == 6 and space.input_size == 224
    assert space.extract(_images(2, 8)).shape == (2, 6)
    assert space.weights_sha256 == fs.file_sha256(weights)


# ----------------------------------------------------------------------------------------------- shapes-clip


def test_shapes_clip_without_weights_is_a_one_line_missing_weights_error():
    with pytest.raises(MissingWeightsError) as e:
        build_feature_space("shapes-clip")
    assert "shapes" in str(e.value) and "\n" not in str(e.value)


def test_shapes_clip_missing_module_is_a_one_line_missing_weights_error(monkeypatch):
    monkeypatch.setattr(fs, "SHAPES_CLIP_LOADER", "bench.zoo.no_such_module:load_shapes_clip")
    with pytest.raises(MissingWeightsError) as e:
        build_feature_space("shapes-clip")
    assert "not installed" in str(e.value) and "\n" not in str(e.value)


def test_shapes_clip_loads_through_the_zoo_loader(tmp_path, monkeypatch):
    from bench.zoo import checkpoints, shapes_clip

    monkeypatch.setenv("BENCH_ZOO_WEIGHTS", str(tmp_path / "zoo"))
    torch.manual_seed(0)
    sha = checkpoints.save_fp16(shapes_clip.to_compact(shapes_clip.build_model().state_dict()),
                                checkpoints.weight_path("shapes-clip"), {"note": "random test weights"})
    space = build_feature_space("shapes-clip")
    assert isinstance(space, ClipSpace) and space.name == "shapes-clip"
    assert space.weights_sha256 == sha and space.dim == 64 and space.input_size == 32
    x = _images(6, 16)
    feats = space.extract(x)
    with torch.inference_mode():
        expected = shapes_clip.encode_images(space.clip.model, x)
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-4, atol=1e-5)  # the extractor's own preprocessing
