"""What every zoo training recipe shares: the optimisation loop, its learning-rate schedule and time budget,
the training data draw, the hardware record and the command-line flags.

`bench.zoo.train` (shapes-clip, the teacher) and `bench.zoo.students.train` (the distilled students) both call
`optimise(...)`; where they differ (when the time budget is measured, whether a non-finite loss skips the update,
how much loss history a recipe keeps) is a parameter, so each recipe replays exactly as it was recorded.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.zoo import shapes


def lr_at(r: Any, step: int) -> float:
    """Linear warmup, then cosine to min_lr_ratio * lr over the schedule's length (`r.schedule_steps` when the
    recipe has one, recorded when a time cap stopped training early, else `r.steps`)."""
    if step < r.warmup:
        return r.lr * (step + 1) / r.warmup
    total = getattr(r, "schedule_steps", None) or r.steps
    p = min(1.0, (step - r.warmup) / max(1, total - r.warmup))
    return r.lr * (r.min_lr_ratio + (1 - r.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Budget:
    """How `r.max_seconds` (a wall-time budget) becomes a step count: one step is timed between steps
    `timing[0]` and `timing[1]`, then `r.steps` is fixed to what fits, at least `at_least` steps beyond the
    timed ones and at most `cap`. With `stop_when_over`, training also stops when the budget runs out before the
    count is fixed; `r.schedule_steps` then records the schedule's length, so a replay of `r.steps` matches."""

    timing: tuple[int, int] = (20, 120)
    at_least: int = 1
    cap: int | None = None
    stop_when_over: bool = False


@dataclass
class LoopStats:
    wall_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    skipped_steps: int = 0


def optimise(r: Any, device: torch.device, params: list[torch.nn.Parameter],
             step_fn: Callable[[int], dict[str, float]], log: Callable[[str], None],
             after_step: Callable[[int], None] | None = None, *, budget: Budget = Budget(),
             keep_history: int = 5, total_key: str | None = None, max_bad_steps: int = 50) -> LoopStats:
    """AdamW with warmup + cosine (`lr_at`), gradient clipping, an optional time budget (`Budget`).

    `step_fn(step)` computes the losses, calls backward and returns them by name. With `total_key`, that loss
    decides the update: when it is not finite the update is skipped and counted (`max_bad_steps` in a row:
    RuntimeError, training diverged), and it is logged first with 5 decimals. `after_step(step)` runs after
    every step (EMA updates, a discriminator's step). Mutates `r.steps` (and `r.schedule_steps`) as the
    budget fixes them; returns the wall time, the last `keep_history` logged losses and the skipped steps.
    """
    opt = torch.optim.AdamW(params, lr=r.lr, betas=(0.9, 0.99), weight_decay=r.weight_decay)
    t_start = time.time()
    step, skipped, consecutive_bad, timed, history = 0, 0, 0, None, []
    while step < r.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(r, step)
        opt.zero_grad(set_to_none=True)
        losses = step_fn(step)
        if total_key is None or math.isfinite(losses[total_key]):
            torch.nn.utils.clip_grad_norm_(params, r.grad_clip)
            opt.step()
            consecutive_bad = 0
        else:  # a loss spike that overflowed: skip the update, keep going, record it
            skipped += 1
            consecutive_bad += 1
            if consecutive_bad >= max_bad_steps:
                raise RuntimeError(f"{r.model}: {max_bad_steps} consecutive non-finite losses at step {step}; "
                                   "training diverged")
        if after_step is not None:
            after_step(step)
        step += 1
        if r.max_seconds:
            elapsed = time.time() - t_start
            if step == budget.timing[0]:
                sync(device)
                timed = (time.time(), step)
            elif step == budget.timing[1] and timed:
                sync(device)
                per_step = (time.time() - timed[0]) / (step - timed[1])
                left = r.max_seconds - (time.time() - t_start)
                r.steps = max(step + budget.at_least, step + int(left / per_step))
                if budget.cap is not None:
                    r.steps = min(budget.cap, r.steps)
                log(f"{r.model}: {per_step * 1000:.1f} ms/step -> steps fixed to {r.steps} for {r.max_seconds:.0f} s")
            if budget.stop_when_over and elapsed >= r.max_seconds and step < r.steps:
                r.schedule_steps = r.steps  # the lr schedule ran for the fixed count: record it, so a replay matches
                r.steps = step
                log(f"{r.model}: time budget reached before the step count was fixed: steps = {step}")
        if step % 100 == 0 or step == r.steps:
            history.append({"step": step, **losses})
            log(f"{r.model} step {step}/{r.steps} lr {lr_at(r, step - 1):.2e} "
                + " ".join(f"{k} {v:.5f}" if k == total_key else f"{k} {v:.4f}" for k, v in losses.items())
                + f" [{time.time() - t_start:.0f}s]")
    sync(device)
    return LoopStats(round(time.time() - t_start, 1), history[-keep_history:], skipped)


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
            pe.lerp_(pm, 1 - decay)


# ------------------------------------------------------------------------------------------------- data


def caption_ids(sc: shapes.Scenes) -> np.ndarray:
    """Index of each scene's caption in `shapes.all_captions()`."""
    zi = np.where(sc.say_size, sc.size + 1, 0)
    pi = np.where(sc.say_pos, sc.region + 1, 0)
    return ((sc.colour * len(shapes.SHAPES) + sc.shape) * 3 + zi) * 10 + pi


def train_batch(rng: np.random.Generator, n: int) -> shapes.Scenes:
    """`n` training scenes (train-split seeds drawn from the recipe's numpy generator)."""
    return shapes.scenes(rng.integers(0, shapes.EVAL_SEED_OFFSET, size=n))


def quantise(img: torch.Tensor) -> torch.Tensor:
    """Round to uint8 levels as shipped images are (keeps training inputs like evaluation inputs)."""
    return torch.floor(img * 255 + 0.5) / 255


# ----------------------------------------------------------------------------------- record and command line


def hardware(device: torch.device, threads: bool = False) -> dict[str, Any]:
    """The recipe's `hardware` record (with `torch_threads` when `threads`: the students record it)."""
    from bench.hardware import fingerprint

    fp = fingerprint()
    keep = {k: fp.get(k) for k in ("cpu_model", "cpu_cores_logical", "torch", "cuda", "gpus")}
    keep["device"] = str(device)
    if threads:
        keep["torch_threads"] = torch.get_num_threads()
    return keep


def add_budget_args(p: argparse.ArgumentParser) -> None:
    """The flags every zoo training CLI shares: output folder, device and the training budget."""
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int)
    p.add_argument("--max-seconds", type=float)
    p.add_argument("--batch", type=int)
    p.add_argument("--batch32", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)


def file_log(path: Path) -> Callable[[str], None]:
    """A log function that prints each message with the time and appends it to `path`."""

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    return log
