"""Do a store's latency phases add up to the whole call? Per cell and timed batch: |sum of phases - call| against
max(the call's IQR, 5 % of the call) (issue 18's acceptance rule). Calls flagged unstable (too few timed runs or
too wide an IQR: they take part in no verdict) are counted apart; time on an idle machine.

    python scripts/phase_sums.py --store runs/nfe5/bench.sqlite [--store runs/tiny5/bench.sqlite]
"""

from __future__ import annotations

import argparse
import warnings

import bench

PHASES = ("conditioning", "denoising", "decoding")


def check(store: str) -> tuple[int, int, float, int]:
    """(stable cells x batches checked, within the rule, worst |sum - call| / call, unstable ones skipped)."""
    warnings.simplefilter("ignore", FutureWarning)
    df = bench.load_results(store)
    df = df[df.status == "done"]
    checked = ok = unstable = 0
    worst = 0.0
    for _key, cell in df.groupby("cell_key"):
        m = cell.set_index("metric")
        for wall in ("batch1", "per_image"):
            call_name = f"latency_call_ms_{wall}" if f"latency_call_ms_{wall}" in m.index else f"latency_ms_{wall}"
            names = [f"latency_{p}_ms_{wall}" for p in PHASES]
            if call_name not in m.index or not all(n in m.index for n in names):
                continue
            call = m.loc[call_name]
            if bool(call.unstable):
                unstable += 1
                continue
            total = sum(float(m.loc[n, "value"]) for n in names)
            tol = max(float(call.ci_high - call.ci_low), 0.05 * float(call.value))
            checked += 1
            ok += abs(total - float(call.value)) <= tol
            worst = max(worst, abs(total - float(call.value)) / float(call.value))
    return checked, ok, worst, unstable


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", action="append", required=True)
    for store in p.parse_args().store:
        n, ok, worst, unstable = check(store)
        print(f"{store}: {ok}/{n} stable cell x batch sums within max(IQR, 5 %); worst |sum - call| / call = "
              f"{worst:.4f}; {unstable} unstable calls not checked")


if __name__ == "__main__":
    main()
