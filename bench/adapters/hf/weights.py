"""Where a diffusers sampler's weights come from: a local folder, the Hugging Face cache, or `tiny:<kind>`.

Nothing is downloaded unless a sampler says `local_files_only: false` *and* HF_HUB_OFFLINE is not set.
Otherwise a model that is not on disk is one line naming it, where it was looked for and how to provide it
(`MissingWeightsError`, which fails the cell and lets the sweep go on).

Spellings accepted wherever a model or a checkpoint file is named:
  /abs/path, ./rel/path, ~/path     a local folder (pipeline) or file (UNet checkpoint, LoRA)
  org/name                          a Hugging Face repository (the pipeline)
  org/name/file.safetensors         one file of a Hugging Face repository (a UNet checkpoint or a LoRA)
  tiny:<kind>[/file]                a tiny random pipeline built offline (bench.adapters.hf.tiny)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import MissingWeightsError

TINY = "tiny:"
DOCS = "docs/real-models.md"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_cache() -> str:
    """The Hugging Face cache folder, from the environment at call time (HF_HUB_CACHE, HF_HOME)."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return str(Path(env).expanduser())
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    return str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface" / "hub")


def _looks_local(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~", ".\\")) or os.path.isabs(spec) or Path(spec).expanduser().exists()


def _tiny(spec: str) -> Path:
    from bench.adapters.hf.tiny import build

    kind, _, rest = spec[len(TINY):].partition("/")
    folder = build(kind)
    path = folder / rest if rest else folder
    if not path.exists():
        raise MissingWeightsError(f"{spec}: {path} does not exist (files of tiny:{kind}: "
                                  f"{', '.join(sorted(p.name for p in folder.iterdir()))})")
    return path


def _fix(repo: str, filename: str | None = None) -> str:
    what = f"hf download {repo}" + (f" {filename}" if filename else "")
    return (f"pre-fetch it on a machine with internet with `{what}` and copy the cache (HF_HOME) here, or point "
            f"the option at a local {'file' if filename else 'folder'} (see {DOCS})")


@dataclass(frozen=True)
class Resolved:
    """A model or file ready for from_pretrained / load: `ref` is a local path or (downloads allowed) a repo id."""

    ref: str
    local: bool
    source: str  # for provenance: "tiny:sdxl -> /path", "stabilityai/sdxl-turbo (HF cache)", ...


def _tiny_or_local(spec: str, exists: Callable[[Path], bool], missing: str) -> Resolved | None:
    """`tiny:` specs and local paths (None for anything else); `missing` is formatted with {path}."""
    if spec.startswith(TINY):
        path = _tiny(spec)
        return Resolved(str(path), True, f"{spec} -> {path}")
    if _looks_local(spec):
        path = Path(spec).expanduser()
        if not exists(path):
            raise MissingWeightsError(missing.format(path=path))
        return Resolved(str(path.resolve()), True, str(path.resolve()))
    return None


def resolve_model(spec: str, option: str = "model", local_files_only: bool = True,
                  revision: str | None = None) -> Resolved:
    """A pipeline folder for `spec`; MissingWeightsError (one line, with the fix) when it is not available offline."""
    spec = str(spec).strip()
    local = _tiny_or_local(spec, lambda p: p.is_dir(), (
        f"model folder {{path}} (option `{option}`) does not exist; save a pipeline there with "
        "`pipe.save_pretrained(...)` or name a Hugging Face model id"))
    if local is not None:
        return local
    snapshot = cached_snapshot(spec, revision)
    if snapshot is not None:
        return Resolved(str(snapshot), True, f"{spec} (Hugging Face cache {snapshot})")
    if local_files_only or hub_offline():
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "local_files_only is on"
        raise MissingWeightsError(
            f"model {spec!r} (option `{option}`) is not available offline: not in the Hugging Face cache "
            f"{hub_cache()} ({why}); {_fix(spec)}")
    return Resolved(spec, False, f"{spec} (downloaded from the Hugging Face hub)")


def _repo_folder(repo: str) -> Path:
    return Path(hub_cache()) / ("models--" + repo.replace("/", "--"))


def cached_snapshot(repo: str, revision: str | None = None) -> Path | None:
    """The cached snapshot folder of a Hugging Face repository, read from the cache layout alone.

    huggingface_hub's own look-ups (even with local_files_only) may contact the Hub for request headers, so the
    offline path never calls them: refs/<revision> names the commit, snapshots/<commit> holds the files."""
    folder = _repo_folder(repo)
    rev = revision or "main"
    ref = folder / "refs" / rev
    try:
        commit = ref.read_text().strip() if ref.is_file() else rev
    except OSError:
        return None
    snap = folder / "snapshots" / commit
    return snap if snap.is_dir() and any(snap.iterdir()) else None


def split_repo_file(spec: str) -> tuple[str, str]:
    parts = spec.split("/")
    if len(parts) < 3:
        raise MissingWeightsError(f"checkpoint {spec!r}: expected a local file, tiny:<kind>/<file> or "
                                  "<org>/<repo>/<file> (a file of a Hugging Face repository)")
    return "/".join(parts[:2]), "/".join(parts[2:])


def resolve_file(spec: str, option: str, local_files_only: bool = True) -> Resolved:
    """A local file for a checkpoint / LoRA spec; MissingWeightsError when it is not available offline."""
    spec = str(spec).strip()
    local = _tiny_or_local(spec, lambda p: p.exists(), f"checkpoint {{path}} (option `{option}`) does not exist")
    if local is not None:
        return local
    repo, filename = split_repo_file(spec)
    snap = cached_snapshot(repo)
    if snap is not None and (snap / filename).is_file():
        path = snap / filename
        return Resolved(str(path), True, f"{spec} (Hugging Face cache {path})")
    if local_files_only or hub_offline():
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "local_files_only is on"
        raise MissingWeightsError(
            f"checkpoint {filename!r} of {repo!r} (option `{option}`) is not available offline: not in the Hugging "
            f"Face cache {hub_cache()} ({why}); {_fix(repo, filename)}")
    from huggingface_hub import hf_hub_download

    downloaded = hf_hub_download(repo, filename)
    return Resolved(str(downloaded), True, f"{spec} (downloaded from the Hugging Face hub to {downloaded})")


def load_state_dict(path: str) -> dict[str, Any]:
    """Tensors from .safetensors, or a torch file with weights_only=True (pickles that run code are refused); a
    file that cannot be read is one line naming it (bench.weightfiles)."""
    from bench.errors import BenchError
    from bench.weightfiles import load_state_dict as load

    try:
        return load(path)
    except BenchError as e:
        raise MissingWeightsError(str(e)) from None


# --------------------------------------------------------------------------------------------- doctor
def is_present(spec: str, kind: str = "model") -> tuple[bool, str]:
    """Whether a model / file spec is available without the network, and where (for `bench doctor`).
    kind: model (a pipeline folder), vae, lora (a folder with pytorch_lora_weights.safetensors), file, local."""
    spec = str(spec)
    if spec.startswith(TINY):
        from bench.adapters.hf.tiny import KINDS, tiny_root

        kind_name, _, rest = spec[len(TINY):].partition("/")
        if kind_name not in KINDS:
            return False, f"unknown tiny model 'tiny:{kind_name}' (kinds: {', '.join(KINDS)})"
        folder = tiny_root() / kind_name
        if not folder.exists():  # its files are known once built; the build needs no network
            return True, f"built on first use under {folder}"
        path = folder / rest if rest else folder
        return (True, str(path)) if path.exists() else (False, f"{path} does not exist in the built tiny:{kind_name}")
    if kind == "local" or _looks_local(spec):
        p = Path(spec).expanduser()
        return p.exists(), str(p) if p.exists() else f"{p} does not exist"
    if kind in ("model", "vae", "lora"):
        snap = cached_snapshot(spec)
        if snap is not None and kind == "lora" and not (snap / "pytorch_lora_weights.safetensors").is_file():
            snap = None
        return (True, str(snap)) if snap is not None else (False, f"not in {hub_cache()}: {_fix(spec)}")
    try:
        repo, filename = split_repo_file(spec)
    except MissingWeightsError as e:
        return False, str(e)
    snap = cached_snapshot(repo)
    if snap is not None and (snap / filename).is_file():
        return True, str(snap / filename)
    return False, f"not in {hub_cache()}: {_fix(repo, filename)}"


def configured_models(sampler: Any) -> list[tuple[str, str]]:
    """(spec, kind) of every model and checkpoint file a diffusers sampler instance is configured to use."""
    fn = getattr(sampler, "weights_needed", None)
    return list(fn()) if callable(fn) else []


def offline_status(suite_paths: list[str] | None = None) -> list[tuple[str, bool, str]]:
    """`bench doctor` rows (name, ok, detail) for the models configured in suites (default: suites/*.yaml)
    that use a diffusers / flow-map adapter, plus each adapter's default model."""
    import glob

    from bench.adapters.registry import build_sampler

    rows: list[tuple[str, bool, str]] = []
    seen: set[tuple[str, str]] = set()
    paths = suite_paths if suite_paths is not None else sorted(glob.glob("suites/*.yaml"))
    configs: list[tuple[str, str, dict[str, Any]]] = []
    for p in paths:
        try:
            import yaml

            data = yaml.safe_load(Path(p).read_text(encoding="utf-8")) or {}
        except (OSError, ValueError) as e:  # a broken suite must not hide the others
            rows.append((f"suite {p}", False, f"unreadable: {e}"))
            continue
        for s in data.get("samplers") or []:
            if isinstance(s, dict) and isinstance(s.get("adapter"), str):
                configs.append((f"{Path(p).name}:{s.get('id')}", s["adapter"], dict(s.get("options") or {})))
    for name in DEFAULT_ADAPTERS:
        configs.append((f"default {name}", name, {}))
    for label, adapter, options in configs:
        if adapter not in DEFAULT_ADAPTERS and not adapter.startswith(("bench.adapters.hf", "bench.adapters.flow_map")):
            continue
        try:
            sampler = build_sampler(adapter, options)
        except Exception as e:
            rows.append((label, False, f"cannot configure: {str(e).splitlines()[0]}"))
            continue
        for spec, kind in configured_models(sampler):
            if (spec, kind) in seen:
                continue
            seen.add((spec, kind))
            ok, detail = is_present(spec, kind)
            rows.append((f"{label} {kind} {spec}", ok, detail))
    return rows


DEFAULT_ADAPTERS = ("sdxl-turbo", "lcm", "consistency-model", "sdxl-lightning", "dmd2", "hyper-sd", "flow-map",
                    "diffusers-ode")
