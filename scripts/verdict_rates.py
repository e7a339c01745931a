"""How often the paired verdicts ("A better than B", "tie") are wrong, measured across sampling seed sets.

    python scripts/verdict_rates.py [--seed-sets 10] [--samples 256] [--out runs/verdict-rates]

suites/ci.yaml (the analytic world: teacher Euler / Heun and the oracle flow map, FD in pixels space) is run
with `--seed-sets` different base seeds (latency off). For every pair of its cells and every seed set,
bench.analysis gives the paired FD difference with its 95 % interval. The mean difference over all seed sets
stands in for the true one (its own standard error is printed). Reported:

- coverage: how often a seed set's paired interval contains the mean difference (nominal 95 %);
- wrong-direction verdicts (false alarms): a "better"/"worse" verdict whose sign disagrees with the mean
  difference, where the mean difference is itself clearly away from 0 (|mean| > 3 standard errors);
- verdicts on pairs whose mean difference is within 3 standard errors of 0: how often one seed set called
  them different;
- detection: how often a pair with a clear mean difference was called different (not a tie).
Prints Markdown. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _suite(base_seed: int, samples: int, out: Path) -> Path:
    lines = []
    for line in (ROOT / "suites" / "ci.yaml").read_text().splitlines():
        if line.strip().startswith(("latency:", "memory:")):
            continue
        if line.startswith("base_seed:"):
            line = f"base_seed: {base_seed}"
        if line.startswith("samples:"):
            line = f"samples: {samples}"
        lines.append(line)
    path = out / f"ci-seed{base_seed}.yaml"
    path.write_text("\n".join(lines).replace("grid: 4", "grid: 0") + "\n")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed-sets", type=int, default=10)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "verdict-rates")
    args = p.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    from bench.analysis import PairedComparer
    from bench.store import Store

    per_set: list[dict[str, dict]] = []
    for k in range(args.seed_sets):
        seed = 1_000_003 * k
        store = out / f"seed{k}" / "r.sqlite"
        if not store.exists():
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            r = subprocess.run([sys.executable, "-m", "bench", "run", str(_suite(seed, args.samples, out)), "--store",
                                str(store), "--no-progress"], cwd=out, env=env, text=True, capture_output=True)
            if r.returncode:
                raise SystemExit(r.stderr[-400:])
        with Store(store, readonly=True) as st:
            rows = st.db.execute("SELECT cell_key, sampler, nfe_requested FROM cells WHERE status='done'").fetchall()
            per_set.append({f"{s}@{n}": st.evidence(key)["fd"] for key, s, n in rows})
        print(f"seed set {k}: {len(per_set[-1])} cells", file=sys.stderr)
    labels = sorted(per_set[0])
    comparer = PairedComparer()
    results = []
    for a, b in itertools.combinations(labels, 2):
        ps = [comparer.compare("fd", False, s[a], s[b]) for s in per_set]
        deltas = np.array([x.delta for x in ps])
        mean, se = float(deltas.mean()), float(deltas.std(ddof=1) / math.sqrt(len(deltas)))
        clear = abs(mean) > 3 * se
        results.append({
            "pair": f"{b} vs {a}", "mean_delta": mean, "se": se, "clear": clear,
            "covered": sum(x.ci_low <= mean <= x.ci_high for x in ps),
            "wrong": sum(x.verdict() != "tie" and (x.delta > 0) != (mean > 0) for x in ps) if clear else 0,
            "called": sum(x.verdict() != "tie" for x in ps), "n": len(ps),
            "mean_ci_width": float(np.mean([x.ci_high - x.ci_low for x in ps])),
            "method": ps[0].method,
        })
    (out / "verdicts.json").write_text(json.dumps(results, indent=1))
    n_sets = args.seed_sets
    total = sum(r["n"] for r in results)
    clear = [r for r in results if r["clear"]]
    close = [r for r in results if not r["clear"]]
    print(f"{len(results)} pairs of cells x {n_sets} seed sets, N = {args.samples}, method: {results[0]['method']}\n")
    print("| measure | result |")
    print("|---|---|")
    print(f"| coverage of the mean difference by the paired 95 % CI | {sum(r['covered'] for r in results)} / {total} |")
    print(f"| wrong-direction verdicts (pairs with a clear difference) | {sum(r['wrong'] for r in clear)} / "
          f"{sum(r['n'] for r in clear)} |")
    print(f"| called different, pairs with a clear difference (detection) | {sum(r['called'] for r in clear)} / "
          f"{sum(r['n'] for r in clear)} |")
    print(f"| called different, pairs within 3 SE of no difference | {sum(r['called'] for r in close)} / "
          f"{sum(r['n'] for r in close)} |")
    print("\n| pair | mean FD difference (SE) | covered | called different | mean CI width |")
    print("|---|---|---|---|---|")
    for r in sorted(results, key=lambda r: abs(r["mean_delta"])):
        print(f"| {r['pair']} | {r['mean_delta']:+.4f} ({r['se']:.4f}) | {r['covered']}/{r['n']} | "
              f"{r['called']}/{r['n']} | {r['mean_ci_width']:.4f} |")


if __name__ == "__main__":
    main()
