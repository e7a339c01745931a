"""Measured quality of the zoo models: Fréchet distance in shapes-clip space, noise floor, CLIP score.

This is the zoo's own small evaluation (used to fill the manifest and `bench zoo card`); the harness's
metrics live in `bench.metrics`. FD is the harness's own (`bench.metrics.frechet.frechet_distance`: float64
statistics, symmetric eigenvalues, no sqrtm), so a zoo card and a bench run compute it one way. Noise floor:
FD between the reference set (eval items 0..N-1) and a disjoint reference set of the same size (items
N..2N-1). Excess FD = FD - floor.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.metrics.frechet import frechet_distance
from bench.runtime import to_uint8
from bench.zoo import checkpoints, shapes, shapes_clip
from bench.zoo.teacher import generate, load_teacher

SEED_BASES = (0, 1_000_000, 2_000_000)


def evaluate_teacher(folder: Path, device: str = "cpu", n: int = 2000, quick: bool = False,
                     log: Callable[[str], None] = print, save_to: Path | None = None) -> dict[str, Any]:
    """The dynamic-range table of the issue, for the weights in `folder` (as shipped: fp16)."""
    t0 = time.time()
    dev = torch.device(device)
    clip, _ = _clip_from(folder / checkpoints.FILES["shapes-clip"], dev)
    teacher = load_teacher(dev, folder / checkpoints.FILES["teacher"])
    ds = shapes.ShapesDataset("eval")
    prompts = ds.conditions(range(n)).prompts or []
    out: dict[str, Any] = {"n": n, "resolution": 16, "feature_space": "shapes-clip", "rows": []}
    for res in (16, 32):
        ref = shapes_clip.encode_images(clip, ds.images(range(n), res))
        ref2 = shapes_clip.encode_images(clip, ds.images(range(n, 2 * n), res))
        floor = frechet_distance(ref, ref2)
        out[f"fd_floor_{res}"] = floor
        if res == 16:
            ref16, floor16 = ref, floor
            real_clip = float(shapes_clip.clip_scores(clip, ds.images(range(n), 16), prompts).mean())
            out["clip_score_real_16"] = real_clip
        else:
            ref32, floor32 = ref, floor
    log(f"eval: floor@16 {floor16:.4f} floor@32 {floor32:.4f} real CLIP score {real_clip:.2f}")

    def run(solver: str, steps: int, shift: float = 1.0, guidance: float = 1.0, seed_base: int = 0,
            res: int = 16, clip_score: bool = False) -> dict[str, Any]:
        seeds = [seed_base + i for i in range(n)]
        imgs = torch.cat([to_uint8(generate(teacher, prompts[i:i + 1000], seeds[i:i + 1000], steps, solver,
                                            guidance, shift, res)) for i in range(0, n, 1000)])
        feats = shapes_clip.encode_images(clip, imgs)
        fd = frechet_distance(feats, ref16 if res == 16 else ref32)
        floor = floor16 if res == 16 else floor32
        from bench.zoo.solvers import nfe_per_image

        row = {"solver": solver, "steps": steps, "nfe": nfe_per_image(solver, steps, guidance != 1.0),
               "shift": shift, "guidance": guidance, "seed_base": seed_base, "resolution": res,
               "fd": fd, "excess_fd": fd - floor, "fd_over_floor": fd / floor}
        if clip_score:
            row["clip_score"] = float(shapes_clip.clip_scores(clip, imgs, prompts).mean())
        out["rows"].append(row)
        if save_to is not None:
            save_to.write_text(json.dumps(out, indent=2))
        log(f"eval: {solver} steps {steps} shift {shift} w {guidance} seed {seed_base} @{res}: "
            f"NFE {row['nfe']} FD {fd:.4f} ({fd / floor:.2f}x floor)"
            + (f" CLIP {row['clip_score']:.2f}" if clip_score else ""))
        return row

    euler_steps = [1, 2, 4, 8, 16, 32, 64] if not quick else [1, 2, 8]
    heun_steps = [2, 4, 8, 16, 32] if not quick else [2, 4]
    dpm_steps = [2, 4, 8, 16, 32, 64] if not quick else [4, 8]
    shifts = [1.0, 0.5, 0.25] if not quick else [1.0, 0.5]
    rows = []
    for shift in shifts:
        rows += [run("euler", s, shift) for s in (euler_steps if shift == 1.0 else euler_steps[1:])]
        rows += [run("heun", s, shift) for s in heun_steps]
        rows += [run("dpm++", s, shift) for s in dpm_steps]
    best = min((r for r in rows if r["nfe"] <= 64), key=lambda r: r["fd"])
    out["best"] = {k: best[k] for k in ("solver", "steps", "shift", "nfe", "fd")}
    for solver, steps, shift in {("euler", 2, 1.0), (best["solver"], best["steps"], best["shift"])}:
        for sb in SEED_BASES[1:]:
            run(solver, steps, shift, seed_base=sb)
    run(best["solver"], best["steps"], best["shift"], clip_score=True)
    for w in (1.5, 2.0, 3.0):
        run(best["solver"], best["steps"], best["shift"], guidance=w, clip_score=True)
    for solver, steps in [("euler", 1), ("euler", 2), ("euler", 8), ("euler", 32), (best["solver"], best["steps"])]:
        run(solver, steps, best["shift"] if solver == best["solver"] else 1.0, res=32)
    try:
        out["summary"] = summarise(out)
    except (ZeroDivisionError, IndexError, KeyError, ValueError) as e:
        out["summary"] = {"error": repr(e)}
    out["eval_seconds"] = round(time.time() - t0, 1)
    log(f"eval summary: {out['summary']}")
    return out


def _pick(rows: list[dict], **match: Any) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def summarise(out: dict[str, Any]) -> dict[str, Any]:
    """The acceptance numbers of the dynamic-range table."""
    rows = out["rows"]
    base = {"resolution": 16, "guidance": 1.0, "seed_base": 0}
    e1 = _pick(rows, solver="euler", steps=1, shift=1.0, **base)[0]
    e2 = _pick(rows, solver="euler", steps=2, shift=1.0, **base)[0]
    e32 = _pick(rows, solver="euler", steps=32, shift=1.0, **base)
    b = out["best"]
    best_rows = _pick(rows, solver=b["solver"], steps=b["steps"], shift=b["shift"], resolution=16, guidance=1.0)
    e2_rows = _pick(rows, solver="euler", steps=2, shift=1.0, resolution=16, guidance=1.0)
    spread = max(r["fd"] for r in best_rows) - min(r["fd"] for r in best_rows)
    gap = e2["fd"] - b["fd"]
    s: dict[str, Any] = {
        "fd_floor_16": out["fd_floor_16"],
        "euler1_excess": e1["excess_fd"],
        "best": b,
        "best_over_floor": b["fd"] / out["fd_floor_16"],
        "seed_spread_best": spread,
        "seed_spread_euler2": max(r["fd"] for r in e2_rows) - min(r["fd"] for r in e2_rows),
        "gap_euler2_best": gap,
        "spread_over_gap": spread / gap if gap > 0 else None,
        "clip_score_real_16": out["clip_score_real_16"],
    }
    if e32:
        s["euler32_excess"] = e32[0]["excess_fd"]
        s["euler1_over_euler32_excess"] = e1["excess_fd"] / max(e32[0]["excess_fd"], 1e-12)
    cs = _pick(rows, solver=b["solver"], steps=b["steps"], shift=b["shift"], **base)
    cs = [r for r in cs if "clip_score" in r]
    if cs:
        s["clip_score_teacher_16"] = cs[0]["clip_score"]
        s["clip_score_ratio"] = cs[0]["clip_score"] / max(out["clip_score_real_16"], 1e-9)
    return s


def _clip_from(path: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    compact, _ = checkpoints.load(path)
    return shapes_clip.load_from_state(compact, device), {"file": str(path)}
