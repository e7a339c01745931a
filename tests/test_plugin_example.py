"""The docs' worked example: a third-party package installs, registers through entry points, and runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests._paths import ROOT, bench_env


def test_example_plugin_installs_lists_and_runs(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(ROOT / "examples" / "bench-plugin-example")],
        check=True, capture_output=True, text=True,
    )
    env = bench_env(target)
    listed = subprocess.run([sys.executable, "-m", "bench", "list", "samplers"], env=env, capture_output=True,
                            text=True, check=True)
    assert "example-damped-euler" in listed.stdout and "bench_plugin_example:DampedEuler" in listed.stdout

    suite = tmp_path / "plugin.yaml"
    suite.write_text(textwrap.dedent("""
        name: plugin
        dataset: {name: gmm}
        samples: 8
        batch_size: 8
        samplers:
          - {id: damped, adapter: example-damped-euler, options: {damping: 0.3}}
        axes: {nfe: [1, 3, 32], resolution: [4], hardware: [cpu]}
        metrics: {latency: {batch_sizes: [1], min_run_time: 0.01, max_run_time: 0.05}}
        report: {grid: 2}
    """))
    store = tmp_path / "r.sqlite"
    run = subprocess.run([sys.executable, "-m", "bench", "run", str(suite), "--store", str(store), "--no-progress"],
                         env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "2 computed" in run.stdout and "1 skipped" in run.stdout

    import bench

    df = bench.load_results(str(store))
    done = df[df.status == "done"].drop_duplicates("nfe")
    assert sorted(done.nfe_counted) == [1.0, 3.0]
    skipped = df[df.status == "skipped"]
    assert "NFE 32 not supported" in skipped.reason.iloc[0]
