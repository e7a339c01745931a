"""Reading weight files: safetensors, or a torch file with `weights_only=True`; every failure is one line naming
the file (a BenchError), and never passes on torch's advice to retry with `weights_only=False` (that runs the
pickle's code: flowmap-bench never does it)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.errors import BenchError

_ADVICE = re.compile(r"weights_only\s*=\s*False|re-running|rerunning|trust the source", re.IGNORECASE)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _torch_refusal(exc: BaseException) -> str:
    """What torch's weights_only unpickler objected to, without its advice to load the file unsafely."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    after = [ln.split("WeightsUnpickler error:", 1)[1].strip() for ln in lines if "WeightsUnpickler error:" in ln]
    cause = next((ln for ln in lines if ln.startswith("Unsupported")), None) or next((a for a in after if a), None)
    if cause:
        return re.split(r"\.\s", cause)[0].strip(" .")
    first = lines[0] if lines else ""
    return first if first and not _ADVICE.search(first) else type(exc).__name__


def safetensors_error(path: str | Path, exc: BaseException) -> BenchError:
    return BenchError(f"cannot read weights file {path}: not a valid safetensors file ({_first_line(exc)})")


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """A state dict (name -> tensor) from `path`: `.safetensors`, or any other file through
    `torch.load(weights_only=True)` (plain tensors and containers only; pickles that run code are refused).
    A `{"state_dict": {...}}` wrapper is unwrapped."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise BenchError(f"weights file {p} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd: Any = load_file(str(p), device="cpu")
        except Exception as e:  # SafetensorError (header too large, truncated), OSError
            raise safetensors_error(p, e) from None
    else:
        try:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:  # UnpicklingError for code, RuntimeError / EOFError for a corrupt file
            raise BenchError(f"cannot load weights file {p}: torch refused it with weights_only=True "
                             f"({_torch_refusal(e)}); flowmap-bench loads only plain tensors - save the state "
                             "dict as safetensors (safetensors.torch.save_file)") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BenchError(f"cannot load weights file {p}: not a state dict of tensors")
    return dict(sd)
