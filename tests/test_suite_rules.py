"""Suite validation rules in-process, each at its edge: the resource limits (docs/failure-modes.md), `--set`
overrides, axis values, and where an error points (FILE:LINE for the file, `--set` for an override).

tests/test_suite_errors.py checks the one-line exit-2 contract through the CLI; here the rules themselves."""

from __future__ import annotations

import re

import pytest

from bench.errors import BenchError
from bench.suite import FEATURE_DIM_FLOOR, apply_overrides, load_suite, parse_suite
from bench.yaml_lines import parse_yaml
from tests.test_suite_errors import GOOD  # the smallest valid suite, shared with the CLI error tests


def error_of(text: str) -> str:
    with pytest.raises(BenchError) as e:
        parse_suite(text, "s.yaml")
    return str(e.value)


def with_limits(text: str, **limits: int) -> str:
    return text + "limits: {" + ", ".join(f"{k}: {v}" for k, v in limits.items()) + "}\n"


# ------------------------------------------------------------------------------------------ limits


def test_max_nfe_is_inclusive_and_checked_on_the_axis_and_each_samplers_list():
    parse_suite(with_limits(GOOD.replace("nfe: [1, 2]", "nfe: [1, 5]"), max_nfe=5))
    msg = error_of(with_limits(GOOD.replace("nfe: [1, 2]", "nfe: [6, 1]"), max_nfe=5))
    assert msg == ("s.yaml:8: axes.nfe: requested steps 6 is over limits.max_nfe = 5; if this machine has the memory "
                   "and time, raise it in the suite (limits: {max_nfe: 6})")
    per_sampler = GOOD.replace("adapter: analytic-euler", "adapter: analytic-euler\n    nfe: [3, 7]")
    assert error_of(with_limits(per_sampler, max_nfe=5)).startswith(
        "s.yaml:7: samplers.0.nfe: requested steps 7 is over limits.max_nfe = 5")
    parse_suite(with_limits(per_sampler, max_nfe=7))


def test_max_samples_is_inclusive_and_counts_per_resolution_overrides():
    parse_suite(with_limits(GOOD, max_samples=8))
    assert error_of(with_limits(GOOD, max_samples=7)).startswith(
        "s.yaml:3: samples: images per cell 8 is over limits.max_samples = 7; if this machine has the memory")
    per_res = GOOD.replace("resolution: [4]", "resolution: [4, 8]") + "samples_per_resolution: {8: 20}\n"
    assert error_of(with_limits(per_res, max_samples=10)).startswith(
        "s.yaml:10: samples_per_resolution.8: images per cell 20 is over limits.max_samples = 10")
    # `samples` only applies where no per-resolution count replaces it
    only_res = GOOD + "samples_per_resolution: {4: 5}\n"
    parse_suite(with_limits(only_res.replace("samples: 8", "samples: 50"), max_samples=10))


def test_feature_values_are_samples_times_the_feature_dimension():
    # no pixels metric: D is taken as 2048
    n = 8 * FEATURE_DIM_FLOOR
    parse_suite(with_limits(GOOD, max_feature_values=n))
    assert error_of(with_limits(GOOD, max_feature_values=n - 1)) == (
        f"s.yaml:3: samples: 8 images at resolution 4 need about {n:,} feature values per cell (N x D, D = 2048), "
        f"over limits.max_feature_values = {n - 1:,}; lower the count or raise the limit in the suite "
        f"(limits: {{max_feature_values: {n}}})")
    # a pixels metric at 64 px: D = 3 x 64 x 64 = 12288 > 2048
    pixels = GOOD.replace("resolution: [4]", "resolution: [64]") + "metrics: {fd: {feature_space: pixels}}\n"
    n_pix = 8 * 3 * 64 * 64
    parse_suite(with_limits(pixels, max_feature_values=n_pix))
    assert f"D = {3 * 64 * 64}" in error_of(with_limits(pixels, max_feature_values=n_pix - 1))
    # pixels at 4 px: 3 x 16 = 48 < 2048, the floor still applies
    small = GOOD + "metrics: {fd: {feature_space: pixels}}\n"
    assert "D = 2048" in error_of(with_limits(small, max_feature_values=n - 1))
    # each resolution of each sampler counts
    sampler_res = GOOD.replace("adapter: analytic-euler", "adapter: analytic-euler\n    resolution: [64]") + \
        "metrics: {fd: {feature_space: pixels}}\n"
    assert "at resolution 64" in error_of(with_limits(sampler_res, max_feature_values=n_pix - 1))


def test_batch_limits_cover_the_quality_and_the_latency_batch():
    parse_suite(with_limits(GOOD + "batch_size: 16\n", max_batch=16))
    assert error_of(with_limits(GOOD + "batch_size: 17\n", max_batch=16)).startswith(
        "s.yaml:10: batch_size: batch size 17 is over limits.max_batch = 16")
    latency = GOOD + "batch_size: 4\nmetrics: {latency: {batch_sizes: [1, 32]}}\n"
    parse_suite(with_limits(latency, max_batch=32))
    assert error_of(with_limits(latency, max_batch=31)).startswith(
        "s.yaml:11: metrics.latency.batch_sizes: latency batch size 32 is over limits.max_batch = 31")


def test_big_numbers_in_limit_messages_have_thousands_separators():
    msg = error_of(GOOD.replace("samples: 8", "samples: 100000000"))
    assert "images per cell 100,000,000 is over limits.max_samples = 1,000,000" in msg
    assert msg.endswith("(limits: {max_samples: 100000000})")


# ------------------------------------------------------------------------------------------ axes


def test_axis_lists_must_be_positive_unique_and_non_empty():
    assert error_of(GOOD.replace("nfe: [1, 2]", "nfe: [2, 2]")) == "s.yaml:8: axes.nfe: nfe has duplicate values"
    assert error_of(GOOD.replace("nfe: [1, 2]", "nfe: [1, 0]")) == (
        "s.yaml:8: axes.nfe: nfe values must be positive integers, got 0")
    assert error_of(GOOD.replace("nfe: [1, 2]", "nfe: [1, true]")) == "s.yaml:8: axes.nfe.1: Input should be a valid integer"
    assert error_of(GOOD.replace("resolution: [4]", "resolution: []")) == (
        "s.yaml:9: axes.resolution: resolution must list at least one value")
    hw = GOOD + "  hardware: [cpu, cpu]\n"
    assert error_of(hw) == "s.yaml:10: axes.hardware: hardware has duplicate values"
    assert error_of(GOOD + "  hardware: []\n") == "s.yaml:10: axes.hardware: hardware must list at least one spec"
    parse_suite(GOOD + "  hardware: [cpu, cpu:threads=1]\n")


def test_guidance_values_scalar_or_list_and_unknown_axes_name_the_known_ones():
    suite = parse_suite(GOOD + "  guidance: 1.5\n")
    assert suite.model.axes.guidance == [1.5]
    assert error_of(GOOD + "  guidance: [1.5, 1.5]\n") == "s.yaml:10: axes.guidance: guidance has duplicate values"
    assert error_of(GOOD + "  guidance: []\n") == "s.yaml:10: axes.guidance: guidance must list at least one value"
    msg = error_of(GOOD + "  colour: [red]\n")
    assert re.match(r"s\.yaml:7: axes: unknown axis 'colour' \(axes: nfe, resolution, hardware, guidance", msg)
    assert msg.endswith("more with bench.spec.register_axis or the bench.axes entry point)")
    sampler = GOOD.replace("adapter: analytic-euler", "adapter: analytic-euler\n    guidance: 2")
    assert parse_suite(sampler).model.samplers[0].guidance == 2.0


# ------------------------------------------------------------------------------------------ overrides


def test_overrides_set_nested_keys_list_items_and_integer_keys_in_order():
    located = parse_yaml(GOOD + "samples_per_resolution: {4: 5}\n", "s.yaml")
    paths = apply_overrides(located, ["samples=3", "samplers.0.nfe=[1]", "axes.nfe=[4]", "axes.nfe=[5, 6]",
                                      "samples_per_resolution.4=9", "report.grid=0", "description="])
    d = located.data
    assert paths == [("samples",), ("samplers", 0, "nfe"), ("axes", "nfe"), ("axes", "nfe"),
                     ("samples_per_resolution", 4), ("report", "grid"), ("description",)]
    assert (d["samples"], d["samplers"][0]["nfe"], d["axes"]["nfe"]) == (3, [1], [5, 6])
    assert d["samples_per_resolution"] == {4: 9} and d["report"] == {"grid": 0} and d["description"] == ""


def test_bad_overrides_say_what_is_wrong():
    def err(item: str, text: str = GOOD) -> str:
        with pytest.raises(BenchError) as e:
            apply_overrides(parse_yaml(text, "s.yaml"), [item])
        return str(e.value)

    for item in ("samples", "=3", "axes..nfe=1", " =1"):
        assert err(item) == f"--set {item!r}: expected KEY=VALUE, e.g. base_seed=1 or axes.resolution=[16]"
    assert err("axes.nfe=[1") == "--set axes.nfe: the value '[1' is not valid YAML"
    assert err("samplers.1=x") == "--set samplers.1: samplers.1 does not exist in the suite"
    assert err("samplers.1.nfe=[1]") == "--set samplers.1.nfe: samplers.1 does not exist in the suite"
    assert err("samplers.0.id.x=1") == "--set samplers.0.id.x: samplers.0.id is not a mapping or list"
    assert err("samplers.x=1") == "--set samplers.x: samplers.x does not exist in the suite"


def test_an_error_in_an_overridden_value_names_the_override_not_a_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD)
    with pytest.raises(BenchError) as e:
        load_suite(path, ["axes.nfe=[0]"])
    assert str(e.value) == f"{path} --set axes.nfe: nfe values must be positive integers, got 0"
    with pytest.raises(BenchError) as e:
        load_suite(path, ["samples=9", "limits.max_samples=5"])
    assert str(e.value).startswith(f"{path} --set samples: images per cell 9 is over limits.max_samples = 5")
    with pytest.raises(BenchError) as e:  # the limit was overridden, the value is the file's: the file's line
        load_suite(path, ["limits.max_samples=5"])
    assert str(e.value).startswith(f"{path}:3: samples: images per cell 8")
    suite = load_suite(path, ["samples=3", "axes.nfe=[4]"])
    assert suite.text == GOOD + "\n# --set samples=3\n# --set axes.nfe=[4]\n" and suite.model.samples == 3


def test_a_suite_parsed_from_text_is_named_string_in_errors():
    with pytest.raises(BenchError) as e:
        parse_suite(GOOD.replace("samples: 8", "samples: 0"))
    assert str(e.value).startswith("<string>:3: samples:")


def test_errors_point_at_the_line_of_the_key():
    assert error_of(GOOD.replace("samples: 8", "samples: 0")).startswith("s.yaml:3: samples:")
    assert error_of(GOOD.replace("    adapter: analytic-euler", "    adapter: analytic-euler\n    nfe: [0]")) \
        .startswith("s.yaml:7: samplers.0.nfe:")
    assert error_of("- a\n") == "s.yaml:1: a suite must be a mapping of keys (name, dataset, samplers, axes, ...)"


def test_a_key_missing_deeper_than_the_yaml_points_at_its_nearest_parent():
    two = GOOD.replace("axes:", "  - id: b\n    options: {}\naxes:")
    assert error_of(two) == "s.yaml:7: samplers.1.adapter: required key is missing"


def test_overrides_reach_string_keys_that_look_like_integers_and_stop_at_scalars():
    located = parse_yaml(GOOD + 'samples_per_resolution: {"4": 5}\n', "s.yaml")
    apply_overrides(located, ["samples_per_resolution.4=9"])
    assert located.data["samples_per_resolution"] == {"4": 9}
    both = parse_yaml(GOOD + 'samples_per_resolution: {4: 5, "4": 6}\n', "s.yaml")
    apply_overrides(both, ["samples_per_resolution.4=9"])  # the integer key, as the suite means resolution 4
    assert both.data["samples_per_resolution"] == {4: 9, "4": 6}
    with pytest.raises(BenchError) as e:
        apply_overrides(parse_yaml(GOOD + "samples_per_resolution: {4: 5}\n", "s.yaml"),
                        ["samples_per_resolution.4.x=1"])
    assert str(e.value) == "--set samples_per_resolution.4.x: samples_per_resolution.4 is not a mapping or list"


def test_a_problem_at_the_top_of_the_document_says_so():
    with pytest.raises(BenchError) as e:
        parse_yaml("!!python/object/apply:os.system [echo hi]\n", "s.yaml")
    assert str(e.value).startswith("s.yaml:1: (top level): ")


def test_more_override_shapes():
    located = parse_yaml(GOOD, "s.yaml")
    apply_overrides(located, ["axes.nfe.0=3", "description=a=b", "report.grid=2"])
    assert located.data["axes"]["nfe"] == [3, 2]  # a list item replaced in place
    assert located.data["description"] == "a=b"  # the first '=' separates key and value
    with pytest.raises(BenchError) as e:  # a new mapping key may be created, a list index may not
        apply_overrides(parse_yaml(GOOD, "s.yaml"), ["samples_per_resolution.16.x=1"])
    assert str(e.value) == "--set samples_per_resolution.16.x: samples_per_resolution.16 does not exist in the suite"


def test_two_distinct_guidance_values_are_not_duplicates():
    assert parse_suite(GOOD + "  guidance: [1.0, 2.5]\n").model.axes.guidance == [1.0, 2.5]


def test_suite_files_read_as_utf8_with_undecodable_bytes_replaced_and_the_size_limit_inclusive(tmp_path):
    from bench.yaml_lines import MAX_BYTES

    path = tmp_path / "s.yaml"
    path.write_bytes("# caf\u00e9 \u2014 ok\n".encode() + b"# \xff\xfe not utf-8\n" + GOOD.encode())
    suite = load_suite(path)
    assert suite.model.name == "ok" and "caf\u00e9 \u2014" in suite.text and "\ufffd" in suite.text
    body = GOOD.encode()
    path.write_bytes(body + b"#" * (MAX_BYTES - len(body) - 1) + b"\n")
    assert path.stat().st_size == MAX_BYTES and load_suite(path).model.name == "ok"
    path.write_bytes(body + b"#" * (MAX_BYTES - len(body)) + b"\n")
    with pytest.raises(BenchError, match=f"over the {MAX_BYTES}-byte limit"):
        load_suite(path)


# ------------------------------------------------------------------------------------------ YAML safety limits


def _yaml_error(text: str) -> str:
    with pytest.raises(BenchError) as e:
        parse_yaml(text, "s.yaml")
    return str(e.value)


def test_nesting_is_allowed_up_to_max_depth_and_refused_beyond():
    from bench.yaml_lines import MAX_DEPTH

    def nested(levels: int) -> str:  # `levels` mappings inside the top one
        return "top: " + "{a: " * levels + "1" + "}" * levels + "\n"

    assert parse_yaml(nested(MAX_DEPTH - 1), "s.yaml").line_of(("top",)) == 1
    assert _yaml_error(nested(MAX_DEPTH)) == (
        f"s.yaml:1: top.a.a...: nested over {MAX_DEPTH} levels deep (a suite is a few levels deep)")


def test_alias_expansions_are_counted_up_to_the_limit():
    from bench.yaml_lines import MAX_ALIASES

    def aliases(count: int) -> str:
        return "base: &b [1]\nuses: [" + ", ".join(["*b"] * count) + "]\n"

    assert len(parse_yaml(aliases(MAX_ALIASES), "s.yaml").data["uses"]) == MAX_ALIASES
    assert _yaml_error(aliases(MAX_ALIASES + 1)) == (
        f"s.yaml:1: more than {MAX_ALIASES} alias expansions (alias bomb?)")  # the anchored node's line


def test_node_count_is_limited():
    from bench.yaml_lines import MAX_NODES

    # a top mapping node, a key and a sequence node, then one node per item: MAX_NODES nodes in all
    fits = "k: [" + ",".join(["1"] * (MAX_NODES - 3)) + "]\n"
    assert len(parse_yaml(fits, "s.yaml").data["k"]) == MAX_NODES - 3
    over = "k: [" + ",".join(["1"] * (MAX_NODES - 2)) + "]\n"
    assert _yaml_error(over) == f"s.yaml:1: suite expands to over {MAX_NODES} nodes (alias bomb?)"


def test_keys_must_be_unique_plain_scalars_without_merges_or_tags():
    assert _yaml_error("a: 1\nb:\n  c: 1\n  c: 2\n") == "s.yaml:4: b.c: duplicate key"
    assert _yaml_error("base: &b {x: 1}\nother:\n  <<: *b\n") == "s.yaml:3: merge keys (<<) are not supported"
    assert _yaml_error("? [1, 2]\n: v\n") == "s.yaml:1: mapping keys must be plain scalars"
    assert _yaml_error("a: !!set {x}\n") == ("s.yaml:1: a: tag 'tag:yaml.org,2002:set' is not allowed (no "
                                             "constructor for it in safe loading)")
    assert _yaml_error("a: !!binary zz\n") == "s.yaml:1: a: failed to decode base64 data: Incorrect padding"
    assert _yaml_error("a:\n  b: !!float x1\n") == ("s.yaml:2: a.b: 'x1' is not a valid float (could not convert "
                                                    "string to float: 'x1')")
    assert _yaml_error("a: !!bool\n") == "s.yaml:1: a: '' is not a valid bool (KeyError)"
    located = parse_yaml("a:\n  - 1\n  -\n    b: 2\n3: x\n", "s.yaml")
    assert located.data == {"a": [1, {"b": 2}], 3: "x"}
    assert (located.line_of(("a", 0)), located.line_of(("a", 1, "b")), located.line_of((3,))) == (2, 4, 5)


# ------------------------------------------------------------------------------------------ reference_stats


def test_reference_stats_files_are_resolved_and_pinned_when_the_suite_loads(tmp_path):
    import hashlib

    import numpy as np

    (tmp_path / "stats").mkdir()
    np.savez(tmp_path / "stats" / "ref.npz", mu=np.zeros(64), sigma=np.eye(64))
    sha = hashlib.sha256((tmp_path / "stats" / "ref.npz").read_bytes()).hexdigest()
    path = tmp_path / "s.yaml"
    path.write_text(GOOD + "metrics:\n  kid: null\n  latency: {batch_sizes: [1]}\n"
                           "  fd:pixels: {reference_stats: stats/ref.npz}\n")
    metrics = load_suite(path).model.metrics
    assert metrics["fd:pixels"] == {"reference_stats": str(tmp_path / "stats" / "ref.npz"),
                                    "reference_stats_sha256": sha}  # relative to the suite file, sha256 pinned
    assert metrics["kid"] is None and metrics["latency"] == {"batch_sizes": [1]}
    plain = tmp_path / "plain.yaml"
    plain.write_text(GOOD + "metrics: {kid: null}\n")
    assert load_suite(plain).model.metrics == {"kid": None}


def test_a_bad_reference_stats_file_is_named_at_its_line_or_its_override(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD + "metrics:\n  kid: null\n  fd:pixels:\n    reference_stats: missing.npz\n")
    with pytest.raises(BenchError) as e:
        load_suite(path)
    assert str(e.value).startswith(f"{path}:13: metrics.fd:pixels.reference_stats: ")
    assert "missing.npz" in str(e.value)
    path.write_text(GOOD)
    with pytest.raises(BenchError) as e:
        load_suite(path, ["metrics={fd: {reference_stats: gone.npz}}"])
    assert str(e.value).startswith(f"{path} --set metrics.fd.reference_stats: ") and "gone.npz" in str(e.value)
    path.write_text(GOOD + "metrics:\n  fd_floor:\n    reference_stats: x.npz\n")
    with pytest.raises(BenchError) as e:
        load_suite(path)
    assert str(e.value).startswith(f"{path}:12: metrics.fd_floor.reference_stats: fd_floor cannot use a statistics")


def test_sampler_axis_values_and_dataset_options():
    suite = parse_suite(GOOD.replace("adapter: analytic-euler", "adapter: analytic-euler\n    guidance: [1, 2]")
                        + "  guidance: [3.0]\n")
    sampler, axes = suite.model.samplers[0], suite.model.axes
    assert axes.extra() == {"guidance": [3.0]} and sampler.axis_values(axes) == {"guidance": [1.0, 2.0]}
    one = parse_suite(GOOD.replace("adapter: analytic-euler", "adapter: analytic-euler\n    guidance: 2") +
                      "  guidance: [3.0]\n").model
    assert one.samplers[0].axis_values(one.axes) == {"guidance": [2.0]}  # a single value becomes a list
    plain = parse_suite(GOOD).model
    assert plain.axes.extra() == {} and plain.samplers[0].axis_values(plain.axes) == {}
    assert plain.dataset.options() == {"split": "eval"}
    extra = parse_suite(GOOD.replace("dataset: {name: gmm}", "dataset: {name: gmm, components: 4}")).model
    assert extra.dataset.options() == {"split": "eval", "components": 4}


def test_the_pixels_dimension_counts_only_for_a_pixels_metric():
    n = 8 * FEATURE_DIM_FLOOR
    other = GOOD.replace("resolution: [4]", "resolution: [64]") + "metrics: {kid: null, fd: {feature_space: clip}}\n"
    parse_suite(with_limits(other, max_feature_values=n))  # D = 2048, not 3 x 64 x 64
    latency_only = GOOD + "batch_size: 4\nmetrics: {latency: null}\n"
    parse_suite(with_limits(latency_only, max_batch=4))  # no batch_sizes given: nothing else to check


def test_yaml_errors_point_at_the_problem_not_its_context():
    # the flow sequence opens on line 1 (the context); the problem is the ':' on line 2
    assert _yaml_error("a: [1, 2\nb: 3\n") == "s.yaml:2: invalid YAML: expected ',' or ']', but got ':'"
    assert _yaml_error("") == "s.yaml:1: the suite is empty"
    assert _yaml_error("# only a comment\n") == "s.yaml:1: the suite is empty"
    from bench.yaml_lines import MAX_DEPTH

    deep = _yaml_error("a: " + "[" * 20000 + "]" * 20000 + "\n")
    assert deep == f"s.yaml:1: the YAML nests too deeply (a suite is a few levels deep; over {MAX_DEPTH} is refused)"
