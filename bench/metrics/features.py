"""Feature spaces: the networks whose embeddings FD, KID and precision/recall are computed in.

A suite names one (`feature_space: inception-v3`); `build_feature_space` resolves the name through a registry
of factories, so a third party adds a space with `register_feature_space(name, "module:factory")`.
Built in:

- `pixels`: a weightless test / smoke space (images resized to `size`, scaled to [-1, 1], flattened, then a
  fixed seeded Gaussian projection to `dim` features). Not perceptual: for the analytic world and tests.
- `inception-v3`: torch-fidelity's Inception-v3 (FID's network) from a local weights file.
- `clip:<open_clip model>[:<pretrained tag or local checkpoint>]`: an open_clip image tower.
- `dinov2:<variant>`: DINOv2 (`vits14`, `vitb14`, `vitl14`, `vitg14`) from a local hub repo + weights file.
- `shapes-clip`: the embedded world's tiny CLIP (loaded by `bench.zoo.shapes_clip:load_shapes_clip`).

Every space declares its input size and resize policy: `clean` is clean-fid's PIL bicubic resize in float
(no quantisation after resizing); `native` is the extractor's own (torch-fidelity's TF1-compatible bilinear
for Inception / DINOv2, open_clip's bicubic for CLIP, antialiased bilinear for `pixels`). Weights are loaded
as safetensors or with `torch.load(weights_only=True)`; nothing is downloaded unless allowed.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.errors import BenchError, MissingWeightsError
from bench.importing import import_target, split_target

RESIZE_POLICIES = ("clean", "native")

INCEPTION_ENV = "BENCH_INCEPTION_WEIGHTS"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
DINOV2_REPO_ENV = "BENCH_DINOV2_REPO"
DINOV2_WEIGHTS_ENV = "BENCH_DINOV2_WEIGHTS"
SHAPES_CLIP_LOADER = "bench.zoo.shapes_clip:load_shapes_clip"

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------------- weights


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (memoised per path, size and mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


def tensors_sha256(named: Any) -> str:
    """SHA-256 of a state dict (names, dtypes, shapes and bytes, in sorted name order)."""
    h = hashlib.sha256()
    for name in sorted(named):
        t = named[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file loaded with weights_only=True (pickles with code refused)."""
    from bench.weightfiles import load_state_dict

    return load_state_dict(path)


def _existing_file(value: str | os.PathLike[str], what: str, setting: str, hint: str) -> Path:
    p = Path(value).expanduser()
    if not p.is_file():
        raise MissingWeightsError(f"{what} weights file {p} (from {setting}) does not exist; {hint}")
    return p


# ----------------------------------------------------------------------------------------------- resizing


def resize_clean(images: torch.Tensor, size: int) -> torch.Tensor:
    """clean-fid's 'clean' resize: PIL bicubic on each channel in float32, no quantisation; returns [0, 255] floats."""
    n, _, h, w = images.shape
    if h == size and w == size:
        return images.float()
    from cleanfid.resize import make_resizer

    fn = make_resizer("PIL", False, "bicubic", (size, size))
    arr = images.permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([fn(a) for a in arr]) if n else np.zeros((0, size, size, 3), np.float32)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def resize_bicubic_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bicubic resize rounded to uint8 values (as open_clip's PIL preprocessing); floats in [0, 255]."""
    x = images.float()
    if x.shape[-2:] == (size, size):
        return x
    x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x.round().clamp(0, 255)


def resize_tf_bilinear(images: torch.Tensor, size: int) -> torch.Tensor:
    """torch-fidelity's TF1-compatible bilinear resize (what its Inception / DINOv2 extractors do inside)."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    x = images.float()
    if x.shape[-2:] == (size, size):
        return x
    return interpolate_bilinear_2d_like_tensorflow1x(x, size=(size, size), align_corners=False)


def _normalize(x01: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    return (x01 - m) / s


# ----------------------------------------------------------------------------------------------- spaces


class FeatureSpace:
    """Embeds uint8 images (N, 3, H, W) as float32 features (N, D), batched; declares its preprocessing.

    Subclasses set the attributes below and implement `embed_batch`.
    """

    name: str = ""  # as written in a suite, e.g. "inception-v3", "clip:ViT-B-32:openai"
    version: str = "1"  # bump when preprocessing or glue code changes features (invalidates cached references)
    dim: int = 0
    input_size: int = 0
    resize: str = "native"
    weights_sha256: str = ""
    weights_source: str = ""
    description: str = ""
    device: torch.device = torch.device("cpu")

    @property
    def preprocessing(self) -> str:
        return f"{self.resize}:{self.input_size}"

    @property
    def id(self) -> str:
        """Stable identity: name, code version, weights hash and preprocessing."""
        return f"{self.name}|v{self.version}|{self.weights_sha256[:16]}|{self.preprocessing}"

    def key_fields(self) -> dict[str, Any]:
        """What a reference-statistics cache key needs from the space."""
        return {
            "feature_space": self.name,
            "feature_space_version": self.version,
            "weights_sha256": self.weights_sha256,
            "preprocessing": self.preprocessing,
            "feature_dim": self.dim,
        }

    def provenance(self) -> dict[str, Any]:
        return {**self.key_fields(), "weights_source": self.weights_source, "input_size": self.input_size,
                "resize": self.resize, "description": self.description}

    def embed_batch(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (b, 3, H, W) on CPU -> float features (b, D)."""
        raise NotImplementedError

    def extract(self, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Features of all images, in batches of `batch_size`, as float32 (N, D) on the CPU."""
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4 \
                or images.shape[1] != 3:
            raise BenchError(f"feature space {self.name}: expected uint8 images (N, 3, H, W), got "
                             f"{getattr(images, 'dtype', type(images))} {tuple(getattr(images, 'shape', ()))}")
        out = []
        with torch.inference_mode():
            for start in range(0, images.shape[0], batch_size):
                f = self.embed_batch(images[start:start + batch_size].cpu())
                out.append(f.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)

    def _probe_dim(self) -> int:
        with torch.inference_mode():
            return int(self.embed_batch(torch.zeros(1, 3, self.input_size, self.input_size,
                                                    dtype=torch.uint8)).shape[1])


class PixelSpace(FeatureSpace):
    """Test / smoke space, not perceptual: resize to size x size, scale to [-1, 1], flatten, project to `dim`."""

    version = "1"

    def __init__(self, size: int = 8, dim: int = 64, resize: str = "native", seed: int = 0) -> None:
        if size < 1 or dim < 0:
            raise BenchError(f"pixels: size must be >= 1 and dim >= 0, got size={size}, dim={dim}")
        self.name, self.input_size, self.resize = "pixels", int(size), resize
        raw = 3 * self.input_size**2
        if dim:
            g = torch.Generator().manual_seed(int(seed))
            self.proj: torch.Tensor | None = torch.randn(raw, int(dim), generator=g) / float(np.sqrt(dim))
            self.weights_sha256 = tensors_sha256({"projection": self.proj})
        else:
            self.proj = None
            self.weights_sha256 = hashlib.sha256(b"pixels-identity").hexdigest()
        self.dim = int(dim) if dim else raw
        self.weights_source = f"seeded Gaussian projection (seed {seed}, {raw} -> {self.dim})" if dim else "none"
        self.description = "test/smoke space: resized pixels with a fixed random projection; not perceptual"

    @property
    def preprocessing(self) -> str:
        return f"{self.resize}:{self.input_size}:scale[-1,1]"

    def embed_batch(self, images: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        if self.resize == "clean":
            x = resize_clean(images, s)
        elif images.shape[-2:] != (s, s):
            x = F.interpolate(images.float(), size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        else:
            x = images.float()
        x = (x / 127.5 - 1).reshape(x.shape[0], -1)
        return x @ self.proj if self.proj is not None else x


class InceptionSpace(FeatureSpace):
    """torch-fidelity's Inception-v3 (the FID network); `layer` is one of its pooled feature layers."""

    version = "1"
    LAYERS = ("64", "192", "768", "2048")

    def __init__(self, state_dict: dict[str, torch.Tensor], weights_sha256: str, source: str, layer: str = "2048",
                 resize: str = "native", device: torch.device | None = None) -> None:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        if layer not in self.LAYERS:
            raise BenchError(f"inception-v3: layer must be one of {', '.join(self.LAYERS)}, got {layer!r}")
        # torch-fidelity loads the file it is given with weights_only=False; it gets only bytes we re-serialised
        # from tensors we loaded safely, so no pickled code from the user's file can run.
        buf = io.BytesIO()
        torch.save(state_dict, buf)
        buf.seek(0)
        try:
            net = FeatureExtractorInceptionV3("inception-v3-compat", [layer], feature_extractor_weights_path=buf)
        except RuntimeError as e:
            first = (str(e).strip().splitlines() or ["state dict mismatch"])[0]
            raise BenchError(f"inception-v3: weights from {source} do not fit the network: {first}") from None
        self.device = device or torch.device("cpu")
        self.net = net.to(self.device).eval()
        self.layer = layer
        self.name, self.input_size, self.resize = "inception-v3", net.INPUT_IMAGE_SIZE, resize
        self.weights_sha256, self.weights_source = weights_sha256, source
        self.dim = {"64": 64, "192": 192, "768": 768, "2048": 2048}[layer]
        self.description = f"torch-fidelity Inception-v3 (TF 2015-12-05 graph), pool features '{layer}'"

    @property
    def preprocessing(self) -> str:
        policy = "clean-pil-bicubic" if self.resize == "clean" else "tf1-bilinear"
        return f"{policy}:{self.input_size}:layer{self.layer}"

    def embed_batch(self, images: torch.Tensor) -> torch.Tensor:
        if self.resize == "native":
            return self.net(images.to(self.device))[0]
        return self.forward_float(resize_clean(images, self.input_size).to(self.device))

    def forward_float(self, x: torch.Tensor) -> torch.Tensor:
        """The network on float images in [0, 255] already at 299 x 299 (torch-fidelity's forward wants uint8)."""
        n = self.net
        x = (x.to(n.feature_extractor_internal_dtype) - 128) / 128
        stages = (
            ("64", (n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3, n.MaxPool_1)),
            ("192", (n.Conv2d_3b_1x1, n.Conv2d_4a_3x3, n.MaxPool_2)),
            ("768", (n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c, n.Mixed_6d,
                     n.Mixed_6e)),
            ("2048", (n.Mixed_7a, n.Mixed_7b, n.Mixed_7c, n.AvgPool)),
        )
        for name, modules in stages:
            for m in modules:
                x = m(x)
            if name == self.layer:
                break
        return F.adaptive_avg_pool2d(x, output_size=(1, 1)).flatten(1).float()


@dataclass
class ClipModel:
    """An open_clip-style model with its tokenizer and image preprocessing; used by `clip:` spaces and CLIP score."""

    label: str  # "shapes-clip", "ViT-B-32:openai", "ViT-B-32:<checkpoint file name>"
    model: torch.nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights_sha256: str
    weights_source: str
    device: torch.device
    # The model's own preprocessing (uint8 NCHW -> normalised input), if it ships one; else open_clip's bicubic.
    native_preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None
    native_description: str = "bicubic-aa-uint8"

    def preprocess(self, images: torch.Tensor, resize: str) -> torch.Tensor:
        s = self.image_size
        if resize == "native" and self.native_preprocess is not None:
            return self.native_preprocess(images.to(self.device))
        x = resize_clean(images, s) if resize == "clean" else resize_bicubic_uint8(images, s)
        return _normalize(x.to(self.device) / 255.0, self.mean, self.std)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings (float32, CPU)."""
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenizer(list(texts[start:start + batch_size])).to(self.device)
                out.append(self.model.encode_text(tokens).float().cpu())  # type: ignore[operator]
        return F.normalize(torch.cat(out), dim=-1)

    def provenance(self) -> dict[str, Any]:
        return {"clip_model": self.label, "weights_sha256": self.weights_sha256,
                "weights_source": self.weights_source, "input_size": self.image_size,
                "mean": list(self.mean), "std": list(self.std)}


class ClipSpace(FeatureSpace):
    """The image tower of an open_clip model: un-normalised `encode_image` embeddings."""

    version = "1"

    def __init__(self, name: str, clip: ClipModel, resize: str = "native") -> None:
        self.name, self.clip, self.resize = name, clip, resize
        self.input_size = clip.image_size
        self.weights_sha256, self.weights_source, self.device = clip.weights_sha256, clip.weights_source, clip.device
        self.description = f"open_clip image embedding of {clip.label}"
        self.dim = self._probe_dim()

    @property
    def preprocessing(self) -> str:
        policy = "clean-pil-bicubic" if self.resize == "clean" else self.clip.native_description
        return f"{policy}:{self.input_size}:mean{list(self.clip.mean)}:std{list(self.clip.std)}"

    def embed_batch(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.model.encode_image(self.clip.preprocess(images, self.resize))  # type: ignore[operator]


class DinoV2Space(FeatureSpace):
    """DINOv2 CLS embeddings at 224 x 224 with ImageNet normalisation (as torch-fidelity's extractor)."""

    version = "1"

    def __init__(self, variant: str, model: torch.nn.Module, weights_sha256: str, source: str,
                 resize: str = "native", device: torch.device | None = None) -> None:
        self.device = device or torch.device("cpu")
        self.model = model.to(self.device).eval()
        self.name, self.input_size, self.resize = f"dinov2:{variant}", 224, resize
        self.weights_sha256, self.weights_source = weights_sha256, source
        self.description = f"DINOv2 {variant} CLS embedding"
        self.dim = self._probe_dim()

    @property
    def preprocessing(self) -> str:
        policy = "clean-pil-bicubic" if self.resize == "clean" else "tf1-bilinear"
        return f"{policy}:{self.input_size}:imagenet-norm"

    def embed_batch(self, images: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        x = resize_clean(images, s) if self.resize == "clean" else resize_tf_bilinear(images, s)
        return self.model(_normalize(x.to(self.device) / 255.0, IMAGENET_MEAN, IMAGENET_STD))


# ----------------------------------------------------------------------------------------------- factories

SpaceFactory = Callable[[str, dict[str, Any], torch.device, bool], FeatureSpace]


def _options(spec: str, options: dict[str, Any], allowed: Sequence[str]) -> dict[str, Any]:
    extra = sorted(set(options) - set(allowed))
    if extra:
        raise BenchError(f"feature space {spec!r}: option(s) {', '.join(extra)} do not apply "
                         f"(it takes: {', '.join(allowed) or 'none'})")
    resize = options.get("resize")
    if resize is not None and resize not in RESIZE_POLICIES:
        raise BenchError(f"feature space {spec!r}: resize must be one of {', '.join(RESIZE_POLICIES)}, "
                         f"got {resize!r}")
    return options


def _build_pixels(arg: str, options: dict[str, Any], device: torch.device, allow_download: bool) -> FeatureSpace:
    if arg:
        raise BenchError(f"feature space 'pixels:{arg}': pixels takes options (size, dim), not a suffix")
    o = _options("pixels", options, ("size", "dim", "resize"))
    return PixelSpace(size=int(o.get("size", 8)), dim=int(o.get("dim", 64)), resize=o.get("resize") or "native")


def _inception_weights(options: dict[str, Any], allow_download: bool) -> tuple[Path, str]:
    hint = f"point it at a local copy of {INCEPTION_FILE}"
    if options.get("weights"):
        return _existing_file(options["weights"], "inception-v3", "metric option `weights`", hint), \
            "metric option `weights`"
    if os.environ.get(INCEPTION_ENV):
        return _existing_file(os.environ[INCEPTION_ENV], "inception-v3", INCEPTION_ENV, hint), INCEPTION_ENV
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if hub_file.is_file():
        return hub_file, "torch hub cache"
    if allow_download:
        hub_file.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(INCEPTION_URL, str(hub_file), hash_prefix="6726825d", progress=False)
        return hub_file, f"downloaded from {INCEPTION_URL}"
    raise MissingWeightsError(
        f"inception-v3 weights not found: {INCEPTION_FILE} is not in the torch hub cache {hub_file.parent} and "
        f"neither {INCEPTION_ENV} nor the metric option `weights:` names a local file (or allow downloads)"
    )


def _build_inception(arg: str, options: dict[str, Any], device: torch.device, allow_download: bool) -> FeatureSpace:
    if arg:
        raise BenchError(f"feature space 'inception-v3:{arg}': use the option `layer:` to pick a feature layer")
    o = _options("inception-v3", options, ("weights", "resize", "layer"))
    path, setting = _inception_weights(o, allow_download)
    sd = load_state_dict_file(path)
    return InceptionSpace(sd, file_sha256(path), f"{path} ({setting})", layer=str(o.get("layer", "2048")),
                          resize=o.get("resize") or "native", device=device)


def _is_pathlike(text: str) -> bool:
    return os.sep in text or text.startswith((".", "~")) or text.endswith((".pt", ".pth", ".bin", ".safetensors"))


def _cached_open_clip_file(cfg: dict[str, Any]) -> str | None:
    """The local file an open_clip pretrained tag resolves to, if it is already cached (no network)."""
    if cfg.get("file") and Path(cfg["file"]).is_file():
        return str(cfg["file"])
    if cfg.get("hf_hub") and importlib.util.find_spec("huggingface_hub") is not None:  # ships with open_clip
        from huggingface_hub import try_to_load_from_cache

        model_id, filename = os.path.split(cfg["hf_hub"])
        filename = filename or "open_clip_pytorch_model.bin"
        names = [filename]
        if filename == "open_clip_pytorch_model.bin":
            names.insert(0, "open_clip_model.safetensors")
        elif filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            found = try_to_load_from_cache(model_id, name)
            if isinstance(found, str) and Path(found).is_file():
                return found
    if cfg.get("url"):
        p = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        if p.is_file():
            return str(p)
    return None


def load_open_clip(model_name: str, pretrained: str | None, device: torch.device,
                   allow_download: bool = False) -> ClipModel:
    """An open_clip model from a local checkpoint path, or a pretrained tag already in the local cache.

    A tag that is not cached is downloaded only when `allow_download`; otherwise MissingWeightsError.
    """
    import open_clip

    if not pretrained:
        raise BenchError(f"clip:{model_name} needs weights: write clip:{model_name}:<pretrained tag or local "
                         "checkpoint path> (a randomly initialised CLIP measures nothing)")
    if open_clip.get_model_config(model_name) is None:
        raise BenchError(f"clip:{model_name}: unknown open_clip model (register a config with "
                         "open_clip.add_model_config, or see open_clip.list_models())")
    path = Path(pretrained).expanduser()
    force: dict[str, Any] = {}
    quick_gelu = False
    if path.is_file():
        checkpoint, source, tag = str(path), str(path), path.name
    elif _is_pathlike(pretrained):
        raise MissingWeightsError(f"CLIP checkpoint {path} (clip:{model_name}:<path>) does not exist; give the "
                                  "path of a local open_clip checkpoint or a pretrained tag")
    else:
        cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        if not cfg:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
            raise BenchError(f"clip:{model_name}:{pretrained}: not a file and not a pretrained tag of "
                             f"{model_name} (tags: {tags})")
        cached = _cached_open_clip_file(cfg)
        if cached is None and not allow_download:
            where = cfg.get("hf_hub") or cfg.get("url") or "?"
            raise MissingWeightsError(
                f"CLIP weights {model_name}:{pretrained} ({where}) are not in the local cache and downloads are "
                f"off; allow downloads once, or give a local checkpoint: clip:{model_name}:/path/to/checkpoint")
        checkpoint = cached if cached is not None else open_clip.download_pretrained(cfg)
        source, tag = f"{checkpoint} (pretrained tag {pretrained})", pretrained
        force = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
        quick_gelu = bool(cfg.get("quick_gelu", False))  # what the tag was trained with
    try:
        model = open_clip.create_model(model_name, pretrained=checkpoint, device=device,
                                       force_preprocess_cfg=force or None, force_quick_gelu=quick_gelu)
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or ["load failed"])[0]
        raise BenchError(f"clip:{model_name}: cannot load {checkpoint}: {first}") from None
    model.eval()
    cfg_pp = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = cfg_pp.get("size", getattr(model.visual, "image_size", 224))
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    return ClipModel(label=f"{model_name}:{tag}", model=model, tokenizer=open_clip.get_tokenizer(model_name),
                     image_size=size, mean=tuple(cfg_pp.get("mean", OPENAI_MEAN)),
                     std=tuple(cfg_pp.get("std", OPENAI_STD)), weights_sha256=file_sha256(checkpoint),
                     weights_source=source, device=device)


def _info_get(info: Any, *names: str) -> Any:
    for name in names:
        if isinstance(info, dict) and info.get(name) is not None:
            return info[name]
        if not isinstance(info, dict) and getattr(info, name, None) is not None:
            return getattr(info, name)
    return None


def load_shapes_clip(device: torch.device) -> ClipModel:
    """The embedded shapes-clip through `SHAPES_CLIP_LOADER` (`load_shapes_clip(device) -> (model, info)`).

    Uses the module's own `preprocess` (native policy) and `tokenizer()` when it has them; `info` may carry
    sha256, file, image_size, mean, std, tokenizer.
    """
    module_name, attr = split_target(SHAPES_CLIP_LOADER)
    try:  # the module itself is read too (IMAGE_SIZE, MEAN, STD, tokenizer, preprocess), not only the loader
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise MissingWeightsError(
                f"shapes-clip is not available: {module_name} is not installed (it ships with the embedded world); "
                "use feature_space: pixels, or clip:<model>:<local checkpoint>") from None
        raise
    loader = getattr(module, attr, None)
    if loader is None:
        raise MissingWeightsError(f"shapes-clip is not available: {module_name} has no {attr}()")
    try:
        model, info = loader(device)
    except FileNotFoundError as e:
        raise MissingWeightsError(f"shapes-clip weights not found: {e}") from None
    model = model.to(device).eval()
    visual = getattr(model, "visual", None)
    pp = getattr(visual, "preprocess_cfg", None) or {}
    found: Any = _info_get(info, "image_size", "input_size") or getattr(module, "IMAGE_SIZE", None) \
        or pp.get("size") or getattr(visual, "image_size", 32)
    size = int(found[0] if isinstance(found, (tuple, list)) else found)

    def triple(v: Any) -> tuple[float, ...] | None:
        return None if v is None else tuple(float(x) for x in v) if isinstance(v, (tuple, list)) else (float(v),) * 3

    mean = triple(_info_get(info, "mean")) or triple(getattr(module, "MEAN", None)) or tuple(pp.get("mean", OPENAI_MEAN))
    std = triple(_info_get(info, "std")) or triple(getattr(module, "STD", None)) or tuple(pp.get("std", OPENAI_STD))
    tokenizer = _info_get(info, "tokenizer")
    if tokenizer is None and callable(getattr(module, "tokenizer", None)):
        tokenizer = module.tokenizer()
    if tokenizer is None:
        import open_clip

        tokenizer = open_clip.get_tokenizer(_info_get(info, "name", "model_name") or "")
    native = getattr(module, "preprocess", None)
    sha = _info_get(info, "sha256", "weights_sha256") or tensors_sha256(model.state_dict())
    source = _info_get(info, "file", "weights_path") or SHAPES_CLIP_LOADER
    pretrained = _info_get(info, "pretrained")
    return ClipModel(label="shapes-clip", model=model, tokenizer=tokenizer, image_size=size, mean=mean, std=std,
                     weights_sha256=str(sha), weights_source=f"{source}" + (f" ({pretrained})" if pretrained else ""),
                     device=device, native_preprocess=native if callable(native) else None,
                     native_description=str(getattr(module, "PREPROCESSING", f"{module_name}.preprocess"))
                     if callable(native) else "bicubic-aa-uint8")


def parse_clip_spec(arg: str, options: dict[str, Any]) -> tuple[str, str | None]:
    """'<model>[:<tag or path>]' (+ option `pretrained`) -> (model, pretrained)."""
    model, _, pretrained = arg.partition(":")
    if not model:
        raise BenchError("clip feature space needs a model: clip:<open_clip model>[:<pretrained tag or path>]")
    opt = options.get("pretrained") or options.get("weights")
    if pretrained and opt and str(opt) != pretrained:
        raise BenchError(f"clip:{arg}: the name gives weights {pretrained!r} and the options give {opt!r}")
    return model, (pretrained or (str(opt) if opt else None))


def _build_clip(arg: str, options: dict[str, Any], device: torch.device, allow_download: bool) -> FeatureSpace:
    o = _options(f"clip:{arg}", options, ("pretrained", "weights", "resize"))
    model, pretrained = parse_clip_spec(arg, o)
    clip = load_open_clip(model, pretrained, device, allow_download)
    return ClipSpace(f"clip:{clip.label}", clip, resize=o.get("resize") or "native")


def _build_shapes_clip(arg: str, options: dict[str, Any], device: torch.device,
                       allow_download: bool) -> FeatureSpace:
    if arg:
        raise BenchError(f"feature space 'shapes-clip:{arg}' takes no suffix")
    o = _options("shapes-clip", options, ("resize",))
    return ClipSpace("shapes-clip", load_shapes_clip(device), resize=o.get("resize") or "native")


DINOV2_VARIANTS = {"vits14": "vits14", "vitb14": "vitb14", "vitl14": "vitl14", "vitg14": "vitg14",
                   "vit-s-14": "vits14", "vit-b-14": "vitb14", "vit-l-14": "vitl14", "vit-g-14": "vitg14"}


def _build_dinov2(arg: str, options: dict[str, Any], device: torch.device, allow_download: bool) -> FeatureSpace:
    o = _options(f"dinov2:{arg}", options, ("repo", "weights", "resize"))
    variant = DINOV2_VARIANTS.get(arg.lower())
    if variant is None:
        raise BenchError(f"dinov2:{arg}: unknown variant (vits14, vitb14, vitl14, vitg14)")
    entry = f"dinov2_{variant}"
    hub = Path(torch.hub.get_dir())
    repo_setting = "metric option `repo`" if o.get("repo") else DINOV2_REPO_ENV if os.environ.get(
        DINOV2_REPO_ENV) else "torch hub cache"
    repo = Path(o.get("repo") or os.environ.get(DINOV2_REPO_ENV) or hub / "facebookresearch_dinov2_main").expanduser()
    w_setting = "metric option `weights`" if o.get("weights") else DINOV2_WEIGHTS_ENV if os.environ.get(
        DINOV2_WEIGHTS_ENV) else "torch hub cache"
    weights = Path(o.get("weights") or os.environ.get(DINOV2_WEIGHTS_ENV)
                   or hub / "checkpoints" / f"{entry}_pretrain.pth").expanduser()
    have_repo, have_weights = (repo / "hubconf.py").is_file(), weights.is_file()
    if have_repo and have_weights:
        model = torch.hub.load(str(repo), entry, source="local", pretrained=False)
        try:
            model.load_state_dict(load_state_dict_file(weights))
        except RuntimeError as e:
            first = (str(e).strip().splitlines() or ["state dict mismatch"])[0]
            raise BenchError(f"dinov2:{variant}: weights {weights} do not fit the network: {first}") from None
        source = f"{weights} ({w_setting}); code {repo} ({repo_setting})"
    elif allow_download:
        model = torch.hub.load("facebookresearch/dinov2", entry)
        weights = hub / "checkpoints" / f"{entry}_pretrain.pth"
        source = f"{weights} (downloaded through torch.hub)"
    else:
        missing = [f"hub code {repo / 'hubconf.py'} ({repo_setting}; set `repo:` or {DINOV2_REPO_ENV})"] \
            if not have_repo else []
        if not have_weights:
            missing.append(f"weights {weights} ({w_setting}; set `weights:` or {DINOV2_WEIGHTS_ENV})")
        raise MissingWeightsError(f"dinov2:{variant} not available offline: missing {' and '.join(missing)}; "
                                  "or allow downloads to fill the torch hub cache")
    sha = file_sha256(weights) if weights.is_file() else tensors_sha256(model.state_dict())
    return DinoV2Space(variant, model, sha, source, resize=o.get("resize") or "native", device=device)


_SPACES: dict[str, str | SpaceFactory] = {
    "pixels": "bench.metrics.features:_build_pixels",
    "inception-v3": "bench.metrics.features:_build_inception",
    "clip": "bench.metrics.features:_build_clip",
    "dinov2": "bench.metrics.features:_build_dinov2",
    "shapes-clip": "bench.metrics.features:_build_shapes_clip",
}


def register_feature_space(name: str, target: str | SpaceFactory) -> None:
    """Register a factory `fn(arg, options, device, allow_download) -> FeatureSpace` (or 'module:function').

    A suite's `feature_space: NAME[:ARG]` calls the factory of NAME with ARG (the text after the first colon).
    """
    if ":" in name:
        raise BenchError(f"feature space names cannot contain ':' ({name!r})")
    _SPACES[name] = target


SPACES_ENTRY_POINT_GROUP = "bench.feature_spaces"  # `name = "module:factory"`, read on first miss in every process


def _entry_point_spaces() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=SPACES_ENTRY_POINT_GROUP)
            if ep.name not in _SPACES and ":" not in ep.name}


def feature_space_names() -> list[str]:
    """Every registered feature space, entry points included."""
    return sorted({*_SPACES, *_entry_point_spaces()})


def build_feature_space(spec: str, options: dict[str, Any] | None = None, device: Any = None,
                        allow_download: bool = False) -> FeatureSpace:
    """Resolve `NAME[:ARG]` with its options to a loaded FeatureSpace."""
    if not isinstance(spec, str) or not spec:
        raise BenchError(f"feature_space must be a name such as pixels or inception-v3, got {spec!r}")
    base, _, arg = spec.partition(":")
    if base not in _SPACES:
        _SPACES.update({n: t for n, t in _entry_point_spaces().items() if n == base})
    if base not in _SPACES:
        raise BenchError(f"unknown feature space {spec!r} (known: {', '.join(feature_space_names())})")
    target = _SPACES[base]
    if isinstance(target, str):
        target = import_target(target)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return target(arg, dict(options or {}), dev, bool(allow_download))
