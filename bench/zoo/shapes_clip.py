"""`shapes-clip`: a tiny open_clip model trained contrastively on shapes (image, caption) pairs.

Architecture: open_clip config `bench/zoo/configs/shapes-clip.json` (registered with
`open_clip.add_model_config`): a ViT of 4 layers, width 128, patch 4 on 32x32 images, a 3-layer text
transformer of width 64 (context 16) with open_clip's own BPE tokenizer, and a 64-d joint embedding.

Preprocessing (`preprocess`): uint8 NCHW images -> float in [0, 1] -> resized to 32x32 with bilinear
interpolation (antialiased when shrinking; 16x16 images are upsampled) -> normalised with mean 0.5,
std 0.5 per channel. `encode_images` returns the *unnormalised* projected image embeddings (N, 64) in
float32 (the FD feature space); `encode_text` likewise; CLIP score normalises both.

Shipping: the text tower's token embedding has 49,408 rows (open_clip's vocabulary), of which the shapes
captions use a few dozen. The shipped fp16 file stores only those rows (`token_embedding.ids`,
`token_embedding.rows`); `load_shapes_clip` expands them (other rows zero, i.e. unknown words carry no
signal) and loads the model through `open_clip.create_model_and_transforms(name, pretrained=<file>)`.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.zoo import checkpoints, shapes

MODEL_NAME = "shapes-clip"
CONFIG_PATH = Path(__file__).with_name("configs") / "shapes-clip.json"
IMAGE_SIZE = 32
MEAN = 0.5
STD = 0.5
PREPROCESSING = ("uint8 -> [0,1] -> bilinear resize to 32x32 (antialias when shrinking) -> "
                 "(x - 0.5) / 0.5; features: unnormalised projected image embedding (64-d)")

_registered = False


def register() -> None:
    """Make `shapes-clip` a model name open_clip knows (idempotent)."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CONFIG_PATH)
        _registered = True


def build_model(device: Any = "cpu") -> torch.nn.Module:
    """A randomly initialised shapes-clip (for training)."""
    register()
    import open_clip

    return open_clip.create_model(MODEL_NAME, pretrained=None, device=device)


@functools.lru_cache(maxsize=1)
def tokenizer() -> Any:
    register()
    import open_clip

    return open_clip.get_tokenizer(MODEL_NAME)


def tokenize(prompts: Sequence[str]) -> torch.Tensor:
    return tokenizer()(list(prompts))


def used_token_ids() -> torch.Tensor:
    """Token ids that the shapes grammar can produce (plus start / end of text), sorted."""
    words = sorted({w for c in shapes.all_captions() for w in c.split()})
    ids = torch.cat([tokenize(shapes.all_captions()).flatten(), tokenize(words).flatten()])
    return torch.unique(ids)


def to_compact(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State dict -> shipped form (token embedding reduced to the rows the grammar uses)."""
    ids = used_token_ids()
    out = {k: v for k, v in state.items() if k != "token_embedding.weight"}
    out["token_embedding.ids"] = ids.to(torch.int64)
    out["token_embedding.rows"] = state["token_embedding.weight"][ids]
    return out


def from_compact(state: dict[str, torch.Tensor], vocab_size: int = 49408) -> dict[str, torch.Tensor]:
    out = {k: (v.float() if v.is_floating_point() else v).cpu() for k, v in state.items()
           if not k.startswith("token_embedding.")}
    rows = state["token_embedding.rows"].float().cpu()
    emb = torch.zeros(vocab_size, rows.shape[1])
    emb[state["token_embedding.ids"].long().cpu()] = rows
    out["token_embedding.weight"] = emb
    return out


def load_from_state(compact: dict[str, torch.Tensor], device: Any = "cpu") -> torch.nn.Module:
    """Load a compact state dict through open_clip (via a temporary full safetensors file)."""
    from safetensors.torch import save_file

    register()
    import open_clip

    full = from_compact(compact)
    with tempfile.TemporaryDirectory(prefix="shapes-clip-") as tmp:
        path = Path(tmp) / "open_clip_model.safetensors"
        save_file({k: v.contiguous() for k, v in full.items()}, str(path))
        model, _, _ = open_clip.create_model_and_transforms(
            MODEL_NAME, pretrained=str(path), device=device, image_mean=(MEAN,) * 3, image_std=(STD,) * 3,
            image_interpolation="bilinear",
        )
    return model.eval()


def load_shapes_clip(device: Any = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The shipped shapes-clip model (eval mode) and its provenance (name, pretrained tag, file, sha256)."""
    path = checkpoints.require(MODEL_NAME)
    compact, _ = checkpoints.load(path)
    model = load_from_state(compact, device)
    digest = checkpoints.sha256(path)
    info = {
        "name": MODEL_NAME,
        "pretrained": f"bench-zoo:{digest[:12]}",
        "file": str(path),
        "sha256": digest,
        "embed_dim": int(model.text_projection.shape[1]),
        "image_size": IMAGE_SIZE,
        "mean": (MEAN,) * 3,
        "std": (STD,) * 3,
        "preprocessing": PREPROCESSING,
    }
    return model, info


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or [0, 1] float) NCHW images of any size -> normalised float32 32x32 model input."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if x.shape[-1] != IMAGE_SIZE or x.shape[-2] != IMAGE_SIZE:
        shrink = x.shape[-1] > IMAGE_SIZE
        x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False,
                          antialias=shrink)
    return (x - MEAN) / STD


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_images(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """(N, 64) float32 unnormalised image embeddings on the CPU."""
    dev = _device(model)
    out = [model.encode_image(preprocess(images[i:i + batch_size].to(dev))).float().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, int(model.text_projection.shape[1]))


@torch.no_grad()
def encode_text(model: torch.nn.Module, prompts: Sequence[str], batch_size: int = 1000) -> torch.Tensor:
    """(N, 64) float32 unnormalised text embeddings on the CPU."""
    dev = _device(model)
    tok = tokenizer()
    out = [model.encode_text(tok(list(prompts[i:i + batch_size])).to(dev)).float().cpu()
           for i in range(0, len(prompts), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, int(model.text_projection.shape[1]))


def clip_scores(model: torch.nn.Module, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """Per-image CLIP score 100 * max(cos(image, text), 0)."""
    fi = F.normalize(encode_images(model, images), dim=-1)
    ft = F.normalize(encode_text(model, prompts), dim=-1)
    return 100 * (fi * ft).sum(-1).clamp_min(0)


def attribute_accuracy(model: torch.nn.Module, n: int = 1000, resolution: int = 32, split: str = "eval",
                       start: int = 0) -> dict[str, float]:
    """Zero-shot accuracy per attribute: for each image, rank the full captions (size and position named)
    that differ only in that attribute; correct when the true caption ranks first."""
    ds = shapes.ShapesDataset(split)
    idx = list(range(start, start + n))
    sc = ds.scenes(idx)
    fi = F.normalize(encode_images(model, ds.images(idx, resolution)), dim=-1)
    values = {"colour": len(shapes.COLOURS), "shape": len(shapes.SHAPES), "position": 9, "size": 2}
    result = {}
    for attr, k in values.items():
        true = {"colour": sc.colour, "shape": sc.shape, "position": sc.region, "size": sc.size}[attr]
        prompts = []
        for i in range(n):
            for v in range(k):
                a = {"colour": int(sc.colour[i]), "shape": int(sc.shape[i]), "size": int(sc.size[i]),
                     "position": int(sc.region[i])}
                a[attr] = v
                prompts.append(shapes.caption(a["colour"], a["shape"], a["size"], a["position"]))
        ft = F.normalize(encode_text(model, prompts), dim=-1).view(n, k, -1)
        pred = (ft * fi.unsqueeze(1)).sum(-1).argmax(-1).numpy()
        result[attr] = float(np.mean(pred == np.asarray(true)))
    return result
