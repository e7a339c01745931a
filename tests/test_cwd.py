"""The tests do not depend on the working directory: paths come from the checkout (tests/_paths.py), and a
subprocess imports this checkout's `bench`. Checked by running a few path-sensitive tests from elsewhere."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests._paths import ROOT, SUITES, bench_env

# Tests that read the repository's files or start `python -m bench` (each failed or silently skipped when the
# working directory was not the checkout).
NODES = [
    "tests/test_run.py::test_every_shipped_suite_validates_and_plans",
    "tests/test_run.py::test_smoke_suite_dry_run_counts_product",
    "tests/test_suite_errors.py::test_cli_process_prints_no_traceback",
    "tests/test_cli_misc.py::test_help_explains_commands",
]


@pytest.mark.parametrize("where", ["tmp", "/"])
def test_path_sensitive_tests_pass_from_another_working_directory(where, tmp_path):
    cwd = tmp_path if where == "tmp" else "/"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           *[str(ROOT / n) for n in NODES]], cwd=cwd, env=bench_env(), capture_output=True,
                          text=True, timeout=600, check=False)
    tail = proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    expected = len(list(SUITES.glob("*.yaml"))) + len(NODES) - 1
    assert f"{expected} passed" in proc.stdout and "skipped" not in proc.stdout, tail


def test_a_subprocess_imports_this_checkouts_bench(tmp_path):
    out = subprocess.run([sys.executable, "-c", "import bench; print(bench.__file__)"], cwd=tmp_path,
                         env=bench_env(), capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(ROOT / "bench" / "__init__.py")
