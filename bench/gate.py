"""Regression gates: record a run as a baseline file, then compare a new run against it.

    bench baseline save [--run ID] -o baselines/<suite>.<hardware>.json
    bench gate --baseline FILE [--run ID] [--format table|md|json]

A baseline is one JSON file: every cell's metrics with their intervals and provenance, counted NFE, the suite
text and hash, the machine fingerprint and the calibration figure (median `calibration_ms` per hardware).
`bench gate` exits 0 (pass), 1 (regression) or 2 (unusable comparison: other suite hash, feature space or
sample count; missing baseline; no common cell).

Rules (the suite's `gates:` section, bench.suite.Gates; defaults below):
- per metric: worse than the baseline by more than every tolerance given AND significant (the intervals do
  not overlap; for latency the interquartile ranges) -> regression. Direction from higher_is_better.
- latency metrics are compared as latency / calibration_ms: the calibration workload is timed in the same
  worker right after the cell's latency, so a uniformly slower or busier machine moves both.
- a cell that was done in the baseline and now fails (or did not finish) is a regression; a new cell, or one
  that failed in the baseline, is reported, not failed.
- front gate: per hardware x resolution, every point of the baseline's (FD, latency) Pareto front must be
  matched by a run point with FD <= FD_b (1 + tol_quality) at latency <= latency_b (1 + tol_latency).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError
from bench.numbers import finite as _finite
from bench.spec import axes_identity, axes_label

if TYPE_CHECKING:  # bench.suite imports pydantic: keep `bench --help` fast, import it when gating
    from collections.abc import Callable

    from bench.analysis import Paired, PairedComparer
    from bench.evidence import Evidence
    from bench.suite import FrontGate, GateRule, Gates

BASELINE_FORMAT = "flowmap-bench-baseline/3"
# 1: no per-image evidence (unpaired rules); 2: evidence; 3: every cell's axes and the run's resolved suite
BASELINE_FORMATS = ("flowmap-bench-baseline/1", "flowmap-bench-baseline/2", BASELINE_FORMAT)
_WITH_EVIDENCE = ("flowmap-bench-baseline/2", BASELINE_FORMAT)
EVIDENCE_SUFFIX = ".evidence.npz"
CALIBRATION_METRIC = "calibration_ms"
MIN_DRIFT_CELLS = 3
NOISY_DRIFT = 1.2  # above this, `baseline save` warns and `gate` says the latency limits were widened
# Defaults beyond the per-metric rules (those, with their tolerances, are the metric catalogue's:
# bench/metrics/catalogue.py; docs/ci.md has the false-alarm experiment behind them).
UNPAIRED_QUALITY_REL_TOL = 0.10  # what an `fd` rule uses when it falls back to unpaired intervals (no evidence)
DEFAULT_FRONT_TOL_QUALITY = 0.01


def default_rules() -> dict[str, GateRule]:
    """The built-in per-metric rules, each metric's default gate rule in the catalogue (fd, latency_ms_per_image,
    nfe_counted); a suite's `gates.metrics` overrides them and `gates.defaults: false` drops them."""
    from bench.metrics.catalogue import default_gate_rules
    from bench.suite import GateRule

    return {name: GateRule(**fields) for name, fields in default_gate_rules().items()}


def _is_latency(name: str) -> bool:
    """A latency number (compared hardware-normalised, by IQR): the catalogue's role for `name`."""
    from bench.metrics.catalogue import is_latency

    return is_latency(name)


# ----------------------------------------------------------------------------------------------- snapshots


def _suite_yaml(text: str | None) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text or "") or {}
    except Exception:  # a YAML error, or PyYAML's constructor on `!!int x1`
        return {}
    return data if isinstance(data, dict) else {}


def _axes(c: dict[str, Any]) -> dict[str, Any]:
    """A baseline or snapshot cell's axes (format 1 and 2 cells: the three built-in ones from their fields)."""
    axes = c.get("axes")
    if isinstance(axes, dict) and axes:
        return axes
    return {"nfe": int(c["nfe_requested"]), "resolution": int(c["resolution"]), "hardware": str(c["hardware"])}


def cell_id(c: dict[str, Any]) -> str:
    return f"{c['sampler']} nfe={c['nfe_requested']} res={c['resolution']} hw={c['hardware']}{axes_label(_axes(c))}"


def _cell_match_key(c: dict[str, Any]) -> tuple[str, str]:
    """Cells match across runs by sampler id and every axis value (guidance and any other axis included)."""
    return axes_identity(c["sampler"], _axes(c))


def _run_spec_or_text(snap: dict[str, Any]) -> dict[str, Any]:
    """The run's resolved suite; runs recorded before specs were stored fall back to parsing the suite text."""
    spec = snap.get("run_spec")
    return spec if isinstance(spec, dict) else _suite_yaml(snap.get("suite_text"))


STORE_KEY = "_evidence_store"  # where a snapshot cell's evidence lives (never written into a baseline file)


def snapshot(store_path: str | Path, run_id: str | None = None, suite: str | None = None) -> dict[str, Any]:
    """A run as baseline-format data: every cell with its metrics, intervals, provenance; run provenance."""
    from bench.store import Store

    with Store(store_path, readonly=True) as store:
        run_id = run_id or store.latest_run_id(suite)
        run = store.run(run_id)
        df = store.results(run_id=run_id)
        evidence = {k: store.evidence_record(k) for k in df["cell_key"].unique()}
    cells: dict[str, dict[str, Any]] = {}
    for r in df.to_dict("records"):
        key = r["cell_key"]
        if key not in cells:
            cells[key] = {
                "sampler": r["sampler"], "family": r["family"], "nfe_requested": int(r["nfe"]),
                "nfe_counted": _finite(r["nfe_counted"]), "resolution": int(r["resolution"]),
                "hardware": r["hardware"], "status": r["status"],
                "reason": r["reason"] if isinstance(r["reason"], str) else None,
                "cell_key": key, "reused": bool(r["reused"]), "metrics": {},
                "evidence_metrics": (evidence.get(key) or {}).get("metrics", []),
                "axes": json.loads(r["cell_axes"]) if isinstance(r.get("cell_axes"), str) else None,
            }
            if cells[key]["axes"] is None:
                cells[key]["axes"] = _axes(cells[key])
            if evidence.get(key):
                cells[key][STORE_KEY] = str(store_path)
        name = r["metric"]
        if isinstance(name, str) and name:
            prov = json.loads(r["provenance"]) if isinstance(r["provenance"], str) and r["provenance"] else {}
            if isinstance(prov, dict):
                prov.pop("versions", None)  # once per file, at the top
            n = _finite(r["n"])
            cells[key]["metrics"][name] = {
                "value": _finite(r["value"]), "ci_low": _finite(r["ci_low"]), "ci_high": _finite(r["ci_high"]),
                "n": int(n) if n is not None else None, "higher_is_better": bool(r["higher_is_better"]),
                "provenance": prov,
            }
    cell_list = list(cells.values())
    samples = _run_spec_or_text(run).get("samples")
    return {
        "format": BASELINE_FORMAT,
        "suite": run["suite"],
        "suite_hash": run["suite_hash"],
        "samples": samples if isinstance(samples, int) else None,
        "run_id": run_id,
        "run_status": run.get("status"),
        "git_commit": run.get("git_commit"),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.get("started") or time.time())),
        "fingerprint": run.get("fingerprint"),
        "versions": run.get("versions"),
        "feature_spaces": feature_spaces(cell_list),
        "calibration": calibration_summary(cell_list),
        "suite_text": run.get("suite_text"),
        "run_spec": run.get("run_spec"),
        "cells": cell_list,
    }


def feature_spaces(cells: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Metric name -> the distinct feature-space identities its provenance names (usually one)."""
    keys = ("feature_space", "feature_space_version", "weights_sha256", "preprocessing", "feature_dim")
    out: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        for name, m in c["metrics"].items():
            fs = (m.get("provenance") or {}).get("feature_space")
            if isinstance(fs, dict):
                ident = {k: fs.get(k) for k in keys}
                if ident not in out.setdefault(name, []):
                    out[name].append(ident)
    return out


def calibration_summary(cells: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per hardware label: the median calibration_ms over the run's cells (and its spread)."""
    import statistics

    by_hw: dict[str, list[float]] = {}
    workload = None
    for c in cells:
        m = c["metrics"].get(CALIBRATION_METRIC)
        if c["status"] == "done" and m and m["value"]:
            by_hw.setdefault(c["hardware"], []).append(m["value"])
            workload = (m.get("provenance") or {}).get("workload", workload)
    return {hw: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "cells": len(v),
                 "drift": max(v) / min(v), "workload": workload} for hw, v in sorted(by_hw.items())}


def drift(summary: dict[str, Any], hardware: str) -> float:
    """How much the calibration time varied across a run's cells on this hardware (max / min; 1 = steady).

    It measures how much the machine's speed changed while the run was measured (other processes, clocks); a
    latency ratio inside that band is a tie. Needs 3 cells to mean anything; 1.0 otherwise.
    """
    s = summary.get(hardware) or {}
    if (s.get("cells") or 0) < MIN_DRIFT_CELLS or not s.get("min_ms"):
        return 1.0
    return float(s["max_ms"]) / float(s["min_ms"])


def default_baseline_path(snap: dict[str, Any]) -> Path:
    hws = sorted({c["hardware"] for c in snap["cells"] if c["status"] == "done"}) or ["none"]
    hw = re.sub(r"[^A-Za-z0-9_.+-]+", "-", "+".join(hws))
    return Path("baselines") / f"{snap['suite']}.{hw}.json"


def _normalised_latency(cell: dict[str, Any]) -> float | None:
    lat, cal = cell["metrics"].get("latency_ms_per_image"), cell["metrics"].get(CALIBRATION_METRIC)
    lv, cv = _finite(lat and lat["value"]), _finite(cal and cal["value"])
    return lv / cv if lv is not None and cv else None


def _latency_unstable(cell: dict[str, Any]) -> bool:
    m = cell["metrics"].get("latency_ms_per_image") or {}
    return bool((m.get("provenance") or {}).get("unstable"))


def median_snapshot(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    """One baseline from several runs of the same suite: per cell, the record of the run whose calibrated latency
    is the median (lower median for an even count) among the runs whose latency is stable (all runs when none
    is), so one lucky or unlucky timing does not set the bar and an unstable one is not kept when a stable one
    exists (an unstable baseline latency takes part in no gate verdict)."""
    first = snaps[0]
    for other in snaps[1:]:
        problems = identity_problems(first, other)
        if problems:
            raise BenchError(f"runs {first['run_id']} and {other['run_id']} cannot be combined: " + "; ".join(problems))
    cells = []
    for c in first["cells"]:
        key = _cell_match_key(c)
        same = [o for s in snaps for o in s["cells"] if _cell_match_key(o) == key and o["status"] == "done"]
        same = [o for o in same if not _latency_unstable(o)] or same
        timed = sorted((v, i) for i, o in enumerate(same) if (v := _normalised_latency(o)) is not None)
        chosen = same[timed[(len(timed) - 1) // 2][1]] if timed else (same[0] if same else c)
        source = next(s["run_id"] for s in snaps if any(o is chosen for o in s["cells"]))
        cells.append({**chosen, "source_run": source})
    combined = {**first, "cells": cells, "runs": [s["run_id"] for s in snaps]}
    combined["calibration"] = calibration_summary(cells)
    combined["feature_spaces"] = feature_spaces(cells)
    return combined


def save_baseline(store_path: str | Path | list[str | Path], out: str | Path | None = None,
                  run_id: str | None = None, suite: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Write a baseline file from a run (default: the latest), or from the latest run of the suite in each of
    several stores (per cell the median calibrated latency; a store keeps one result per cell, so repeated
    runs for a baseline go to separate stores)."""
    stores = list(store_path) if isinstance(store_path, list) else [store_path]
    if len(stores) > 1 and run_id:
        raise BenchError("--run picks a run in one store; with several --store, each store's latest run is used")
    snaps = [snapshot(stores[0], run_id, suite)]
    snaps += [snapshot(st, None, suite or snaps[0]["suite"]) for st in stores[1:]]
    snap = median_snapshot(snaps) if len(snaps) > 1 else snaps[0]
    if not any(c["status"] == "done" for c in snap["cells"]):
        raise BenchError(f"run {snap['run_id']} has no finished cell; nothing to record as a baseline")
    path = Path(out) if out else default_baseline_path(snap)
    path.parent.mkdir(parents=True, exist_ok=True)
    snap["evidence"] = _write_evidence(snap, evidence_path(path))
    path.write_text(json.dumps(snap, indent=1, sort_keys=False, default=str) + "\n", encoding="utf-8")
    return path, snap


def evidence_path(baseline: Path) -> Path:
    """The baseline's per-image evidence file: baselines/x.json -> baselines/x.evidence.npz."""
    return baseline.with_name(baseline.name.removesuffix(".json") + EVIDENCE_SUFFIX)


def _write_evidence(snap: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """Copy every cell's evidence from its store into one file next to the baseline (arrays prefixed by cell
    key); returns the file's name, sha256 and size for the baseline's header (None: no cell has evidence)."""
    from bench.evidence import to_arrays, write_npz
    from bench.store import Store

    arrays: dict[str, Any] = {}
    for c in snap["cells"]:
        store_path = c.pop(STORE_KEY, None)
        if store_path is None or c["status"] != "done":
            c["evidence_metrics"] = []
            continue
        with Store(store_path, readonly=True) as store:
            arrays.update(to_arrays(store.evidence(c["cell_key"]), prefix=f"{c['cell_key']}/"))
    if not arrays:
        path.unlink(missing_ok=True)
        return None
    sha = write_npz(path, arrays)
    return {"file": path.name, "sha256": sha, "bytes": path.stat().st_size}


def load_baseline(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"baseline file {p} does not exist (record one with `bench baseline save -o {p}`)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BenchError(f"baseline file {p} is not readable JSON ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise BenchError(f"baseline file {p} is not a baseline: JSON nested too deeply") from None
    if not isinstance(data, dict) or data.get("format") not in BASELINE_FORMATS \
            or not isinstance(data.get("cells"), list):
        fmt = data.get("format") if isinstance(data, dict) else None
        newer = isinstance(fmt, str) and fmt.startswith("flowmap-bench-baseline/")
        why = f"format {fmt!r} is newer than this flowmap-bench reads" if newer else "not a baseline file"
        raise BenchError(f"baseline file {p}: {why} (readable: {', '.join(BASELINE_FORMATS)}; record one with "
                         "`bench baseline save`)")
    problem = _shape_problem(data)
    if problem:
        raise BenchError(f"baseline file {p} is damaged: {problem} (re-record it with `bench baseline save`)")
    return data


_CELL_FIELDS = {"sampler": str, "nfe_requested": int, "resolution": int, "hardware": str, "status": str,
                "metrics": dict}
# Optional fields: absent or None is fine, anything else must have this type (numbers: int or float, not bool).
_NUMBER = (int, float)
_TOP_OPTIONAL: dict[str, Any] = {"suite": str, "suite_hash": str, "suite_text": str, "run_id": str,
                                 "git_commit": str, "recorded_at": str, "fingerprint": dict, "versions": dict,
                                 "run_spec": dict, "evidence": dict, "samples": int, "runs": list}
_CELL_OPTIONAL: dict[str, Any] = {"nfe_counted": _NUMBER, "axes": dict, "cell_key": str, "reason": str,
                                  "family": str, "evidence_metrics": list, "reused": bool}
_METRIC_OPTIONAL: dict[str, Any] = {"value": _NUMBER, "ci_low": _NUMBER, "ci_high": _NUMBER, "n": int,
                                    "higher_is_better": bool, "provenance": dict}


def _type_name(kind: Any) -> str:
    return "number" if kind is _NUMBER else kind.__name__


def _wrong(value: Any, kind: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return kind is not bool
    return not isinstance(value, kind)


def _shape_problem(data: dict[str, Any]) -> str | None:
    """What makes a baseline's content unusable (None when the gate can read it): every field the gate reads
    has the type it expects, so a damaged file is one line and exit 2, never a traceback (or exit 1)."""
    for key, kind in _TOP_OPTIONAL.items():
        if _wrong(data.get(key), kind):
            return f"{key} is {data.get(key)!r:.40}, not {_type_name(kind)}"
    for key in ("calibration", "feature_spaces"):
        if key in data and not isinstance(data[key], dict):
            return f"{key} is {type(data[key]).__name__}, not a mapping"
    for hw, cal in (data.get("calibration") or {}).items():
        if not isinstance(cal, dict) or any(_wrong(cal.get(k), _NUMBER) for k in ("median_ms", "drift", "cells")):
            return f"calibration.{hw} is {cal!r:.40}, not a mapping of numbers (median_ms, drift, cells)"
    for name, spaces in (data.get("feature_spaces") or {}).items():
        if not isinstance(spaces, list) or not all(isinstance(s, dict) for s in spaces):
            return f"feature_spaces.{name} is {spaces!r:.40}, not a list of mappings"
    for i, c in enumerate(data["cells"]):
        if not isinstance(c, dict):
            return f"cells[{i}] is {type(c).__name__}, not a mapping"
        for name, kind in _CELL_FIELDS.items():
            if not isinstance(c.get(name), kind) or isinstance(c.get(name), bool):
                return f"cells[{i}].{name} is {c.get(name)!r:.40}, not {kind.__name__}"
        for name, kind in _CELL_OPTIONAL.items():
            if _wrong(c.get(name), kind):
                return f"cells[{i}].{name} is {c.get(name)!r:.40}, not {_type_name(kind)}"
        for name, m in c["metrics"].items():
            if not isinstance(m, dict):
                return f"cells[{i}].metrics.{name} is {type(m).__name__}, not a mapping"
            for field_name, kind in _METRIC_OPTIONAL.items():
                if _wrong(m.get(field_name), kind):
                    return f"cells[{i}].metrics.{name}.{field_name} is {m.get(field_name)!r:.40}, not " \
                           f"{_type_name(kind)}"
    return None


class EvidenceSource:
    """Per-image evidence of a snapshot's cells, loaded on demand (a store's sidecars or a baseline's file).

    A file that cannot be read or fails its hash is recorded in `problems` and treated as absent: the rules
    then fall back to unpaired intervals and say so."""

    def __init__(self, loader: Callable[[str], dict[str, Evidence]] | None, missing: str = "") -> None:
        self._loader = loader
        self._cache: dict[str, dict[str, Evidence]] = {}
        self.missing = missing  # why there is no evidence at all, for notes
        self.problems: list[str] = []

    def get(self, cell_key: str, metric: str) -> Evidence | None:
        if self._loader is None:
            return None
        if cell_key not in self._cache:
            try:
                self._cache[cell_key] = self._loader(cell_key)
            except BenchError as e:
                self._cache[cell_key] = {}
                self.problems.append(str(e))
        return self._cache[cell_key].get(metric)


def store_evidence(store_path: str | Path) -> EvidenceSource:
    from bench.store import Store

    def load(key: str) -> dict[str, Evidence]:
        with Store(store_path, readonly=True) as store:
            return store.evidence(key)

    return EvidenceSource(load)


def baseline_evidence(path: str | Path, data: dict[str, Any]) -> EvidenceSource:
    """The evidence next to a baseline file, or an empty source saying why there is none."""
    from bench.evidence import from_arrays, read_npz

    header = data.get("evidence")
    if data.get("format") not in _WITH_EVIDENCE:
        return EvidenceSource(None, f"baseline format {data.get('format')} keeps no per-image evidence; "
                                    "re-record it with `bench baseline save` for paired verdicts")
    if not isinstance(header, dict) or not header.get("file"):
        return EvidenceSource(None, "the baseline's cells have no per-image evidence")
    file = Path(path).parent / str(header["file"])
    arrays: dict[str, Any] = {}

    def load(key: str) -> dict[str, Evidence]:
        if not arrays:
            arrays.update(read_npz(file, header.get("sha256")))
        return from_arrays(arrays, prefix=f"{key}/")

    return EvidenceSource(load)


# ----------------------------------------------------------------------------------------------- identity


def identity_problems(base: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """Why the two results cannot be compared (empty when they can): suite hash, feature space, sample count."""
    problems = []
    if base.get("suite") != run.get("suite"):
        problems.append(f"suite differs: baseline {base.get('suite')!r}, run {run.get('suite')!r}")
    if base.get("suite_hash") != run.get("suite_hash"):
        b_file, b_set = _split_overrides(base.get("suite_text"))
        r_file, r_set = _split_overrides(run.get("suite_text"))
        if b_file is not None and b_file == r_file and b_set != r_set:
            problems.append(f"suite hash differs: baseline {base.get('suite_hash')}, run {run.get('suite_hash')}: "
                            f"the suite file is the same but the --set overrides differ (baseline "
                            f"{_describe_sets(b_set)}, run {_describe_sets(r_set)}); run with the baseline's "
                            "overrides, or re-record it with `bench baseline save`")
        else:
            problems.append(f"suite hash differs: baseline {base.get('suite_hash')}, run {run.get('suite_hash')} "
                            "(the suite file changed; re-record with `bench baseline save`)")
    bfs, rfs = base.get("feature_spaces") or {}, run.get("feature_spaces") or {}
    for name in sorted(set(bfs) & set(rfs)):
        if bfs[name] != rfs[name]:
            problems.append(f"feature space of {name} differs: baseline {_describe_spaces(bfs[name])}, "
                            f"run {_describe_spaces(rfs[name])}")
    b_n, r_n = _sample_counts(base), _sample_counts(run)
    if b_n != r_n:
        problems.append(f"sample count differs: baseline {_describe_counts(b_n)}, run {_describe_counts(r_n)}")
    return problems


def _split_overrides(text: Any) -> tuple[str | None, list[str]]:
    """A stored suite text as (the file's text, the `--set` overrides bench.suite.load_suite appended to it)."""
    if not isinstance(text, str):
        return None, []
    lines = text.split("\n")
    sets: list[str] = []
    while lines and (lines[-1] == "" or lines[-1].startswith("# --set ")):
        line = lines.pop()
        if line:
            sets.insert(0, line.removeprefix("# --set "))
    return "\n".join(lines), sets


def _describe_sets(sets: list[str]) -> str:
    return " ".join(f"--set {s}" for s in sets) if sets else "none"


def _describe_spaces(spaces: list[dict[str, Any]]) -> str:
    return " + ".join(f"{s.get('feature_space')} (v{s.get('feature_space_version')}, weights "
                      f"{str(s.get('weights_sha256') or '')[:12]}, {s.get('preprocessing')}, dim {s.get('feature_dim')})"
                      for s in spaces) or "none"


def _sample_counts(snap: dict[str, Any]) -> set[int]:
    """Images per cell: the suite's `samples` and the n of every feature-space quality metric."""
    from bench.metrics.catalogue import feature_space_results

    spaced = feature_space_results()
    counts = {int(snap["samples"])} if isinstance(snap.get("samples"), int) else set()
    for c in snap["cells"]:
        for name, m in c["metrics"].items():
            if name.split(":")[0] in spaced and m.get("n") is not None:
                counts.add(int(m["n"]))
    return counts


def _describe_counts(counts: set[int]) -> str:
    return "/".join(str(n) for n in sorted(counts)) or "unknown"


# ----------------------------------------------------------------------------------------------- rules


@dataclass
class Check:
    """One comparison: a metric of a cell, a cell's status, or a front point."""

    status: str  # PASS | FAIL | NEW | SKIP | BETTER
    cell: str
    metric: str
    baseline: float | None = None
    run: float | None = None
    change: float | None = None  # relative change of the compared value (normalised for latency)
    limit: str = ""
    note: str = ""


@dataclass
class GateResult:
    checks: list[Check] = field(default_factory=list)
    front: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks + self.front if c.status == "FAIL"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def to_json(self) -> dict[str, Any]:
        return {"status": "fail" if self.failures else "pass", "exit_code": self.exit_code, **self.info,
                "notes": self.notes, "checks": [asdict(c) for c in self.checks],
                "front": [asdict(c) for c in self.front]}


def gates_of(snap: dict[str, Any]) -> Gates:
    from pydantic import ValidationError

    from bench.suite import Gates

    raw = _run_spec_or_text(snap).get("gates")

    try:
        return Gates.model_validate(raw or {})
    except ValidationError as e:
        err = e.errors()[0]
        raise BenchError(f"suite {snap.get('suite')!r}: gates.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def effective_rules(gates: Gates) -> tuple[dict[str, GateRule], FrontGate | None]:
    from bench.suite import FrontGate

    rules = {**(default_rules() if gates.defaults else {}), **gates.metrics}
    front = gates.front or (FrontGate() if gates.defaults else None)
    return rules, front


def rule_for(name: str, rules: dict[str, GateRule]) -> GateRule | None:
    """The exact rule, else the base name's (`fd` covers `fd:pixels`)."""
    if name in rules:
        return rules[name]
    base = name.split(":")[0]
    return rules.get(base) if base != name else None


def _normalises(name: str, rule: GateRule) -> bool:
    return rule.normalize == "calibration" or (rule.normalize == "auto" and _is_latency(name))


def _calibration(cell: dict[str, Any], summary: dict[str, Any], mode: str) -> float | None:
    if mode == "run":
        return _finite((summary.get(cell["hardware"]) or {}).get("median_ms"))
    m = cell["metrics"].get(CALIBRATION_METRIC)
    return _finite(m["value"]) if m else None


def compare_value(name: str, rule: GateRule, hib: bool, b: dict[str, Any], r: dict[str, Any],
                  b_scale: float = 1.0, r_scale: float = 1.0, slack: float = 1.0, paired: Paired | None = None,
                  unpaired_why: str = "") -> tuple[str, float | None, str, str]:
    """(status, relative change, limit text, note) for one metric of one cell; values divided by the scales.

    `slack` >= 1 widens the relative tolerance multiplicatively (allowed ratio (1 + rel_tol) x slack): the
    calibration drift, for latency. With `significance: paired` the verdict is the paired comparison's (run
    versus baseline) against the tolerance; without `paired` evidence the rule falls back to unpaired intervals
    (`ci`), and the note says why (`unpaired_why`)."""
    bv, rv = _finite(b.get("value")), _finite(r.get("value"))
    if bv is None:
        return "SKIP", None, "", "no baseline value"
    if rv is None:
        return "FAIL", None, "", "no value in the run"
    bv, rv = bv / b_scale, rv / r_scale
    worse = (bv - rv) if hib else (rv - bv)
    rel = None if rule.rel_tol is None else (1 + rule.rel_tol) * slack - 1
    allowed = [t for t in ((rel * abs(bv)) if rel is not None else None, rule.abs_tol) if t is not None]
    allowed_abs = max(allowed) if allowed else 0.0
    limits = []
    if rel is not None and rule.rel_tol is not None:
        limits.append(f"{100 * rel:.3g}%" + (f" ({100 * rule.rel_tol:g}% x drift {slack:.2f})" if slack > 1 else ""))
    if rule.abs_tol is not None:
        limits.append(f"{rule.abs_tol:g}")
    limit = ("worse by >" + " and >".join(limits)) if limits else "any worsening"
    change = (rv - bv) / abs(bv) if bv else None
    eps = 1e-12 * max(abs(bv), 1.0)
    exceeds = worse > allowed_abs + eps
    better = -worse > allowed_abs + eps
    significant, note = True, ""
    if rule.significance == "paired" and paired is not None:
        verdict = paired.verdict(allowed_abs + eps)
        limit += ", paired CI beyond it"
        note = f"paired change {paired.describe()}"
        if verdict == "worse":
            return "FAIL", change, limit, note
        return ("BETTER" if verdict == "better" else "PASS"), change, limit, note
    if rule.significance == "paired":
        limit += ", CIs apart (unpaired fallback)"
        note = f"unpaired fallback: {unpaired_why}" if unpaired_why else "unpaired fallback"
    if rule.significance in ("ci", "paired"):
        limit += ", CIs apart" if rule.significance == "ci" else ""
        bl, bh = _finite(b.get("ci_low")), _finite(b.get("ci_high"))
        rl, rh = _finite(r.get("ci_low")), _finite(r.get("ci_high"))
        if None in (bl, bh, rl, rh):
            note = "; ".join(filter(None, [note, "no interval: tolerance only"]))
        else:
            bl, bh, rl, rh = bl / b_scale, bh / b_scale, rl / r_scale, rh / r_scale  # type: ignore[operator]
            apart_worse = (rh < bl) if hib else (rl > bh)
            apart_better = (rl > bh) if hib else (rh < bl)
            if exceeds and not apart_worse:
                significant = False
                note = "; ".join(filter(None, [note, "not significant: the intervals overlap"]))
            better = better and apart_better
    if exceeds and significant:
        return "FAIL", change, limit, note
    return ("BETTER" if better else "PASS"), change, limit, note


def _paired_for(name: str, hib: bool, b: dict[str, Any], r: dict[str, Any], base_ev: EvidenceSource | None,
                run_ev: EvidenceSource | None, comparer: PairedComparer) -> tuple[Paired | None, str]:
    """The run-versus-baseline paired comparison of one metric of one cell, or (None, why not)."""
    from bench.analysis import NotPaired

    if base_ev is None or run_ev is None:
        return None, "no per-image evidence given"
    eb, er = base_ev.get(b["cell_key"], name), run_ev.get(r["cell_key"], name)
    if eb is None:
        return None, base_ev.missing or "the baseline cell has no per-image evidence for this metric"
    if er is None:
        return None, run_ev.missing or "the run's cell has no per-image evidence for this metric"
    try:
        return comparer.compare(name, hib, eb, er), ""
    except NotPaired as e:
        return None, str(e)


def _unstable_note(b: dict[str, Any], r: dict[str, Any]) -> str | None:
    """Why a latency metric takes part in no verdict (either side flagged unstable), else None."""
    from bench.analysis import timing_of

    parts = []
    for side, m in (("baseline", b), ("run", r)):
        t = timing_of(m)
        if t is not None and t.unstable:
            parts.append(f"{side}: {t.reason or 'unstable'}")
    if not parts:
        return None
    return f"unstable latency, not used for a verdict ({'; '.join(parts)})"


def _slower_beyond_doubt(b: dict[str, Any], r: dict[str, Any], rule: GateRule, b_scale: float, r_scale: float,
                         slack: float) -> str:
    """The limit text when a latency flagged unstable is still unmistakably slower, else "".

    Unstable timings take part in no ordinary verdict, but noise cannot explain a run whose fast quartile (q25) is
    beyond the baseline's slow quartile (q75) times the allowed ratio: a 5x slowdown on a busy machine is flagged
    instead of passing as SKIP. Needs both interquartile ranges and a relative tolerance."""
    from bench.analysis import timing_of

    tb, tr = timing_of(b), timing_of(r)
    if tb is None or tr is None or rule.rel_tol is None or b.get("ci_high") is None or r.get("ci_low") is None:
        return ""
    allowed = (1 + rule.rel_tol) * slack
    if not tr.q25 / r_scale > tb.q75 / b_scale * allowed:
        return ""
    return (f"unstable timings, but the run's q25 {tr.q25 / r_scale:.4g} > the baseline's q75 {tb.q75 / b_scale:.4g}"
            f" x {allowed:.3g}")


def compare(base: dict[str, Any], run: dict[str, Any], gates: Gates | None = None,
            base_ev: EvidenceSource | None = None, run_ev: EvidenceSource | None = None) -> GateResult:
    """Compare a run snapshot with a baseline snapshot (identity already checked). With evidence sources, rules
    with `significance: paired` compare per-image evidence (bench.analysis); without, they fall back."""
    from bench.analysis import PairedComparer

    gates = gates if gates is not None else gates_of(run)
    rules, front = effective_rules(gates)
    comparer = PairedComparer()
    res = GateResult()
    b_cal, r_cal = base.get("calibration") or {}, run.get("calibration") or {}
    run_cells = {_cell_match_key(c): c for c in run["cells"]}
    base_cells = {_cell_match_key(c): c for c in base["cells"]}
    scales: list[float] = []
    for key, b in base_cells.items():
        label = cell_id(b)
        r = run_cells.get(key)
        if b["status"] != "done":
            if r is not None and r["status"] == "done":
                res.checks.append(Check("NEW", label, "cell", note=f"now done (baseline: {b['status']})"))
            continue
        if r is None:
            res.checks.append(Check("FAIL", label, "cell", note="cell missing from the run"))
            continue
        if r["status"] == "skipped":
            res.checks.append(Check("SKIP", label, "cell", note=f"skipped in the run: {r['reason']}"))
            res.notes.append(f"{label}: not compared, skipped in the run ({r['reason']})")
            continue
        if r["status"] != "done":
            why = r["reason"] or ("the run did not finish this cell" if r["status"] == "planned" else r["status"])
            res.checks.append(Check("FAIL", label, "cell", note=f"cell now {r['status']}: {why}"))
            continue
        if r.get("reused"):
            res.notes.append(f"{label}: the run reused this cell's results from an earlier run "
                             "(use a fresh store or `bench run --force` to re-measure)")
        bc = _calibration(b, b_cal, gates.calibration)
        rc = _calibration(r, r_cal, gates.calibration)
        slack = max(drift(b_cal, b["hardware"]), drift(r_cal, r["hardware"])) if gates.drift else 1.0
        if bc and rc:
            scales.append(rc / bc)
        names = sorted(set(b["metrics"]) | {"nfe_counted"})
        for name in names:
            rule = rule_for(name, rules)
            if rule is None:
                continue
            if name == "nfe_counted":
                bm = {"value": b.get("nfe_counted")}
                rm = {"value": r.get("nfe_counted")}
                hib = False
            else:
                bm, rm = b["metrics"][name], r["metrics"].get(name)
                hib = bool(bm.get("higher_is_better"))
                if rm is None:
                    res.checks.append(Check("FAIL", label, name, _finite(bm.get("value")), None,
                                            note="metric missing from the run"))
                    continue
            if _is_latency(name) and (why := _unstable_note(bm, rm)):
                normalise = _normalises(name, rule) and bool(bc and rc)
                b_s, r_s, u_slack = (bc or 1.0, rc or 1.0, slack) if normalise else (1.0, 1.0, 1.0)
                beyond = _slower_beyond_doubt(bm, rm, rule, b_s, r_s, u_slack)
                shown = f"{name}/cal" if normalise else name
                bv, rv = _finite(bm.get("value")), _finite(rm.get("value"))
                if beyond:
                    res.checks.append(Check("FAIL", label, shown, None if bv is None else bv / b_s,
                                            None if rv is None else rv / r_s,
                                            None if not (bv and rv) else (rv / r_s) / (bv / b_s) - 1,
                                            beyond, why.replace("not used for a verdict", "slower beyond doubt")))
                else:
                    res.checks.append(Check("SKIP", label, name, bv, rv, note=why))
                continue
            paired, why_not = None, ""
            if rule.significance == "paired":
                paired, why_not = _paired_for(name, hib, b, r, base_ev, run_ev, comparer)
            b_scale = r_scale = 1.0
            shown, cell_slack = name, 1.0
            if _normalises(name, rule):
                if not (bc and rc):
                    res.checks.append(Check("SKIP", label, name, _finite(bm.get("value")), _finite(rm.get("value")),
                                            note="no calibration_ms to normalise with"))
                    continue
                b_scale, r_scale, cell_slack = bc, rc, slack
                shown = f"{name}/cal"
            status, change, limit, note = compare_value(name, rule, hib, bm, rm, b_scale, r_scale, cell_slack,
                                                        paired, why_not)
            bv, rv = _finite(bm.get("value")), _finite(rm.get("value"))
            res.checks.append(Check(status, label, shown, None if bv is None else bv / b_scale,
                                    None if rv is None else rv / r_scale, change, limit, note))
    for key, r in run_cells.items():
        if key not in base_cells and r["status"] != "skipped":
            res.checks.append(Check("NEW", cell_id(r), "cell", note=f"not in the baseline ({r['status']})"))
    compared = sum(1 for c in res.checks if c.metric != "cell" or c.status == "FAIL")
    if not compared:
        raise BenchError("no common cell to compare: every baseline cell is skipped, failed or absent in the run "
                         f"(baseline hardware {sorted({c['hardware'] for c in base['cells']})}, "
                         f"run hardware {sorted({c['hardware'] for c in run['cells'] if c['status'] == 'done'})})")
    if front is not None:
        res.front = front_checks(base, run, front, gates.calibration, gates.drift, base_ev, run_ev, comparer)
    for src in (base_ev, run_ev):
        if src is not None:
            res.notes += [f"evidence not used: {p}" for p in dict.fromkeys(src.problems)]
    for hw in sorted({c["hardware"] for c in base["cells"] if c["status"] == "done"}):
        d_b, d_r = drift(b_cal, hw), drift(r_cal, hw)
        res.info.setdefault("drift", {})[hw] = {"baseline": d_b, "run": d_r}
        if gates.drift and max(d_b, d_r) > NOISY_DRIFT and any(_normalises(n, r) for n, r in rules.items()):
            lat_rule = rules.get("latency_ms_per_image") or default_rules()["latency_ms_per_image"]
            tol = lat_rule.rel_tol or 0.0
            res.notes.append(
                f"{hw}: the machine's speed varied while measuring (calibration drift x{d_b:.2f} in the baseline, "
                f"x{d_r:.2f} in the run), so latency limits are widened to x{(1 + tol) * max(d_b, d_r):.2f}; "
                "slower changes than that are not flagged here (a quieter machine restores the sensitivity)")
    if scales:
        import statistics

        res.info["calibration_ratio"] = statistics.median(scales)
    return res


# ----------------------------------------------------------------------------------------------- front


@dataclass(frozen=True)
class Point:
    label: str
    quality: float
    latency: float
    quality_low: float | None = None  # the quality metric's interval, when it has one
    quality_high: float | None = None
    latency_low: float | None = None  # the latency's interquartile range
    latency_high: float | None = None
    cell_key: str = ""
    unstable: str = ""  # why the latency takes part in no verdict ("" when stable)


def pareto_front(points: list[Point]) -> list[Point]:
    """Points not dominated by another (lower-or-equal quality and latency, one strictly lower), by latency.

    The dominance rule is the reports' (bench.report.pareto), so a front point in the HTML report is a front
    point here."""
    from bench.report.pareto import pareto_front as front_indices

    idx = front_indices([(p.quality, p.latency) for p in points], [False, False])
    return sorted((points[i] for i in idx), key=lambda p: p.latency)


def _front_points(snap: dict[str, Any], quality: str, latency: str, normalise: bool, mode: str,
                  ) -> dict[tuple[str, int], list[Point]]:
    from bench.analysis import timing_of

    groups: dict[tuple[str, int], list[Point]] = {}
    for c in snap["cells"]:
        if c["status"] != "done":
            continue
        q, t = c["metrics"].get(quality), c["metrics"].get(latency)
        if not q or not t:
            continue
        qv, tv = _finite(q["value"]), _finite(t["value"])
        if qv is None or tv is None:
            continue
        cal = 1.0
        if normalise:
            cal = _calibration(c, snap.get("calibration") or {}, mode) or 0.0
            if not cal:
                continue
        t_low, t_high = _finite(t.get("ci_low")), _finite(t.get("ci_high"))
        timing = timing_of(t)
        unstable = (timing.reason or "unstable") if timing is not None and timing.unstable else ""
        label = f"{c['sampler']} nfe={c['nfe_requested']}"
        groups.setdefault((c["hardware"], c["resolution"]), []).append(Point(
            label, qv, tv / cal, _finite(q.get("ci_low")), _finite(q.get("ci_high")),
            None if t_low is None else t_low / cal, None if t_high is None else t_high / cal, c["cell_key"], unstable))
    return groups


def _within(value: float, low: float | None, ref: float, ref_high: float | None, tol: float, ci: bool) -> bool:
    """value <= ref x (1 + tol), or (ci) value's interval reaches ref's: not significantly worse."""
    if value <= ref * (1 + tol):
        return True
    return ci and low is not None and ref_high is not None and low <= ref_high


def _quality_kept(q: Point, p: Point, tq: float, significance: str, qname: str, base_ev: EvidenceSource | None,
                  run_ev: EvidenceSource | None, comparer: PairedComparer | None) -> bool:
    """Run point q is not worse in quality than front point p beyond tq (relative): paired when both cells have
    per-image evidence, else by value (and, with `ci` or `paired`, interval overlap)."""
    from bench.analysis import NotPaired

    if significance == "paired" and comparer is not None and base_ev is not None and run_ev is not None:
        eb, er = base_ev.get(p.cell_key, qname), run_ev.get(q.cell_key, qname)
        if eb is not None and er is not None:
            try:
                cmp = comparer.compare(qname, False, eb, er)
                return cmp.verdict(tq * abs(p.quality)) != "worse"
            except NotPaired:
                pass
    ci = significance in ("ci", "paired")
    return _within(q.quality, q.quality_low, p.quality, p.quality_high, tq, ci)


def front_checks(base: dict[str, Any], run: dict[str, Any], gate: FrontGate, mode: str, use_drift: bool,
                 base_ev: EvidenceSource | None = None, run_ev: EvidenceSource | None = None,
                 comparer: PairedComparer | None = None) -> list[Check]:
    """Every baseline front point must be kept by a run point: quality not worse beyond tol_quality (paired
    evidence when there is some) at a latency within tol_latency or an overlapping IQR. A front point whose
    latency, or every candidate's, is unstable is skipped, not failed."""
    tq = gate.tol_quality if gate.tol_quality is not None else DEFAULT_FRONT_TOL_QUALITY
    tt0 = gate.tol_latency if gate.tol_latency is not None else \
        (default_rules()["latency_ms_per_image"].rel_tol or 0.0)  # the catalogue's latency tolerance
    normalise = gate.normalize == "calibration"
    names = sorted({n for c in base["cells"] for n in c["metrics"]
                    if n == gate.quality or n.split(":")[0] == gate.quality})
    unit = "/cal" if normalise else ""
    lat_ci = gate.significance in ("ci", "paired")
    out = []
    for qname in names:
        b_groups = _front_points(base, qname, gate.latency, normalise, mode)
        r_groups = _front_points(run, qname, gate.latency, normalise, mode)
        for (hw, res), pts in sorted(b_groups.items()):
            candidates = r_groups.get((hw, res), [])
            slack = 1.0
            if use_drift and normalise:
                slack = max(drift(base.get("calibration") or {}, hw), drift(run.get("calibration") or {}, hw))
            tt = (1 + tt0) * slack - 1
            for p in pareto_front(pts):
                where = f"front hw={hw} res={res}"
                how = {"paired": " (paired quality CI)", "ci": " (or intervals overlap)"}.get(gate.significance, "")
                limit = f"{qname} <= {p.quality:.4g} x {1 + tq:g} at {gate.latency}{unit} <= {p.latency:.4g} x {1 + tt:.3g}{how}"
                metric = f"{qname} vs {gate.latency}{unit}"
                if p.unstable:
                    out.append(Check("SKIP", f"{where}: {p.label}", metric, p.quality, None, None, limit,
                                     f"unstable latency in the baseline ({p.unstable}): not used for a verdict"))
                    continue
                ok = []
                for q in candidates:
                    if q.unstable:
                        continue
                    if _quality_kept(q, p, tq, gate.significance, qname, base_ev, run_ev, comparer) \
                            and _within(q.latency, q.latency_low, p.latency, p.latency_high, tt, lat_ci):
                        ok.append(q)
                if ok:
                    best = min(ok, key=lambda q: (q.latency, q.quality))
                    out.append(Check("PASS", f"{where}: {p.label}", metric, p.quality,
                                     best.quality, None, limit, f"kept by {best.label} ({best.latency:.4g}{unit})"))
                elif any(q.unstable for q in candidates):
                    out.append(Check("SKIP", f"{where}: {p.label}", metric, p.quality, None, None, limit,
                                     "not kept by a stable run point, and some run latencies are unstable: "
                                     "no verdict"))
                else:
                    out.append(Check("FAIL", f"{where}: {p.label}", metric, p.quality, None, None, limit,
                                     f"front point lost: {p.label} ({qname} {p.quality:.4g} at {p.latency:.4g}{unit})"))
    return out


# ----------------------------------------------------------------------------------------------- gate


def run_gate(baseline_path: str | Path, store_path: str | Path, run_id: str | None = None) -> GateResult:
    base = load_baseline(baseline_path)
    try:
        run = snapshot(store_path, run_id, None if run_id else base.get("suite"))
    except BenchError as e:
        raise BenchError(f"cannot gate against {baseline_path}: {e}") from None
    problems = identity_problems(base, run)
    if problems:
        raise BenchError(f"unusable comparison of run {run['run_id']} with {baseline_path}: " + "; ".join(problems))
    res = compare(base, run, base_ev=baseline_evidence(baseline_path, base), run_ev=store_evidence(store_path))
    res.info.update({
        "baseline": {"file": str(baseline_path), "run_id": base.get("run_id"), "git_commit": base.get("git_commit"),
                     "recorded_at": base.get("recorded_at"), "machine": _machine(base.get("fingerprint")),
                     "calibration": base.get("calibration")},
        "run": {"store": str(store_path), "run_id": run["run_id"], "git_commit": run.get("git_commit"),
                "machine": _machine(run.get("fingerprint")), "calibration": run.get("calibration"),
                "status": run.get("run_status")},
        "suite": run["suite"], "suite_hash": run["suite_hash"],
    })
    return res


def _machine(fp: dict[str, Any] | None) -> str:
    if not fp:
        return "unknown"
    gpus = ", ".join(g.get("name", "?") for g in fp.get("gpus") or [])
    return f"{fp.get('cpu_model')} ({fp.get('cpu_cores_logical')} cores){'; ' + gpus if gpus else ''}"


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}"


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:+.1f}%"


def _rows(res: GateResult) -> list[tuple[str, ...]]:
    order = {"FAIL": 0, "NEW": 1, "SKIP": 2, "BETTER": 3, "PASS": 4}
    checks = sorted(res.checks, key=lambda c: order.get(c.status, 5)) + res.front
    return [(c.status, c.cell, c.metric, _fmt(c.baseline), _fmt(c.run), _pct(c.change), c.limit, c.note)
            for c in checks]


HEADER = ("result", "cell", "metric", "baseline", "run", "change", "fails when", "note")


def _summary_line(res: GateResult) -> str:
    fails = res.failures
    n_metric = sum(c.status in ("PASS", "BETTER", "FAIL") for c in res.checks)
    n_front = len(res.front)
    head = "FAIL" if fails else "PASS"
    text = f"{head}: {len(fails)} regression(s); {n_metric} cell checks, {n_front} front points"
    ratio = res.info.get("calibration_ratio")
    if ratio:
        text += f"; this machine's calibration is x{ratio:.2f} the baseline's"
    return text


def render_table(res: GateResult) -> str:
    info = res.info
    lines = [f"bench gate: suite {info.get('suite')} ({info.get('suite_hash')})",
             f"  baseline {info.get('baseline', {}).get('file')}: run {info.get('baseline', {}).get('run_id')} "
             f"on {info.get('baseline', {}).get('machine')}",
             f"  run      {info.get('run', {}).get('run_id')} on {info.get('run', {}).get('machine')}", ""]
    rows = [HEADER, *_rows(res)]
    widths = [min(max(len(r[i]) for r in rows), 60) for i in range(len(HEADER) - 1)]
    for r in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[-1])
    lines.append("")
    lines += [f"note: {n}" for n in res.notes]
    for c in res.failures:
        lines.append(f"REGRESSION {c.cell}: {c.metric} {c.note or ''}".rstrip())
    lines.append(_summary_line(res))
    return "\n".join(lines)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(res: GateResult) -> str:
    info = res.info
    icon = "❌" if res.failures else "✅"
    lines = [f"### {icon} bench gate: `{info.get('suite')}`", "", _summary_line(res), "",
             f"- baseline: `{info.get('baseline', {}).get('file')}` (run `{info.get('baseline', {}).get('run_id')}`, "
             f"{_md_escape(str(info.get('baseline', {}).get('machine')))})",
             f"- run: `{info.get('run', {}).get('run_id')}` ({_md_escape(str(info.get('run', {}).get('machine')))})",
             ""]
    lines += [f"- note: {_md_escape(n)}" for n in res.notes]
    lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in _rows(res):
        cells = list(r)
        cells[0] = {"FAIL": "❌ FAIL", "PASS": "✅ PASS", "BETTER": "⬆️ BETTER"}.get(cells[0], cells[0])
        lines.append("| " + " | ".join(_md_escape(v) for v in cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- CLI


def _cmd_baseline_save(args: argparse.Namespace) -> int:
    from bench.store import DEFAULT_STORE

    path, snap = save_baseline(args.store or [DEFAULT_STORE], args.output, args.run, args.suite)
    done = sum(c["status"] == "done" for c in snap["cells"])
    cal = ", ".join(f"{hw} {v['median_ms']:.3g} ms" for hw, v in snap["calibration"].items()) or "none"
    print(f"wrote {path}: suite {snap['suite']} ({snap['suite_hash']}), run {snap['run_id']}, "
          f"{done}/{len(snap['cells'])} cells done, calibration {cal}")
    if snap.get("runs"):
        print(f"  per cell, the median calibrated latency of runs {', '.join(snap['runs'])}")
    if done < len(snap["cells"]):
        print(f"  {len(snap['cells']) - done} cell(s) not done are recorded as such (reported as new if they "
              "pass later)", file=sys.stderr)
    for hw, v in snap["calibration"].items():
        if v.get("cells", 0) >= MIN_DRIFT_CELLS and v["drift"] > NOISY_DRIFT:
            hint = "" if snap.get("runs") else ", or from several runs (--store A --store B --store C)"
            print(f"  warning: on {hw} the calibration time varied x{v['drift']:.2f} across cells: the machine was "
                  "busy, and latency gates against this baseline widen their limits by that much. Record it on a "
                  f"quieter machine{hint}.", file=sys.stderr)
    return 0


def _cmd_gate(args: argparse.Namespace) -> int:
    res = run_gate(args.baseline, args.store, args.run)
    if args.format == "json":
        text = json.dumps(res.to_json(), indent=1, default=str)
    elif args.format == "md":
        text = render_markdown(res)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as f:
                f.write(text + "\n")
    else:
        text = render_table(res)
    if args.output:
        Path(args.output).write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
        print(_summary_line(res))
    else:
        print(text)
    return res.exit_code


def register_cli(sub: Any) -> None:
    """Add `bench baseline save` and `bench gate` to the CLI's subparsers."""
    from bench.store import DEFAULT_STORE

    b = sub.add_parser("baseline", help="record a run as a baseline file for `bench gate`")
    bs = b.add_subparsers(dest="baseline_cmd", required=True, metavar="BASELINE_COMMAND")
    s = bs.add_parser("save", help="write a run's cells, metrics, CIs, provenance and calibration to a JSON file",
                      description="Record a run (default: the latest) as baselines/<suite>.<hardware>.json.")
    s.add_argument("--store", action="append", help=f"results database (default {DEFAULT_STORE}); repeat it to "
                   "combine the latest run of each store (per cell the median calibrated latency)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--run", help="run id (default: the latest run)")
    g.add_argument("--suite", help="latest run of this suite")
    s.add_argument("-o", "--output", help="baseline file (default baselines/<suite>.<hardware>.json)")
    s.set_defaults(fn=_cmd_baseline_save)

    gt = sub.add_parser("gate", help="compare a run with a baseline: exit 0 pass, 1 regression, 2 unusable",
                        description="Compare a run (default: the latest run of the baseline's suite) with a baseline "
                                    "file using the suite's gates: section. Exit 0 pass, 1 regression, 2 unusable "
                                    "comparison (suite hash, feature space or sample count differ; no baseline).")
    gt.add_argument("--baseline", required=True, help="baseline JSON file (from `bench baseline save`)")
    gt.add_argument("--store", default=DEFAULT_STORE, help=f"results database (default {DEFAULT_STORE})")
    gt.add_argument("--run", help="run id (default: the latest run of the baseline's suite)")
    gt.add_argument("--format", choices=["table", "md", "json"], default="table",
                    help="table (terminal), md (also appended to $GITHUB_STEP_SUMMARY when set), json")
    gt.add_argument("-o", "--output", help="write the report to this file (a one-line summary still prints)")
    gt.set_defaults(fn=_cmd_gate)
