"""Time one nfe_sweep cell's feature-space quality metrics, each call alone (the Cost table in docs/metrics.md).

    python scripts/metric_cost.py [--samples 1000] [--resolution 16] [--repeats 3]

The cell's samples are the shapes eval split's matched draw 2 (a perfect sampler), scored in shapes-clip against
the eval images at the same indices, as nfe_sweep scores them. FD runs once first, so the features, the reference
set and the noise floor are cached and each timed call is the metric's own cost (features shared, as in a cell).
Prints the best of `--repeats` wall and CPU seconds per metric: on a shared machine read the CPU seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.datasets import build_dataset
from bench.metrics.registry import QualityContext, get_metric

SPACE = {"feature_space": "shapes-clip"}
METRICS = (("fd", {**SPACE, "bootstrap": 200}), ("kid", SPACE), ("precision_recall", SPACE), ("cmmd", SPACE),
           ("density_coverage", SPACE))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    ds = build_dataset("shapes", {"split": "eval"})
    idx = list(range(a.samples))
    cond = ds.conditions(idx)
    ctx = QualityContext(images=ds.matched_images(idx, a.resolution, draw=2), indices=idx, seeds=idx,
                         prompts=cond.prompts, labels=cond.labels, dataset=ds, resolution=a.resolution,
                         device=torch.device("cpu"), cache_dir=Path(tempfile.mkdtemp(prefix="metric-cost-")), seed=0)
    get_metric("fd")(ctx, dict(METRICS[0][1]))  # features, reference and floor computed and cached
    for name, opts in METRICS:
        wall, cpu = [], []
        for _ in range(a.repeats):
            for key in [k for k in ctx.shared if k.startswith("prc:")]:  # precision/recall caches its results
                del ctx.shared[key]
            t, c = time.perf_counter(), time.process_time()
            results = get_metric(name)(ctx, dict(opts))
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        shown = "  ".join(f"{r.name}={r.value:.4g} [{r.ci_low:.4g}, {r.ci_high:.4g}]" for r in results)
        print(f"N={a.samples} {a.resolution}px {name:17s} {min(wall):6.3f} s wall {min(cpu):6.3f} s CPU  {shown}")


if __name__ == "__main__":
    main()
