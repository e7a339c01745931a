"""Developer sessions. They run in the current environment (no per-session venv): torch is large and is
installed once by the README's install command, so `nox -s tests` inside that venv reuses it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (what CI runs)."""
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff on everything; mypy on the harness package."""
    session.run("ruff", "check", "bench", "tests", "noxfile.py")
    session.run("mypy", "bench")


@nox.session
def smoke(session: nox.Session) -> None:
    """Run the smoke suite end to end into runs/smoke.sqlite."""
    session.run("bench", "run", "suites/smoke.yaml", "--store", "runs/smoke.sqlite", *session.posargs)


BENCHMARK_TOLERANCE = os.environ.get("BENCH_BENCHMARK_TOLERANCE", "25")  # percent, on the median
CI_SUITE, CI_BASELINE, CI_STORE = "suites/ci.yaml", "baselines/ci.cpu-threads-1.json", "runs/ci-gate.sqlite"


def _machine_slug(session: nox.Session) -> str:
    """GPU name, else CPU model: benchmark saves are compared only with saves from the same kind of machine."""
    out = session.run("python", "-c", "from bench.hardware import fingerprint as f; d = f(); "
                      "print((d['gpus'][0]['name'] if d['gpus'] else d['cpu_model']) or 'unknown')",
                      silent=True, external=True)
    name = (out or "unknown").strip().splitlines()[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "unknown"


@nox.session
def benchmarks(session: nox.Session) -> None:
    """pytest-benchmark timings under tests/benchmarks, saved per machine (GPU or CPU model) in .benchmarks/;
    fails when a median is more than BENCH_BENCHMARK_TOLERANCE % (default 25) slower than the last save."""
    storage = Path(".benchmarks") / _machine_slug(session)
    args = ["python", "-m", "pytest", "tests/benchmarks", "--benchmark-only", "--benchmark-autosave",
            f"--benchmark-storage={storage}"]
    if any(storage.glob("*/*.json")):
        args += ["--benchmark-compare", f"--benchmark-compare-fail=median:{BENCHMARK_TOLERANCE}%"]
    else:
        session.log(f"no earlier save in {storage}: this run saves the first one, the next run compares")
    session.run(*args, *session.posargs)


@nox.session
def gate(session: nox.Session) -> None:
    """Run the CI-sized suite into a fresh store and gate it against the committed baseline (docs/ci.md)."""
    for suffix in ("", "-wal", "-shm"):
        Path(CI_STORE + suffix).unlink(missing_ok=True)
    # a failed cell exits 1 here; the gate reports it (as a regression if it passed in the baseline)
    session.run("bench", "run", CI_SUITE, "--store", CI_STORE, "--no-progress", success_codes=[0, 1])
    session.run("bench", "gate", "--baseline", CI_BASELINE, "--store", CI_STORE, *session.posargs)
