"""Fuzzing every input boundary (issue 20): the suite loader, `--set`, baseline files, the zoo manifest and the
store opener get arbitrary bytes and arbitrary structures (and near-misses of good files). Whatever comes in, the
CLI exits 0, 1 or 2 and never raises: a traceback here is a bug. Bounded: about 200 examples in all, each
with a deadline, small inputs (the loaders' own size limits are tested in test_hardening.py)."""

from __future__ import annotations

import contextlib
import io
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cli import main
from tests.test_hardening import SUITE, write_store

# The deadline is generous (CI's cores are shared); what it catches is a loader that runs away on one input.
FUZZ = settings(max_examples=30, deadline=10_000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAX_PEAK_BYTES = 64 * 2**20  # what one bad input may allocate in Python objects while being refused

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
structures = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=20)


def exit_code(argv: list[str]) -> int:
    """The CLI's exit code with its output swallowed; any exception propagates (= a traceback for the user)."""
    out, err = io.StringIO(), io.StringIO()
    tracemalloc.start()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code in (0, 1, 2), (code, err.getvalue()[-500:])
    assert peak < MAX_PEAK_BYTES, peak
    if code == 2:
        assert err.getvalue().count("\n") == 1, err.getvalue()  # one line
    return code


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    write_store(root / "st.sqlite")
    (root / "good.yaml").write_text(SUITE)
    assert exit_code(["run", str(root / "good.yaml"), "--dry-run", "--store", str(root / "none.sqlite")]) == 0
    return root  # (the dry run above did the one-time imports, so they count against no example's deadline)


def _mutate(data: Any, path: list[Any], value: Any) -> Any:
    """`data` with the node at `path` (indices taken modulo the container size) replaced by `value`."""
    if not path or not isinstance(data, (dict, list)) or not data:
        return value
    if isinstance(data, dict):
        key = list(data)[path[0] % len(data)] if isinstance(path[0], int) else path[0]
        return {**data, key: _mutate(data.get(key), path[1:], value)}
    i = path[0] % len(data) if isinstance(path[0], int) else 0
    return [*data[:i], _mutate(data[i], path[1:], value), *data[i + 1:]]


paths = st.lists(st.one_of(st.integers(0, 9), st.text(max_size=8)), max_size=4)


@FUZZ
@given(text=st.one_of(st.text(max_size=400), st.binary(max_size=400).map(lambda b: b.decode("latin-1"))))
def test_suite_loader_on_arbitrary_text(workdir, text):
    p = workdir / "fuzz.yaml"
    p.write_text(text, encoding="utf-8", errors="surrogateescape")
    exit_code(["run", str(p), "--dry-run", "--store", str(workdir / "none.sqlite")])


@FUZZ
@given(path=paths, value=structures)
def test_suite_loader_on_near_misses_of_a_good_suite(workdir, path, value):
    data = _mutate(yaml.safe_load(SUITE), path, value)
    p = workdir / "near.yaml"
    p.write_text(yaml.safe_dump(data, allow_unicode=True))
    exit_code(["run", str(p), "--dry-run", "--store", str(workdir / "none.sqlite")])


@FUZZ
@given(overrides=st.lists(st.one_of(st.text(max_size=40), st.builds(
    lambda k, v: f"{k}={v}", st.sampled_from(["samples", "axes.nfe", "samplers.0", "samplers.0.nfe", "base_seed",
                                              "limits.max_nfe", "axes", "report.grid", "metrics", "name", "x.y.z"]),
    st.text(max_size=30))), max_size=3))
def test_set_overrides(workdir, overrides):
    argv = ["run", str(workdir / "good.yaml"), "--dry-run", "--store", str(workdir / "none.sqlite")]
    for o in overrides:
        argv += ["--set", o]
    exit_code(argv)


@pytest.fixture(scope="module")
def baseline_data(workdir) -> dict[str, Any]:
    from bench.gate import save_baseline

    path, _ = save_baseline(workdir / "st.sqlite", workdir / "base.json")
    return json.loads(path.read_text())


@FUZZ
@given(path=st.lists(st.one_of(st.integers(0, 30), st.sampled_from(
    ["cells", "metrics", "fd", "value", "ci_low", "n", "calibration", "feature_spaces", "axes", "nfe_requested",
     "provenance", "evidence", "run_spec", "suite_text", "suite_hash", "samples", "format"])), max_size=5),
    value=structures)
def test_baseline_near_misses(workdir, baseline_data, path, value):
    p = workdir / "fuzz-baseline.json"
    p.write_text(json.dumps(_mutate(baseline_data, path, value)))
    exit_code(["gate", "--baseline", str(p), "--store", str(workdir / "st.sqlite")])


@FUZZ
@given(content=st.one_of(st.binary(max_size=300), structures.map(json.dumps).map(str.encode)))
def test_baseline_arbitrary_content(workdir, content):
    p = workdir / "fuzz-baseline.json"
    p.write_bytes(content)
    exit_code(["gate", "--baseline", str(p), "--store", str(workdir / "st.sqlite")])


@FUZZ
@given(content=st.one_of(
    st.binary(max_size=300),
    structures.map(json.dumps).map(str.encode),
    st.dictionaries(st.text(max_size=10), structures, max_size=3).map(lambda m: json.dumps({"models": m}).encode()),
    st.builds(lambda entry: json.dumps({"models": {"teacher": {"file": "t.safetensors", "sha256": "ab" * 32,
                                                               **entry}}}).encode(),
              st.dictionaries(st.sampled_from(["bytes", "recipe", "quality", "parameters", "dtype", "file"]),
                              structures, max_size=3))))
def test_zoo_manifest(workdir, monkeypatch_module, content):
    folder = workdir / "zoo"
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_bytes(content)
    monkeypatch_module.setenv("BENCH_ZOO_WEIGHTS", str(folder))
    exit_code(["zoo", "verify"])
    exit_code(["zoo", "card"])


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@FUZZ
@given(content=st.one_of(st.binary(max_size=600), st.binary(max_size=600).map(lambda b: b"SQLite format 3\x00" + b)))
def test_store_opener(workdir, content):
    p = workdir / "fuzz.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(str(p) + suffix).unlink(missing_ok=True)
    p.write_bytes(content)
    exit_code(["export", "--store", str(p)])
    exit_code(["runs", "--store", str(p)])
    exit_code(["run", str(workdir / "good.yaml"), "--dry-run", "--store", str(p)])


tagged = st.builds(lambda tag, text: f"!!{tag} {text}",
                   st.sampled_from(["int", "float", "bool", "null", "timestamp", "binary", "str", "set", "omap",
                                    "pairs", "seq", "map", "python/tuple", "python/name:os.system"]),
                   st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12))


@FUZZ
@given(key=st.sampled_from(["samples", "base_seed", "name", "batch_size", "timeout", "description"]), value=tagged)
def test_explicit_yaml_tags_on_any_value_are_one_line(workdir, key, value):
    """An explicit tag on a value it cannot hold (`!!int x1`, `!!timestamp 2020-13-45`) is the suite's one-line
    error, in the file and in a --set override, never a traceback."""
    lines = [ln for ln in SUITE.splitlines() if not ln.startswith(f"{key}:")]
    p = workdir / "tagged.yaml"
    p.write_text("\n".join([*lines, f"{key}: {value}"]) + "\n")
    exit_code(["run", str(p), "--dry-run", "--store", str(workdir / "none.sqlite")])
    exit_code(["run", str(workdir / "good.yaml"), "--dry-run", "--store", str(workdir / "none.sqlite"),
               "--set", f"{key}={value}"])
