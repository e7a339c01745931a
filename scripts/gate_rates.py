"""Measure the gate's false-alarm and detection rates on the CI suite (the table in docs/ci.md).

    python scripts/gate_rates.py reruns [--count 20] [--busy 10] [--out runs/gate-rates]
    python scripts/gate_rates.py detect [--factors 0.01 0.02 0.03 0.05 0.1] [--out runs/gate-rates]
    python scripts/gate_rates.py slow [--slowdown 1.5] [--count 3] [--out runs/gate-rates]
    python scripts/gate_rates.py regate [--out runs/gate-rates]

`reruns`: the unchanged suites/ci.yaml, each run into a fresh store and gated against the committed
baselines/ci.cpu-threads-1.json with the default rules; the last `--busy` runs share the machine with a process
spinning on one core (`taskset -c 0`). A false alarm is any exit code other than 0.

`detect`: suites/ci.yaml with every sampler wrapped by tests/plugins/degraded.py (output pulled toward mid-grey
by BENCH_DEGRADE_FACTOR, which leaves the suite text and hash unchanged); a baseline is recorded at factor 0,
then each factor is run and gated. Per cell: the FD change and the gate's verdict. A regression counts as
detected when its cell's fd check fails.

`slow`: the same wrapped suite with every sample() call made `--slowdown` times slower (BENCH_SLOWDOWN, a CPU
spin), gated against the factor-0 baseline of `detect` (run `detect` first): per run, which latency checks
failed, passed or were skipped as unstable.

`regate`: gate the stores the commands above left (rerun-*, slow-*) again with the current gate code, without
re-measuring anything: how a change of the gate's rules moves the false alarms and detections on the same data.

Run it alone on the machine: other jobs make latencies unstable (reported, not failed) and slow everything.
Prints Markdown tables; writes JSON next to the stores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "ci.yaml"
BASELINE = ROOT / "baselines" / "ci.cpu-threads-1.json"
WRAPPED = {"analytic-euler": "tests.plugins.degraded:GreyEuler", "analytic-heun": "tests.plugins.degraded:GreyHeun",
           "analytic-oracle-flowmap": "tests.plugins.degraded:GreyOracle"}


def _bench(*args: str, env: dict[str, str] | None = None, cwd: Path) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env=e, text=True, capture_output=True)


def _gate(baseline: Path, store: Path, cwd: Path) -> tuple[int, dict[str, Any]]:
    out = _bench("gate", "--baseline", str(baseline), "--store", str(store), "--format", "json", cwd=cwd)
    try:
        data = json.loads(out.stdout)
    except json.JSONDecodeError:
        data = {"error": (out.stderr or out.stdout).strip().splitlines()[-1:]}
    return out.returncode, data


def _run(suite: Path, store: Path, cwd: Path, env: dict[str, str] | None = None) -> float:
    shutil.rmtree(store.parent, ignore_errors=True)
    t0 = time.perf_counter()
    r = _bench("run", str(suite), "--store", str(store), "--no-progress", env=env, cwd=cwd)
    if r.returncode not in (0, 1):
        raise SystemExit(f"bench run failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return time.perf_counter() - t0


def reruns(count: int, busy: int, out: Path) -> None:
    rows = []
    for i in range(count):
        spinner = None
        if i >= count - busy:
            spinner = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"])
        try:
            store = out / f"rerun-{i:02d}" / "r.sqlite"
            wall = _run(SUITE, store, out)
            code, data = _gate(BASELINE, store, out)
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
        checks = data.get("checks", []) + data.get("front", [])
        rows.append({"run": i, "busy": spinner is not None, "exit": code, "wall_s": round(wall, 1),
                     "fail": [f"{c['cell']} {c['metric']}" for c in checks if c["status"] == "FAIL"],
                     "unstable_skips": sum(c["status"] == "SKIP" and "unstable" in (c.get("note") or "")
                                           for c in checks),
                     "fd_changes": sorted({c["note"] for c in checks if c["metric"] == "fd"}),
                     "calibration_ratio": data.get("calibration_ratio")})
        print(json.dumps(rows[-1]), file=sys.stderr)
    (out / "reruns.json").write_text(json.dumps(rows, indent=1))
    quiet = [r for r in rows if not r["busy"]]
    loaded = [r for r in rows if r["busy"]]
    print("| runs | machine | false alarms (exit != 0) | latency checks skipped as unstable | fd paired changes |")
    print("|---|---|---|---|---|")
    for name, group in (("idle", quiet), ("one core busy", loaded)):
        if group:
            alarms = sum(r["exit"] != 0 for r in group)
            skips = sum(r["unstable_skips"] for r in group)
            fds = sorted({n for r in group for n in r["fd_changes"]})
            print(f"| {len(group)} | {name} | {alarms} | {skips} | {'; '.join(fds)[:200]} |")


def _wrapped_suite(out: Path) -> Path:
    text = SUITE.read_text()
    for name, target in WRAPPED.items():
        text = text.replace(f"adapter: {name}\n", f'adapter: "{target}"\n')
    path = out / "ci-degradable.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def detect(factors: list[float], out: Path) -> None:
    suite = _wrapped_suite(out)
    base_store = out / "detect-base" / "r.sqlite"
    _run(suite, base_store, out, {"BENCH_DEGRADE_FACTOR": "0"})
    baseline = out / "detect-baseline.json"
    r = _bench("baseline", "save", "--store", str(base_store), "-o", str(baseline), cwd=out)
    if r.returncode:
        raise SystemExit(r.stderr)
    rows = []
    for f in factors:
        store = out / f"detect-{f:g}" / "r.sqlite"
        _run(suite, store, out, {"BENCH_DEGRADE_FACTOR": f"{f:g}"})
        code, data = _gate(baseline, store, out)
        for c in data.get("checks", []):
            if c["metric"] == "fd":
                rows.append({"factor": f, "cell": c["cell"], "change": c["change"], "status": c["status"],
                             "note": c["note"], "exit": code})
        print(f"factor {f:g}: exit {code}", file=sys.stderr)
    (out / "detect.json").write_text(json.dumps(rows, indent=1))
    print("| grey factor | cell | FD change | gate | paired change [95% CI] |")
    print("|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["factor"], r["change"] or 0)):
        print(f"| {r['factor']:g} | {r['cell'].split(' hw=')[0]} | {100 * (r['change'] or 0):+.1f}% | {r['status']} "
              f"| {r['note'].removeprefix('paired change ')} |")
    big = [r for r in rows if (r["change"] or 0) >= 0.05]
    print(f"\nregressions >= 5 %: {sum(r['status'] == 'FAIL' for r in big)}/{len(big)} detected; "
          f"1-5 %: {sum(r['status'] == 'FAIL' for r in rows if 0.01 <= (r['change'] or 0) < 0.05)}/"
          f"{sum(0.01 <= (r['change'] or 0) < 0.05 for r in rows)} detected")


def slow(slowdown: float, count: int, out: Path) -> None:
    suite = _wrapped_suite(out)
    baseline = out / "detect-baseline.json"
    if not baseline.is_file():
        raise SystemExit(f"{baseline} missing: run `detect` first")
    rows = []
    for i in range(count):
        store = out / f"slow-{i}" / "r.sqlite"
        _run(suite, store, out, {"BENCH_SLOWDOWN": f"{slowdown:g}"})
        code, data = _gate(baseline, store, out)
        lat = [c for c in data.get("checks", []) if c["metric"].startswith("latency")]
        rows.append({"run": i, "exit": code, "fail": sum(c["status"] == "FAIL" for c in lat),
                     "pass": sum(c["status"] in ("PASS", "BETTER") for c in lat),
                     "skip": sum(c["status"] == "SKIP" for c in lat),
                     "ratios": [round(c["run"] / c["baseline"], 2) for c in lat if c["run"] and c["baseline"]]})
        print(json.dumps(rows[-1]), file=sys.stderr)
    (out / "slow.json").write_text(json.dumps(rows, indent=1))
    print("| run | exit | latency checks failed | passed | skipped (unstable) | calibrated ratios |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['exit']} | {r['fail']} | {r['pass']} | {r['skip']} | {r['ratios']} |")


def regate(out: Path) -> None:
    print("| store | baseline | exit | failed checks | latency checks skipped as unstable |")
    print("|---|---|---|---|---|")
    for store in sorted(out.glob("rerun-*/r.sqlite")) + sorted(out.glob("slow-*/r.sqlite")):
        baseline = BASELINE if store.parent.name.startswith("rerun-") else out / "detect-baseline.json"
        code, data = _gate(baseline, store, out)
        checks = data.get("checks", []) + data.get("front", [])
        fails = [f"{c['cell'].split(' hw=')[0]} {c['metric']}" for c in checks if c["status"] == "FAIL"]
        skips = sum(c["status"] == "SKIP" and "unstable" in (c.get("note") or "") for c in checks)
        print(f"| {store.parent.name} | {baseline.name} | {code} | {'; '.join(fails) or '-'} | {skips} |")


def main() -> None:
    # a killed measurement must not leave its busy-core spinner behind (it would skew every later timing)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("reruns")
    a.add_argument("--count", type=int, default=20)
    a.add_argument("--busy", type=int, default=10)
    a.add_argument("--out", type=Path, default=ROOT / "runs" / "gate-rates")
    d = sub.add_parser("detect")
    d.add_argument("--factors", type=float, nargs="+", default=[0.01, 0.02, 0.03, 0.05, 0.1])
    d.add_argument("--out", type=Path, default=ROOT / "runs" / "gate-rates")
    w = sub.add_parser("slow")
    w.add_argument("--slowdown", type=float, default=1.5)
    w.add_argument("--count", type=int, default=3)
    w.add_argument("--out", type=Path, default=ROOT / "runs" / "gate-rates")
    g = sub.add_parser("regate")
    g.add_argument("--out", type=Path, default=ROOT / "runs" / "gate-rates")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cmd == "reruns":
        reruns(args.count, args.busy, args.out.resolve())
    elif args.cmd == "regate":
        regate(args.out.resolve())
    elif args.cmd == "slow":
        slow(args.slowdown, args.count, args.out.resolve())
    else:
        detect(args.factors, args.out.resolve())


if __name__ == "__main__":
    main()
