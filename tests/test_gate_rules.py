"""The gate's decision rules on plain snapshots (docs/ci.md): tolerance, direction, intervals, calibration,
drift, unstable latencies, missing cells and the front, one rule per test, without a store in between."""
