"""Suite -> cells: the cartesian product of samplers x NFE x resolution x hardware, with skip reasons."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import bench
from bench.adapters.registry import build_sampler
from bench.errors import BenchError
from bench.hardware import HardwareSpec
from bench.suite import Suite


@dataclass(frozen=True)
class Cell:
    """One point of the sweep. `key` identifies its results: same key, same numbers (so reruns resume)."""

    suite: str
    sampler_id: str
    adapter: str
    family: str
    nfe: int
    resolution: int
    hardware: str
    key: str
    status: str = "planned"  # planned | skipped
    reason: str | None = None
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    guidance: float | None = None

    @property
    def label(self) -> str:
        return f"{self.sampler_id} nfe={self.nfe} res={self.resolution} hw={self.hardware}"


def cell_key(suite: Suite, sampler: Any, sampler_version: str, nfe: int, resolution: int, hardware: str) -> str:
    """Hash of everything that determines a cell's numbers (not batch size: per-image seeds make it irrelevant)."""
    m = suite.model
    payload = {
        "bench": bench.__version__,
        "suite": m.name,
        "dataset": m.dataset.model_dump(),
        "samples": m.samples_at(resolution),
        "base_seed": m.base_seed,
        "metrics": m.metrics,
        "sampler": {"id": sampler.id, "adapter": sampler.adapter, "options": sampler.options,
                    "guidance": sampler.guidance, "version": sampler_version},
        "nfe": nfe,
        "resolution": resolution,
        "hardware": hardware,
        "grid": m.report.grid,
    }
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def plan(suite: Suite, check_hardware: bool = True) -> list[Cell]:
    """Every cell of the suite, planned or skipped with the reason (nothing is silently dropped)."""
    m = suite.model
    cells: list[Cell] = []
    availability: dict[str, str | None] = {}
    for spec in m.samplers:
        try:
            sampler = build_sampler(spec.adapter, dict(spec.options))
        except BenchError as e:
            raise BenchError(f"{suite.path}: sampler {spec.id!r}: {e}") from None
        info = sampler.info
        for hw_text in spec.hardware or m.axes.hardware:
            hw = HardwareSpec.parse(hw_text)
            if hw.label not in availability:
                availability[hw.label] = hw.availability() if check_hardware else None
            for res in spec.resolution or m.axes.resolution:
                for nfe in sorted(spec.nfe or m.axes.nfe):
                    reason = availability[hw.label] or info.unsupported(nfe, res, hw)
                    if reason is None and spec.guidance is not None and info.conditioning == "none":
                        reason = "guidance set but the sampler is unconditional"
                    cells.append(Cell(
                        suite=m.name, sampler_id=spec.id, adapter=spec.adapter, family=info.family,
                        nfe=nfe, resolution=res, hardware=hw.label,
                        key=cell_key(suite, spec, info.version, nfe, res, hw.label),
                        status="skipped" if reason else "planned", reason=reason,
                        options=dict(spec.options), guidance=spec.guidance,
                    ))
    return cells
