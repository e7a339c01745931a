"""Test fixture: a synthetic results store shaped like an NFE sweep, for the report tests and for previewing reports.

`make_store(path)` writes one run (or two, for comparisons) through the store's own writing API
(start_run / record_plan / commit_cell), with every family, CIs, noise floors, skipped and failed cells
and grid images. The numbers follow simple made-up laws (quality improves with NFE, latency grows with
NFE and resolution); they are for looking at, not for conclusions.

With `evidence=True` (the default) FD and CLIP score come from synthetic per-image rows kept as the cells'
evidence, as a real run keeps them: image i of every cell shares a common part drawn from seed i (common random
numbers), so paired comparisons (bench.analysis) are much tighter than the cells' own intervals, as in a real
sweep. `unstable` names (sampler, steps) cells whose latency is flagged unstable. `guidance=(1, 1.5, 3)` adds a
guidance axis: each sampler's `guidance` mode says how it takes w (cfg doubles the counted NFE for w != 1,
embedded does not, none skips w != 1 with the reason); FD is best near w = 1.5 and CLIP score grows with w.

    python -m tests.synthetic runs/demo.sqlite && bench report --store runs/demo.sqlite
"""

from __future__ import annotations

import hashlib
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.evidence import Evidence, features_evidence, values_evidence
from bench.metrics.registry import MetricResult
from bench.plan import Cell
from bench.store import CellResult, Store
from tests.cells import make_cell

EVIDENCE_DIM = 8  # feature dimension of the synthetic FD evidence
EVIDENCE_RESAMPLES = 200
UNSTABLE_REASON = "IQR is 48% of the median (limit 25%): too noisy to compare"


def _image_base(n: int, dim: int, image_seed: int) -> np.ndarray:
    """The part of image i's features shared by every cell (seed image_seed + i): common random numbers."""
    return np.stack([np.random.default_rng((image_seed + i, 7)).standard_normal(dim) for i in range(n)])


def synthetic_fd(excess: float, n: int, cell_seed: int | tuple[int, ...], *, image_seed: int = 0,
                 dim: int = EVIDENCE_DIM, own_noise: float = 0.15) -> tuple[float, float, float, Evidence]:
    """Per-image features of a cell whose FD against N(0, I) is about `excess` (+ the finite-N floor): image i is
    the shared base of seed image_seed + i, plus a mean shift of sqrt(excess) along (1, ..., 1)/sqrt(dim), plus
    the cell's own noise. Returns (FD, CI low, CI high, evidence), the CI a percentile bootstrap of the images."""
    from bench.metrics.frechet import (
        FeatureStats,
        bootstrap_counts,
        frechet_distance_from_stats,
        frechet_of_resamples,
    )

    rng = np.random.default_rng(cell_seed)
    shift = np.full(dim, np.sqrt(max(excess, 0.0) / dim))
    feats = _image_base(n, dim, image_seed) + shift + own_noise * rng.standard_normal((n, dim))
    ref = FeatureStats(np.zeros(dim), np.eye(dim), -1)
    value = frechet_distance_from_stats(FeatureStats.from_features(feats), ref)
    reps = frechet_of_resamples(feats, ref, bootstrap_counts(n, EVIDENCE_RESAMPLES, (int(np.sum(cell_seed)), 1)))
    lo, hi = np.quantile(reps - (reps.mean() - value), [0.025, 0.975])
    seeds = list(range(image_seed, image_seed + n))
    return value, min(float(lo), value), max(float(hi), value), features_evidence(feats, seeds, ref.mean, ref.cov)


def synthetic_clip(mean: float, n: int, cell_seed: int | tuple[int, ...], *, image_seed: int = 0,
                   spread: float = 3.0, own_noise: float = 0.3) -> tuple[float, float, float, Evidence]:
    """Per-image CLIP scores: a shared per-image part (seed image_seed + i) around `mean` plus the cell's own noise.
    Returns (mean, CI low, CI high, evidence)."""
    rng = np.random.default_rng(cell_seed)
    common = np.array([np.random.default_rng((image_seed + i, 8)).standard_normal() for i in range(n)])
    scores = mean + spread * common + own_noise * rng.standard_normal(n)
    value = float(scores.mean())
    boot = np.random.default_rng((int(np.sum(cell_seed)), 4)).multinomial(n, np.full(n, 1 / n), EVIDENCE_RESAMPLES)
    lo, hi = np.quantile(boot @ scores / n, [0.025, 0.975])
    return value, float(lo), float(hi), values_evidence(scores, list(range(image_seed, image_seed + n)))


@dataclass(frozen=True)
class FakeSampler:
    id: str
    family: str
    fd_scale: float  # FD excess at 1 NFE
    fd_decay: float  # exponent of the NFE law
    ms_per_nfe: float  # latency per counted NFE at 16 px
    nfe_per_step: float = 1.0
    intercept: float = 0.0  # counted NFE = nfe_per_step * steps - intercept
    nfe: tuple[int, ...] = (1, 2, 4, 8)
    guidance: str = "none"  # how it takes a guidance axis: cfg | embedded | none
    batch1_factor: float = 3.2  # batch-1 latency / per-image latency at batch 16 (launch-bound samplers: larger)


DEFAULT_SAMPLERS = (
    FakeSampler("flowmap-lsd", "flow_map", 9.0, 0.9, 2.1),
    FakeSampler("flowmap-meanflow", "flow_map", 11.0, 0.8, 2.0),
    FakeSampler("cd", "consistency", 12.0, 0.5, 2.0),
    FakeSampler("lcm", "lcm", 14.0, 0.6, 2.2, nfe_per_step=2.0),
    FakeSampler("turbo", "adversarial", 8.0, 0.2, 2.0, nfe=(1, 2, 4)),
    FakeSampler("teacher-euler", "ode", 60.0, 1.0, 2.0, nfe=(1, 2, 4, 8, 16)),
    FakeSampler("teacher-heun", "ode", 45.0, 1.6, 2.0, nfe_per_step=2.0, intercept=1.0, nfe=(2, 4, 8, 16)),
)


def suite_text(name: str, samplers: tuple[FakeSampler, ...], dataset: str, resolutions: list[int],
               hardware: list[str], grid: int, guidance: list[float] | None = None) -> str:
    lines = "\n".join(f"  - {{id: {_yaml_str(s.id)}, adapter: synthetic-{s.family}, nfe: {list(s.nfe)}}}"
                      for s in samplers)
    return textwrap.dedent(f"""\
        # Synthetic sweep written by tests/synthetic.py (numbers are made up).
        name: {name}
        description: Synthetic NFE sweep for report previews and tests.
        dataset: {{name: {dataset}, split: eval}}
        samples: 512
        base_seed: 0
        samplers:
        """) + lines + textwrap.dedent(f"""
        axes: {{nfe: [1, 2, 4, 8], resolution: {resolutions}, hardware: {hardware}{_guidance_axis(guidance)}}}
        metrics:
          fd: {{}}
          fd_floor: {{}}
          clip_score: {{}}
          latency: {{batch_sizes: [1, 16]}}
          memory: {{}}
        report: {{grid: {grid}}}
        """)


def _guidance_axis(guidance: list[float] | None) -> str:
    return f", guidance: {guidance}" if guidance else ""


def _yaml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _reference(dataset: str, count: int, resolution: int) -> np.ndarray:
    """(count, R, R, 3) uint8 reference images of `dataset`, or procedural discs when it is unavailable."""
    try:
        from bench.datasets import build_dataset

        imgs = build_dataset(dataset, {"split": "eval"}).images(list(range(count)), resolution)
        return imgs.permute(0, 2, 3, 1).numpy()
    except Exception:
        yy, xx = np.mgrid[0:resolution, 0:resolution] / max(resolution - 1, 1)
        out = np.zeros((count, resolution, resolution, 3), dtype=np.uint8)
        rng = np.random.default_rng(0)
        for i in range(count):
            cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
            bg = rng.uniform(150, 230, 3)
            fg = rng.uniform(0, 255, 3)
            disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
            out[i] = np.where(disc[..., None], fg, bg).astype(np.uint8)
        return out


def make_store(path: str | Path, *, suite: str = "nfe_sweep", samplers: tuple[FakeSampler, ...] = DEFAULT_SAMPLERS,
               resolutions: tuple[int, ...] = (16, 32), hardware: tuple[str, ...] = ("cpu", "cuda"),
               grid: int = 8, dataset: str = "shapes", seed: int = 0, runs: int = 1,
               failed: tuple[str, int] | None = ("cd", 8), extra_text: str = "", evidence: bool = True,
               unstable: tuple[tuple[str, int], ...] = (), samples: int = 512,
               guidance: tuple[float, ...] = ()) -> list[str]:
    """Write `runs` runs of a synthetic sweep into the store at `path`; returns their run ids.

    Hardware other than 'cpu' is recorded as skipped ("no CUDA device"), `failed` = (sampler, steps) is
    recorded as failed at every resolution, and each later run shifts the numbers a little (for compare).
    `evidence`: FD and CLIP score from per-image rows kept as evidence (False: made-up numbers, no evidence,
    like a store of the first release). `unstable`: (sampler, steps) cells whose latency is flagged unstable.
    `guidance`: the guidance values of a guidance axis (none: no such axis)."""
    from PIL import Image

    text = suite_text(suite, samplers, dataset, list(resolutions), list(hardware), grid,
                      list(guidance) or None) + extra_text
    refs = {r: _reference(dataset, grid, r) for r in resolutions} if grid else {}
    ids = []
    with Store(path) as store:
        for k in range(runs):
            rng = np.random.default_rng(seed + 1000 * k)
            run_id = store.start_run(suite, hashlib.sha256(text.encode()).hexdigest()[:16], f"suites/{suite}.yaml",
                                     text, git_commit=f"{'0123456789abcdef' * 2}{k:08x}", versions={"flowmap-bench": "0.1.0"},
                                     fingerprint={"hostname": "synthetic", "cpu_model": "made-up CPU", "gpus": []},
                                     executor="local", argv=["bench", "run", f"suites/{suite}.yaml"])
            cells: list[Cell] = []
            for s in samplers:
                for hw in hardware:
                    for res in resolutions:
                        for n in s.nfe:
                            for w in guidance or (None,):
                                reason = "no CUDA device" if hw != "cpu" else (
                                    f"{s.id} takes no guidance (SamplerInfo.guidance = none): cannot sample at "
                                    f"guidance {w:g}" if w is not None and w != 1 and s.guidance == "none" else None)
                                cells.append(make_cell(suite, s.id, f"synthetic-{s.family}", s.family, n, res, hw,
                                                       tag=str(k), status="skipped" if reason else "planned",
                                                       reason=reason, axes=None if w is None else {"guidance": w}))
            store.record_plan(run_id, cells, set())
            shift = 1.0 - 0.04 * k
            for c in cells:
                if c.status == "skipped":
                    continue
                s = next(x for x in samplers if x.id == c.sampler_id)
                if failed is not None and (c.sampler_id, c.nfe) == failed:
                    store.commit_cell(run_id, c, CellResult(c.key, "failed", error="RuntimeError: CUDA-free test "
                                                            "failure: sampler diverged at step 3 (NaN in output)"))
                    continue
                store.commit_cell(run_id, c, _fake_cell(store, c, s, rng, shift, grid, refs.get(c.resolution), Image,
                                                        evidence=evidence, samples=samples,
                                                        unstable=(c.sampler_id, c.nfe) in unstable))
            store.finish_run(run_id, "failed" if failed else "done")
            ids.append(run_id)
    return ids


def _fake_cell(store: Store, c: Cell, s: FakeSampler, rng: np.random.Generator, shift: float, grid: int,
               ref: np.ndarray | None, image_mod: Any, evidence: bool = False, samples: int = 512,
               unstable: bool = False) -> CellResult:
    counted = s.nfe_per_step * c.nfe - s.intercept
    w = c.spec.guidance
    guided = w is not None and w != 1
    steps_nfe = counted
    if guided and s.guidance == "cfg":
        counted *= 2  # the conditional and unconditional branch: two counted evaluations per step
    scale = (c.resolution / 16) ** 1.5
    floor = 0.8 * (16 / c.resolution) ** 0.5
    excess = shift * s.fd_scale * scale ** 0.3 / steps_nfe ** s.fd_decay * float(rng.uniform(0.95, 1.05))
    if w is not None:  # best distribution match near w = 1.5, prompt alignment growing with w
        excess *= 0.8 + 0.35 * (w - 1.5) ** 2
    fd = floor + excess
    fd_lo, fd_hi = fd - (0.06 * fd + 0.05), fd + (0.06 * fd + 0.05)
    clip = 30.0 - 12.0 / (1 + 4.0 / max(fd - floor, 1e-3)) + float(rng.normal(0, 0.2))
    if w is not None:
        clip += 6.0 * (1 - np.exp(-(w - 1.0)))
    clip_lo, clip_hi = clip - 0.4, clip + 0.4
    rows: dict[str, Evidence] = {}
    if evidence:  # the same law, but measured on per-image rows that pair across cells (seeds 0..N-1)
        where = f"{c.sampler_id}|{c.nfe}|{c.resolution}" + ("" if w is None else f"|{w:g}")
        cell_seed = (int(hashlib.sha256(where.encode()).hexdigest()[:8], 16),)
        fd, fd_lo, fd_hi, rows["fd"] = synthetic_fd(excess, samples, cell_seed)
        floor = synthetic_fd(0.0, samples, (c.resolution, 99), image_seed=10**6)[0]  # a disjoint image set
        clip, clip_lo, clip_hi, rows["clip_score:shapes-clip"] = synthetic_clip(clip, samples, cell_seed)
    lat = s.ms_per_nfe * counted * scale * (1.0 + float(rng.normal(0, 0.03))) + 0.4
    lat1 = lat * s.batch1_factor
    spread = (0.7, 1.5) if unstable else (0.96, 1.05)
    flag = {"unstable": True, "unstable_reason": UNSTABLE_REASON} if unstable else {}
    mem = 40 + 12 * scale + 2 * counted * float(rng.uniform(0.9, 1.1))
    metrics = [
        MetricResult("fd", fd, False, fd_lo, fd_hi, samples, {"feature_space": "shapes-clip",
                                                             "weights_sha256": "ab12cd34"}),
        MetricResult("fd_floor", floor, False, floor * 0.9, floor * 1.1, samples, {"feature_space": "shapes-clip"}),
        MetricResult("clip_score:shapes-clip", clip, True, clip_lo, clip_hi, samples, {"model": "shapes-clip"}),
        MetricResult("kid", fd / 400, False, fd / 440, fd / 360, samples,  # the interval's method, as bench's KID says it
                     {"ci": {"confidence": 0.95, "method": "normal: KID ± z * std_over_subsets * sqrt(subset_size / N)"}}),
        MetricResult("precision", min(0.95, 0.5 + 2 / fd), True, None, None, samples, {}),
        MetricResult("recall", min(0.9, 0.3 + 1 / fd), True, None, None, samples, {}),
        MetricResult("latency_ms_per_image", lat, False, lat * spread[0], lat * spread[1], 30,
                     {"batch_size": 16, "ci": "interquartile range", **flag}),
        MetricResult("latency_ms_batch1", lat1, False, lat1 * spread[0], lat1 * spread[1], 30,
                     {"batch_size": 1, **flag}),
        MetricResult("peak_memory_mb", mem, False, None, None, 1, {"method": "synthetic"}),
        MetricResult("calibration_ms", 1.9, False, 1.85, 1.95, 30, {"workload": "synthetic"}),
        MetricResult("sharpness", float(rng.uniform(0.2, 0.9)), True, n=512),  # an extra metric, rendered generically
    ]
    samples_dir = None
    if grid and ref is not None:
        folder = store.samples_dir(c.key)
        folder.mkdir(parents=True, exist_ok=True)
        noise_sd = min(120.0, 6.0 * max(excess, 0.0))
        for i in range(grid):
            noisy = ref[i].astype(float) + rng.normal(0, noise_sd, ref[i].shape)
            image_mod.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
        samples_dir = str(folder)
    return CellResult(c.key, "done", nfe_counted=counted, phases={"sample": 0.1}, metrics=metrics,
                      samples_dir=samples_dir, started=0.0, finished=1.0, evidence=rows)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "runs/demo.sqlite"
    ids = make_store(path, runs=2)
    print(f"wrote runs {', '.join(ids)} to {path}")
    print(f"  bench report --store {path}\n  bench report --store {path} --compare {ids[0]} {ids[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
