"""User-facing errors: one line, exit code 2, no traceback (the CLI catches them)."""

from __future__ import annotations


class BenchError(Exception):
    """Bad input from the user (suite, flags, paths, weights). The CLI prints `str(err)` and exits 2."""

    exit_code = 2


class MissingWeightsError(BenchError):
    """A weight file is not available offline; the message names the file, where we looked and how to fix it."""
