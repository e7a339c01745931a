"""flowmap-bench: benchmark few-step image samplers on equal terms (NFE x resolution x hardware)."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    import pandas as pd


def load_results(store: str | None = None, run: str | None = None, suite: str | None = None) -> pd.DataFrame:
    """One tidy row per cell x metric (see README "Results as data"); latest run of each suite by default.
    `store` defaults to `bench.store.DEFAULT_STORE` (runs/bench.sqlite)."""
    from bench.store import DEFAULT_STORE, Store

    with Store(store or DEFAULT_STORE, readonly=True) as s:
        return s.results(run_id=run, suite=suite)


__all__ = ["__version__", "load_results"]

