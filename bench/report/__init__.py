"""Reports: Pareto analysis, plots and the self-contained HTML report of a run (or of two runs compared).

`write_report(store_path, run_id=None, suite=None, out=None, compare=None)` is the front door; the CLI is
`bench report` (bench/report/command.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path


def write_report(store_path: Any, run_id: str | None = None, suite: str | None = None, out: Any = None,
                 compare: Any = None) -> Path:
    """See bench.report.html.write_report (imported lazily: matplotlib loads only when a report is made)."""
    from bench.report.html import write_report as _write

    return _write(store_path, run_id=run_id, suite=suite, out=out, compare=compare)


__all__ = ["write_report"]
