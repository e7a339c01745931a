"""shapes-clip: open_clip registration, compact shipping format, loading, zero-shot accuracy, missing weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.errors import MissingWeightsError
from bench.zoo import checkpoints, shapes, shapes_clip

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shipped() -> tuple[torch.nn.Module, dict]:
    return shapes_clip.load_shapes_clip("cpu")


def test_config_registered_with_open_clip() -> None:
    import open_clip

    shapes_clip.register()
    assert shapes_clip.MODEL_NAME in open_clip.list_models()
    tok = shapes_clip.tokenize(["a small yellow triangle at the bottom right"])
    assert tok.shape == (1, 16)  # open_clip's own BPE tokenizer, context 16
    assert set(tok[0].tolist()) <= set(shapes_clip.used_token_ids().tolist())


def test_compact_roundtrip_keeps_used_rows() -> None:
    torch.manual_seed(0)
    model = shapes_clip.build_model()
    state = model.state_dict()
    compact = shapes_clip.to_compact(state)
    assert compact["token_embedding.rows"].shape[0] < 100
    full = shapes_clip.from_compact(compact)
    ids = compact["token_embedding.ids"]
    assert torch.equal(full["token_embedding.weight"][ids], state["token_embedding.weight"][ids])
    assert full.keys() == state.keys()
    loaded = shapes_clip.load_from_state(compact)
    prompts = ["a red circle", "a large blue square on the left"]
    model.eval()
    assert torch.allclose(shapes_clip.encode_text(loaded, prompts), shapes_clip.encode_text(model, prompts), atol=1e-5)


def test_preprocess_resizes_and_normalises() -> None:
    x = torch.full((2, 3, 16, 16), 255, dtype=torch.uint8)
    y = shapes_clip.preprocess(x)
    assert y.shape == (2, 3, 32, 32) and torch.allclose(y, torch.ones_like(y))
    assert shapes_clip.preprocess(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape == (1, 3, 32, 32)


def test_missing_weights_error_names_file_and_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(checkpoints.ENV_VAR, str(tmp_path))
    with pytest.raises(MissingWeightsError) as err:
        shapes_clip.load_shapes_clip("cpu")
    msg = str(err.value)
    assert "shapes_clip.safetensors" in msg and "bench zoo train shapes-clip" in msg and "\n" not in msg


def test_shipped_model_loads_in_eval_mode(shipped: tuple[torch.nn.Module, dict]) -> None:
    model, info = shipped
    assert not model.training
    assert info["name"] == "shapes-clip" and info["sha256"] == checkpoints.sha256(checkpoints.weight_path("shapes-clip"))
    ds = shapes.ShapesDataset("eval")
    f = shapes_clip.encode_images(model, ds.images(range(4), 16))
    t = shapes_clip.encode_text(model, ds.conditions(range(4)).prompts or [])
    assert f.shape == (4, 64) and t.shape == (4, 64) and f.dtype == torch.float32


def test_zero_shot_attribute_accuracy_subset(shipped: tuple[torch.nn.Module, dict]) -> None:
    model, _ = shipped
    acc = shapes_clip.attribute_accuracy(model, n=48, resolution=16, start=500)
    assert all(v > 0.9 for v in acc.values()), acc


def test_clip_score_prefers_matching_prompts(shipped: tuple[torch.nn.Module, dict]) -> None:
    model, _ = shipped
    ds = shapes.ShapesDataset("eval")
    imgs, prompts = ds.images(range(64), 16), ds.conditions(range(64)).prompts or []
    right = shapes_clip.clip_scores(model, imgs, prompts).mean()
    wrong = shapes_clip.clip_scores(model, imgs, prompts[1:] + prompts[:1]).mean()
    assert right > wrong + 10
