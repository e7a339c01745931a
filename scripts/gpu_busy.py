"""How busy the GPU is while a sampler samples: kernel time over wall time, per sampler (scripts/gpu_check.sh).

    python scripts/gpu_busy.py [--hardware cuda] [--out busy.json]

For each case: 2 warm-up calls, then the median wall time of 5 synchronised `sample()` calls, then one call under
torch.profiler whose CUDA kernel and copy intervals are merged (overlaps counted once). busy = merged device
time / median wall time: 1.0 means the GPU never waits on Python; the rest is host work (noise drawn per image
on the CPU, Python between launches, text encoding). `host_randn_ms` is the CPU time in aten::randn /
normal_ during the profiled call (per-image noise is drawn on the CPU by design: bit-identical across devices).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from bench.adapters.protocol import SampleRequest
from bench.adapters.registry import build_sampler
from bench.hardware import HardwareSpec

CASES: list[dict[str, Any]] = [
    {"adapter": "teacher-euler", "options": {}, "nfe": 4, "res": 16, "batch": 250, "prompts": "shapes"},
    {"adapter": "teacher-euler", "options": {}, "nfe": 4, "res": 16, "batch": 1, "prompts": "shapes"},
    {"adapter": "zoo-flowmap", "options": {"model": "flowmap-lmd"}, "nfe": 1, "res": 16, "batch": 250,
     "prompts": "shapes"},
    {"adapter": "zoo-flowmap", "options": {"model": "flowmap-lmd"}, "nfe": 1, "res": 16, "batch": 1,
     "prompts": "shapes"},
    {"adapter": "zoo-consistency", "options": {"model": "consistency"}, "nfe": 4, "res": 32, "batch": 250,
     "prompts": "shapes"},
    {"adapter": "zoo-lcm", "options": {"model": "lcm"}, "nfe": 4, "res": 16, "batch": 250, "prompts": "shapes"},
    {"adapter": "sdxl-turbo", "options": {"model": "tiny:sdxl"}, "nfe": 1, "res": 32, "batch": 4, "prompts": "text"},
    {"adapter": "flow-map", "options": {"model": "tiny:flowmap"}, "nfe": 4, "res": 32, "batch": 8, "prompts": "labels"},
]


def _request(case: dict[str, Any]) -> SampleRequest:
    n = case["batch"]
    seeds = list(range(n))
    kw: dict[str, Any] = {}
    if case["prompts"] == "shapes":
        from bench.zoo.shapes import ShapesDataset

        kw["prompts"] = ShapesDataset("eval").conditions(range(n)).prompts
    elif case["prompts"] == "text":
        kw["prompts"] = ["a photo of a cat sitting on a sofa"] * n
    else:
        kw["labels"] = [i % 1000 for i in range(n)]
    return SampleRequest(seeds=seeds, nfe=case["nfe"], height=case["res"], width=case["res"], **kw)


def _merged_us(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def measure(case: dict[str, Any], hw: HardwareSpec) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    sampler = build_sampler(case["adapter"], dict(case["options"]))
    sampler.load(hw)
    req = _request(case)
    sync = torch.cuda.synchronize if hw.kind == "cuda" else (lambda: None)
    for _ in range(2):
        sampler.sample(req)
    sync()
    walls = []
    for _ in range(5):
        t0 = time.perf_counter()
        sampler.sample(req)
        sync()
        walls.append(time.perf_counter() - t0)
    wall_ms = statistics.median(walls) * 1e3
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if hw.kind == "cuda" else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        sampler.sample(req)
        sync()
        prof_wall_ms = (time.perf_counter() - t0) * 1e3
    dev, randn_us = [], 0.0
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            dev.append((e.time_range.start, e.time_range.end))
        elif e.name in ("aten::randn", "aten::normal_"):
            randn_us += e.self_cpu_time_total
    busy_ms = _merged_us(dev) / 1e3
    return {**{k: case[k] for k in ("adapter", "nfe", "res", "batch")}, "model": case["options"].get("model"),
            "wall_ms": round(wall_ms, 3), "wall_ms_runs": [round(w * 1e3, 3) for w in walls],
            "profiled_wall_ms": round(prof_wall_ms, 3), "device_busy_ms": round(busy_ms, 3),
            "busy_fraction": round(busy_ms / wall_ms, 4) if wall_ms else None,
            "host_randn_ms": round(randn_us / 1e3, 3), "kernels": len(dev)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hardware", default="cuda")
    p.add_argument("--out", default=None)
    p.add_argument("--only", nargs="*", default=None, help="adapters to measure (default: all cases)")
    a = p.parse_args()
    hw = HardwareSpec.parse(a.hardware)
    rows = []
    for case in CASES:
        if a.only and case["adapter"] not in a.only:
            continue
        try:
            row = measure(case, hw)
        except Exception as e:  # one broken case must not lose the others
            row = {"adapter": case["adapter"], "error": f"{type(e).__name__}: {e}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"hardware": a.hardware, "torch": torch.__version__,
                       "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
