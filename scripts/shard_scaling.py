"""Measure sharding's speed-up on one large nfe_sweep cell (issue 17, docs/cluster.md).

    python scripts/shard_scaling.py [--samples 4000] [--sampler flowmap-lmd] [--nfe 4] [--executor local|ray]
                                    [--out runs/shard-scaling]

One cell of suites/nfe_sweep.yaml (the sampler at 16x16 on cpu:threads=1, `--samples` images, its quality metrics,
no latency) is run three times into fresh stores: a warm-up that fills the reference-statistics cache (shared by
the next two), unsharded with one worker, and in two shards with two workers (`--jobs 2`, or two Ray workers).
Prints the sampling + feature phase (unsharded: the cell's sample, features and probe phases; sharded: the
shard round's wall time) and the metric phase apart, and checks that both runs stored the same numbers.
Run it alone on the machine: timings taken while other jobs run are not evidence.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _suite(out: Path, sampler: str, nfe: int, samples: int) -> Path:
    d = yaml.safe_load((ROOT / "suites" / "nfe_sweep.yaml").read_text())
    d["samplers"] = [s for s in d["samplers"] if s["id"] == sampler]
    for s in d["samplers"]:
        s.pop("nfe", None)
        s.pop("resolution", None)
    d["axes"] = {"nfe": [nfe], "resolution": [16], "hardware": ["cpu:threads=1"]}
    d["samples"] = samples
    d.pop("samples_per_resolution", None)
    d["metrics"].pop("latency", None)
    d["report"] = {"enabled": False, "grid": 0}
    path = out / "cell.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def _run(suite: Path, store: Path, cache: Path, *args: str) -> tuple[float, str]:
    shutil.rmtree(store.parent, ignore_errors=True)
    store.parent.mkdir(parents=True)
    if cache.is_dir():
        shutil.copytree(cache, store.parent / "cache")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "bench", "run", str(suite), "--store", str(store), "--no-progress",
                        "--no-report", *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"bench run failed: {r.stderr.strip()[-800:]}")
    return time.perf_counter() - t0, r.stdout


def _cell(store: Path) -> tuple[dict, dict]:
    with sqlite3.connect(store) as db:
        phases = json.loads(db.execute("SELECT phases FROM cells").fetchone()[0])
        metrics = {n: (v, lo, hi) for n, v, lo, hi in db.execute("SELECT name, value, ci_low, ci_high FROM metrics")}
    return phases, metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=4000)
    p.add_argument("--sampler", default="flowmap-lmd")
    p.add_argument("--nfe", type=int, default=4)
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "shard-scaling")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    suite = _suite(a.out, a.sampler, a.nfe, a.samples)
    warm = a.out / "warm" / "r.sqlite"
    _run(suite, warm, Path("/nonexistent"))
    cache = warm.parent / "cache"
    ex = ["--executor", a.executor]
    wall1, _ = _run(suite, a.out / "one" / "r.sqlite", cache, *ex, "--jobs", "1")
    half = a.samples // 2
    wall2, out2 = _run(suite, a.out / "two" / "r.sqlite", cache, *ex, "--jobs", "2", "--set", f"shard_size={half}")
    ph1, m1 = _cell(a.out / "one" / "r.sqlite")
    ph2, m2 = _cell(a.out / "two" / "r.sqlite")
    rounds = re.search(r"sampling round ([0-9.]+) s, scoring round ([0-9.]+) s", out2)
    if rounds is None:
        raise SystemExit(f"the sharded run printed no round times: {out2}")
    sample1 = sum(ph1.get(k, 0.0) for k in ("load", "sample", "features", "probe", "save"))
    sample2 = float(rounds.group(1))
    with sqlite3.connect(a.out / "two" / "r.sqlite") as db:
        shards = json.loads(db.execute("SELECT info FROM cells").fetchone()[0])["shards"]
    busiest = max(shards["wall_s"])
    print(f"cell: {a.sampler} nfe={a.nfe} 16x16 cpu:threads=1, {a.samples} images, executor {a.executor}")
    print("| run | sampling + features (s) | the same, with worker start-up (s) | metrics (s) | whole command (s) |")
    print("|---|---|---|---|---|")
    print(f"| 1 worker, unsharded | {sample1:.1f} (its load, sample, features, probe phases) | - | "
          f"{ph1.get('metrics', 0.0):.1f} | {wall1:.1f} |")
    print(f"| 2 workers, 2 shards | {busiest:.1f} (the slower shard's task) | {sample2:.1f} (the shard round's "
          f"wall) | {ph2.get('metrics', 0.0):.1f} | {wall2:.1f} |")
    print(f"speed-up of the sampling + feature phase: {sample1 / busiest:.2f}x; counting the start of the workers "
          f"inside the shard round: {sample1 / sample2:.2f}x")
    print(f"shards: {shards}")
    quality = [k for k in m1 if k != "peak_memory_mb"]  # memory is a measurement of the process, not a score
    same = m1.keys() == m2.keys() and all(m1[k] == m2[k] for k in quality)
    print(f"quality numbers identical: {same} ({len(quality)} stored numbers)")


if __name__ == "__main__":
    main()
