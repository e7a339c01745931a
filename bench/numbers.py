"""Reading numbers back from stored records (SQLite rows, baseline JSON), where missing and NaN mean 'no value'."""

from __future__ import annotations

import math
from typing import Any


def finite(v: Any) -> float | None:
    """`v` as a float, or None when it is missing, not a number, NaN or infinite."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
