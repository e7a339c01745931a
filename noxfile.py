"""Developer sessions. They run in the current environment (no per-session venv): torch is large and is
installed once by the README's install command, so `nox -s tests` inside that venv reuses it."""

from __future__ import annotations

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


@nox.session
def benchmarks(session: nox.Session) -> None:
    """pytest-benchmark timings under tests/benchmarks (saved per machine, compared to the last save)."""
    session.run("python", "-m", "pytest", "tests/benchmarks", "--benchmark-only", "--benchmark-autosave",
                *session.posargs)
