"""Planned cells for tests that write stores by hand (the planner makes them from suites in real runs)."""

from __future__ import annotations

from typing import Any

from bench.plan import Cell
from bench.spec import CellSpec


def make_cell(suite: str, sampler: str, adapter: str, family: str, nfe: int, resolution: int, hardware: str,
              tag: str = "", status: str = "planned", reason: str | None = None,
              axes: dict[str, Any] | None = None) -> Cell:
    """A cell whose key differs by `tag` too (as a changed sampler version would make it), so the same cell in
    several synthetic runs keeps several results."""
    spec = CellSpec(suite=suite, sampler=sampler, adapter=adapter, family=family, version=f"test-{tag}", options={},
                    axes={"nfe": nfe, "resolution": resolution, "hardware": hardware, **(axes or {})},
                    dataset={"name": "test"}, samples=0)
    return Cell(spec, status, reason)
