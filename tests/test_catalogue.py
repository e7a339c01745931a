"""The metric catalogue: every metric has a spec, suites are checked against it at load (FILE:LINE, exit 2, before
anything runs), plugin metrics may declare a spec, and the gate and the report read roles and rules from it."""

from __future__ import annotations

import re
import textwrap

import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.metrics import catalogue
from bench.suite import parse_suite

HEAD = """\
name: cat
dataset: {name: gmm}
samples: 8
samplers:
  - {id: a, adapter: analytic-euler}
axes: {nfe: [1], resolution: [4]}
metrics:
"""


def _error(metrics: str) -> str:
    with pytest.raises(BenchError) as e:
        parse_suite(HEAD + textwrap.indent(textwrap.dedent(metrics).strip(), "  ") + "\n", "s.yaml")
    return str(e.value)


BAD = {
    # metrics block (under HEAD: first metric on line 8) -> (line, key path, message fragment)
    "misspelt_option": ("fd: {feature_spaec: pixels}", 8, "metrics.fd.feature_spaec", "unknown key"),
    "unknown_space": ("fd: {feature_space: pixls}", 8, "metrics.fd.feature_space", "unknown feature space 'pixls'"),
    "unknown_space_variant": ("fd:pixls: {}", 8, "metrics.fd:pixls", "unknown feature space 'pixls'"),
    "kid_space": ("memory: {}\nkid: {feature_space: incepton-v3}", 9, "metrics.kid.feature_space",
                  "unknown feature space"),
    "bad_bootstrap": ("fd:pixels: {bootstrap: 1}", 8, "metrics.fd:pixels.bootstrap", "at least 2"),
    "bad_backend": ("kid: {backend: numpy}", 8, "metrics.kid.backend", "'auto', 'bench' or 'torch-fidelity'"),
    "bad_type": ("precision_recall: {neighborhood: three}", 8, "metrics.precision_recall.neighborhood", "integer"),
    "latency_option": ("latency: {batch_size: 4}", 8, "metrics.latency.batch_size", "unknown key"),
    "memory_option": ("memory: {batch_sizes: [1]}", 8, "metrics.memory.batch_sizes", "unknown key"),
    "clip_option": ("clip_score: {feature_space: pixels}", 8, "metrics.clip_score.feature_space", "unknown key"),
    "cmmd_type": ("cmmd: {normalize: 1}", 8, "metrics.cmmd.normalize", "boolean"),
    "dc_space": ("density_coverage:dinov3: {}", 8, "metrics.density_coverage:dinov3", "unknown feature space"),
    "floor_stats": ("fd_floor: {reference_stats: a.npz}", 8, "metrics.fd_floor.reference_stats",
                    "fd_floor cannot use a statistics file"),
    "option_on_next_line": ("fd:\n  bootstrap: 10\n  noise_flor: false", 10, "metrics.fd.noise_flor", "unknown key"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_metric_options_are_one_located_line(case):
    text, line, key, fragment = BAD[case]
    msg = _error(text)
    assert msg.startswith(f"s.yaml:{line}: {key}: "), msg
    assert fragment in msg and "\n" not in msg


def test_good_options_of_every_catalogued_metric_load():
    suite = parse_suite(HEAD + textwrap.indent(textwrap.dedent("""
        fd: {feature_space: pixels, bootstrap: 0, noise_floor: false, fd_inf: 4, backend: clean-fid}
        fd:shapes-clip: {batch_size: 16}
        fd_floor: {feature_space: "clip:ViT-B-32:openai", floor_offset: 100}
        kid: {feature_space: pixels, subsets: 10, subset_size: 4, coef0: 1, backend: auto}
        precision_recall: {feature_space: pixels, neighborhood: 3, confidence: 0.9}
        clip_score: {model: shapes-clip, bootstrap: 50}
        latency: {batch_sizes: [1, 2]}
        memory: {}
    """).strip(), "  ") + "\n", "s.yaml")
    assert set(suite.model.metrics) >= {"fd", "fd:shapes-clip", "kid", "latency", "memory"}


def test_dry_run_refuses_a_misspelt_option_with_exit_2(write_suite, capsys):
    """The issue's case: `fd: {feature_spaec: pixels}` passed --dry-run and only failed in the worker."""
    path = write_suite(HEAD + "  fd: {feature_spaec: pixels}\n")
    assert main(["run", str(path), "--dry-run", "--store", str(path.parent / "s.sqlite")]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"bench: error: {re.escape(str(path))}:8: metrics\.fd\.feature_spaec: unknown key", err), err


def test_every_registered_metric_has_a_spec_whose_options_are_the_metrics_own():
    """One spec per built-in metric, its schema built from the same tuple the metric checks at run time."""
    from bench.metrics import clip_score, cmmd, density_coverage, fd, fidelity
    from bench.metrics.registry import _METRICS, SYSTEM_METRICS

    for name in [*_METRICS, *SYSTEM_METRICS]:
        assert catalogue.spec_of(name) is not None, f"{name}: add a MetricSpec to bench/metrics/catalogue.py"
    own = {"fd": fd.FD_OPTIONS, "fd_floor": fd.FLOOR_OPTIONS, "kid": fidelity.KID_OPTIONS,
           "precision_recall": fidelity.PR_OPTIONS, "clip_score": clip_score.CLIP_OPTIONS,
           "cmmd": cmmd.CMMD_OPTIONS, "density_coverage": density_coverage.DC_OPTIONS}
    for name, allowed in own.items():
        model = catalogue.spec_of(name).options_model()
        assert set(model.model_fields) == {*allowed, "variant"}, name


def test_plugin_metric_declares_its_spec_or_passes_through(write_suite, capsys):
    msg = _error("tests.plugins.metrics:spec_stats: {colour: red}")
    assert "metrics.tests.plugins.metrics:spec_stats.colour: unknown key" in msg
    parse_suite(HEAD + "  tests.plugins.metrics:spec_stats: {offset: 2}\n", "s.yaml")
    parse_suite(HEAD + "  tests.plugins.metrics:sample_stats: {anything: 1}\n", "s.yaml")  # no spec: unchecked
    assert catalogue.spec_of("tests.plugins.metrics:sample_stats") is None
    assert catalogue.spec_of("tests.plugins.metrics:spec_stats").unit == "px"


def test_list_metrics_shows_kind_unit_direction_and_options(capsys):
    assert main(["list", "metrics"]) == 0
    out = capsys.readouterr().out
    fd_line = next(line for line in out.splitlines() if line.strip().startswith("fd "))
    assert "quality" in fd_line and "lower is better" in fd_line
    assert "feature_spaec" not in out and "feature_space, batch_size" in out
    lat = next(line for line in out.splitlines() if line.strip().startswith("latency "))
    assert "system" in lat and " ms " in lat
    assert "fd [gate: rel_tol 0.01, significance paired]" in out
    assert "pixels" in out.splitlines()[-1]


def test_gate_default_rules_come_from_the_catalogue():
    from bench.gate import default_rules

    rules = default_rules()
    assert set(rules) == {"fd", "latency_ms_per_image", "nfe_counted"}
    assert (rules["fd"].rel_tol, rules["fd"].significance) == (catalogue.DEFAULT_QUALITY_REL_TOL, "paired")
    lat = rules["latency_ms_per_image"]
    assert (lat.rel_tol, lat.significance, lat.normalize) == (catalogue.DEFAULT_LATENCY_REL_TOL, "ci", "auto")
    nfe = rules["nfe_counted"]
    assert (nfe.abs_tol, nfe.significance, nfe.normalize) == (0.0, "none", "none")


def test_roles_of_stored_names():
    """What the gate and report used to guess from name prefixes, now read from the catalogue."""
    from bench.report.data import metric_kind

    expected = {
        "fd": "quality", "fd:pixels": "quality", "fd_inf": "quality", "kid:pixels": "quality",
        "precision": "quality", "recall": "quality", "clip_score:shapes-clip": "quality",
        "cmmd": "quality", "density:pixels": "quality", "coverage": "quality",
        "fd_floor": "reference", "fd_floor:pixels": "reference",
        "latency_ms_per_image": "latency", "latency_ms_batch1": "latency", "latency_cpu_ms_batch1": "latency",
        "latency_denoising_ms_per_image": "latency", "latency_call_ms_batch1": "latency",
        "peak_memory_mb": "memory", "calibration_ms": "calibration",
    }
    for name, kind in expected.items():
        assert metric_kind(name, True) == kind, name
    assert metric_kind("pixel_mean", True) == "quality"  # a plugin's number without a spec: by its direction
    assert metric_kind("pixel_mean", None) == "other"
    assert set(catalogue.feature_space_results()) == {"fd", "fd_floor", "fd_inf", "kid", "precision", "recall"}


def test_json_schema_lists_every_metrics_options():
    from bench.suite import json_schema

    props = json_schema()["properties"]["metrics"]["properties"]
    assert {"fd", "kid", "precision_recall", "clip_score", "latency", "memory"} <= set(props)
    fd_schema = props["fd"]["anyOf"][0]
    assert fd_schema["additionalProperties"] is False and "feature_space" in fd_schema["properties"]
