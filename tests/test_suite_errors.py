"""Malformed suites: each gives exactly one line `FILE:LINE: key: message`, exit 2, no traceback."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bench.cli import main
from tests._paths import bench_env

GOOD = """\
name: ok
dataset: {name: gmm}
samples: 8
samplers:
  - id: a
    adapter: analytic-euler
axes:
  nfe: [1, 2]
  resolution: [4]
"""

BOMB = "name: x\n" + "\n".join(
    [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9 if i else ['"lol"'] * 9) + "]" for i in range(9)]
)

CASES = {
    # name: (suite text, expected line, expected key path fragment, message fragment)
    "bad_yaml": ("name: x\nsamplers: [\n", 3, "", "invalid YAML"),
    "alias_bomb": (BOMB, None, "", "alias"),
    "unknown_top_key": (GOOD + "colour: blue\n", 10, "colour", "unknown key"),
    "unknown_sampler_key": (GOOD.replace("adapter: analytic-euler", "adapter: analytic-euler\n    stepz: 3"), 7,
                            "samplers.0.stepz", "unknown key"),
    "wrong_type": (GOOD.replace("samples: 8", "samples: many"), 3, "samples", "integer"),
    # the line is the key's, also when its value sits on the next line
    "wrong_type_value_below_key": (GOOD.replace("samples: 8", "samples:\n  many"), 3, "samples", "integer"),
    "bad_value_in_block_sequence": (GOOD.replace("nfe: [1, 2]", "nfe:\n    - 1\n    -\n      -3"), 8, "axes.nfe",
                                    "positive"),
    "zero_nfe": (GOOD.replace("nfe: [1, 2]", "nfe: [0, 2]"), 8, "axes.nfe", "positive"),
    "negative_nfe": (GOOD.replace("nfe: [1, 2]", "nfe: [1, -2]"), 8, "axes.nfe", "positive"),
    "unknown_adapter": (GOOD.replace("analytic-euler", "no-such-sampler"), 6, "samplers.0.adapter", "unknown adapter"),
    "bad_module_adapter": (GOOD.replace("analytic-euler", "nowhere.mod:Thing"), 6, "samplers.0.adapter",
                           "cannot import"),
    "empty_axis": (GOOD.replace("resolution: [4]", "resolution: []"), 9, "axes.resolution", "at least one"),
    "duplicate_ids": (GOOD + "  - id: a\n    adapter: analytic-heun\n".replace("  - id", "  - id"), None,
                      "samplers", "duplicate sampler ids"),
    "duplicate_key": (GOOD + "samples: 9\n", 10, "samples", "duplicate key"),
    "missing_key": (GOOD.replace("samples: 8\n", ""), 1, "samples", "required"),
    "bad_hardware": (GOOD + "  hardware: [gpu0]\n", 10, "axes.hardware", "expected cpu"),
    "unknown_metric": (GOOD + "metrics: {fid_magic: {}}\n", 10, "metrics", "unknown metric"),
    "not_a_mapping": ("- just\n- a list\n", 1, "", "mapping"),
    "python_tag": ("name: !!python/object/apply:os.system [echo hi]\n", 1, "name", "constructor"),
    # an explicit tag on a value it cannot hold (PyYAML raises ValueError there, not a YAML error)
    "bad_int_tag": (GOOD.replace("samples: 8", "samples: !!int x1"), 3, "samples", "'x1' is not a valid int"),
    "bad_timestamp_tag": (GOOD + "description: !!timestamp 2020-13-45\n", 10, "description",
                          "'2020-13-45' is not a valid timestamp (month must be in 1..12)"),
}


def _fix_duplicate_ids(text: str) -> str:
    return text.replace("axes:", "  - id: a\n    adapter: analytic-heun\naxes:", 1)


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_suite_one_line_exit_2(case, write_suite, capsys):
    text, line, key, fragment = CASES[case]
    if case == "duplicate_ids":
        text = _fix_duplicate_ids(GOOD)
    path = write_suite(text)
    code = main(["run", "--dry-run", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    m = re.match(rf"bench: error: {re.escape(str(path))}:(\d+): (.*)$", err)
    assert m, err
    if line is not None:
        assert int(m.group(1)) == line, err
    assert key in m.group(2), err
    assert fragment.lower() in m.group(2).lower(), err


def test_several_problems_report_the_first_and_count_the_rest(write_suite, capsys):
    # one line per suite (exit 2), but the user learns there is more to fix than the first problem
    path = write_suite(GOOD.replace("samples: 8", "samples: many") + "colour: blue\nshade: red\n")
    assert main(["run", "--dry-run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith("(+2 more)"), err
    path = write_suite(GOOD.replace("samples: 8", "samples: many"))
    assert main(["run", "--dry-run", str(path)]) == 2
    assert "more)" not in capsys.readouterr().err  # a single problem has no count


def test_good_suite_passes(write_suite, capsys):
    assert main(["run", "--dry-run", str(write_suite(GOOD))]) == 0
    assert "2 cells: 2 planned, 0 skipped" in capsys.readouterr().out


def test_huge_file_refused(write_suite, capsys):
    path = write_suite(GOOD + "description: '" + "x" * 1_100_000 + "'\n")
    assert main(["run", "--dry-run", str(path)]) == 2
    assert "limit" in capsys.readouterr().err


def test_cli_process_prints_no_traceback(write_suite):
    path = write_suite(GOOD.replace("nfe: [1, 2]", "nfe: [0]"))
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--dry-run", str(path)], capture_output=True, env=bench_env(),
                          text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"{path}:8: axes.nfe" in proc.stderr


def test_missing_file_exit_2(capsys):
    assert main(["run", "--dry-run", "does/not/exist.yaml"]) == 2
    assert "no such suite file" in capsys.readouterr().err


def test_bad_flag_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--jobz", "3", "x.yaml"])
    assert e.value.code == 2


def test_set_overrides_change_the_plan_and_the_cell_keys(write_suite, capsys):
    from bench.plan import plan
    from bench.suite import load_suite

    path = write_suite(GOOD)
    base = load_suite(path)
    changed = load_suite(path, ["base_seed=7", "axes.nfe=[4]", "samplers.0.guidance=1.0"])
    assert changed.model.base_seed == 7 and changed.model.axes.nfe == [4]
    assert changed.model.samplers[0].guidance == 1.0
    assert changed.hash != base.hash and "# --set base_seed=7" in changed.text
    assert {c.key for c in plan(changed)}.isdisjoint(c.key for c in plan(base))
    assert main(["run", str(path), "--dry-run", "--set", "axes.nfe=[1, 2, 3]"]) == 0
    assert capsys.readouterr().out.strip().endswith("3 cells: 3 planned, 0 skipped")


@pytest.mark.parametrize(("override", "fragment"), [
    ("samples=many", "--set samples: Input should be a valid integer"),
    ("base_seed", "expected KEY=VALUE"),
    ("samplers.3.nfe=[1]", "samplers.3 does not exist"),
    ("axes.nfe=[1", "not valid YAML"),
    ("colour=blue", "--set colour: unknown key"),
    ("samples=!!int x1", "--set samples: the value '!!int x1' is not valid YAML"),
])
def test_bad_set_override_is_one_line_exit_2(override, fragment, write_suite, capsys):
    path = write_suite(GOOD)
    assert main(["run", str(path), "--dry-run", "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err


def test_samples_per_resolution_sets_each_cells_sample_count_and_key(write_suite, tmp_path):
    from bench.plan import plan
    from bench.run import make_tasks
    from bench.store import Store
    from bench.suite import load_suite

    text = GOOD.replace("resolution: [4]", "resolution: [4, 8]")
    base = load_suite(write_suite(text, "a.yaml"))
    fewer = load_suite(write_suite(text.replace("samples: 8", "samples: 8\nsamples_per_resolution: {8: 3}"), "b.yaml"))
    with Store(tmp_path / "s.sqlite") as store:
        tasks = make_tasks(fewer, plan(fewer), store)
    assert sorted({(t.cell.resolution, t.samples) for t in tasks}) == [(4, 8), (8, 3)]
    same = {(c.resolution, c.key == d.key) for c, d in zip(plan(base), plan(fewer), strict=True)}
    assert same == {(4, True), (8, False)}  # only the cells whose sample count changed get new keys


def test_samples_per_resolution_must_be_positive(write_suite, capsys):
    path = write_suite(GOOD.replace("samples: 8", "samples: 8\nsamples_per_resolution: {4: 0}"))
    assert main(["run", str(path), "--dry-run"]) == 2
    assert "samples_per_resolution: resolutions and sample counts must be positive" in capsys.readouterr().err


def test_set_reaches_integer_keys(write_suite):
    from bench.suite import load_suite

    path = write_suite(GOOD.replace("samples: 8", "samples: 8\nsamples_per_resolution: {4: 5}"))
    assert load_suite(path, ["samples_per_resolution.4=3"]).model.samples_per_resolution == {4: 3}
