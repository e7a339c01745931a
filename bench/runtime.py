"""Per-cell runtime state: what a cell sets on the process, restored when the cell ends.

A worker process is reused across cells, so anything one cell changes on the process (torch's intra-op thread
count today; default dtype, compile mode, seeding can join as more `Knob`s) must be put back, or the next cell
runs under it while its results name a different hardware spec. `cell_runtime` snapshots every knob on entry,
applies the values the cell asks for, and restores every knob on exit, also when the cell raised or changed
a knob itself (a sampler calling torch.set_num_threads). A bottom-level module: it imports torch only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Knob:
    """One piece of process state a cell may set: how to read it and how to set it."""

    name: str
    get: Callable[[], Any]
    set: Callable[[Any], None]


def knobs() -> list[Knob]:
    """Every knob `cell_runtime` snapshots and restores, in the order they are applied."""
    import torch

    return [Knob("threads", torch.get_num_threads, torch.set_num_threads)]


@contextmanager
def cell_runtime(*, threads: int | None = None) -> Iterator[dict[str, Any]]:
    """Run a cell under this runtime state (None: leave as the process has it) and restore all knobs after.

    Yields the state in effect inside the cell, e.g. {"threads": 1}.
    """
    if threads is not None and (isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    wanted: dict[str, Any] = {"threads": threads}
    ks = knobs()
    saved = {k.name: k.get() for k in ks}
    try:
        for k in ks:
            value = wanted.get(k.name)
            if value is not None and value != saved[k.name]:
                k.set(value)
        yield {k.name: k.get() for k in ks}
    finally:
        for k in reversed(ks):
            if k.get() != saved[k.name]:
                k.set(saved[k.name])
