"""Where the zoo's weights live, how they are saved (fp16 safetensors + manifest) and loaded.

The weights folder is `bench/zoo/weights/` inside the package, or the folder named by the environment
variable BENCH_ZOO_WEIGHTS. `manifest.json` there records, per model: file, sha256, size, recipe (how
`bench zoo train <name>` reproduces it, with the measured wall time and hardware) and measured quality.
Only safetensors are read; nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError, MissingWeightsError

ENV_VAR = "BENCH_ZOO_WEIGHTS"
MANIFEST = "manifest.json"
FILES = {"shapes-clip": "shapes_clip.safetensors", "teacher": "teacher.safetensors"}


def weights_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path(__file__).with_name("weights")


def weight_path(name: str) -> Path:
    return weights_dir() / FILES.get(name, f"{name.replace('-', '_')}.safetensors")


def require(name: str) -> Path:
    """The weight file of zoo model `name`, or MissingWeightsError naming the file and the fix."""
    path = weight_path(name)
    if not path.is_file():
        raise MissingWeightsError(
            f"zoo weights for {name!r} not found: {path} (run `bench zoo train {name}`, "
            f"or point {ENV_VAR} at a folder holding {path.name})"
        )
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# Per model entry: field -> type it must have when present ("file" and "sha256" are required).
_ENTRY_FIELDS: dict[str, Any] = {"file": str, "sha256": str, "bytes": int, "parameters": int,
                                 "shipped_parameters": int, "dtype": str, "note": str, "recipe": dict, "quality": dict}


def read_manifest(folder: Path | None = None) -> dict[str, Any]:
    """The weights folder's manifest, checked: a malformed one (a bad BENCH_ZOO_WEIGHTS folder) is a one-line
    BenchError naming the file, never a traceback in `bench zoo verify|card` or while planning a suite."""
    path = (folder or weights_dir()) / MANIFEST
    if not path.is_file():
        return {"models": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        why = (str(e).splitlines() or [""])[0] if not isinstance(e, RecursionError) else "nested too deeply"
        raise BenchError(f"zoo manifest {path} is not readable JSON ({why}); restore it, or point {ENV_VAR} at "
                         "another weights folder") from None
    problem = _manifest_problem(data)
    if problem:
        raise BenchError(f"zoo manifest {path} is malformed: {problem}; restore it, or point {ENV_VAR} at another "
                         "weights folder")
    return data


def _manifest_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return f"the top level is {type(data).__name__}, not a mapping"
    models = data.get("models", {})
    if not isinstance(models, dict):
        return f"models is {type(models).__name__}, not a mapping"
    for name, entry in models.items():
        if not isinstance(entry, dict):
            return f"models.{name} is {type(entry).__name__}, not a mapping"
        for key in ("file", "sha256"):
            if key not in entry:
                return f"models.{name}.{key} is missing"
        for key, kind in _ENTRY_FIELDS.items():
            value = entry.get(key)
            if key in entry and (not isinstance(value, kind) or isinstance(value, bool)):
                return f"models.{name}.{key} is {value!r:.40}, not {kind.__name__}"
        file = entry["file"]
        if not file or Path(file).name != file or file in (".", ".."):
            return f"models.{name}.file {file!r:.60} is not a file name in the weights folder"
    return None


def write_manifest(manifest: dict[str, Any], folder: Path | None = None) -> Path:
    path = (folder or weights_dir()) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    return path


def save_fp16(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, Any]) -> str:
    """Save floating tensors as fp16 (others unchanged) with JSON-encoded metadata; returns the sha256."""
    from safetensors.torch import save_file

    out = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
           for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata={k: json.dumps(v) for k, v in metadata.items()})
    return sha256(path)


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (floating ones as float32) and decoded metadata of a safetensors file."""
    from safetensors import safe_open

    from bench.weightfiles import safetensors_error

    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
            for k in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                v = f.get_tensor(k)
                tensors[k] = v.float() if v.is_floating_point() else v
    except (OSError, ValueError, RuntimeError) as e:  # a checkpoint= path given by the user, or a damaged file
        raise safetensors_error(path, e) from None
    except Exception as e:  # safetensors' SafetensorError (header too large, truncated) is not an OSError
        if type(e).__name__ != "SafetensorError":
            raise
        raise safetensors_error(path, e) from None
    return tensors, meta


def fp16_roundtrip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a state dict becomes after shipping (fp16) and loading (float32): for measuring shipped quality."""
    return {k: v.detach().half().float() if v.is_floating_point() else v for k, v in state.items()}


def _stage(recipe: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in recipe.items() if k not in ("file", "sha256", "bytes", "quality", "parameters",
                                                          "shipped_parameters", "unet_parameters")}


def record(folder: Path, name: str, recipe: dict[str, Any], quality: dict[str, Any] | None = None) -> dict:
    """Add (or replace) model `name` in `folder`'s manifest from a training recipe dict.

    A recipe that starts from earlier weights (`init` = "<file>@<sha256>") is a further training stage:
    when the manifest's current entry has that hash, the stages are chained (`recipe.stages`), so
    `bench zoo train` (bench.zoo.cli_impl.train) can replay them in order.
    """
    manifest = read_manifest(folder)
    manifest.setdefault("version", 1)
    models = manifest.setdefault("models", {})
    path = folder / recipe["file"]
    stages = [_stage(recipe)]
    prev = models.get(name)
    if recipe.get("init") and prev and str(recipe["init"]).endswith("@" + prev["sha256"]):
        stages = [*prev["recipe"].get("stages", [prev["recipe"]]), *stages]
    entry = {
        "file": recipe["file"],
        "sha256": sha256(path),
        "bytes": path.stat().st_size,
        "dtype": "float16",
        "parameters": recipe.get("parameters"),
        "recipe": stages[0] if len(stages) == 1 else {
            "stages": stages,
            "steps": sum(int(st["steps"]) for st in stages),
            "wall_seconds": round(sum(float(st.get("wall_seconds") or 0) for st in stages), 1),
            "hardware": stages[-1].get("hardware"),
        },
        "quality": {**(recipe.get("quality") or {}), **(quality or {})},
    }
    if name == "shapes-clip":
        entry["shipped_parameters"] = recipe.get("shipped_parameters")
        entry["note"] = ("token embedding stored as the rows the shapes grammar uses "
                         "(token_embedding.ids / .rows); expanded on load")
    models[name] = entry
    write_manifest(manifest, folder)
    return entry
