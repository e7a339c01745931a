"""Re-introduce the 11 bugs issue 19 found surviving, one at a time, and check that the named test now fails.

    python scripts/issue19_mutants.py            # every mutant; exit 1 if any survives
    python scripts/issue19_mutants.py 4 9        # only these (1-based, the issue's table order)

First the named tests run unmutated (they must pass). Then each mutant is applied to a fresh copy of the
checkout's files as they are now, its test is run there with pytest, and the mutant counts as killed when the
test fails. A mutant whose code no longer matches is reported as `stale` (the code moved: update
the table), never as killed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (what the bug does, file, original code, mutated code, the test that must fail)
MUTANTS = [
    ("gate: higher_is_better ignored", "bench/gate.py",
     "worse = (bv - rv) if hib else (rv - bv)", "worse = rv - bv",
     "tests/test_gate.py::test_higher_is_better_metric_fails_on_a_drop_not_on_a_rise"),
    ("gate: min instead of max of rel_tol and abs_tol", "bench/gate.py",
     "allowed_abs = max(allowed) if allowed else 0.0", "allowed_abs = min(allowed) if allowed else 0.0",
     "tests/test_gate.py::test_tolerance_is_the_larger_of_rel_tol_and_abs_tol"),
    ("gate: a cell missing from the run not failed", "bench/gate.py",
     'res.checks.append(Check("FAIL", label, "cell", note="cell missing from the run"))',
     'res.checks.append(Check("SKIP", label, "cell", note="cell missing from the run"))',
     "tests/test_gate.py::test_cell_missing_from_the_run_fails"),
    ("cell key: metric options left out", "bench/spec.py",
     'body.pop("family")', 'body.pop("family"); body.pop("metrics")',
     "tests/test_core_rules.py::test_every_field_that_decides_the_numbers_changes_the_key"),
    ("store resume: failed cells treated as done", "bench/store.py",
     "SELECT cell_key FROM cells WHERE status='done'", "SELECT cell_key FROM cells WHERE status IN ('done', 'failed')",
     "tests/test_core_rules.py::test_only_done_cells_are_reused"),
    ("seeding: seed + offset", "bench/runtime.py",
     "    if not stream:\n        return int(seed)", "    if True:\n        return int(seed) + stream",
     "tests/test_seeding.py::test_every_stream_of_every_image_is_distinct"),
    ("seeding: offset ignored", "bench/runtime.py",
     "image_generators(seeds, offset)", "image_generators(seeds, 0)",
     "tests/test_seeding.py::test_every_stream_of_every_image_is_distinct"),
    ("seeding: image i gets base_seed + i + 1", "bench/runtime.py",
     "return [int(base_seed) + int(i) for i in indices]", "return [int(base_seed) + int(i) + 1 for i in indices]",
     "tests/test_seeding.py::test_image_seeds_are_base_seed_plus_index_and_generators_follow_them"),
    ("FD: one row per chunk dropped from the mean", "bench/metrics/frechet.py",
     "total += x[start:start + _CHUNK].astype(np.float64).sum(0)",
     "total += x[start:start + _CHUNK - 1].astype(np.float64).sum(0)",
     "tests/test_metrics_frechet.py::test_statistics_of_a_large_feature_set_use_every_row"),
    ("suite errors: the value's line instead of the key's", "bench/yaml_lines.py",
     "lines[sub] = key_node.start_mark.line + 1", "lines[sub] = value_node.start_mark.line + 1",
     "tests/test_suite_errors.py"),
    ("suite errors: '(+N more)' dropped", "bench/suite.py",
     'more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""', 'more = ""',
     "tests/test_suite_errors.py::test_several_problems_report_the_first_and_count_the_rest"),
]


def _copy() -> Path:
    dst = Path(tempfile.mkdtemp(prefix="mutant-"))
    for name in ("bench", "tests", "suites", "examples", "baselines", "pyproject.toml"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dst / name)
    return dst


def _pytest(work: Path, *tests: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=work,
                          capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(work)})


def run(numbers: list[int]) -> int:
    chosen = [m for i, m in enumerate(MUTANTS, 1) if not numbers or i in numbers]
    work = _copy()
    try:  # the control: unmutated, every named test passes (else a failure would prove nothing)
        r = _pytest(work, *dict.fromkeys(m[4] for m in chosen))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if r.returncode != 0:
        print("the named tests fail without any mutant; fix them first:\n" + r.stdout[-2000:])
        return 2
    survived = 0
    for i, (what, file, old, new, test) in enumerate(MUTANTS, 1):
        if numbers and i not in numbers:
            continue
        work = _copy()
        try:
            path = work / file
            text = path.read_text()
            if text.count(old) != 1:
                print(f"{i:2d} STALE    {what}: the original code is not in {file} once (update this table)")
                survived += 1
                continue
            path.write_text(text.replace(old, new))
            r = _pytest(work, test)
            status = "killed" if r.returncode == 1 else "SURVIVED" if r.returncode == 0 else f"error rc={r.returncode}"
            survived += status != "killed"
            print(f"{i:2d} {status:8s} {what}  <- {test}")
            if status.startswith("error"):
                print(r.stdout[-1500:] + r.stderr[-1500:])
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(run([int(a) for a in sys.argv[1:]]))
