"""What `bench zoo train | verify | card` do (the CLI in bench/cli.py only parses flags and prints).

- `train(name, out_dir=None, device=None, **overrides)`: reproduce a zoo checkpoint from its recorded recipe
  (the manifest's steps, batch, learning rate, seed; overrides win) into `out_dir` (default: the weights
  folder, so it also fixes a MissingWeightsError), then record file, hash and recipe in that folder's
  manifest. `evaluate=True` also re-measures the teacher's quality table (needs shapes-clip beside it).
- `verify()`: every manifest entry's file exists and matches its sha256; the zoo fits its size budget.
- `card()`: each model's recipe, size and measured quality, as text.
- `install(folder)`: copy a training run's outputs (e.g. from scripts/train_zoo_gpu.sh) into the weights
  folder and record them in the manifest.

Also runnable as `python -m bench.zoo.cli_impl {train,verify,card,install} ...`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.importing import import_target
from bench.zoo import checkpoints
from bench.zoo.checkpoints import record

SIZE_BUDGET_BYTES = 24 * 1024 * 1024  # all shipped zoo weights together (this issue and the students)
# name -> "module:function"; function(out_dir: Path, device: str, **recipe) -> recipe dict with at least
# "file" (written into out_dir), "steps", "hardware", "wall_seconds". Students: bench.zoo.students.train.
_TRAINERS: dict[str, str] = {
    "shapes-clip": "bench.zoo.train:train_shapes_clip",
    "teacher": "bench.zoo.train:train_teacher",
}
# installed by `install()` from a training folder (students: bench/zoo/students/train.py SHIPPED)
TRAINABLE = ("shapes-clip", "teacher", "flowmap-lmd", "flowmap-meanflow", "consistency", "lcm", "turbo")


def _trainer(name: str) -> Any:
    if name not in _TRAINERS:
        from bench.zoo.students.train import STUDENTS

        names = ", ".join(sorted({*_TRAINERS, *STUDENTS}))
        raise BenchError(f"zoo model {name!r} has no training recipe (trainable: {names})")
    return import_target(_TRAINERS[name])
_BOOKKEEPING = {"model", "history", "hardware", "wall_seconds", "init", "max_seconds", "file", "sha256", "bytes",
                "quality", "parameters", "shipped_parameters", "unet_parameters"}


def _recipe_file(name: str) -> str:
    return f"{name.replace('-', '_')}.recipe.json"


def condensed_eval(ev: dict[str, Any]) -> dict[str, Any]:
    keep = ("solver", "steps", "nfe", "shift", "guidance", "seed_base", "resolution", "fd", "excess_fd",
            "fd_over_floor", "clip_score")
    return {
        "n": ev["n"], "feature_space": ev["feature_space"],
        "fd_floor_16": ev["fd_floor_16"], "fd_floor_32": ev.get("fd_floor_32"),
        "clip_score_real_16": ev["clip_score_real_16"],
        "summary": ev.get("summary"),
        "rows": [{k: r[k] for k in keep if k in r} for r in ev["rows"]],
    }


def install(src: Path, dest: Path | None = None) -> list[str]:
    """Copy trained weights + recipes (+ eval.json) from `src` into the weights folder and the manifest."""
    dest = dest or checkpoints.weights_dir()
    dest.mkdir(parents=True, exist_ok=True)
    done = []
    for name in TRAINABLE:
        rpath = src / _recipe_file(name)
        if not rpath.is_file():
            continue
        recipe = json.loads(rpath.read_text())
        shutil.copyfile(src / recipe["file"], dest / recipe["file"])
        quality = None
        if name == "teacher" and (src / "eval.json").is_file():
            quality = {"dynamic_range": condensed_eval(json.loads((src / "eval.json").read_text()))}
        record(dest, name, recipe, quality)
        done.append(name)
    return done


def train(model_name: str, out_dir: Path | str | None = None, device: str | None = None,
          evaluate: bool = False, **overrides: Any) -> dict[str, Any]:
    """Retrain a zoo model from its recorded recipe; returns the new manifest entry."""
    import torch

    from bench.zoo.students.train import STUDENTS, zoo_train

    if model_name in STUDENTS:  # distilled students have their own recipes (bench/zoo/students)
        return zoo_train(model_name, out_dir, device, **overrides)
    trainer = _trainer(model_name)
    folder = Path(out_dir) if out_dir else checkpoints.weights_dir()
    recorded = checkpoints.read_manifest().get("models", {}).get(model_name, {}).get("recipe", {})
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    stages = recorded.get("stages") or [recorded]
    entry: dict[str, Any] = {}
    for k, stage in enumerate(stages):
        args = {key: v for key, v in stage.items() if key not in _BOOKKEEPING}
        if k == len(stages) - 1:
            args.update({key: v for key, v in overrides.items() if v is not None})
        args["max_seconds"] = None
        if k > 0:
            args["init"] = str(folder / checkpoints.weight_path(model_name).name)
        recipe = trainer(folder, device, **args)
        quality = None
        if evaluate and model_name == "teacher" and k == len(stages) - 1:
            from bench.zoo.quality import evaluate_teacher

            quality = {"dynamic_range": condensed_eval(evaluate_teacher(folder, device))}
        entry = record(folder, model_name, recipe, quality)
    (folder / _recipe_file(model_name)).unlink(missing_ok=True)
    return entry


def verify(folder: Path | None = None) -> list[tuple[str, bool, str]]:
    """(name, ok, message) per shipped model, plus the size budget; a missing manifest is one failure."""
    folder = folder or checkpoints.weights_dir()
    manifest = checkpoints.read_manifest(folder)
    models = manifest.get("models", {})
    if not models:
        return [("manifest", False, f"no models recorded in {folder / checkpoints.MANIFEST} "
                                    "(run `bench zoo train <name>`)")]
    out, total = [], 0
    for name, entry in sorted(models.items()):
        path = folder / entry["file"]
        if not path.is_file():
            out.append((name, False, f"missing {path} (run `bench zoo train {name}`)"))
            continue
        digest = checkpoints.sha256(path)
        total += path.stat().st_size
        if digest != entry["sha256"]:
            out.append((name, False, f"{path.name}: sha256 {digest[:12]}… does not match recorded "
                                     f"{entry['sha256'][:12]}…"))
        else:
            out.append((name, True, f"{path.name}: sha256 {digest[:12]}… ok ({path.stat().st_size / 1e6:.2f} MB)"))
    out.append(("size-budget", total <= SIZE_BUDGET_BYTES,
                f"{total / 2**20:.2f} MiB of {SIZE_BUDGET_BYTES / 2**20:.0f} MiB"))
    return out


def _fmt_recipe(r: dict[str, Any]) -> str:
    hw = r.get("hardware") or {}
    gpus = ", ".join(g["name"] for g in hw.get("gpus") or []) or hw.get("cpu_model", "?")
    parts = [f"seed {r.get('seed')}", f"steps {r.get('steps')}", f"batch {r.get('batch')}"]
    if r.get("batch32") and r.get("model") == "teacher":
        parts.append(f"+{r['batch32']}@32")
    parts += [f"lr {r.get('lr')}", f"wall {r.get('wall_seconds')} s on {gpus} ({hw.get('device', '?')})"]
    return ", ".join(parts)


def _teacher_table(dr: dict[str, Any]) -> list[str]:
    rows = [r for r in dr["rows"] if r.get("resolution") == 16 and r.get("guidance") == 1.0
            and r.get("seed_base") == 0]
    floor = dr["fd_floor_16"]
    lines = [f"  dynamic range @16x16, N={dr['n']} eval prompts, FD in {dr['feature_space']} space; "
             f"noise floor FD {floor:.3f}",
             f"  {'solver':<7}{'shift':>6}" + "".join(f"{'NFE ' + str(n):>10}" for n in (1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64))]
    by: dict[tuple[str, float], dict[int, float]] = {}
    for r in rows:
        by.setdefault((r["solver"], r["shift"]), {})[r["nfe"]] = r["fd"]
    for (solver, shift), fds in sorted(by.items()):
        if solver == "euler" and shift == 1.0:
            fds = {**fds}
        cells = "".join(f"{fds[n]:>10.3f}" if n in fds else f"{'':>10}" for n in (1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64))
        lines.append(f"  {solver:<7}{shift:>6}" + cells)
    s = dr.get("summary") or {}
    if s and "error" not in s:
        b = s["best"]
        lines += [
            f"  teacher-Euler excess FD: NFE 1 {s['euler1_excess']:.3f} vs NFE 32 {s.get('euler32_excess', float('nan')):.3f}"
            f" -> ratio {s.get('euler1_over_euler32_excess', float('nan')):.1f} (target >= 5)",
            f"  best solver <= 64 NFE: {b['solver']} steps {b['steps']} shift {b['shift']} (NFE {b['nfe']}): "
            f"FD {b['fd']:.3f} = {s['best_over_floor']:.2f}x noise floor (target <= 1.5)",
            f"  seed-to-seed spread (3 seeds): best {s['seed_spread_best']:.3f}, Euler-2 {s['seed_spread_euler2']:.3f}; "
            f"gap Euler-2 - best {s['gap_euler2_best']:.3f} -> spread/gap {s['spread_over_gap']:.3f} (target < 0.1)",
            f"  CLIP score (shapes-clip) real {s['clip_score_real_16']:.2f}, teacher (best, w=1) "
            f"{s.get('clip_score_teacher_16', float('nan')):.2f} -> ratio {s.get('clip_score_ratio', float('nan')):.3f}",
        ]
    guided = [r for r in dr["rows"] if r.get("guidance", 1.0) != 1.0 or "clip_score" in r]
    real = dr["clip_score_real_16"]
    for r in guided:
        lines.append(f"  guidance w={r['guidance']} ({r['solver']} steps {r['steps']} shift {r['shift']}, "
                     f"counted NFE {r['nfe']}): FD {r['fd']:.3f} = {r['fd_over_floor']:.2f}x floor, "
                     f"CLIP score {r.get('clip_score', float('nan')):.2f} = {r.get('clip_score', float('nan')) / real:.3f} of real")
    r32 = [r for r in dr["rows"] if r.get("resolution") == 32]
    if r32:
        lines.append(f"  @32x32 (floor {dr.get('fd_floor_32', float('nan')):.3f}): " + "; ".join(
            f"{r['solver']} NFE {r['nfe']}: {r['fd']:.3f}" for r in r32))
    return lines


def card(folder: Path | None = None) -> str:
    """Each model's recipe, size and measured quality."""
    folder = folder or checkpoints.weights_dir()
    models = checkpoints.read_manifest(folder).get("models", {})
    if not models:
        return f"no zoo models recorded in {folder / checkpoints.MANIFEST} (run `bench zoo train <name>`)"
    lines = [f"zoo weights: {folder}"]
    total = 0
    for name, e in sorted(models.items()):
        try:
            lines += _card_lines(name, e)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise BenchError(f"zoo manifest {folder / checkpoints.MANIFEST}: models.{name} cannot be shown "
                             f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}); restore the file, or "
                             f"point {checkpoints.ENV_VAR} at another weights folder") from None
        total += e.get("bytes", 0)
    lines.append(f"\ntotal {total / 2**20:.2f} MiB of {SIZE_BUDGET_BYTES / 2**20:.0f} MiB budget")
    return "\n".join(lines)


def _card_lines(name: str, e: dict[str, Any]) -> list[str]:
    """One model's card: recipe (stages), student budget, quality."""
    lines: list[str] = []
    params = e.get("shipped_parameters") or e.get("parameters")
    lines.append(f"\n{name}: {e['file']} ({e.get('bytes', 0) / 1e6:.2f} MB {e.get('dtype', '')}, "
                 f"{params} parameters shipped, sha256 {e['sha256'][:12]}…)")
    rec = e.get("recipe") or {}
    for k, st in enumerate(rec.get("stages") or ([rec] if rec else [])):
        label = f"stage {k + 1}" if rec.get("stages") else "recipe"
        init = " (from stage 1 weights)" if st.get("init") else ""
        lines.append(f"  {label}: " + _fmt_recipe(st) + init)
    if rec.get("stages"):
        lines.append(f"  total: {rec['steps']} steps, {rec['wall_seconds']} s")
    if rec.get("objective"):  # a distilled student: what it learned from, and its comparable budget
        b = rec.get("budget") or {}
        lines.append(f"  student: family {rec.get('family')}, objective {rec['objective']}, options "
                     f"{json.dumps(rec.get('options') or {})}, EMA {rec.get('ema')}, from teacher "
                     f"{(rec.get('teacher') or {}).get('sha256', '?')[:12]}…")
        lines.append(f"  budget: {b.get('kind')} {b.get('max_seconds')} s -> {rec.get('steps')} steps x batch "
                     f"{rec.get('batch')} = {b.get('steps_x_batch')} images, {b.get('teacher_evals_per_image')} "
                     f"teacher evaluations per image, {rec.get('skipped_steps', 0)} non-finite steps skipped")
    q = e.get("quality") or {}
    for key in ("attribute_accuracy_32", "attribute_accuracy_16"):
        if key in q:
            lines.append(f"  zero-shot attribute accuracy (eval split, {q.get('n')} images, "
                         f"{key.rsplit('_', 1)[1]}x{key.rsplit('_', 1)[1]}): "
                         + ", ".join(f"{k} {v:.1%}" for k, v in q[key].items()))
    if "dynamic_range" in q:
        lines += _teacher_table(q["dynamic_range"])
    for k, v in q.items():
        if k not in ("attribute_accuracy_32", "attribute_accuracy_16", "dynamic_range", "n"):
            lines.append(f"  {k}: {json.dumps(v) if not isinstance(v, str) else v}")
    return lines


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.zoo.cli_impl")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("model")
    t.add_argument("--out", type=Path)
    t.add_argument("--device")
    t.add_argument("--steps", type=int)
    t.add_argument("--eval", action="store_true")
    sub.add_parser("verify")
    sub.add_parser("card")
    i = sub.add_parser("install")
    i.add_argument("src", type=Path)
    a = p.parse_args(argv)
    if a.cmd == "train":
        print(json.dumps(train(a.model, a.out, a.device, evaluate=a.eval, steps=a.steps), indent=2)[:2000])
    elif a.cmd == "verify":
        results = verify()
        for name, ok, msg in results:
            print(f"{'ok  ' if ok else 'FAIL'} {name}: {msg}")
        return 0 if all(ok for _, ok, _ in results) else 1
    elif a.cmd == "card":
        print(card())
    else:
        print("installed:", ", ".join(install(a.src)) or "nothing")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
