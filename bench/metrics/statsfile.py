"""Reference statistics files (`.npz` of `mu`, `sigma`): strict loading, bench's own writer, pipeline fingerprints.

Layouts read (all with `allow_pickle=False`):

- `adm`: OpenAI guided-diffusion's reference batches (`VIRTUAL_imagenet64_labeled.npz`, ...): `arr_0` (the
  uint8 NHWC images), `mu`, `sigma` (Inception pool_3) and `mu_s`, `sigma_s` (spatial features, for sFID).
  Only `mu` / `sigma` are read. The file does not say how many images made mu / sigma, so N stays unknown;
  the row count of `arr_0` (the image batch ADM's precision / recall use) is recorded, read from its header.
- `mu-sigma`: clean-fid (`make_custom_stats`), pytorch-fid (`--save-stats`), NVlabs/edm: `mu`, `sigma`.
- `bench`: written by `bench stats` (FeatureStats' `mu`, `sigma`, `n`) plus `fingerprint` and `source`, JSON.

A **pipeline fingerprint** says how features were made: feature space, its code version and weights SHA-256,
the resize filter (`preprocessing`), the uint8 rule of the images, the feature dimension and N. An FD against a
file is comparable only when the file's pipeline fields equal the cell's (`PIPELINE_FIELDS`: N and the uint8 rule
are recorded, not compared: a reference of decoded PNGs is fine for samples quantised by `to_uint8`); a file
without a fingerprint (third-party) is "unknown". Anything else in a file is a one-line error naming it.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.errors import BenchError
from bench.files import write_atomic
from bench.metrics.frechet import FeatureStats
from bench.runtime import UINT8_RULE

if TYPE_CHECKING:
    from bench.metrics.features import FeatureSpace

FORMAT = 1
PIPELINE_FIELDS = ("feature_space", "feature_space_version", "weights_sha256", "preprocessing", "feature_dim")
_SYMMETRY_RTOL = 1e-6


def pipeline_fingerprint(space: FeatureSpace, n: int, uint8: str = UINT8_RULE) -> dict[str, Any]:
    """The fingerprint of features made by `space` from `n` uint8 images quantised by `uint8`."""
    return {**space.key_fields(), "resize": space.resize, "input_size": int(space.input_size), "uint8": uint8,
            "n": int(n), "format": FORMAT}


@dataclass(frozen=True)
class StatsFile:
    """A loaded reference statistics file: the statistics, where they came from and, if bench wrote it, how."""

    path: Path
    stats: FeatureStats
    sha256: str
    layout: str  # adm | mu-sigma | bench
    fingerprint: dict[str, Any] | None
    source: dict[str, Any] | None
    arr_0_rows: int | None = None  # adm layout: images in its `arr_0` batch (not necessarily mu / sigma's N)

    def provenance(self) -> dict[str, Any]:
        out = {"stats_file": str(self.path), "sha256": self.sha256, "layout": self.layout,
               "n": None if self.stats.n < 0 else int(self.stats.n), "feature_dim": self.stats.dim,
               "fingerprint": self.fingerprint, "source": self.source}
        return out if self.arr_0_rows is None else {**out, "arr_0_rows": self.arr_0_rows}


def _rows_of(path: Path, name: str) -> int | None:
    """The first dimension of array `name` in an .npz, read from its .npy header without loading the data."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{name}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, _ = read(f)
        return int(shape[0]) if shape else None
    except (KeyError, OSError, ValueError, zipfile.BadZipFile):
        return None


def _array(z: Any, path: Path, name: str) -> np.ndarray:
    try:
        a = z[name]
    except ValueError as e:  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
        if "allow_pickle" in str(e):
            raise BenchError(f"{path}: `{name}` is a pickled object array; refused (reference statistics are "
                             "plain numeric arrays, loaded with allow_pickle=False)") from None
        raise BenchError(f"{path}: `{name}` cannot be read: {str(e).splitlines()[0]}") from None
    return a


def _numeric(a: np.ndarray, path: Path, name: str) -> np.ndarray:
    if a.dtype.kind not in "fiu":
        raise BenchError(f"{path}: `{name}` has dtype {a.dtype}; expected real numbers")
    a = np.asarray(a, dtype=np.float64)
    bad = int((~np.isfinite(a)).sum())
    if bad:
        raise BenchError(f"{path}: `{name}` holds {bad} non-finite values (NaN or inf)")
    return a


def _json(z: Any, path: Path, name: str) -> dict[str, Any] | None:
    if name not in z.files:
        return None
    a = _array(z, path, name)
    try:
        value = json.loads(str(a.item()) if a.shape == () else "")
    except (ValueError, TypeError):
        value = None
    if not isinstance(value, dict):
        raise BenchError(f"{path}: `{name}` is not a JSON object (bench writes one); the file is damaged")
    return value


def load_stats_file(path: str | Path, expect_sha256: str | None = None) -> StatsFile:
    """Read and check a reference statistics file; every problem is a one-line BenchError naming the file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise BenchError(f"{p}: no such reference statistics file")
    from bench.metrics.features import file_sha256  # function-level: it imports torch

    sha = file_sha256(p)
    if expect_sha256 and sha != expect_sha256:
        raise BenchError(f"{p}: its sha256 {sha[:16]}... is not the {expect_sha256[:16]}... recorded when the suite "
                         "was loaded (the file changed); run the suite again so its cells are keyed by the new file")
    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        why = (str(e).splitlines() or [""])[0] or type(e).__name__
        raise BenchError(f"{p}: not an .npz file of reference statistics ({type(e).__name__}: {why})") from None
    if not hasattr(z, "files"):  # a plain .npy: np.load returned an array
        raise BenchError(f"{p}: a single .npy array, not an .npz with mu and sigma")
    with z:
        missing = [k for k in ("mu", "sigma") if k not in z.files]
        if missing:
            raise BenchError(f"{p}: missing {' and '.join(missing)} (has: {', '.join(z.files) or 'nothing'}); a "
                             "reference statistics file holds mu (D,) and sigma (D, D)")
        try:
            mu = _numeric(_array(z, p, "mu"), p, "mu")
            sigma = _numeric(_array(z, p, "sigma"), p, "sigma")
            n_arr = _numeric(_array(z, p, "n"), p, "n") if "n" in z.files else None
            fingerprint = _json(z, p, "fingerprint")
            source = _json(z, p, "source")
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise BenchError(f"{p}: truncated or damaged .npz ({type(e).__name__})") from None
        files = list(z.files)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]) or mu.shape[0] == 0:
        raise BenchError(f"{p}: mu has shape {mu.shape} and sigma {sigma.shape}; expected mu (D,) and sigma (D, D)")
    scale = max(float(np.abs(sigma).max()), 1e-300)
    if float(np.abs(sigma - sigma.T).max()) > _SYMMETRY_RTOL * scale:
        raise BenchError(f"{p}: sigma is not symmetric, so it is not a covariance matrix")
    adm = "arr_0" in files or "mu_s" in files
    layout = "adm" if adm else "bench" if fingerprint is not None else "mu-sigma"
    n = int(n_arr.reshape(-1)[0]) if n_arr is not None and n_arr.size == 1 else -1
    stats = FeatureStats(mean=mu, cov=(sigma + sigma.T) / 2, n=n)
    return StatsFile(p.resolve(), stats, sha, layout, fingerprint, source,
                     _rows_of(p, "arr_0") if "arr_0" in files else None)


def write_stats_file(path: str | Path, stats: FeatureStats, fingerprint: dict[str, Any],
                     source: dict[str, Any]) -> Path:
    """Write bench's layout (FeatureStats' mu, sigma, n + JSON `fingerprint`, `source`) atomically."""
    p = Path(path).expanduser()
    if p.suffix != ".npz":
        raise BenchError(f"-o {p}: give a file name ending in .npz")
    arrays: dict[str, Any] = {"mu": stats.mean, "sigma": stats.cov, "n": np.int64(stats.n),
                              "fingerprint": np.array(json.dumps(fingerprint, sort_keys=True)),
                              "source": np.array(json.dumps(source, sort_keys=True, default=str))}
    try:
        write_atomic(p, lambda f: np.savez(f, **arrays))
    except OSError as e:
        raise BenchError(f"-o {p}: cannot write ({e.strerror or e})") from None
    return p


def comparability(cell: dict[str, Any], sf: StatsFile) -> tuple[bool | str, str]:
    """(True | False | "unknown", a note): whether the file's features come from the cell's pipeline."""
    if sf.fingerprint is None:
        return "unknown", (f"comparability unknown: {sf.path.name} ({sf.layout} layout) carries no pipeline "
                           "fingerprint, so its feature space, weights and resize filter cannot be checked "
                           "against this FD's")
    def show(k: str, v: Any) -> str:
        return repr(v[:16] + "...") if k == "weights_sha256" and isinstance(v, str) and len(v) > 16 else repr(v)

    diffs = [f"{k} {show(k, cell.get(k))} here vs {show(k, sf.fingerprint.get(k))} in the file"
             for k in PIPELINE_FIELDS if cell.get(k) != sf.fingerprint.get(k)]
    if diffs:
        return False, f"not comparable with {sf.path.name}: " + "; ".join(diffs)
    return True, f"same pipeline as {sf.path.name}"


def check_dim(sf: StatsFile, space: FeatureSpace) -> None:
    """The file's D must be the feature space's."""
    if sf.stats.dim != space.dim:
        raise BenchError(f"{sf.path}: statistics have D={sf.stats.dim} features but feature space {space.name} "
                         f"gives D={space.dim}; use the feature space the file was made with")


def resolve_reference_stats(metric: str, options: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Check a suite's `reference_stats:` when the suite loads (the file exists and loads; options that need
    reference images are refused) and return the options with the absolute path and the file's sha256, which
    make the file part of every cell key and let the worker refuse a file changed since."""
    if metric.partition(":")[0] == "fd_floor":
        raise BenchError("fd_floor cannot use a statistics file: the noise floor needs reference images, and a "
                         "file has only mu and sigma (fd against a file skips its floor and says so)")
    if options.get("fd_inf"):
        raise BenchError("fd_inf needs the reference features, and a statistics file has only mu and sigma; "
                         "remove fd_inf or reference_stats")
    path = resolve_stats_path(options.get("reference_stats"), base_dir)
    sf = load_stats_file(path, options.get("reference_stats_sha256"))
    return {**options, "reference_stats": str(path), "reference_stats_sha256": sf.sha256}


def resolve_stats_path(value: Any, base_dir: Path) -> Path:
    """A `reference_stats:` value as an absolute path (relative paths are taken from the suite file's folder)."""
    if not isinstance(value, str) or not value.strip():
        raise BenchError(f"reference_stats must be the path of an .npz file, got {value!r}")
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base_dir / p).resolve()
