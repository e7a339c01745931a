"""flowmap-bench: benchmark few-step image samplers on equal terms (NFE x resolution x hardware)."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    import pandas as pd


def load_results(store: str = "runs/bench.sqlite", run: str | None = None, suite: str | None = None) -> pd.DataFrame:
    """One tidy row per cell x metric (see README "Results as data"); latest run of each suite by default."""
    from bench.store import Store

    with Store(store, readonly=True) as s:
        return s.results(run_id=run, suite=suite)


__all__ = ["__version__", "load_results"]

