"""Small CLI commands: schema, list, doctor, --help, and parallel jobs."""

from __future__ import annotations

import json
import subprocess
import sys

import bench
from bench.cli import main
from bench.hardware import HardwareSpec
from tests._paths import bench_env


def test_schema_is_json_schema_with_all_sections(tmp_path, capsys):
    out = tmp_path / "schema.json"
    assert main(["schema", "-o", str(out)]) == 0
    schema = json.loads(out.read_text())
    assert schema["title"] == "flowmap-bench suite"
    assert {"name", "dataset", "samples", "samplers", "axes", "metrics", "gates", "report"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {"name", "dataset", "samples", "samplers", "axes"}


def test_list_samplers_shows_entry_points(capsys):
    assert main(["list", "samplers"]) == 0
    out = capsys.readouterr().out
    for name in ("analytic-euler", "analytic-heun", "analytic-oracle-flowmap"):
        assert name in out
    assert "bench.adapters.analytic:AnalyticEuler" in out and "module.path:ClassName" in out


def test_doctor_prints_fingerprint(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "cpu_model" in out and "torch:" in out and "cuda: no CUDA device" in out


def test_help_explains_commands():
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, check=True,
                         env=bench_env()).stdout
    for cmd in ("run", "export", "list", "doctor", "schema", "zoo"):
        assert cmd in out
    run_help = subprocess.run([sys.executable, "-m", "bench", "run", "--help"], capture_output=True, text=True,
                              check=True, env=bench_env()).stdout
    assert "--dry-run" in run_help and "--force" in run_help and "Exit 0" in run_help


def test_hardware_spec_parsing():
    hw = HardwareSpec.parse("cuda:1:dtype=float16,compile=true,threads=4")
    assert (hw.device, hw.dtype, hw.compile, hw.threads) == ("cuda:1", "float16", True, 4)
    assert HardwareSpec.parse(hw.label) == hw
    assert HardwareSpec.parse("cpu").label == "cpu"


def test_two_jobs_give_the_same_numbers_as_one(tiny_suite, tmp_path):
    suite = tiny_suite("- {id: e, adapter: analytic-euler, options: {components: 4}}\n"
                       "- {id: h, adapter: analytic-heun, options: {components: 4}}")
    assert main(["run", str(suite), "--store", str(tmp_path / "a.sqlite"), "--no-progress", "--jobs", "2"]) == 0
    assert main(["run", str(suite), "--store", str(tmp_path / "b.sqlite"), "--no-progress"]) == 0

    def quality(p):
        df = bench.load_results(str(p))
        df = df[df.metric.isin(["pixel_mean", "pixel_mse_to_ref"])]
        return sorted(zip(df.sampler, df.nfe, df.metric, df.value, strict=True))

    assert quality(tmp_path / "a.sqlite") == quality(tmp_path / "b.sqlite")


def test_list_datasets_says_what_each_is_and_its_options(capsys):
    assert main(["list", "datasets"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("gmm"))
    assert "analytic world" in line and "options: split, components" in line
    assert any(ln.strip().startswith("shapes") and "options: split" in ln for ln in out.splitlines())
