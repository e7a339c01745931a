"""The 11 bugs issue 19 found surviving stay caught: scripts/issue19_mutants.py re-introduces each one in a copy of
the checkout and runs the test named for it, which must fail (and pass without the bug)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests._paths import ROOT


@pytest.mark.slow
def test_every_issue_19_mutant_is_killed_by_its_test():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "issue19_mutants.py")], capture_output=True, text=True,
                       check=False, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(" killed ") == 11, r.stdout
