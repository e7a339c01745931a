"""Training recipes of the zoo: `shapes-clip` (contrastive) and the `teacher` (flow matching with CFG dropout).

    python -m bench.zoo.train shapes-clip --out DIR [--device cuda] [--steps N | --max-seconds S]
    python -m bench.zoo.train teacher --out DIR [--device cuda] [--steps N | --max-seconds S]

Each run writes `<file>.safetensors` (fp16, what ships) and `<name>.recipe.json` (the recipe: seed, steps,
batch, learning rate, schedule, measured wall time, hardware fingerprint, final losses) into DIR.
Training data are train-split seeds drawn from a numpy generator seeded by the recipe seed; images are
rendered on the training device. With `--max-seconds`, the step count is fixed after timing the first
steps (so the LR schedule is still step-based) and recorded: rerunning with `--steps <recorded>`
reproduces the recipe (bit-identity is not promised on GPUs: cuDNN and atomics are nondeterministic).
The optimisation loop, the time budget, the data draw and the flags are shared with the students (bench.zoo.loop).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.zoo import checkpoints, shapes
from bench.zoo.loop import (
    Budget,
    add_budget_args,
    caption_ids,
    ema_update,
    file_log,
    hardware,
    optimise,
    quantise,
    train_batch,
)
from bench.zoo.nets import ShapesTeacher, count_parameters


@dataclass
class Recipe:
    model: str
    seed: int = 0
    steps: int = 2000
    batch: int = 512
    batch32: int = 128  # teacher: extra 32x32 batch per step; clip: half the batch is rendered at 16
    lr: float = 1e-3
    warmup: int = 200
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    ema: float = 0.999
    cond_dropout: float = 0.1
    grad_clip: float = 1.0
    max_seconds: float | None = None  # if set: time the first steps, then fix `steps` to fit the budget
    init: str | None = None  # start from these weights (a recorded earlier stage), else from scratch


# shapes-clip and the teacher time one step between steps 20 and 120 (the students: bench.zoo.students.train)
ZOO_BUDGET = Budget(timing=(20, 120), at_least=1)

DEFAULTS = {
    # First-stage defaults; the shipped recipes (steps fixed by the GPU time budget, and the teacher's
    # second stage) are recorded in bench/zoo/weights/manifest.json and replayed by `bench zoo train`.
    "shapes-clip": Recipe(model="shapes-clip", seed=0, steps=941, batch=1024, lr=1e-3, warmup=200,
                          weight_decay=0.1, ema=0.0),
    "teacher": Recipe(model="teacher", seed=0, steps=3346, batch=1024, batch32=256, lr=1e-3, warmup=300,
                      ema=0.9995),
}


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


# ---------------------------------------------------------------------------------------------- shapes-clip


def train_shapes_clip(out_dir: Path, device: str = "cpu", log: Callable[[str], None] = print,
                      eval_n: int = 1000, **overrides: Any) -> dict[str, Any]:
    from bench.zoo import shapes_clip

    r = Recipe(**{**asdict(DEFAULTS["shapes-clip"]), **overrides})
    dev = torch.device(device)
    torch.manual_seed(r.seed)
    rng = np.random.default_rng(r.seed)
    model = shapes_clip.build_model(dev).train()
    tokens = shapes_clip.tokenize(shapes.all_captions()).to(dev)
    log(f"shapes-clip: {count_parameters(model)} parameters, recipe {asdict(r)}")

    def step_fn(step: int) -> dict[str, float]:
        sc = train_batch(rng, r.batch)
        half = r.batch // 2
        idx32, idx16 = np.arange(half), np.arange(half, r.batch)
        img32 = shapes.render(_subset(sc, idx32), 32, dev, torch.float32)
        img16 = shapes.render(_subset(sc, idx16), 16, dev, torch.float32)
        img16 = quantise(img16)
        x = torch.cat([shapes_clip.preprocess(quantise(img32)), shapes_clip.preprocess(img16)])
        cid = torch.as_tensor(caption_ids(sc), device=dev)
        with _autocast(dev):
            fi = F.normalize(model.encode_image(x).float(), dim=-1)
            ft = F.normalize(model.encode_text(tokens[cid]).float(), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * fi @ ft.T
        compat = torch.as_tensor(_compatible(sc), device=dev, dtype=torch.float32)
        loss_i = -(F.log_softmax(logits, 1) * compat / compat.sum(1, keepdim=True)).sum(1).mean()
        loss_t = -(F.log_softmax(logits, 0) * compat / compat.sum(0, keepdim=True)).sum(0).mean()
        loss = 0.5 * (loss_i + loss_t)
        loss.backward()
        return {"loss": float(loss.detach())}

    stats = optimise(r, dev, list(model.parameters()), step_fn, log, budget=ZOO_BUDGET)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    state = shapes_clip.to_compact(checkpoints.fp16_roundtrip(model.state_dict()))
    shipped = shapes_clip.load_from_state(state, dev)
    acc32 = shapes_clip.attribute_accuracy(shipped, n=eval_n, resolution=32)
    acc16 = shapes_clip.attribute_accuracy(shipped, n=eval_n, resolution=16)
    log(f"shapes-clip zero-shot accuracy (eval, {eval_n} images) @32 {acc32} @16 {acc16}")
    path = out_dir / checkpoints.FILES["shapes-clip"]
    digest = checkpoints.save_fp16(state, path, {"model": "shapes-clip", "config": "configs/shapes-clip.json"})
    recipe = {**asdict(r), "steps": r.steps, "wall_seconds": stats.wall_seconds, "history": stats.history,
              "hardware": hardware(dev), "parameters": count_parameters(model),
              "shipped_parameters": sum(v.numel() for v in state.values()),
              "quality": {"attribute_accuracy_32": acc32, "attribute_accuracy_16": acc16, "n": eval_n},
              "file": path.name, "sha256": digest, "bytes": path.stat().st_size}
    (out_dir / "shapes_clip.recipe.json").write_text(json.dumps(recipe, indent=2))
    return recipe


def _subset(sc: shapes.Scenes, idx: np.ndarray) -> shapes.Scenes:
    return shapes.Scenes(**{k: v[idx] for k, v in vars(sc).items()})


def _compatible(sc: shapes.Scenes) -> np.ndarray:
    """(N, N) bool: caption j describes image i (every attribute it names matches)."""
    m = (sc.colour[:, None] == sc.colour[None]) & (sc.shape[:, None] == sc.shape[None])
    m &= ~sc.say_size[None] | (sc.size[:, None] == sc.size[None])
    m &= ~sc.say_pos[None] | (sc.region[:, None] == sc.region[None])
    return m


# ---------------------------------------------------------------------------------------------- teacher


def train_teacher(out_dir: Path, device: str = "cpu", log: Callable[[str], None] = print,
                  **overrides: Any) -> dict[str, Any]:
    r = Recipe(**{**asdict(DEFAULTS["teacher"]), **overrides})
    dev = torch.device(device)
    torch.manual_seed(r.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    rng = np.random.default_rng(r.seed)
    model = ShapesTeacher().to(dev)
    if r.init:
        from bench.zoo.teacher import load_teacher

        model.load_state_dict(load_teacher("cpu", Path(r.init)).state_dict())
        log(f"teacher: initialised from {r.init} (sha256 {checkpoints.sha256(Path(r.init))[:12]})")
        r.init = f"{Path(r.init).name}@{checkpoints.sha256(Path(r.init))}"
    model = model.to(dev)
    ema = ShapesTeacher().to(dev)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    counts = model.text.counts(shapes.all_captions()).to(dev)
    log(f"teacher: {count_parameters(model.unet)} U-Net + {count_parameters(model.text)} text parameters, "
        f"recipe {asdict(r)}")
    gen = torch.Generator(device=dev).manual_seed(r.seed)

    def fm_loss(res: int, n: int) -> torch.Tensor:
        sc = train_batch(rng, n)
        x1 = quantise(shapes.render(sc, res, dev, torch.float32)) * 2 - 1
        x0 = torch.randn(x1.shape, device=dev, generator=gen)
        t = torch.rand(n, device=dev, generator=gen)
        xt = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * x1
        cond = model.text.encode_counts(counts[torch.as_tensor(caption_ids(sc), device=dev)])
        drop = torch.rand(n, device=dev, generator=gen) < r.cond_dropout
        cond = torch.where(drop.view(-1, 1), model.text.null_cond(n), cond)
        if dev.type == "cuda":
            xt = xt.contiguous(memory_format=torch.channels_last)
        with _autocast(dev):
            v = model.unet(xt, t, cond)
        return F.mse_loss(v.float(), x1 - x0)

    def step_fn(step: int) -> dict[str, float]:
        l16 = fm_loss(16, r.batch)
        l32 = fm_loss(32, r.batch32) if r.batch32 else torch.zeros((), device=dev)
        (l16 + l32).backward()
        return {"loss16": float(l16.detach()), "loss32": float(l32.detach())}

    def after_step(step: int) -> None:
        ema_update(ema, model, min(r.ema, 1 - 5 / max(r.steps, 10), (1 + step) / (10 + step)))

    stats = optimise(r, dev, list(model.parameters()), step_fn, log, after_step, budget=ZOO_BUDGET)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / checkpoints.FILES["teacher"]
    digest = checkpoints.save_fp16(ema.state_dict(), path, {"model": "teacher", "config": ema.config()})
    recipe = {**asdict(r), "steps": r.steps, "wall_seconds": stats.wall_seconds, "history": stats.history,
              "hardware": hardware(dev), "parameters": count_parameters(ema), "unet_parameters": count_parameters(ema.unet),
              "file": path.name, "sha256": digest, "bytes": path.stat().st_size}
    (out_dir / "teacher.recipe.json").write_text(json.dumps(recipe, indent=2))
    return recipe


TRAINERS = {"shapes-clip": train_shapes_clip, "teacher": train_teacher}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.zoo.train", description=__doc__.splitlines()[0])
    p.add_argument("model", choices=[*TRAINERS, "eval"])
    add_budget_args(p)
    p.add_argument("--warmup", type=int)
    p.add_argument("--init", help="teacher: start from this checkpoint (a second training stage)")
    p.add_argument("--n", type=int, default=2000, help="eval: number of prompts")
    p.add_argument("--quick", action="store_true", help="eval: a reduced grid (smoke test)")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    log = file_log(a.out / "train.log")
    if a.model == "eval":
        from bench.zoo.quality import evaluate_teacher

        res = evaluate_teacher(a.out, a.device, n=a.n, quick=a.quick, log=log, save_to=a.out / "eval.json")
        (a.out / "eval.json").write_text(json.dumps(res, indent=2))
        return 0
    overrides = {k: v for k, v in {"steps": a.steps, "batch": a.batch, "batch32": a.batch32, "lr": a.lr,
                                   "seed": a.seed, "max_seconds": a.max_seconds, "warmup": a.warmup,
                                   "init": a.init}.items() if v is not None}
    TRAINERS[a.model](a.out, a.device, log=log, **overrides)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
