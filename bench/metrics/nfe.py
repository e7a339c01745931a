"""Count network function evaluations by hooking forward calls, per image (a doubled CFG batch counts 2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class NFECounter:
    """Context manager: counts rows passed through each hooked module's forward; `per_image(n)` divides."""

    def __init__(self, modules: Sequence[torch.nn.Module]) -> None:
        self.modules = [m for m in modules if m is not None]
        self.rows = 0
        self.calls = 0
        self._handles: list[Any] = []

    def _hook(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = args[0] if args else next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
        self.calls += 1
        self.rows += int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() > 0 else 1

    def __enter__(self) -> NFECounter:
        self._handles = [m.register_forward_pre_hook(self._hook, with_kwargs=True) for m in self.modules]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def per_image(self, images: int) -> float:
        return self.rows / images if images else 0.0
