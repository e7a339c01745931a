"""Saved samples: a cell's images as lossless files named by image index and seed, with a `samples.jsonl` sidecar
(index, seed, file, prompt or label), so a user can rescore exactly what the metrics scored with other tools.

The sidecar is removed before any image is written and written (atomically) after the last one, so a worker
killed half-way leaves images and no listing, never a listing of missing or half-written files.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.files import write_atomic

FOLDER = "saved"  # under the cell's samples folder (<store folder>/samples/<cell key>/saved)
SIDECAR = "samples.jsonl"
FORMATS = ("png",)


def file_name(index: int, seed: int, fmt: str = "png") -> str:
    """`000123-seed123.png`: image index (dataset index) and the seed it was sampled from."""
    return f"{int(index):06d}-seed{int(seed)}.{fmt}"


def save_samples(folder: str | Path, images: Any, indices: Sequence[int], seeds: Sequence[int],
                 prompts: Sequence[str] | None = None, labels: Sequence[int] | None = None, fmt: str = "png",
                 limit: int | None = None) -> dict[str, Any]:
    """Write the first `limit` (None: all) uint8 (3, H, W) images with their sidecar; returns what was written."""
    from PIL import Image

    if fmt not in FORMATS:
        raise ValueError(f"save_samples format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    folder = Path(folder)
    count = len(indices) if limit is None else min(int(limit), len(indices))
    folder.mkdir(parents=True, exist_ok=True)
    sidecar = folder / SIDECAR
    sidecar.unlink(missing_ok=True)  # from here until the end there is no listing
    rows, names = [], set()
    for i in range(count):
        name = file_name(indices[i], seeds[i], fmt)
        picture = Image.fromarray(images[i].permute(1, 2, 0).contiguous().numpy())
        write_atomic(folder / name, functools.partial(picture.save, format="PNG"))
        row: dict[str, Any] = {"index": int(indices[i]), "seed": int(seeds[i]), "file": name}
        if prompts:
            row["prompt"] = str(prompts[i])
        if labels:
            row["label"] = int(labels[i])
        rows.append(json.dumps(row))
        names.add(name)
    write_atomic(sidecar, "".join(line + "\n" for line in rows))
    for old in folder.glob(f"*.{fmt}"):  # images of an earlier, larger save that this listing does not name
        if old.name not in names:
            old.unlink(missing_ok=True)
    return {"folder": FOLDER, "count": count, "format": fmt, "sidecar": SIDECAR, "max": limit}


def read_sidecar(folder: str | Path) -> list[dict[str, Any]]:
    """The rows of a saved folder's samples.jsonl, in image order."""
    text = (Path(folder) / SIDECAR).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]
