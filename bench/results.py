"""The results table that `bench.load_results` and `bench export` return, and its column schema version."""

from __future__ import annotations

import contextlib
import json
import warnings
from typing import Any

import pandas as pd

from bench.spec import BUILTIN_AXES

# The export columns (bench.load_results, `bench export`): 2 renamed nfe_requested -> nfe (the axis: requested
# steps; nfe_counted is the measured column) and added one column per extra axis and `cell_axes` (every axis of the cell, JSON).
EXPORT_SCHEMA_VERSION = 2
DEPRECATED_COLUMNS = {"nfe_requested": "nfe"}  # old name -> new name, readable with a FutureWarning for a release


class Results(pd.DataFrame):
    """The results table; a column read by its schema-1 name (`nfe_requested`) still works for one release,
    with a FutureWarning naming the new one."""

    @property
    def _constructor(self) -> type:
        return Results

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(_renamed(self, key))

    def __getattr__(self, name: str) -> Any:
        if name in DEPRECATED_COLUMNS:
            return self[name]
        return super().__getattr__(name)


def _renamed(df: Any, key: Any) -> Any:
    if isinstance(key, str) and key in DEPRECATED_COLUMNS and key not in df.columns:
        warnings.warn(f"results column {key!r} is now {DEPRECATED_COLUMNS[key]!r} (export schema "
                      f"{EXPORT_SCHEMA_VERSION}); the old name stops working in the next release", FutureWarning,
                      stacklevel=3)
        return DEPRECATED_COLUMNS[key]
    return key


def extra_axes(df: Any) -> list[str]:
    """The axes of a results table beyond nfe / resolution / hardware (guidance, registered axes), in suite order:
    from `df.attrs["axes"]` (Store.results), else from its JSON column of every cell's axes (`cell_axes`; `axes`
    before it was renamed); only those with a column."""
    names = list(getattr(df, "attrs", {}).get("axes") or [])
    column = next((c for c in ("cell_axes", "axes") if c in df.columns), None)
    if not names and column is not None:
        for text in df[column].dropna().unique():
            with contextlib.suppress(TypeError, ValueError, AttributeError):
                names += [k for k in json.loads(text) if k not in names]
    return [a for a in names if a not in BUILTIN_AXES and a in df.columns]
