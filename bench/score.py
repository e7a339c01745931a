"""`bench score GEN REF`: score a folder of images made elsewhere against a folder or a statistics file.

The same metric functions as `bench run` (bench.metrics registry) on a QualityContext built over the folder:
sample i is file i of GEN (sorted), the reference set is every image of REF (dataset `folder`), or, for a
`.npz`, the file's mu / sigma (FD only: KID and precision / recall need reference images). There are no seeds
(the images were made elsewhere): the bootstrap and KID subsets draw from `--seed`, and the images' positions
stand in for seeds in the paired evidence. FD's noise floor is not computed (it needs 2x reference images).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError

METRICS = ("fd", "kid", "precision", "recall")
NEEDS_IMAGES = ("kid", "precision", "recall")


@dataclass(frozen=True)
class ScoreRequest:
    """The command line of `bench score`, as data."""

    gen: str
    ref: str
    metrics: tuple[str, ...] = ("fd",)
    feature_space: str = "shapes-clip"
    space_options: dict[str, Any] | None = None
    seed: int = 0
    batch_size: int = 256
    bootstrap: int = 200
    resize: int | None = None
    device: str | None = None
    cache_dir: str = "runs/cache"
    allow_download: bool = False


class _StatsOnly:
    """The dataset of a context whose reference is a statistics file: it has an identity and no images."""

    name = "stats-file"
    conditioning = "none"

    def __init__(self, path: Path) -> None:
        self.path = path

    def key(self) -> str:
        return f"stats-file({self.path})"

    def conditions(self, indices: Sequence[int]) -> Any:
        from bench.datasets import Conditions

        return Conditions()

    def images(self, indices: Sequence[int], resolution: int) -> Any:
        raise BenchError(f"{self.path} is a statistics file: it has no reference images")


def parse_metrics(text: str) -> tuple[str, ...]:
    """`fd,kid` -> ('fd', 'kid'); unknown names are a one-line error."""
    names = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise BenchError(f"--metrics {text!r}: choose from {', '.join(METRICS)} (comma-separated)")
    return names


def score(req: ScoreRequest) -> list[Any]:
    """The MetricResults of GEN against REF; every bad input is a one-line BenchError before features are made."""
    from bench.datasets_folder import FILE_UINT8, FolderDataset, read_images, scan_folder
    from bench.metrics.registry import QualityContext, get_metric

    if req.batch_size < 1:
        raise BenchError(f"--batch-size must be a positive integer, got {req.batch_size}")
    gen = scan_folder(req.gen, allow_mixed=req.resize is not None)
    if req.resize is None:
        w, h = gen.uniform_size or (0, 0)
        if w != h:
            raise BenchError(f"{gen.root}: images are {w}x{h}, not square; nothing was scored: pass --resize R to "
                             "centre-crop and resize them")
        resolution = w
    else:
        resolution = int(req.resize)
    base = {"feature_space": req.feature_space, **(req.space_options or {}), "batch_size": req.batch_size}
    ref_path = Path(req.ref).expanduser()
    options: dict[str, dict[str, Any]] = {}
    reference_indices = None
    if ref_path.is_file():
        from bench.metrics.statsfile import load_stats_file

        need = [m for m in req.metrics if m in NEEDS_IMAGES]
        if need:
            raise BenchError(f"{ref_path} is a statistics file (mu, sigma only) and {', '.join(need)} "
                             f"need{'s' if len(need) == 1 else ''} reference images; nothing was scored: give a "
                             "folder as REF, or --metrics fd")
        sf = load_stats_file(ref_path)
        dataset: Any = _StatsOnly(sf.path)
        options["fd"] = {**base, "bootstrap": req.bootstrap, "reference_stats": str(sf.path),
                         "reference_stats_sha256": sf.sha256}
    else:
        dataset = FolderDataset(str(ref_path), resize=req.resize is not None)
        if req.resize is None and dataset.scan.uniform_size != (resolution, resolution):
            rw, rh = dataset.scan.uniform_size or (0, 0)
            raise BenchError(f"GEN {gen.root} holds {resolution}x{resolution} images and REF {dataset.scan.root} "
                             f"{rw}x{rh}; nothing was scored: pass --resize R to bring both to R x R")
        reference_indices = list(range(len(dataset)))
        for m in req.metrics:
            options[m] = {**base, **({"bootstrap": req.bootstrap, "noise_floor": False} if m == "fd" else {})}
    images = read_images(gen, range(len(gen.files)), req.resize)
    n = int(images.shape[0])
    ctx = QualityContext(images=images, indices=list(range(n)), seeds=list(range(n)), prompts=None, labels=None,
                         dataset=dataset, resolution=resolution, device=req.device, cache_dir=Path(req.cache_dir),
                         seed=int(req.seed), allow_download=req.allow_download,
                         reference_indices=reference_indices, uint8=FILE_UINT8)
    results: list[Any] = []
    for name in req.metrics:  # precision and recall share their k-NN work through ctx.shared
        results += [r for r in get_metric(name)(ctx, options[name]) if r.name == name]
    for r in results:
        r.provenance["gen_folder"] = str(gen.root.resolve())
        r.evidence = None
    return results


def _num(v: float | None) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.6g}"


def render(results: list[Any], fmt: str) -> str:
    """The metric table: markdown (value, CI, n, note) or JSON rows with the provenance."""
    if fmt == "json":
        rows = [{"metric": r.name, "value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high, "n": r.n,
                 "higher_is_better": r.higher_is_better, "provenance": r.provenance} for r in results]
        return json.dumps(rows, indent=1, default=str, allow_nan=False)
    lines = ["| metric | value | CI | n | note |", "|---|---|---|---|---|"]
    for r in results:
        conf = (r.provenance.get("ci") or {}).get("confidence") if isinstance(r.provenance.get("ci"), dict) else None
        ci = f"[{_num(r.ci_low)}, {_num(r.ci_high)}]" + (f" ({conf:.0%})" if conf else "")
        note = r.provenance.get("comparability", "") if r.provenance.get("comparable", True) is not True else ""
        lines.append(f"| {r.name} | {_num(r.value)} | {ci if r.ci_low is not None else '–'} | {r.n or ''} | {note} |")
    return "\n".join(lines)
