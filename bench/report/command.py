"""`bench report` and the report that `bench run` writes when it finishes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.store import DEFAULT_STORE


def register_cli(subparsers: Any) -> None:
    """Add the `report` subcommand to the `bench` parser's subparsers."""
    r = subparsers.add_parser(
        "report", help="write the HTML report of a run (or compare two runs)",
        description="Write one self-contained HTML file (plots, image grids, tables, provenance; no network) for a "
                    "run of the store: the latest run by default. With --compare RUN_A RUN_B: per-cell changes "
                    "from A to B with confidence intervals and both Pareto fronts. Exit 2 on bad input.")
    r.add_argument("--store", default=DEFAULT_STORE, help=f"results database (default {DEFAULT_STORE})")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--run", help="run id (default: the latest run)")
    g.add_argument("--suite", help="the latest run of this suite")
    r.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="compare two runs (B - A)")
    r.add_argument("-o", "--output", help="output HTML file (default reports/<suite>.html, "
                                          "or reports/compare-<A>-<B>.html)")
    r.set_defaults(fn=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from bench.report.html import write_report

    if args.compare and (args.run or args.suite):
        raise BenchError("--compare RUN_A RUN_B names both runs; do not combine it with --run or --suite")
    if args.output and Path(args.output).is_dir():
        raise BenchError(f"-o {args.output} is a folder; give a file name such as {Path(args.output) / 'report.html'}")
    path = write_report(args.store, run_id=args.run, suite=args.suite, out=args.output, compare=args.compare)
    print(f"report: {path}")
    return 0


def default_run_report(store_path: str | Path, suite: str) -> Path:
    """Where `bench run` writes its report when neither --report nor the suite's report.out says: beside the store,
    so runs into different stores never overwrite one another's report."""
    return Path(store_path).parent / "reports" / f"{suite}.html"


def report_after_run(store_path: str | Path, run_id: str | None, out: str | Path | None = None,
                     enabled: bool | None = None) -> Path | None:
    """Write the run's report after `bench run`, as its stored resolved suite says (report.enabled / report.out);
    the command line wins: `out` (--report PATH) writes there even when the suite disables the report,
    `enabled=False` (--no-report) writes none. Default path: default_run_report().

    Never raises: the results are already committed, so a report problem is a one-line warning and the
    run keeps its exit code. Returns the path written, or None.
    """
    if run_id is None:
        return None
    try:
        from bench.store import Store

        with Store(store_path, readonly=True) as store:
            run = store.run(run_id)
        spec = (run.get("run_spec") or {}).get("report") or {}
        if enabled is False or (out is None and not spec.get("enabled", True)):
            return None
        from bench.report.html import write_report

        path = write_report(store_path, run_id=run_id,
                            out=out or spec.get("out") or default_run_report(store_path, run["suite"]))
    except Exception as e:  # the run's results are safe in the store; say so and go on
        line = (str(e).splitlines() or [""])[0]
        print(f"warning: the report was not written ({type(e).__name__}: {line}); the results are in {store_path}: "
              f"bench report --store {store_path} --run {run_id}", file=sys.stderr)
        return None
    print(f"report: {path}")
    return path
