"""Per-image evidence of a cell: what paired comparisons resample (bench.analysis).

A quality metric that is a function of per-image rows keeps those rows here: FD keeps the cell's per-image
features (N, D) with the reference statistics it was scored against, CLIP score keeps its per-image scores (N,).
The rows are in image-index order and carry the digest of the seeds they came from, so two cells pair only when
image i of both started from the same noise.

On disk one cell's evidence is one compressed `.npz` (a sidecar next to the store or a baseline), named by cell
key and hashed. Features are stored as float16 when that moves the cell's FD by at most `FLOAT16_FD_RTOL`
(relative), else float32; reference statistics stay float64 and are stored once per distinct reference.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.files import write_atomic

EVIDENCE_FORMAT = 1
FLOAT16_FD_RTOL = 1e-4
_SEP = "|"


@dataclass(frozen=True)
class Evidence:
    """Per-image rows of one metric of one cell.

    kind 'features': `rows` are (N, D) features and `ref_mean`/`ref_cov` the fixed reference statistics (FD);
    kind 'values': `rows` are (N,) per-image values whose mean is the metric (CLIP score)."""

    kind: str
    rows: np.ndarray
    seeds_sha256: str
    ref_mean: np.ndarray | None = None
    ref_cov: np.ndarray | None = None
    strata: np.ndarray | None = None  # (N,) condition id per image (class label or prompt): resampled within


    @property
    def n(self) -> int:
        return int(self.rows.shape[0])

    def ref_digest(self) -> str | None:
        if self.ref_mean is None or self.ref_cov is None:
            return None
        h = hashlib.sha256(np.ascontiguousarray(self.ref_mean, np.float64).tobytes())
        h.update(np.ascontiguousarray(self.ref_cov, np.float64).tobytes())
        return h.hexdigest()


def seeds_digest(seeds: Sequence[int]) -> str:
    """What pairs two cells: the per-image seeds, in order."""
    return hashlib.sha256(np.asarray(list(seeds), dtype=np.int64).tobytes()).hexdigest()


def condition_strata(labels: Sequence[int] | None, prompts: Sequence[str] | None) -> np.ndarray | None:
    """Each image's condition as a small integer (its class label, else its prompt), or None without either.

    Image i's condition is fixed by its dataset index, not by its seed, so a resample that keeps every
    condition's count mimics drawing other seeds for the same conditions (bench.analysis)."""
    if labels is not None:
        keys: Sequence[object] = list(labels)
    elif prompts is not None:
        keys = list(prompts)
    else:
        return None
    ids: dict[object, int] = {}
    return np.asarray([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)


def features_evidence(features: np.ndarray, seeds: Sequence[int], ref_mean: np.ndarray, ref_cov: np.ndarray,
                      strata: np.ndarray | None = None) -> Evidence:
    return Evidence("features", np.asarray(features), seeds_digest(seeds), np.asarray(ref_mean, np.float64),
                    np.asarray(ref_cov, np.float64), strata)


def values_evidence(values: np.ndarray, seeds: Sequence[int], strata: np.ndarray | None = None) -> Evidence:
    return Evidence("values", np.asarray(values, np.float64).reshape(-1), seeds_digest(seeds), strata=strata)


def _compact_features(ev: Evidence) -> np.ndarray:
    """float16 rows when the FD they give stays within FLOAT16_FD_RTOL of the float32 rows' FD, else float32."""
    from bench.metrics.frechet import FeatureStats, frechet_distance_from_stats

    rows32 = np.asarray(ev.rows, np.float32)
    rows16 = rows32.astype(np.float16)
    if not np.all(np.isfinite(rows16)):
        return rows32
    if ev.ref_mean is None or ev.ref_cov is None or rows32.shape[0] <= rows32.shape[1]:
        return rows32
    ref = FeatureStats(ev.ref_mean, ev.ref_cov, -1)
    full = frechet_distance_from_stats(FeatureStats.from_features(rows32), ref)
    half = frechet_distance_from_stats(FeatureStats.from_features(rows16), ref)
    ok = abs(half - full) <= FLOAT16_FD_RTOL * max(abs(full), 1e-12)
    return rows16 if ok else rows32


def to_arrays(evidence: dict[str, Evidence], prefix: str = "") -> dict[str, np.ndarray]:
    """Flat arrays for an .npz: `<prefix><metric>|rows`, `|kind`, `|seeds`, `|ref` (a reference digest), and
    one `ref|<digest>|mean/cov` per distinct reference."""
    out: dict[str, np.ndarray] = {}
    for metric, ev in evidence.items():
        base = f"{prefix}{metric}{_SEP}"
        out[base + "rows"] = _compact_features(ev) if ev.kind == "features" else np.asarray(ev.rows, np.float64)
        out[base + "kind"] = np.asarray(ev.kind)
        out[base + "seeds"] = np.asarray(ev.seeds_sha256)
        if ev.strata is not None:
            out[base + "strata"] = np.asarray(ev.strata, np.int64)
        digest = ev.ref_digest()
        if digest is not None:
            out[base + "ref"] = np.asarray(digest)
            out[f"ref{_SEP}{digest}{_SEP}mean"] = np.asarray(ev.ref_mean, np.float64)
            out[f"ref{_SEP}{digest}{_SEP}cov"] = np.asarray(ev.ref_cov, np.float64)
    return out


def from_arrays(arrays: dict[str, np.ndarray], prefix: str = "") -> dict[str, Evidence]:
    """The inverse of `to_arrays` for one prefix (one cell)."""
    out: dict[str, Evidence] = {}
    for key in arrays:
        if not key.startswith(prefix) or not key.endswith(_SEP + "rows"):
            continue
        metric = key[len(prefix):-len(_SEP + "rows")]
        if metric.startswith("ref" + _SEP) or _SEP in metric:
            continue
        base = f"{prefix}{metric}{_SEP}"
        mean = cov = None
        if base + "ref" in arrays:
            digest = str(arrays[base + "ref"])
            mean, cov = arrays[f"ref{_SEP}{digest}{_SEP}mean"], arrays[f"ref{_SEP}{digest}{_SEP}cov"]
        out[metric] = Evidence(str(arrays[base + "kind"]), arrays[key], str(arrays[base + "seeds"]), mean, cov,
                               arrays.get(base + "strata"))
    return out


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """Write a compressed .npz atomically (temp file + rename); returns its sha256."""
    buf = io.BytesIO()
    payload: dict[str, Any] = {"format": np.asarray(EVIDENCE_FORMAT), **arrays}
    np.savez_compressed(buf, **payload)
    data = buf.getvalue()
    write_atomic(path, data)  # readable by all (a baseline's evidence is committed and shared)
    return hashlib.sha256(data).hexdigest()


def read_npz(path: Path, sha256: str | None = None) -> dict[str, np.ndarray]:
    """Load an evidence .npz (no pickles), checking its hash when one is given."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BenchError(f"evidence file {path} cannot be read ({e.strerror or e})") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise BenchError(f"evidence file {path} does not match the sha256 recorded for it (changed or corrupt)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as e:
        raise BenchError(f"evidence file {path} is not a readable .npz ({str(e).splitlines()[0]})") from None


def evidence_size(paths: Iterable[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())
