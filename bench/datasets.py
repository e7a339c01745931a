"""Suite datasets: where prompts / labels and reference images come from. Registered by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bench.errors import BenchError

if TYPE_CHECKING:
    import torch


@dataclass
class Conditions:
    """What sample i is conditioned on: a prompt, a class label, both or neither."""

    prompts: list[str] | None = None
    labels: list[int] | None = None


class Dataset(Protocol):
    """Index i is the i-th eval item: its condition drives sample i, its image is reference image i."""

    name: str
    conditioning: str  # none | class | text

    def conditions(self, indices: Sequence[int]) -> Conditions: ...

    def images(self, indices: Sequence[int], resolution: int) -> torch.Tensor:
        """uint8 (N, 3, R, R) reference images."""
        ...

    def key(self) -> str:
        """Identity of the data (name, split, version, options) for reference-statistics cache keys."""
        ...


_DATASETS: dict[str, str] = {
    "gmm": "bench.zoo.gmm:GaussianMixtureDataset",
    "shapes": "bench.zoo.shapes:ShapesDataset",
    "prompts": "bench.datasets_prompts:PromptDataset",
}


def register_dataset(name: str, target: str) -> None:
    """Register a dataset class as 'module:Class' (imported lazily)."""
    _DATASETS[name] = target


def dataset_names() -> list[str]:
    return sorted(_DATASETS)


def build_dataset(name: str, options: dict[str, Any]) -> Dataset:
    import importlib

    if name not in _DATASETS:
        raise BenchError(f"unknown dataset {name!r} (known: {', '.join(dataset_names())})")
    module_name, _, attr = _DATASETS[name].partition(":")
    try:
        cls: Callable[..., Dataset] = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise BenchError(f"dataset {name!r} is not available: {e}") from None
    try:
        return cls(**options)
    except TypeError as e:
        raise BenchError(f"dataset {name!r}: bad options {sorted(options)}: {e}") from None
