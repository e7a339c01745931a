"""Suite -> cells: every sampler (and swept-option variant) x its axes, each a frozen CellSpec, with skip reasons."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.adapters.registry import build_sampler
from bench.datasets import build_dataset
from bench.errors import BenchError
from bench.hardware import HardwareSpec
from bench.spec import AXES, CellSpec, variant_label
from bench.suite import SamplerSpec, Suite


@dataclass(frozen=True)
class Cell:
    """One point of the sweep: its resolved spec, its key (the spec's hash: same key, same numbers, so reruns
    resume), and whether it is planned or skipped (with the reason)."""

    spec: CellSpec
    status: str = "planned"  # planned | skipped
    reason: str | None = None
    # Image ranges of a sharded cell (bench.shards; not part of the key: the numbers are the same), and why a
    # cell the suite asked to shard stays whole
    shards: tuple[tuple[int, int], ...] = ()
    shard_note: str | None = None

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def suite(self) -> str:
        return self.spec.suite

    @property
    def sampler_id(self) -> str:
        return self.spec.sampler

    @property
    def adapter(self) -> str:
        return self.spec.adapter

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def options(self) -> dict[str, Any]:
        return self.spec.options

    @property
    def nfe(self) -> int:
        return self.spec.nfe

    @property
    def resolution(self) -> int:
        return self.spec.resolution

    @property
    def hardware(self) -> str:
        return self.spec.hardware

    @property
    def guidance(self) -> float | None:
        return self.spec.guidance

    @property
    def axes(self) -> dict[str, Any]:
        return self.spec.axes

    @property
    def label(self) -> str:
        return self.spec.label()


def _variants(spec: SamplerSpec) -> list[dict[str, Any]]:
    """Every combination of the sampler's swept options, in the order the suite lists them ([{}] if none)."""
    names = list(spec.sweep)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(spec.sweep[n] for n in names))]


def _build(suite: Suite, spec: SamplerSpec, sampler_id: str, options: dict[str, Any]) -> Any:
    try:
        return build_sampler(spec.adapter, options)
    except BenchError as e:
        raise BenchError(f"{suite.path}: sampler {sampler_id!r}: {e}") from None


def plan(suite: Suite, check_hardware: bool = True, workers: Callable[[str], int] | None = None) -> list[Cell]:
    """Every cell of the suite, planned or skipped with the reason (nothing is silently dropped).

    `workers(hardware label)`: how many tasks of that hardware the executor runs at once, for `shard_size: auto`
    (None: not known here, e.g. a dry run for a Ray cluster; auto cells then plan whole, and say so)."""
    m = suite.model
    metrics = {k: dict(v or {}) for k, v in m.metrics.items()}
    dataset = {"name": m.dataset.name, **m.dataset.options()}
    dataset_key = _dataset_key(m.dataset.name, m.dataset.options())
    saved = m.save_samples.model_dump() if m.save_samples is not None else None
    cells: list[Cell] = []
    availability: dict[str, str | None] = {}
    for spec in m.samplers:
        extra = spec.axis_values(m.axes)
        for variant in _variants(spec):
            sampler_id = variant_label(spec.id, variant)
            options = {**spec.options, **variant}
            info = _build(suite, spec, sampler_id, options).info
            for hw_text in spec.hardware or m.axes.hardware:
                hw = HardwareSpec.parse(hw_text)
                if hw.label not in availability:
                    availability[hw.label] = hw.availability() if check_hardware else None
                for res in spec.resolution or m.axes.resolution:
                    for nfe in sorted(spec.nfe or m.axes.nfe):
                        for combo in itertools.product(*extra.values()):
                            axes = {"nfe": nfe, "resolution": res, "hardware": hw.label,
                                    **dict(zip(extra, combo, strict=True))}
                            reason = availability[hw.label] or info.unsupported(nfe, res, hw)
                            for name in extra:
                                check = AXES[name].check
                                if reason is None and check is not None:
                                    reason = check(info, axes[name])
                            cell_spec = CellSpec(
                                suite=m.name, sampler=sampler_id, adapter=spec.adapter, family=info.family,
                                version=info.version, options=options, axes=axes, dataset=dataset,
                                samples=m.samples_at(res), base_seed=m.base_seed, metrics=metrics,
                                grid=m.report.grid, variant=variant, dataset_key=dataset_key, save_samples=saved)
                            cells.append(Cell(cell_spec, "skipped" if reason else "planned", reason))
    _check_unique(suite, cells)
    return [_sharded(c, m.shard_size, m.batch_size, workers) for c in cells] if m.shard_size else cells


def _sharded(cell: Cell, shard_size: int | str, batch_size: int, workers: Callable[[str], int] | None) -> Cell:
    """The cell with its image ranges when the suite shards it; a cell stays whole, with the reason, when a metric
    needs the images themselves (its features cannot be merged) or saved samples are asked for."""
    from dataclasses import replace

    from bench.metrics.streaming import feature_requests
    from bench.shards import auto_shard_size, shard_ranges

    if cell.status != "planned":
        return cell
    if shard_size == "auto":
        if workers is None:
            return replace(cell, shard_note="shard_size auto: split when the run knows its workers")
        size = auto_shard_size(cell.spec.samples, batch_size, workers(cell.hardware))
        if size is None:
            return cell
        shard_size = size
    ranges = shard_ranges(cell.spec.samples, batch_size, int(shard_size))
    if len(ranges) < 2:
        return cell
    requests, why = feature_requests(cell.spec.metrics)
    if requests is None:
        return replace(cell, shard_note=f"not sharded: {why}")
    if cell.spec.save_samples:
        return replace(cell, shard_note="not sharded: save_samples keeps the whole cell's images")
    return replace(cell, shards=tuple(ranges))


def _dataset_key(name: str, options: dict[str, Any]) -> str:
    """The dataset's identity with its data version (part of every cell key). A dataset that cannot be built
    here (reference images not on this machine) still plans; its cells fail with the reason when they run."""
    try:
        return build_dataset(name, options).key()
    except BenchError as e:
        return f"unavailable here: {e}"


def _check_unique(suite: Suite, cells: list[Cell]) -> None:
    seen: dict[str, Cell] = {}
    for c in cells:
        other = seen.get(c.key)
        if other is not None:
            raise BenchError(f"{suite.path}: cells {other.label!r} and {c.label!r} are the same cell (same "
                             "adapter, options and axes): give one of the samplers other options or remove it")
        seen[c.key] = c
