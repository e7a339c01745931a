"""Sharded cells: one cell's quality sampling split into image ranges that run as separate tasks.

Image i's noise, prompt and label depend only on i, and a shard starts on a multiple of the cell's batch size, so
every batch — and every image in it — is computed exactly as in the unsharded cell. A shard samples its range,
embeds each batch in every feature space the cell's metrics read (bench.metrics.streaming) and returns the
features; the driver writes them to `<store folder>/shards/<cell key>/<lo>-<hi>.npz` (atomically), which is the
unit of resume. When every shard of a cell is there, one task scores the concatenated features (and times the
sampler: latency is measured once per cell, never sharded), and the shard files are removed once the cell is
committed.
"""

from __future__ import annotations

import json
import math
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.files import write_atomic

SUBDIR = "shards"
FORMAT = 1


def shard_ranges(samples: int, batch_size: int, shard_size: int) -> list[tuple[int, int]]:
    """Image ranges [lo, hi) of at most `shard_size` images (rounded up to a multiple of `batch_size`, so shard
    boundaries are batch boundaries); one range when the cell fits in one shard."""
    if samples < 1 or batch_size < 1 or shard_size < 1:
        raise BenchError(f"shards need positive sizes (samples {samples}, batch_size {batch_size}, "
                         f"shard_size {shard_size})")
    size = math.ceil(shard_size / batch_size) * batch_size
    return [(lo, min(lo + size, samples)) for lo in range(0, samples, size)]


AUTO_MAX_SHARD = 10_000
"""`shard_size: auto` never makes a shard larger than this, so a long cell resumes in pieces even on one worker."""


def auto_shard_size(samples: int, batch_size: int, workers: int) -> int | None:
    """`shard_size: auto`: one shard per worker that can run the cell at once, and at most AUTO_MAX_SHARD images
    per shard; None (the cell stays whole) when that is a single shard."""
    count = max(workers, math.ceil(samples / AUTO_MAX_SHARD))
    if count < 2 or samples <= batch_size:
        return None
    return math.ceil(samples / count)


class ShardFiles:
    """The finished shards of one cell, as files under the store's folder."""

    def __init__(self, store_root: str | Path, cell_key: str) -> None:
        self.folder = Path(store_root) / SUBDIR / cell_key
        self.cell_key = cell_key

    def path(self, rng: tuple[int, int]) -> Path:
        return self.folder / f"{rng[0]:09d}-{rng[1]:09d}.npz"

    def write(self, rng: tuple[int, int], shard: dict[str, Any]) -> None:
        """One shard's features (per feature-space id) and measurements, written atomically."""
        features = shard.get("features") or {}
        meta = {k: v for k, v in shard.items() if k != "features"}
        meta.update(format=FORMAT, cell_key=self.cell_key, range=list(rng), spaces=sorted(features))
        arrays: dict[str, Any] = {f"f{i}": np.asarray(features[sid], dtype=np.float32)
                                  for i, sid in enumerate(sorted(features))}
        arrays["meta"] = np.array(json.dumps(meta, default=str))
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path(rng), lambda f: np.savez(f, **arrays))

    def read(self, rng: tuple[int, int]) -> dict[str, Any] | None:
        """A finished shard, or None when it is missing or not this cell's range (then it is recomputed)."""
        path = self.path(rng)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != FORMAT or meta.get("cell_key") != self.cell_key or \
                        meta.get("range") != list(rng):
                    return None
                meta["features"] = {sid: z[f"f{i}"] for i, sid in enumerate(meta["spaces"])}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # torn or foreign: recompute it
            return None
        return meta

    def done(self, ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        return [r for r in ranges if self.read(r) is not None]

    def merged(self, ranges: Sequence[tuple[int, int]]) -> dict[str, Any]:
        """The whole cell from its shards: features concatenated in image order, the counted NFE (which must
        agree), and the measurements of the first shard (memory, determinism probe, grid), with every shard's
        wall time and host (and Ray node id, on Ray) in `shards` (provenance only)."""
        parts = [self.read(r) for r in ranges]
        if any(p is None for p in parts):
            missing = [r for r, p in zip(ranges, parts, strict=True) if p is None]
            raise BenchError(f"cell {self.cell_key[:12]}: shard(s) {missing} are missing")
        shards: list[dict[str, Any]] = [p for p in parts if p is not None]
        nfes = {p["nfe"] for p in shards}
        if len(nfes) != 1:
            raise BenchError(f"cell {self.cell_key[:12]}: counted NFE differs between shards: {sorted(nfes)}")
        spaces = shards[0]["spaces"]
        features = {sid: np.concatenate([p["features"][sid] for p in shards]) for sid in spaces}
        first = shards[0]
        return {
            "features": features, "nfe": first["nfe"], "peak_mb": first["peak_mb"],
            "memory": {**first["memory"], "measured_in": f"the shard of images {ranges[0][0]}-{ranges[0][1] - 1}"},
            "probe": first["probe"], "sampler": first.get("sampler"), "grid_saved": first.get("grid_saved"),
            "images": None,
            "shards": {"count": len(ranges), "ranges": [list(r) for r in ranges],
                       "wall_s": [round(float(p.get("wall_s") or 0.0), 3) for p in shards],
                       "sample_s": [round(float((p.get("phases") or {}).get("sample", 0.0)), 3) for p in shards],
                       "hosts": [p.get("host") for p in shards],
                       **({"nodes": [p.get("node") for p in shards]} if any(p.get("node") for p in shards) else {}),
                       **({"devices": [p.get("device") for p in shards]}
                          if any(p.get("device") is not None for p in shards) else {})},
        }

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
