"""Training recipes of the students, all distilled from the one zoo teacher.

    python -m bench.zoo.students.train NAME|all --out DIR [--teacher FILE] [--device cuda]
                                       [--steps N | --max-seconds S] [--batch B] [--option key=value ...]

NAME is one of `STUDENTS` (flowmap-lmd, flowmap-meanflow, flowmap-lsd, consistency, lcm, turbo); `all` trains
the shipped ones (`SHIPPED`). Each run starts from the teacher's weights (`--teacher`, default the shipped
teacher) and writes into DIR: `<file>.safetensors` (fp16: the weights that sample, EMA where the recipe has one,
plus the frozen caption encoder; <file> is the name with '-' -> '_', e.g. flowmap_lmd), `<file>.recipe.json`
(seed, steps, batch, lr, EMA, options, measured wall time, hardware, final losses, the teacher's hash) and its
entry in `manifest.json`; the log goes to `<file>.log`.

Budget: every student gets the same wall-clock budget on the same machine (`BUDGETS`: 60 s on one GPU,
18 min on a 2-core CPU, what the shipped students got), with the same batch. With a time budget the step count is fixed after timing the
first steps (so the learning-rate schedule stays step-based) and recorded; `--steps <recorded>` reproduces
the recipe (bit-identity is not promised on GPUs). Steps x batch and the teacher evaluations per step are in
each recipe, so both views of the budget can be compared.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.zoo import checkpoints, shapes
from bench.zoo.loop import (
    Budget,
    LoopStats,
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
from bench.zoo.students import models, objectives, sampling


@dataclass
class StudentRecipe:
    model: str  # zoo name; weights file <model with '-' -> '_'>.safetensors
    family: str  # flow_map | consistency | lcm | adversarial
    objective: str  # lmd | lsd | meanflow | cd | lcm | add
    seed: int = 0
    steps: int = 2000
    batch: int = 128  # 16x16 images per step
    batch32: int = 0  # extra 32x32 images per step (the teacher was trained on both resolutions)
    lr: float = 3e-4
    warmup: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    ema: float = 0.995  # EMA of the weights that ship (0: ship the raw weights)
    grad_clip: float = 1.0
    guidance: float = 1.0  # teacher CFG scale inside the objective (lcm samples its own w instead)
    max_seconds: float | None = None  # if set: time the first steps, then fix `steps` to fit the budget
    schedule_steps: int | None = None  # lr-schedule length when the time cap stopped training early (None: steps)
    options: dict[str, Any] = field(default_factory=dict)


STUDENTS: dict[str, StudentRecipe] = {
    "flowmap-lmd": StudentRecipe(
        model="flowmap-lmd", family="flow_map", objective="lmd", lr=3e-4, ema=0.995,
        options={"diag_frac": 0.25, "p": 1.0, "c": 1e-3}),
    "flowmap-meanflow": StudentRecipe(
        model="flowmap-meanflow", family="flow_map", objective="meanflow", lr=1e-4, ema=0.995,
        options={"diag_frac": 0.5, "p": 1.0, "c": 1e-3, "target_clip": 5.0}),
    "flowmap-lsd": StudentRecipe(
        model="flowmap-lsd", family="flow_map", objective="lsd", lr=3e-4, ema=0.995,
        options={"diag_frac": 0.25, "p": 1.0, "c": 1e-3}),
    "consistency": StudentRecipe(
        model="consistency", family="consistency", objective="cd", lr=2e-4, ema=0.0,
        options={"grid": 20, "target_ema": 0.99, "solver": "euler"}),
    "lcm": StudentRecipe(
        model="lcm", family="lcm", objective="lcm", lr=2e-4, ema=0.0,
        options={"original_steps": 50, "skip": 1, "w_min": 1.0, "w_max": 3.0, "w_default": 1.0,
                 "target_ema": 0.99, "solver": "euler", "timestep_scaling": 10.0}),
    "turbo": StudentRecipe(
        model="turbo", family="adversarial", objective="add", lr=2e-4, ema=0.995,
        options={"step_counts": list(sampling.TURBO_STEP_COUNTS), "distill": "ode", "ode_solver": "heun", "ode_steps": 4,
                 "adv_weight": 0.01, "adv_start": 0, "d_lr": 2e-4, "d_channels": [32, 64, 128]}),
}
SHIPPED = ("flowmap-lmd", "flowmap-meanflow", "consistency", "lcm", "turbo")

# The comparable budget: equal wall time per student on one machine, equal batch.
BUDGETS: dict[str, dict[str, Any]] = {
    "cuda": {"max_seconds": 60.0, "batch": 256, "batch32": 64},
    "cpu": {"max_seconds": 1080.0, "batch": 64, "batch32": 0},  # the shipped students' budget
}
TIMING_STEPS = (10, 40)  # with a time budget: steps timed to fix the step count


FAMILY_DEFAULTS = {"flow_map": "flowmap-lmd", "consistency": "consistency", "lcm": "lcm", "adversarial": "turbo"}


def recipe_for(name: str, **overrides: Any) -> StudentRecipe:
    """The recipe of student `name` (or of a family's default student) with `overrides` applied."""
    name = FAMILY_DEFAULTS.get(name, name)
    if name not in STUDENTS:
        raise KeyError(f"unknown student {name!r} (known: {', '.join(STUDENTS)})")
    base = STUDENTS[name]
    opts = {**base.options, **(overrides.pop("options", None) or {})}
    return replace(base, options=opts, **{k: v for k, v in overrides.items() if v is not None})


def sampler_metadata(r: StudentRecipe) -> dict[str, Any]:
    """What the adapter needs to sample this student (stored in the checkpoint's metadata)."""
    o = r.options
    if r.family == "flow_map":
        return {"objective": r.objective, "guidance": r.guidance}
    if r.family == "consistency":
        return {"parameterisation": "rf", "grid": int(o["grid"]), "sigma_boundary": 0.0, "guidance": r.guidance}
    if r.family == "lcm":
        return {"parameterisation": "lcm", "original_steps": int(o["original_steps"]), "T": sampling.T_TRAIN,
                "timestep_scaling": float(o["timestep_scaling"]), "w_min": float(o["w_min"]),
                "w_max": float(o["w_max"]), "w_default": float(o["w_default"])}
    if r.family == "adversarial":
        return {"parameterisation": "rf", "timesteps": sampling.trailing_union(o["step_counts"]), "T": sampling.T_TRAIN,
                "guidance": r.guidance}
    raise ValueError(f"unknown family {r.family!r}")


def teacher_evals_per_step(r: StudentRecipe) -> int:
    """Teacher U-Net evaluations per training image (CFG doubling counted), for comparing budgets."""
    g = 2 if r.guidance != 1.0 else 1
    o = r.options
    if r.objective in ("lmd", "lsd", "meanflow"):
        return g
    if r.objective == "cd":
        return g * (2 if o.get("solver") == "heun" else 1)
    if r.objective == "lcm":
        return 2 * (2 if o.get("solver") == "heun" else 1)
    if r.objective == "add":
        return g * (o["ode_steps"] * (2 if o["ode_solver"] == "heun" else 1) if o["distill"] == "ode" else 1)
    return 0


# ------------------------------------------------------------------------------------------------- data


class _Data:
    """Training images (train-split seeds from a numpy generator) rendered on the device, and captions
    encoded by the frozen caption encoder."""

    def __init__(self, teacher: ShapesTeacher, seed: int, device: torch.device) -> None:
        self.rng = np.random.default_rng(seed)
        self.device = device
        self.text = teacher.text
        self.counts = teacher.text.counts(shapes.all_captions()).to(device)

    def batch(self, n: int, res: int) -> tuple[torch.Tensor, torch.Tensor]:
        sc = train_batch(self.rng, n)
        img = shapes.render(sc, res, self.device, torch.float32)
        x1 = quantise(img) * 2 - 1  # quantised as shipped images are
        with torch.no_grad():
            cond = self.text.encode_counts(self.counts[torch.as_tensor(caption_ids(sc), device=self.device)])
        return x1, cond


# ------------------------------------------------------------------------------------------- the driver


def _frozen_copy(m: ShapesTeacher) -> ShapesTeacher:
    c = models.copy_of(m)
    c.eval().requires_grad_(False)
    return c


def train_student(name: str, teacher_ckpt: Path | str | None = None, out: Path | str | None = None,
                  steps: int | None = None, batch: int | None = None, device: str = "cpu", seed: int | None = None,
                  *, max_seconds: float | None = None, log: Callable[[str], None] = print,
                  manifest: bool = True, **overrides: Any) -> dict[str, Any]:
    """Distil student `name` (a `STUDENTS` key, or a family name for its default student) from the teacher
    checkpoint (default: the shipped teacher); save fp16 safetensors + recipe into `out` (default: the
    weights folder) and record it in that folder's manifest.

    `overrides` are StudentRecipe fields (batch32, lr, ema, guidance, options={...}, ...). Returns the
    recipe record (also written to `<file>.recipe.json`).
    """
    from bench.zoo.teacher import load_teacher

    r = recipe_for(name, steps=steps, batch=batch, seed=seed, max_seconds=max_seconds, **overrides)
    cap = r.steps if (r.max_seconds and steps) else 10**9  # with both, --steps is an upper bound
    if r.max_seconds:
        r.steps = cap  # provisional; fixed after timing (warmup is step-based, so unaffected)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out_dir = Path(out) if out is not None else checkpoints.weights_dir()
    teacher_path = Path(teacher_ckpt) if teacher_ckpt is not None else checkpoints.require("teacher")
    torch.manual_seed(r.seed)
    teacher = load_teacher(dev, teacher_path)
    student = models.copy_of(teacher)
    ema = _frozen_copy(student) if r.ema > 0 else None
    data = _Data(teacher, r.seed, dev)
    gen = torch.Generator(device=dev).manual_seed(r.seed)
    log(f"{r.model}: {count_parameters(student.unet)} U-Net parameters from teacher {teacher_path}, "
        f"recipe {asdict(r)}")

    loss_fn, extra_step, extra_state = _family_loss(r, teacher, student, gen, dev, log)
    params = [p for p in student.unet.parameters() if p.requires_grad]

    def step_fn(step: int) -> dict[str, float]:
        losses: dict[str, float] = {}
        total = 0.0
        for res, n in ((16, r.batch), (32, r.batch32)):
            if n <= 0:
                continue
            x1, cond = data.batch(n, res)
            loss, stats = loss_fn(step, x1, cond)
            loss.backward()
            total += float(loss.detach())
            losses.update({f"{k}{res}": v for k, v in stats.items()})
        return {"loss": total, **losses}

    def after_step(step: int) -> None:
        if extra_step is not None:
            extra_step(step)
        if ema is not None:
            ema_update(ema, student, min(r.ema, (1 + step) / (10 + step)))

    budget = Budget(timing=TIMING_STEPS, at_least=0, cap=cap, stop_when_over=True)
    done: LoopStats = optimise(r, dev, params, step_fn, log, after_step, budget=budget, keep_history=10,
                               total_key="loss")
    wall, skipped = done.wall_seconds, done.skipped_steps

    shipped = ema if ema is not None else student
    out_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoints.weight_path(r.model) if out is None else out_dir / checkpoints.weight_path(r.model).name
    meta = {"model": r.model, "family": r.family, "config": shipped.config(), "student": sampler_metadata(r),
            "teacher_sha256": checkpoints.sha256(teacher_path)}
    digest = checkpoints.save_fp16(shipped.state_dict(), path, meta)
    recipe = {**asdict(r), "steps": r.steps, "wall_seconds": wall, "history": done.history,
              "skipped_steps": skipped, "hardware": hardware(dev, threads=True),
              "budget": {"kind": "wall_time" if r.max_seconds else "steps", "max_seconds": r.max_seconds,
                         "steps_x_batch": r.steps * r.batch, "steps_x_batch32": r.steps * r.batch32,
                         "teacher_evals_per_image": teacher_evals_per_step(r)},
              "parameters": count_parameters(shipped), "unet_parameters": count_parameters(shipped.unet),
              "teacher": {"file": teacher_path.name, "sha256": meta["teacher_sha256"]},
              "sampler": meta["student"], **extra_state,
              "file": path.name, "sha256": digest, "bytes": path.stat().st_size}
    (out_dir / f"{path.stem}.recipe.json").write_text(json.dumps(recipe, indent=2))
    if manifest:
        checkpoints.record(out_dir, r.model, recipe)
    log(f"{r.model}: saved {path} ({recipe['bytes']} bytes, {r.steps} steps, {wall} s, {skipped} skipped)")
    return recipe


LossFn = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


def _family_loss(r: StudentRecipe, teacher: ShapesTeacher, student: ShapesTeacher, gen: torch.Generator,
                 dev: torch.device, log: Callable[[str], None]
                 ) -> tuple[LossFn, Callable[[int], None] | None, dict[str, Any]]:
    """(loss_fn(step, x1, cond), optional per-step hook, extra recipe fields) for the recipe's objective."""
    o = r.options
    unet = student.unet

    def noise_like(x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, device=dev, generator=gen)

    def uniform(n: int) -> torch.Tensor:
        return torch.rand(n, device=dev, generator=gen)

    def on_path(x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tc = t.view(-1, 1, 1, 1)
        return (1 - tc) * noise_like(x1) + tc * x1

    if r.objective in ("lmd", "lsd", "meanflow"):
        def flow_loss(step: int, x1: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            s, t = objectives.sample_pairs(x1.shape[0], float(o["diag_frac"]), gen, dev)
            x_s = on_path(x1, s)

            def b(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
                return models.teacher_velocity(teacher, x, tt, cond, r.guidance)

            if r.objective == "meanflow":
                return objectives.meanflow_loss(
                    lambda x, ss, tt: models.flowmap_velocity(unet, x, ss, tt, cond), b, x_s, s, t,
                    p=float(o["p"]), c=float(o["c"]), target_clip=o.get("target_clip"))
            own = None
            if r.objective == "lsd":
                def own(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
                    return models.flowmap_velocity(unet, x, tt, tt, cond)
            return objectives.lmd_loss(lambda x, ss, tt: models.flowmap_jump(unet, x, ss, tt, cond), b,
                                       x_s, s, t, self_velocity=own, p=float(o.get("p", 0.0)),
                                       c=float(o.get("c", 1e-3)))

        return flow_loss, None, {}

    if r.objective in ("cd", "lcm"):
        target = _frozen_copy(models.copy_of(student))
        mu = float(o["target_ema"])
        step_kind = objectives.ODE_STEPS[o.get("solver", "euler")]

        def update_target(step: int) -> None:
            ema_update(target, student, mu)

        if r.objective == "cd":
            grid = int(o["grid"])

            def cd_loss(step: int, x1: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
                j = torch.randint(0, grid, (x1.shape[0],), device=dev, generator=gen)
                t_a, t_b = j.float() / grid, (j + 1).float() / grid
                return objectives.consistency_distillation_loss(
                    lambda x, t: models.consistency_fn(unet, x, t, cond, "rf"),
                    lambda x, t: models.consistency_fn(target.unet, x, t, cond, "rf"),
                    step_kind(lambda x, t: models.teacher_velocity(teacher, x, t, cond, r.guidance)),
                    on_path(x1, t_a), t_a, t_b)

            return cd_loss, update_target, {}

        n_orig, T = int(o["original_steps"]), sampling.T_TRAIN
        k = T // n_orig
        origin = torch.tensor(sampling.lcm_origin_timesteps(n_orig, T), device=dev)
        kw = {"T": T, "timestep_scaling": float(o["timestep_scaling"])}

        def lcm_loss(step: int, x1: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            n = x1.shape[0]
            tau_a = origin[torch.randint(0, n_orig, (n,), device=dev, generator=gen)]
            tau_b = (tau_a - int(o["skip"]) * k).clamp_min(0)  # as the LCM distillation script clamps
            t_a, t_b = 1 - (tau_a.float() + 1) / T, 1 - (tau_b.float() + 1) / T  # sampling.tau_to_t
            w = float(o["w_min"]) + (float(o["w_max"]) - float(o["w_min"])) * uniform(n)
            return objectives.consistency_distillation_loss(
                lambda x, t: models.consistency_fn(unet, x, t, cond, "lcm", w=w, **kw),
                lambda x, t: models.consistency_fn(target.unet, x, t, cond, "lcm", w=w, **kw),
                step_kind(lambda x, t: models.teacher_velocity(teacher, x, t, cond, w)),
                on_path(x1, t_a), t_a, t_b)

        return lcm_loss, update_target, {}

    if r.objective == "add":
        t_grid = torch.tensor([float(sampling.tau_to_t(tau)) for tau in sampling.trailing_union(o["step_counts"])],
                              device=dev, dtype=torch.float32)
        disc = models.Discriminator(teacher.unet.cfg.cond_dim, tuple(o["d_channels"])).to(dev)
        d_opt = torch.optim.AdamW(disc.parameters(), lr=float(o["d_lr"]), betas=(0.0, 0.99))
        pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

        def add_loss(step: int, x1: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            n = x1.shape[0]
            t = t_grid[torch.randint(0, len(t_grid), (n,), device=dev, generator=gen)]
            x_t = on_path(x1, t)
            x_hat = models.consistency_fn(unet, x_t, t, cond, "rf")

            def b(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
                return models.teacher_velocity(teacher, x, tt, cond, r.guidance)

            if o["distill"] == "ode":
                loss, stats = objectives.ode_distill_loss(
                    x_hat, objectives.teacher_solve(b, x_t, t, int(o["ode_steps"]), o["ode_solver"]))
            else:
                loss, stats = objectives.add_distill_loss(x_hat, b, uniform(n), noise_like(x1))
            if step >= int(o["adv_start"]) and float(o["adv_weight"]) > 0:
                disc.requires_grad_(False)
                g_adv = objectives.hinge_g_loss(disc(x_hat, cond))
                disc.requires_grad_(True)
                loss = loss + float(o["adv_weight"]) * g_adv
                stats["g_adv"] = float(g_adv.detach())
                pending.append((x1, x_hat.detach(), cond))
            return loss, stats

        def d_step(step: int) -> None:
            if not pending:
                return
            d_opt.zero_grad(set_to_none=True)
            for real, fake, cond in pending:
                objectives.hinge_d_loss(disc(real, cond), disc(fake, cond)).backward()
            torch.nn.utils.clip_grad_norm_(disc.parameters(), r.grad_clip)
            d_opt.step()
            pending.clear()

        return add_loss, d_step, {"discriminator_parameters": count_parameters(disc)}

    raise ValueError(f"unknown objective {r.objective!r}")


REPLAY_KEYS = ("seed", "steps", "schedule_steps", "batch", "batch32", "lr", "warmup", "min_lr_ratio",
               "weight_decay", "ema", "grad_clip", "guidance", "options")


def zoo_train(name: str, out_dir: Path | str | None = None, device: str | None = None,
              log: Callable[[str], None] = print, **overrides: Any) -> dict[str, Any]:
    """What `bench zoo train <student>` runs: replay the recipe recorded in the shipped manifest (its step
    count, batch, lr, seed, options; `overrides` win), or, when none is recorded, the default recipe with the
    device kind's time budget (`BUDGETS`). Trains from the shipped teacher into `out_dir` (default: the
    weights folder) and records the result in that folder's manifest."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    recorded = checkpoints.read_manifest().get("models", {}).get(name, {}).get("recipe", {})
    if recorded:
        args = {k: recorded[k] for k in REPLAY_KEYS if k in recorded}
    else:
        args = dict(BUDGETS["cuda" if str(device).startswith("cuda") else "cpu"])
    args.update({k: v for k, v in overrides.items() if v is not None})
    return train_student(name, None, out_dir, device=device, log=log, **args)


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--option {text!r}: expected key=value")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.zoo.students.train", description=__doc__.splitlines()[0])
    p.add_argument("model", choices=[*STUDENTS, "all"])
    add_budget_args(p)
    p.add_argument("--teacher", type=Path, default=None, help="teacher safetensors (default: the shipped one)")
    p.add_argument("--tiny-teacher", action="store_true",
                   help="smoke test: write a tiny random teacher to --teacher (if missing) and train from it")
    p.add_argument("--option", action="append", type=_parse_option, default=[],
                   help="objective option key=value (JSON value), e.g. --option diag_frac=0.5")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.tiny_teacher:
        from bench.zoo.students.tiny import save_teacher, tiny_teacher

        a.teacher = a.teacher or a.out / "teacher_tiny.safetensors"
        if not a.teacher.is_file():
            save_teacher(tiny_teacher(random_output=True), a.teacher)
    kind = "cuda" if str(a.device).startswith("cuda") else "cpu"
    budget = dict(BUDGETS[kind])
    if a.steps is not None:
        budget.pop("max_seconds")
    for key in ("max_seconds", "batch", "batch32"):
        if getattr(a, key) is not None:
            budget[key] = getattr(a, key)
    names = list(SHIPPED) if a.model == "all" else [a.model]
    for name in names:
        log = file_log(a.out / f"{checkpoints.weight_path(name).stem}.log")
        train_student(name, a.teacher, a.out, steps=a.steps, device=a.device, seed=a.seed, lr=a.lr, log=log,
                      options=dict(a.option), **budget)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
