"""`bench stats`: a reference statistics file (`.npz`) from a dataset split or a folder of images.

The file holds FeatureStats' `mu`, `sigma`, `n` and the pipeline fingerprint (bench.metrics.statsfile), so an FD
computed against it later can say whether it used the same feature pipeline. From a dataset, the images are
items 0..N-1 of the split at the given resolution: the reference set a cell of N samples uses, so FD against
the file equals FD against the dataset (tested to 1e-9).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.runtime import UINT8_RULE

_CHUNK_BATCHES = 8  # images are read / rendered this many feature batches at a time (bounds memory)


@dataclass(frozen=True)
class StatsSummary:
    """What `make_stats` wrote."""

    path: Path
    n: int
    dim: int
    feature_space: str
    source: dict[str, Any]


def _features(space: Any, read: Any, n: int, batch_size: int) -> np.ndarray:
    """Features of images 0..n-1, read `_CHUNK_BATCHES` batches at a time (batches as one `extract` call makes)."""
    step = batch_size * _CHUNK_BATCHES
    parts = [space.extract(read(list(range(lo, min(lo + step, n)))), batch_size) for lo in range(0, n, step)]
    return np.concatenate(parts) if parts else np.zeros((0, space.dim), np.float32)


def make_stats(source: str, out: str, *, feature_space: str, space_options: dict[str, Any] | None = None,
               resolution: int | None = None, samples: int | None = None, split: str = "eval",
               dataset_options: dict[str, Any] | None = None, resize: int | None = None, batch_size: int = 256,
               device: str | None = None, allow_download: bool = False) -> StatsSummary:
    """Embed a folder's images or a dataset's items 0..N-1 in `feature_space` and write bench's stats file."""
    from bench.datasets_folder import FILE_UINT8, read_images, scan_folder
    from bench.metrics.features import build_feature_space
    from bench.metrics.frechet import FeatureStats, check_sample_count
    from bench.metrics.statsfile import pipeline_fingerprint, write_stats_file

    if batch_size < 1:
        raise BenchError(f"--batch-size must be a positive integer, got {batch_size}")
    if samples is not None and samples < 1:
        raise BenchError(f"--samples must be a positive integer, got {samples}")
    if not str(out).endswith(".npz"):
        raise BenchError(f"-o {out}: give a file name ending in .npz")
    folder = Path(source).expanduser()
    if folder.is_dir():
        if resolution is not None:
            raise BenchError(f"{folder} is a folder: its images keep their size; use --resize R to resize them")
        if dataset_options:
            raise BenchError(f"{folder} is a folder: --option sets a dataset's options, not a folder's")
        scan = scan_folder(folder, allow_mixed=resize is not None)
        n = len(scan.files) if samples is None else int(samples)
        if n > len(scan.files):
            raise BenchError(f"{folder}: --samples {n} but the folder holds {len(scan.files)} images")
        space = build_feature_space(feature_space, space_options, device, allow_download)
        feats = _features(space, lambda idx: read_images(scan, idx, resize), n, batch_size)
        w, h = scan.uniform_size if resize is None and scan.uniform_size else (resize, resize)
        src: dict[str, Any] = {"folder": str(scan.root.resolve()), "files": n, "files_sha256": scan.digest(),
                               "size": f"{w}x{h}", "resize": f"centre-crop, PIL bicubic to {resize}" if resize else None}
        uint8 = FILE_UINT8
    else:
        from bench.datasets import build_dataset, dataset_names
        from bench.metrics.reference import indices_digest

        if source not in dataset_names():
            raise BenchError(f"{source}: not a folder, and not a dataset (datasets: {', '.join(dataset_names())})")
        if resolution is None or samples is None:
            raise BenchError(f"dataset {source}: give --resolution R and --samples N (items 0..N-1 of --split)")
        if resize is not None:
            raise BenchError("--resize is for folders; a dataset renders at --resolution")
        dataset = build_dataset(source, {"split": split, **(dataset_options or {})})
        n = int(samples)
        space = build_feature_space(feature_space, space_options, device, allow_download)
        feats = _features(space, lambda idx: dataset.images(idx, int(resolution)), n, batch_size)
        src = {"dataset": dataset.key(), "split": split, "resolution": int(resolution), "indices": [0, n - 1],
               "indices_sha256": indices_digest(range(n))}
        uint8 = getattr(dataset, "uint8_rule", UINT8_RULE)
    check_sample_count(feats.shape[0], feats.shape[1], "the reference images")
    stats = FeatureStats.from_features(feats)
    path = write_stats_file(out, stats, pipeline_fingerprint(space, stats.n, uint8), src)
    return StatsSummary(path, stats.n, stats.dim, space.name, src)
