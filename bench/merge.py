"""`bench merge`: stores written on several machines (or parts of a sweep run by hand on a scheduler) into one.

A cell is keyed by its frozen spec, so the same key in two stores must hold the same result: its status, counted
NFE and every metric's value, interval, N and direction, and the same per-image evidence. Where they differ the
merge lists every conflict and writes nothing. The one exception follows the store's own rule (a failed result
never replaces a done one): a cell done in one store and failed in another is taken as done, and said so.
Inputs are read through a migrated copy, so stores of older schema versions merge and are never modified.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.store import EVIDENCE_DIR, Store

_CELL_IDENTITY = ("status", "nfe_counted", "sampler", "adapter", "family", "nfe_requested", "resolution",
                  "hardware", "axes")
_METRIC_IDENTITY = ("value", "ci_low", "ci_high", "n", "higher_is_better")
_STATUS_RANK = {"done": 3, "failed": 2, "skipped": 1, "planned": 0}


@dataclass
class _Source:
    label: str  # the path as the user gave it
    store: Store
    root: Path  # the original store's folder (evidence and samples are copied from here)


@dataclass
class MergeResult:
    """What a merge did (or, with conflicts, why it wrote nothing)."""

    out: Path
    runs: int = 0
    cells: int = 0
    shared: int = 0  # cell keys present (identically) in more than one store
    conflicts: list[str] = field(default_factory=list)
    combined: str | None = None  # the run holding every merged cell (inputs of one suite), newest in the store
    notes: list[str] = field(default_factory=list)


def _rows(db: sqlite3.Connection, table: str) -> list[dict[str, Any]]:
    return [dict(r) for r in db.execute(f"SELECT * FROM {table}")]


def _metrics_of(db: sqlite3.Connection) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in _rows(db, "metrics"):
        out.setdefault(r["cell_key"], {})[r["name"]] = r
    return out


def _identity(cell: dict[str, Any], metrics: dict[str, dict[str, Any]], evidence_sha: str | None) -> dict[str, Any]:
    """The fields two copies of one cell must agree on (when they happen and where are not part of it)."""
    return {"cell": {k: cell.get(k) for k in _CELL_IDENTITY},
            "metrics": {n: {k: m.get(k) for k in _METRIC_IDENTITY} for n, m in sorted(metrics.items())},
            "evidence": evidence_sha}


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    diffs = [f"{k} {a['cell'][k]!r} vs {b['cell'][k]!r}" for k in _CELL_IDENTITY if a["cell"][k] != b["cell"][k]]
    for name in sorted(set(a["metrics"]) | set(b["metrics"])):
        ma, mb = a["metrics"].get(name), b["metrics"].get(name)
        if ma is None or mb is None:
            diffs.append(f"metric {name} only in {'the first' if mb is None else 'the second'}")
        elif ma != mb:
            diffs.append(f"{name} " + ", ".join(f"{k} {ma[k]!r} vs {mb[k]!r}" for k in _METRIC_IDENTITY
                                                 if ma[k] != mb[k]))
    if a["evidence"] != b["evidence"]:
        diffs.append("per-image evidence differs")
    return diffs


def _open_copy(path: Path, tmp: Path) -> Store:
    """A migrated copy of the store at `path` (SQLite's backup API: consistent even while it is being written)."""
    if not path.is_file():
        raise BenchError(f"bench merge: no results store at {path}")
    Store(path, readonly=True).close()  # one line for a file that is not a flowmap-bench store
    copy = tmp / f"{len(list(tmp.iterdir()))}.sqlite"
    src = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
    dst = sqlite3.connect(copy)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return Store(copy)


def merge_stores(paths: Sequence[str | Path], out: str | Path) -> MergeResult:
    """Merge the stores at `paths` into a new store at `out`; with conflicts nothing is written."""
    out = Path(out)
    if len(paths) < 1:
        raise BenchError("bench merge: name at least one store to merge")
    if out.exists():
        raise BenchError(f"bench merge: {out} already exists (merge writes a new store; pass another -o)")
    res = MergeResult(out)
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        sources = [_Source(str(p), _open_copy(Path(p), Path(tmp)), Path(p).parent) for p in paths]
        try:
            plan = _plan(sources, res)
            if res.conflicts:
                return res
            _write(plan, sources, out, res, ["bench", "merge", *map(str, paths), "-o", str(out)])
        finally:
            for s in sources:
                s.store.close()
    return res


@dataclass
class _Plan:
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_cells: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    cells: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # key -> (source index, row)
    metrics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    evidence: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)


def _plan(sources: list[_Source], res: MergeResult) -> _Plan:
    plan = _Plan()
    seen: dict[str, tuple[int, dict[str, Any]]] = {}  # cell key -> (source, identity)
    for i, src in enumerate(sources):
        db = src.store.db
        for run in _rows(db, "runs"):
            have = plan.runs.get(run["run_id"])
            if have is None:
                plan.runs[run["run_id"]] = run
            elif have != run:
                res.conflicts.append(f"run {run['run_id']}: {src.label} holds another record of it than an "
                                     "earlier store (" + ", ".join(k for k in run if run[k] != have[k]) + " differ)")
        for rc in _rows(db, "run_cells"):
            k = (rc["run_id"], rc["cell_key"])
            have = plan.run_cells.get(k)
            if have is None or _STATUS_RANK.get(rc["status"], 0) > _STATUS_RANK.get(have["status"], 0):
                plan.run_cells[k] = rc
        metrics = _metrics_of(db)
        evidence = {r["cell_key"]: r for r in _rows(db, "evidence")}
        for cell in _rows(db, "cells"):
            key = cell["cell_key"]
            ident = _identity(cell, metrics.get(key, {}), (evidence.get(key) or {}).get("sha256"))
            if key not in seen:
                seen[key] = (i, ident)
                plan.cells[key] = (i, cell)
                continue
            j, other = seen[key]
            if other == ident:
                res.shared += 1
                continue
            ranks = (_STATUS_RANK.get(other["cell"]["status"], 0), _STATUS_RANK.get(cell["status"], 0))
            if {other["cell"]["status"], cell["status"]} == {"done", "failed"}:
                if ranks[1] > ranks[0]:
                    seen[key] = (i, ident)
                    plan.cells[key] = (i, cell)
                done_in = sources[i if ranks[1] > ranks[0] else j].label
                res.notes.append(f"cell {_label(cell)}: done in {done_in}, failed in the other store; kept the "
                                 "done result")
                continue
            res.conflicts.append(f"cell {_label(cell)} ({key[:12]}): {sources[j].label} vs {src.label}: "
                                 + "; ".join(_differences(other, ident)))
        for key, (idx, _) in plan.cells.items():
            if idx == i:
                plan.metrics[key] = list(metrics.get(key, {}).values())
                if key in evidence:
                    plan.evidence[key] = (i, evidence[key])
                else:
                    plan.evidence.pop(key, None)
    return plan


def _label(cell: dict[str, Any]) -> str:
    try:
        axes = json.loads(cell.get("axes") or "{}")
    except ValueError:
        axes = {}
    axes = axes or {"nfe": cell.get("nfe_requested"), "resolution": cell.get("resolution"),
                    "hardware": cell.get("hardware")}
    return f"{cell.get('sampler')} " + " ".join(f"{k}={v}" for k, v in axes.items())


def _insert(db: sqlite3.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    db.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                   [tuple(r[c] for c in cols) for r in rows])


def _write(plan: _Plan, sources: list[_Source], out: Path, res: MergeResult, argv: list[str]) -> None:
    """Copy evidence and sample folders, then the database under a temporary name, renamed last."""
    out.parent.mkdir(parents=True, exist_ok=True)
    root = out.parent
    for key, (i, ev) in plan.evidence.items():
        src_file = sources[i].root / EVIDENCE_DIR / ev["file"]
        if not src_file.is_file():
            raise BenchError(f"bench merge: {sources[i].label}: the evidence file {src_file} of cell {key[:12]} "
                             "is missing")
        (root / EVIDENCE_DIR).mkdir(exist_ok=True)
        shutil.copy2(src_file, root / EVIDENCE_DIR / ev["file"])
    cells = []
    for _key, (i, cell) in plan.cells.items():
        sd = cell.get("samples_dir")
        if isinstance(sd, str) and sd and not Path(sd).is_absolute() and Path(sd).parts[:1] == ("samples",):
            src_dir = sources[i].root / sd
            if src_dir.is_dir():
                shutil.copytree(src_dir, root / sd, dirs_exist_ok=True)
        cells.append(cell)
    tmp = out.with_name(f".{out.name}.merge-{os.getpid()}")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    try:
        with Store(tmp) as st:
            with st.db:
                _insert(st.db, "runs", list(plan.runs.values()))
                _insert(st.db, "run_cells", list(plan.run_cells.values()))
                if (combined := _combined_run(plan, argv)) is not None:
                    _insert(st.db, "runs", [combined[0]])
                    _insert(st.db, "run_cells", combined[1])
                    res.combined = combined[0]["run_id"]
                _insert(st.db, "cells", cells)
                _insert(st.db, "metrics", [m for ms in plan.metrics.values() for m in ms])
                _insert(st.db, "evidence", [ev for _, ev in plan.evidence.values()])
            st.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        os.replace(tmp, out)
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
    res.runs, res.cells = len(plan.runs), len(plan.cells)


def _combined_run(plan: _Plan, argv: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """When every merged run is of one suite: a run holding all their cells (each cell's best status), newest
    last, so `bench report`, `export` and `gate`, which read the latest run, see the whole merged sweep."""
    runs = sorted(plan.runs.values(), key=lambda r: r["started"] or 0)
    if len(runs) < 2 or len({r["suite"] for r in runs}) != 1:
        return None
    import time
    import uuid

    last = runs[-1]
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    prints = {json.dumps(r["fingerprint"]) for r in runs}
    run = {**last, "run_id": run_id, "executor": "merge", "argv": json.dumps(argv),
           "started": time.time(), "finished": time.time(),  # newest: the run commands read by default
           "status": "done" if all(r["status"] == "done" for r in runs) else "interrupted",
           "fingerprint": last["fingerprint"] if len(prints) == 1 else json.dumps(
               {"merged_from": {r["run_id"]: json.loads(r["fingerprint"] or "null") for r in runs}})}
    cells: dict[str, dict[str, Any]] = {}
    for (_, key), rc in sorted(plan.run_cells.items(), key=lambda kv: plan.runs[kv[0][0]]["started"] or 0):
        have = cells.get(key)
        if have is None or _STATUS_RANK.get(rc["status"], 0) >= _STATUS_RANK.get(have["status"], 0):
            cells[key] = {**rc, "run_id": run_id}
    return run, list(cells.values())
