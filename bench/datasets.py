"""Suite datasets: where prompts / labels and reference images come from. Registered by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard

from bench.errors import BenchError

if TYPE_CHECKING:
    import torch


@dataclass
class Conditions:
    """What sample i is conditioned on: a prompt, a class label, both or neither."""

    prompts: list[str] | None = None
    labels: list[int] | None = None


class Dataset(Protocol):
    """Index i is the i-th eval item: its condition drives sample i, its image is reference image i.

    Optional capability (see `MatchedDataset`): `matched_images(indices, resolution, draw=1)`, another
    independent image with the same condition as item i. Datasets that have it get the condition-matched
    FD noise floor; the others (prompt files, image folders) get the disjoint-block floor.
    """

    name: str
    conditioning: str  # none | class | text

    def conditions(self, indices: Sequence[int]) -> Conditions: ...

    def images(self, indices: Sequence[int], resolution: int) -> torch.Tensor:
        """uint8 (N, 3, R, R) reference images."""
        ...

    def key(self) -> str:
        """Identity of the data (name, split, version, options) for reference-statistics cache keys."""
        ...


class MatchedDataset(Dataset, Protocol):
    """A dataset that can draw fresh images for a given condition (the gmm and shapes worlds can)."""

    def matched_images(self, indices: Sequence[int], resolution: int, draw: int = 1) -> torch.Tensor:
        """uint8 (N, 3, R, R): for each index i, a new image with the same condition (label / caption) as item i,
        independent of item i's image and of every other item's. Deterministic from (i, draw); draws >= 1 are
        mutually independent (draw 0 would be the item itself, so it is not a valid draw)."""
        ...


def has_matched_draws(dataset: Dataset) -> TypeGuard[MatchedDataset]:
    """Whether `dataset` implements `matched_images` (duck-typed, so third-party datasets can opt in)."""
    return callable(getattr(dataset, "matched_images", None))


_DATASETS: dict[str, str] = {
    "gmm": "bench.zoo.gmm:GaussianMixtureDataset",
    "shapes": "bench.zoo.shapes:ShapesDataset",
    "prompts": "bench.datasets_prompts:PromptDataset",
    "folder": "bench.datasets_folder:FolderDataset",
}


def register_dataset(name: str, target: str) -> None:
    """Register a dataset class as 'module:Class' (imported lazily)."""
    _DATASETS[name] = target


ENTRY_POINT_GROUP = "bench.datasets"  # `name = "module:Class"`, read on first miss in every process


def _entry_point_datasets() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in _DATASETS}


def dataset_names() -> list[str]:
    """Every registered dataset, entry points included."""
    return sorted({*_DATASETS, *_entry_point_datasets()})


def dataset_target(name: str) -> str:
    """The 'module:Class' a dataset name stands for (entry points included); one line when it is unknown."""
    if name not in _DATASETS:
        _DATASETS.update({n: t for n, t in _entry_point_datasets().items() if n == name})
    if name not in _DATASETS:
        raise BenchError(f"unknown dataset {name!r} (known: {', '.join(dataset_names())})")
    return _DATASETS[name]


def build_dataset(name: str, options: dict[str, Any]) -> Dataset:
    from bench.importing import import_target

    if name not in _DATASETS:
        _DATASETS.update({n: t for n, t in _entry_point_datasets().items() if n == name})
    if name not in _DATASETS:
        raise BenchError(f"unknown dataset {name!r} (known: {', '.join(dataset_names())})")
    try:
        cls: Callable[..., Dataset] = import_target(_DATASETS[name])
    except (ImportError, AttributeError) as e:
        raise BenchError(f"dataset {name!r} is not available: {e}") from None
    try:
        return cls(**options)
    except TypeError as e:
        raise BenchError(f"dataset {name!r}: bad options {sorted(options)}: {e}") from None
