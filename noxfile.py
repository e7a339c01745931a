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


MUTMUT = "mutmut==3.8.1"
# The modules `nox -s mutants` scores ([tool.mutmut] in pyproject.toml lists them with the tests that protect them)
# and the share of their mutants the tests must kill (issue 19; docs/mutation.md records the last scores).
MUTATION_GOALS = {"bench.metrics.frechet": 0.9, "bench.metrics.fd": 0.9, "bench.metrics.bootstrap": 0.9,
                  "bench.metrics.fidelity": 0.9, "bench.runtime": 0.9, "bench.metrics.nfe": 0.9,
                  "bench.spec": 0.9, "bench.plan": 0.9, "bench.store": 0.9,
                  "bench.gate": 0.8, "bench.suite": 0.8, "bench.yaml_lines": 0.8}
# The gate's decisions (not its file I/O, baseline-shape checks or rendering): what passes, fails, ties or is
# skipped, and the front.
GATE_DECISIONS = [f"bench.gate.{fn}*" for fn in (
    "x_calibration_summary", "x_drift", "x__normalised_latency", "x__latency_unstable", "x_median_snapshot",
    "x_identity_problems", "x_effective_rules", "x_rule_for", "x__normalises", "x__calibration", "x_compare",
    "x__paired_for", "x__unstable_note", "x__slower_beyond_doubt", "x_pareto_front", "x__front_points", "x__within",
    "x__quality_kept", "x_front_checks", "xǁGateResultǁ")]
# Suite validation: loading, overrides, axis lists, limits (not `json_schema`, the editor schema). mutmut skips
# decorated functions, so the pydantic validators are covered through the helpers they call.
SUITE_VALIDATION = [f"bench.suite.{fn}*" for fn in (
    "x__positive_unique", "x__hardware_list", "x__axis_values", "xǁ", "x_apply_overrides", "x__key", "x__child",
    "x__validate", "x__with_reference_stats", "x_limit_problem", "x_load_suite", "x_parse_suite")]
# What `nox -s mutants` mutates with no arguments (mutmut's mutant-name globs): the numeric modules whole, and of
# runtime and store only the seeding and the resume functions (the rest of those modules is I/O and options).
MUTATION_SCOPE = [
    "bench.metrics.nfe.*", "bench.runtime.x_noise_seed*", "bench.runtime.x_per_image_noise*",
    "bench.runtime.x_image_seeds*", "bench.runtime.x_image_generators*", "bench.spec.*", "bench.plan.*",
    "bench.store.xǁStoreǁdone_keys*", "bench.store.xǁStoreǁcommit_cell*", "bench.store.xǁStoreǁrecord_plan*",
    "bench.store.xǁStoreǁ_mark_interrupted*", "bench.store.xǁStoreǁ_driver_alive*", "bench.store.x__process_alive*",
    "bench.metrics.bootstrap.*", "bench.metrics.frechet.*", "bench.metrics.fd.*", "bench.metrics.fidelity.*",
    *GATE_DECISIONS, *SUITE_VALIDATION, "bench.yaml_lines.*",
]


@nox.session(venv_backend="venv")
def mutants(session: nox.Session) -> None:
    """Mutation testing of the numeric core with mutmut, then a kill-score table per module.

    Its own venv: torch pinned as the README installs it (so pip never pulls another torch), the package with
    its dev extras, and mutmut. Hours for the whole core on a 2-core machine: run it weekly or before a release,
    not in `.ci/run`. Narrow it with mutmut's name globs: `nox -s mutants -- "bench.metrics.bootstrap.*"`."""
    if session.venv_backend != "none":  # `--no-venv`: an environment that has mutmut already
        session.install("torch==2.14.1", "torchvision==0.29.1")
        session.install("-e", ".[dev]")
        session.install(MUTMUT)
    session.env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})  # no thread pools to hang a fork
    session.run("mutmut", "run", *(session.posargs or MUTATION_SCOPE), success_codes=[0, 1])
    out = session.run("mutmut", "results", "--all", "true", silent=True) or ""
    _mutation_table(session, str(out))


def _mutation_table(session: nox.Session, results: str) -> None:
    """`mutmut results --all true` lines (`    bench.x.x_fn__mutmut_3: survived`) -> a score table per module.

    Score = killed / (killed + survived + no tests): a mutant no selected test even calls protects nothing."""
    per: dict[str, dict[str, int]] = {}
    for line in results.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if not sep or "__mutmut_" not in name:
            continue
        counts = per.setdefault(name.split("__mutmut_")[0].rsplit(".", 1)[0], {})
        counts[status] = counts.get(status, 0) + 1
    rows = ["| module | killed | survived | no tests | other | score | goal |", "|---|---:|---:|---:|---:|---:|---:|"]
    for module, counts in sorted(per.items()):
        killed = counts.get("killed", 0) + counts.get("caught by type check", 0)
        survived, untested = counts.get("survived", 0), counts.get("no tests", 0)
        other = sum(counts.values()) - killed - survived - untested  # timeout, suspicious, skipped, not checked
        scored = killed + survived + untested
        score = f"{100 * killed / scored:.0f} %" if scored else "-"
        goal = MUTATION_GOALS.get(module)
        rows.append(f"| {module} | {killed} | {survived} | {untested} | {other} | {score} | "
                    f"{'' if goal is None else f'{100 * goal:.0f} %'} |")
    session.log("mutation score per module (the surviving mutants: `mutmut results`, one: `mutmut show NAME`):\n"
                + "\n".join(rows))
