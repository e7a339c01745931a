"""Where the repository is, for tests that must not depend on the working directory or on which `bench` the
interpreter would import: paths are absolute, and a subprocess imports `bench` from this checkout."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "suites"


def bench_env(*first: str | Path, **extra: str) -> dict[str, str]:
    """os.environ with PYTHONPATH = `first` paths, this checkout, then the inherited PYTHONPATH: `python -m bench`
    in a subprocess runs this checkout's bench (not an installed copy), from any working directory."""
    parts = [str(p) for p in first] + [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(parts), **extra}
