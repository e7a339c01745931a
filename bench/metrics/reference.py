"""Reference features and statistics: computed once per key, cached as `.npz` under the store's cache directory.

The key is (dataset identity, split, resolution, feature space + code version + weights hash, preprocessing,
N, which indices, role). The file name is a hash of the key, and the key is stored inside the file and compared
on load, so a stale or colliding file is recomputed, never reused. Files are written atomically (temporary
file + rename), so concurrent workers computing the same reference cannot leave a torn file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.datasets import has_matched_draws
from bench.errors import BenchError
from bench.files import write_atomic
from bench.metrics.frechet import FeatureStats

if TYPE_CHECKING:
    from bench.metrics.features import FeatureSpace
    from bench.metrics.registry import QualityContext

FORMAT = 1
SUBDIR = "reference_stats"


@dataclass
class ReferenceSet:
    """Features (float32, N x D) and float64 statistics of one reference set, with the key they were made for."""

    features: np.ndarray
    stats: FeatureStats
    key: dict[str, Any]
    digest: str
    path: Path
    from_cache: bool
    recovered: str | None = None  # a corrupt cache file that was moved aside and recomputed (for provenance)


def indices_digest(indices: Sequence[int]) -> str:
    return hashlib.sha256(np.asarray(list(indices), dtype=np.int64).tobytes()).hexdigest()


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def reference_key(dataset: Any, resolution: int, space: FeatureSpace, indices: Sequence[int],
                  role: str, draw: int | None = None) -> dict[str, Any]:
    """The full identity of a reference set's features: change any field and the cache entry changes.

    `draw` (condition-matched sets only) names which matched draw of the items at `indices` the images are;
    keys without it are unchanged, so existing reference entries stay valid."""
    idx = [int(i) for i in indices]
    extra = {} if draw is None else {"draw": int(draw)}
    return {
        **extra,
        "format": FORMAT,
        "role": role,
        "dataset": dataset.key(),
        "split": getattr(dataset, "split", None),
        "resolution": int(resolution),
        **space.key_fields(),
        "n": len(idx),
        "indices_sha256": indices_digest(idx),
        "indices_range": [min(idx), max(idx)] if idx else [],
    }


def _atomic_savez(path: Path, **arrays: Any) -> None:
    write_atomic(path, lambda f: np.savez(f, **arrays))


def _load_checked(path: Path, key: dict[str, Any]) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """(the arrays of a cache file whose stored key equals `key`, None) when it is good; (None, None) when it is
    missing or stale (another key: recomputed and overwritten); (None, note) when it is corrupt (empty, truncated,
    not an .npz): the file is moved aside to `<file>.corrupt-<time>` so it can be inspected, and the note says so
    for the metric's provenance. Never raises for a bad file."""
    if not path.is_file():
        return None, None
    try:
        with np.load(path, allow_pickle=False) as z:
            if "key" not in z.files or json.loads(str(z["key"])) != json.loads(json.dumps(key, default=str)):
                return None, None
            return {name: z[name] for name in z.files}, None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        why = (str(e).splitlines() or [""])[0] or type(e).__name__
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        try:
            os.replace(path, aside)
        except OSError:  # another worker moved it first, or the folder is read-only: recompute anyway
            return None, f"reference cache file {path} was corrupt ({type(e).__name__}: {why}); recomputed"
        return None, (f"reference cache file {path} was corrupt ({type(e).__name__}: {why}); moved aside to "
                      f"{aside.name} and recomputed")


def reference_set(ctx: QualityContext, space: FeatureSpace, indices: Sequence[int], role: str,
                  batch_size: int = 256, draw: int | None = None) -> ReferenceSet:
    """Reference features of dataset images at `indices` in `space`, from the cache or computed and cached.

    With `draw`, the images are the dataset's condition-matched draw `draw` of those items
    (`dataset.matched_images`) instead of the items themselves."""
    key = reference_key(ctx.dataset, ctx.resolution, space, indices, role, draw)
    digest = key_digest(key)
    path = Path(ctx.cache_dir) / SUBDIR / f"ref-{digest[:32]}.npz"
    arrays, recovered = _load_checked(path, key)
    if arrays is not None and {"mu", "sigma", "n", "features"} <= set(arrays):
        stats = FeatureStats(mean=arrays["mu"], cov=arrays["sigma"], n=int(arrays["n"]))
        return ReferenceSet(arrays["features"], stats, key, digest, path, from_cache=True)
    if draw is None:
        images, method = ctx.dataset.images(list(indices), ctx.resolution), "images()"
    elif has_matched_draws(ctx.dataset):
        images, method = ctx.dataset.matched_images(list(indices), ctx.resolution, draw), "matched_images()"
    else:
        raise BenchError(f"dataset {ctx.dataset.key()} has no matched_images(), so it has no matched draws")
    if images.dtype.is_floating_point or images.dim() != 4 or images.shape[0] != len(indices):
        raise BenchError(f"dataset {ctx.dataset.key()}: {method} must return uint8 (N, 3, R, R), got "
                         f"{images.dtype} {tuple(images.shape)} for {len(indices)} indices")
    feats = space.extract(images, batch_size)
    stats = FeatureStats.from_features(feats)
    _atomic_savez(path, key=np.array(json.dumps(key, sort_keys=True, default=str)), features=feats,
                  mu=stats.mean, sigma=stats.cov, n=np.int64(stats.n))
    return ReferenceSet(feats, stats, key, digest, path, from_cache=False, recovered=recovered)


def cached_numbers(cache_dir: Path, kind: str, key: dict[str, Any],
                   compute: Callable[[], dict[str, float]]) -> tuple[dict[str, float], bool, str | None]:
    """Small derived numbers (e.g. the FD noise floor) cached under the same rules: (numbers, from_cache, the
    note when a corrupt cache file was moved aside and recomputed)."""
    full = {"format": FORMAT, "kind": kind, **key}
    path = Path(cache_dir) / SUBDIR / f"{kind}-{key_digest(full)[:32]}.npz"
    arrays, recovered = _load_checked(path, full)
    if arrays is not None:
        try:
            return {k: float(v) for k, v in arrays.items() if k != "key"}, True, None
        except (TypeError, ValueError):  # right key, wrong arrays: recompute over it
            pass
    numbers = compute()
    _atomic_savez(path, key=np.array(json.dumps(full, sort_keys=True, default=str)),
                  **{k: np.float64(v) for k, v in numbers.items()})
    return numbers, False, recovered
