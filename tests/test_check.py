"""`bench check ADAPTER`: the worker's contract checks on a few images, one line per check, exit 1 on a failure."""

from __future__ import annotations

import pytest

from bench.cli import main

BAD = "tests.plugins.bad_samplers:"


def check(capsys, *argv: str) -> tuple[int, dict[str, str]]:
    code = main(["check", *argv])
    lines = capsys.readouterr().out.splitlines()
    statuses = {ln[5:].split(":")[0]: ln[:4].strip() for ln in lines[:-1]}
    return code, statuses


def test_a_good_adapter_passes_every_check(capsys, one_thread):
    code, statuses = check(capsys, "analytic-euler", "--options", '{"components": 4}', "--resolution", "8")
    assert code == 0
    assert statuses == {"info": "ok", "load": "ok", "contract": "ok", "nfe": "ok", "repeat": "ok", "batch-size": "ok",
                        "determinism": "ok"}


@pytest.mark.parametrize(("cls", "failed"), [
    ("NaNImages", {"contract"}),
    ("SmallImages", {"contract"}),
    ("SignedFloats", {"contract"}),
    ("UnlistedNetwork", {"nfe"}),
    ("GlobalRNG", {"repeat", "batch-size", "determinism"}),
    ("BatchGenerator", {"batch-size", "determinism"}),
])
def test_each_bad_sampler_fails_its_check(capsys, one_thread, cls, failed):
    code, statuses = check(capsys, BAD + cls, "--resolution", "8")
    assert code == 1
    assert {name for name, s in statuses.items() if s == "FAIL"} == failed


@pytest.mark.parametrize("argv", [["nope"], ["analytic-euler", "--options", "{bad"], ["analytic-euler", "--options", "[1]"],
                                  ["analytic-euler", "--options", '{"no_such_option": 1}'],
                                  ["analytic-euler", "--images", "1"]])
def test_bad_input_is_one_line_and_exit_2(capsys, argv):
    assert main(["check", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bench: error:")
