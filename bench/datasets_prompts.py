"""Suite dataset `prompts`: prompts from a text file (or class labels), reference images from a folder.

    dataset: {name: prompts, file: prompts/coco_30k.txt, reference: /data/coco2014-val-30k}
    dataset: {name: prompts, classes: 1000, reference: /data/imagenet64-val}     # class-conditional

- `file`: one prompt per line (blank lines and lines starting with '#' are skipped), UTF-8. A relative path
  is taken from the current directory. Default: `builtin:coco-style-30`, thirty COCO-style captions written
  for this package (not COCO's own captions), enough for smoke runs; real evaluations bring their own file.
  Sample i gets prompt i; with more samples than prompts the list repeats (`repeat: false` makes that an error).
- `classes: K`: class labels (label of sample i is i mod K, so classes are balanced), or `labels_file`:
  one integer per line (repeats like prompts). Alone they make a class-conditional dataset; next to `file`,
  every sample has a prompt and a label (text samplers read the prompt, class-conditional ones the label).
- `reference`: optional folder of reference images (png/jpg/jpeg/webp/bmp, searched recursively, sorted by
  path). Image i is reference image i; each is centre-cropped to a square and resized (PIL bicubic) to the
  cell's resolution. Without it, metrics that need reference images (fd, kid, precision/recall) fail with a
  clear message; latency, memory and CLIP score work. The FD noise floor uses the *next* N images (the
  disjoint-block floor: a folder cannot draw a second image for a prompt, as gmm and shapes can), so it
  needs 2N reference images (or `fd: {noise_floor: false}`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.datasets import Conditions
from bench.errors import BenchError

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VERSION = "v1"

# Written for this package in the style of COCO captions (everyday scenes, one sentence each).
BUILTIN: dict[str, list[str]] = {
    "coco-style-30": [
        "A man riding a bicycle down a busy city street.",
        "Two dogs playing with a frisbee on a grassy field.",
        "A plate of pasta with tomato sauce and basil on a wooden table.",
        "A red double-decker bus parked next to a sidewalk.",
        "A cat sleeping on top of a laptop keyboard.",
        "A group of people flying kites on a windy beach.",
        "A kitchen with white cabinets and a stainless steel refrigerator.",
        "A giraffe standing next to a tall tree in a zoo enclosure.",
        "A young boy holding a baseball bat at home plate.",
        "A bowl of fresh fruit with bananas, apples and oranges.",
        "A train crossing a bridge over a river at sunset.",
        "A woman sitting on a bench reading a newspaper in a park.",
        "A small sailboat on a calm lake with mountains behind it.",
        "A bathroom with a white sink and a large mirror.",
        "An elephant walking through tall grass on the savanna.",
        "A pizza with pepperoni and mushrooms on a metal tray.",
        "A motorcycle parked in front of a brick building.",
        "A living room with a gray couch and a flat screen television.",
        "A skier going down a snowy slope under a blue sky.",
        "Several sheep grazing on a green hillside.",
        "A clock tower in the middle of a town square.",
        "A person surfing a large wave in the ocean.",
        "A fire hydrant on the corner of a quiet street.",
        "A teddy bear sitting on a child's bed.",
        "A horse pulling a carriage along a cobblestone road.",
        "A bicycle leaning against a fence covered in flowers.",
        "A chef preparing vegetables in a restaurant kitchen.",
        "An airplane taking off from a runway on a cloudy day.",
        "A stop sign next to a road lined with trees.",
        "A laptop, a cup of coffee and a notebook on a desk.",
    ],
}


def _read_lines(path: Path, what: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BenchError(f"dataset prompts: cannot read {what} {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise BenchError(f"dataset prompts: {what} {path} is not UTF-8 text (byte {e.start}: {e.reason}); give a "
                         "text file with one entry per line") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


class PromptDataset:
    """Prompts from a text file (or class labels) with an optional folder of reference images."""

    name = "prompts"
    uint8_rule = "decoded image files (PIL, RGB), centre-cropped, PIL bicubic"  # pipeline fingerprints

    def __init__(self, split: str = "eval", file: str | None = None, reference: str | None = None,
                 classes: int | None = None, labels_file: str | None = None, repeat: bool = True) -> None:
        self.split = split
        self.repeat = bool(repeat)
        self.file = file
        self.prompts: list[str] | None = None
        self.labels: list[int] | None = None
        self.classes: int | None = None
        self._digest = hashlib.sha256()
        if classes is not None or labels_file is not None:
            if labels_file is not None:
                lines = _read_lines(Path(labels_file).expanduser(), "labels_file")
                try:
                    self.labels = [int(v) for v in lines]
                except ValueError:
                    raise BenchError(f"dataset prompts: {labels_file} must hold one integer per line") from None
                if not self.labels:
                    raise BenchError(f"dataset prompts: {labels_file} holds no labels")
                self._digest.update(("labels:" + "\n".join(lines)).encode())
            self.classes = int(classes) if classes is not None else None
            if self.classes is not None and self.classes < 1:
                raise BenchError("dataset prompts: classes must be a positive integer")
            self._digest.update(f"classes={self.classes}".encode())
        if file is not None or (classes is None and labels_file is None):
            spec = file or "builtin:coco-style-30"
            if spec.startswith("builtin:"):
                if spec[len("builtin:"):] not in BUILTIN:
                    raise BenchError(f"dataset prompts: unknown {spec!r} (builtin: {', '.join(BUILTIN)})")
                self.prompts = list(BUILTIN[spec[len("builtin:"):]])
            else:
                self.prompts = _read_lines(Path(spec).expanduser(), "prompt file")
            if not self.prompts:
                raise BenchError(f"dataset prompts: {spec} holds no prompts")
            self.file = spec
            self._digest.update(("prompts:" + "\n".join(self.prompts)).encode())
        self.conditioning = "text" if self.prompts is not None else "class"
        self.reference = Path(reference).expanduser() if reference else None
        if self.reference is not None and not self.reference.is_dir():
            raise BenchError(f"dataset prompts: reference folder {self.reference} does not exist")
        self._files: list[Path] | None = None

    # ------------------------------------------------------------------------------------------ identity
    def reference_files(self) -> list[Path]:
        if self.reference is None:
            return []
        if self._files is None:
            self._files = sorted((p for p in self.reference.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES),
                                 key=lambda p: str(p.relative_to(self.reference)))  # type: ignore[arg-type]
        return self._files

    def key(self) -> str:
        ref = "none"
        if self.reference is not None:
            h = hashlib.sha256()
            for p in self.reference_files():
                h.update(f"{p.relative_to(self.reference)}:{p.stat().st_size}\n".encode())
            ref = f"{self.reference.resolve()}#{len(self.reference_files())}:{h.hexdigest()[:16]}"
        return f"prompts(split={self.split},text={self._digest.hexdigest()[:16]},reference={ref},{VERSION})"

    # ------------------------------------------------------------------------------------------ contents
    def _pick(self, values: Sequence[Any], indices: Sequence[int], what: str) -> list[Any]:
        n = len(values)
        if not self.repeat and indices and max(indices) >= n:
            raise BenchError(f"dataset prompts: {max(indices) + 1} samples but only {n} {what} (repeat: false)")
        return [values[int(i) % n] for i in indices]

    def conditions(self, indices: Sequence[int]) -> Conditions:
        prompts = self._pick(self.prompts, indices, "prompts") if self.prompts is not None else None
        labels = None
        if self.labels is not None:
            labels = [int(v) for v in self._pick(self.labels, indices, "labels")]
        elif self.classes is not None:
            labels = [int(i) % self.classes for i in indices]
        return Conditions(prompts=prompts, labels=labels)

    def images(self, indices: Sequence[int], resolution: int) -> torch.Tensor:
        import numpy as np
        import torch
        from PIL import Image

        files = self.reference_files()
        if self.reference is None:
            raise BenchError("dataset prompts has no reference images: set `reference: FOLDER` in the suite's "
                             "dataset to compute fd / kid / precision / recall")
        if indices and max(indices) >= len(files):
            raise BenchError(f"dataset prompts: reference image {max(indices)} needed but {self.reference} holds "
                             f"{len(files)} images (the FD noise floor needs 2x samples; or fd: {{noise_floor: false}})")
        out = np.empty((len(indices), int(resolution), int(resolution), 3), dtype=np.uint8)
        for row, i in enumerate(indices):
            with Image.open(files[int(i)]) as f:
                rgb = f.convert("RGB")
            w, h = rgb.size
            s = min(w, h)
            square = rgb.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            out[row] = np.asarray(square.resize((int(resolution),) * 2, Image.Resampling.BICUBIC))
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
