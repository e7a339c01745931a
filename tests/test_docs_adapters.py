"""docs/adapters.md is tried by writing an adapter from it alone: its Python blocks run as written, in order, in
one namespace (a block may use what an earlier one defined), its YAML blocks parse, and its `bench check` lines
name options the command has."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

DOC = Path(__file__).resolve().parents[1] / "docs" / "adapters.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_every_python_snippet_runs_as_written(one_thread, capsys):
    code = blocks("python")
    assert len(code) >= 3
    namespace: dict = {"__name__": "adapters_doc"}
    for i, block in enumerate(code):
        exec(compile(block, f"{DOC.name}[python block {i}]", "exec"), namespace)
    assert "torch.Size([3, 3, 8, 8]) torch.uint8 4.0" in capsys.readouterr().out  # what the doc says it prints
    import sys
    import types

    from bench.check import check_adapter  # and the doc's sampler passes `bench check`'s checks

    mod = types.ModuleType("adapters_doc")
    mod.__dict__.update(namespace)
    sys.modules["adapters_doc"] = mod
    try:
        results = check_adapter("adapters_doc:DampedEuler", {}, resolution=8)
    finally:
        del sys.modules["adapters_doc"]
    assert all(c.status == "ok" for c in results), [c.line() for c in results]


def test_yaml_snippets_parse():
    for block in blocks("yaml"):
        assert isinstance(yaml.safe_load(block), dict)


def test_bench_check_lines_use_real_options():
    from bench.cli import build_parser

    check = build_parser()._subparsers._group_actions[0].choices["check"]  # type: ignore[union-attr]
    known = {o for a in check._actions for o in a.option_strings}
    lines = [ln for b in blocks("bash") for ln in b.splitlines() if ln.startswith("bench check")]
    assert lines
    for line in lines:
        assert set(re.findall(r"\s(--[a-z-]+)", line.split("#")[0])) <= known, line
