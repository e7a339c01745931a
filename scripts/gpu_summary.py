"""Tables from a scripts/gpu_check.sh output folder (unpacked cells.tar.gz beside busy.json and dmon.txt).

    python scripts/gpu_summary.py DIR [--cpu-store runs/nfe4/bench.sqlite]

Prints: nfe_sweep's cuda cells (FD next to the CPU run's when --cpu-store is given, latency, memory), the
tiny_diffusers cuda cells, the float16 cells with the determinism probe's max |alone - in batch|, eager vs
torch.compile, the GPU-busy fractions and nvidia-smi's SM utilisation while the cells ran.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
from pathlib import Path

import pandas as pd


def _cells(store: Path) -> pd.DataFrame:
    with sqlite3.connect(store) as db:
        cells = pd.read_sql("select cell_key, sampler, nfe_requested, nfe_counted, resolution, hardware, status, "
                            "error, info from cells", db)
        metrics = pd.read_sql("select cell_key, name, value from metrics", db)
    wide = metrics.pivot_table(index="cell_key", columns="name", values="value", aggfunc="first")
    out = cells.merge(wide, left_on="cell_key", right_index=True, how="left")
    out["probe_max"] = [json.loads(i or "{}").get("determinism_probe", {}).get("max_abs_diff") for i in out["info"]]
    return out.drop(columns=["info"])


def _show(title: str, df: pd.DataFrame, cols: list[str]) -> None:
    print(f"\n## {title}\n")
    cols = [c for c in cols if c in df.columns]
    if not len(df):
        print("(no cells)")
        return
    print("| " + " | ".join(cols) + " |\n|" + " --- |" * len(cols))
    for row in df[cols].itertuples(index=False):
        print("| " + " | ".join(_fmt(v) for v in row) + " |")


def _fmt(v: object) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path)
    p.add_argument("--cpu-store", type=Path, default=None, help="a CPU nfe_sweep store to compare FD with")
    a = p.parse_args()
    d = a.dir
    keys = ["sampler", "resolution", "nfe_requested", "nfe_counted"]
    lat = ["latency_ms_batch1", "latency_ms_per_image", "peak_memory_mb"]
    if (d / "nfe.sqlite").exists():
        nfe = _cells(d / "nfe.sqlite")
        nfe = nfe[nfe.status == "done"].sort_values(keys)
        if a.cpu_store:
            cpu = _cells(a.cpu_store)
            cpu = cpu[(cpu.status == "done") & (cpu.hardware == "cpu")][["sampler", "resolution", "nfe_requested",
                                                                         "fd", "latency_ms_batch1",
                                                                         "latency_ms_per_image"]]
            nfe = nfe.merge(cpu, on=["sampler", "resolution", "nfe_requested"], how="left", suffixes=("", "_cpu"))
            nfe["fd_diff"] = nfe["fd"] - nfe["fd_cpu"]
            nfe["speedup_b1"] = nfe["latency_ms_batch1_cpu"] / nfe["latency_ms_batch1"]
            nfe["speedup_b16"] = nfe["latency_ms_per_image_cpu"] / nfe["latency_ms_per_image"]
        _show("nfe_sweep, cuda cells", nfe, [*keys, "fd", "fd_cpu", "fd_diff", *lat, "speedup_b1", "speedup_b16", "probe_max"])
        if "fd_diff" in nfe:
            print(f"\nmax |FD cuda - FD cpu| over {nfe.fd_diff.notna().sum()} cells: {nfe.fd_diff.abs().max():.4f}")
    if (d / "tiny.sqlite").exists():
        tiny = _cells(d / "tiny.sqlite").sort_values(keys)
        _show("tiny_diffusers, cuda cells", tiny, keys + ["status"] + lat + [c for c in tiny.columns
                                                                           if c.startswith("latency_denoising")])
    if (d / "fp16.sqlite").exists():
        fp16 = _cells(d / "fp16.sqlite").sort_values(keys)
        _show("float16 cells (determinism probe tolerance 32 levels)", fp16, [*keys, "status", "fd", "probe_max", *lat])
    if (d / "compile.sqlite").exists():
        comp = _cells(d / "compile.sqlite").sort_values([*keys, "hardware"])
        _show("eager vs torch.compile", comp, [*keys, "hardware", "status", "error", *lat])
    if (d / "busy.json").exists():
        rows = json.loads((d / "busy.json").read_text())["rows"]
        _show("GPU busy while sampling (kernel time / wall time)", pd.DataFrame(rows),
              ["adapter", "model", "nfe", "res", "batch", "wall_ms", "device_busy_ms", "busy_fraction", "host_randn_ms"])
    if (d / "dmon.txt").exists():
        sm = [int(line.split()[2]) for line in (d / "dmon.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#") and line.split()[2].isdigit()]
        if sm:
            print(f"\nnvidia-smi dmon SM utilisation over {len(sm)} one-second samples during stages 1-4: "
                  f"median {statistics.median(sm)} %, mean {statistics.mean(sm):.1f} %, max {max(sm)} %")


if __name__ == "__main__":
    main()
