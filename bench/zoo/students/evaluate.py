"""A quick look at trained students next to the teacher: FD in shapes-clip space per NFE at 16x16.

    python -m bench.zoo.students.evaluate --weights DIR [--teacher FILE] [--clip FILE] [--n 1000]
                                          [--device cuda] [--out DIR/eval.json]

This is the zoo's own small check (one seed set, no confidence intervals), meant to run right after
`scripts/train_students_gpu.sh` trains the students; the measured NFE table of record comes from
`bench run suites/nfe_sweep.yaml`. Samples use the adapters' own sampling code and per-image seeds 0..n-1 with
the eval split's prompts; the reference set is eval items 0..n-1 and the noise floor FD(reference, items
n..2n-1). The summary evaluates the issue's acceptance rules on these numbers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.adapters.protocol import SampleRequest
from bench.hardware import HardwareSpec
from bench.zoo import checkpoints, shapes, shapes_clip
from bench.zoo.students.train import SHIPPED, STUDENTS

ADAPTERS = {"flow_map": "ZooFlowMap", "consistency": "ZooConsistency", "lcm": "ZooLCM",
            "adversarial": "ZooAdversarial"}
STUDENT_NFE = (1, 2, 4, 8)
EULER_STEPS = (1, 2, 4, 8, 16, 32)
HEUN_STEPS = (2, 4, 8, 16)


def _fd(a: torch.Tensor, b: torch.Tensor) -> float:
    from bench.metrics.frechet import frechet_distance

    return frechet_distance(a, b)


def evaluate(weights: Path, teacher_path: Path | None = None, clip_path: Path | None = None, device: str = "cpu",
             n: int = 1000, names: tuple[str, ...] = SHIPPED, batch: int = 500,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """FD rows for the teacher (Euler, Heun) and every student found in `weights`, plus the acceptance summary."""
    from bench.adapters import students as adapters
    from bench.runtime import to_uint8
    from bench.zoo.teacher import generate, load_teacher

    t0 = time.time()
    dev = torch.device(device)
    clip_file = clip_path or _first(weights / checkpoints.FILES["shapes-clip"], checkpoints.require("shapes-clip"))
    clip = shapes_clip.load_from_state(checkpoints.load(clip_file)[0], dev)
    teacher_file = teacher_path or _first(weights / checkpoints.FILES["teacher"], checkpoints.require("teacher"))
    teacher = load_teacher(dev, teacher_file)
    ds = shapes.ShapesDataset("eval")
    prompts = ds.conditions(range(n)).prompts or []
    seeds = list(range(n))
    ref = shapes_clip.encode_images(clip, ds.images(range(n), 16))
    floor = _fd(ref, shapes_clip.encode_images(clip, ds.images(range(n, 2 * n), 16)))
    out: dict[str, Any] = {"n": n, "resolution": 16, "feature_space": "shapes-clip", "fd_floor": floor,
                           "teacher": str(teacher_file), "rows": []}
    log(f"eval: n {n}, floor {floor:.4f}")

    def add(sampler: str, nfe: int, images: torch.Tensor) -> None:
        fd = _fd(shapes_clip.encode_images(clip, images), ref)
        out["rows"].append({"sampler": sampler, "nfe": nfe, "fd": fd, "excess_fd": fd - floor})
        log(f"eval: {sampler} NFE {nfe}: FD {fd:.4f} (excess {fd - floor:.4f})")

    for solver, steps_list in (("euler", EULER_STEPS), ("heun", HEUN_STEPS)):
        for steps in steps_list:
            imgs = torch.cat([to_uint8(generate(teacher, prompts[i:i + batch], seeds[i:i + batch], steps, solver))
                              for i in range(0, n, batch)])
            add(f"teacher-{solver}", 2 * steps - 1 if solver == "heun" else steps, imgs)
    hw = HardwareSpec.parse(device)
    for name in names:
        path = weights / checkpoints.weight_path(name).name
        if not path.is_file():
            log(f"eval: {name}: no weights in {weights}, skipped")
            continue
        sampler = getattr(adapters, ADAPTERS[STUDENTS[name].family])(model=name, checkpoint=str(path))
        sampler.load(hw)
        for nfe in STUDENT_NFE:
            if not sampler.info.nfe.supports(nfe):
                continue
            imgs = torch.cat([sampler.sample(SampleRequest(seeds=seeds[i:i + batch], nfe=nfe, height=16, width=16,
                                                           prompts=prompts[i:i + batch]))
                              for i in range(0, n, batch)])
            add(name, nfe, imgs)
    out["summary"] = acceptance(out)
    out["eval_seconds"] = round(time.time() - t0, 1)
    log(f"eval summary: {json.dumps(out['summary'])}")
    return out


def _first(*paths: Path) -> Path:
    for p in paths[:-1]:
        if p.is_file():
            return p
    return paths[-1]


def acceptance(out: dict[str, Any]) -> dict[str, Any]:
    """The issue's acceptance rules on one seed set (ties within seed-to-seed spread are not resolved here)."""
    rows = out["rows"]

    def fds_of(sampler: str) -> dict[int, float]:
        return {int(r["nfe"]): float(r["fd"]) for r in rows if r["sampler"] == sampler}

    floor = out["fd_floor"]
    teacher = [r for r in rows if r["sampler"].startswith("teacher-")]
    best = min(teacher, key=lambda r: r["fd"])
    euler = fds_of("teacher-euler")
    s: dict[str, Any] = {"teacher_best": {k: best[k] for k in ("sampler", "nfe", "fd")}, "students": {}}
    for name in sorted({r["sampler"] for r in rows} - {r["sampler"] for r in teacher}):
        fds = fds_of(name)
        res: dict[str, Any] = {"fd": fds}
        if 1 in euler and 1 in fds:
            res["one_step_excess_below_half_euler1"] = (fds[1] - floor) < 0.5 * (euler[1] - floor)
        if name.startswith("flowmap"):
            seq = [fds[k] for k in sorted(fds)]
            res["monotone_1_to_8"] = all(b <= a for a, b in itertools.pairwise(seq))
            if 4 in fds:
                res["excess4_le_1.5x_teacher_best"] = (fds[4] - floor) <= 1.5 * (best["fd"] - floor)
            res["below_teacher_euler_at_1_2_4"] = all(k in fds and k in euler and fds[k] < euler[k]
                                                      for k in (1, 2, 4))
        if name == "consistency" and len(fds) > 1:
            res["degrades_with_more_steps"] = fds[max(fds)] > fds[min(fds)]
        s["students"][name] = res
    return s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.zoo.students.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, required=True, help="folder with the students' safetensors")
    p.add_argument("--teacher", type=Path)
    p.add_argument("--clip", type=Path, help="shapes-clip safetensors (default: in --weights, else shipped)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--students", nargs="*", default=list(SHIPPED))
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    res = evaluate(a.weights, a.teacher, a.clip, a.device, a.n, tuple(a.students))
    (a.out or a.weights / "eval.json").write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
