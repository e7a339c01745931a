"""SQLite results ledger (WAL): runs, the cells each run planned, cell results and their metrics.

Each finished cell is committed at once, so a crash loses at most the cell in flight, and a rerun
resumes from the keys already marked done. Only the driver process writes.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from bench.errors import BenchError

if TYPE_CHECKING:
    import pandas as pd

    from bench.evidence import Evidence
    from bench.metrics.registry import MetricResult
    from bench.plan import Cell

DEFAULT_STORE = "runs/bench.sqlite"  # every command's --store default, and load_results()'s

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, suite TEXT NOT NULL, suite_hash TEXT, suite_path TEXT, suite_text TEXT,
  git_commit TEXT, fingerprint TEXT, versions TEXT, executor TEXT, argv TEXT,
  started REAL, finished REAL, status TEXT, run_spec TEXT
);
CREATE TABLE IF NOT EXISTS run_cells (
  run_id TEXT NOT NULL, cell_key TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, reused INTEGER DEFAULT 0,
  sampler TEXT, adapter TEXT, family TEXT, nfe_requested INTEGER, resolution INTEGER, hardware TEXT,
  axes TEXT, spec TEXT,
  PRIMARY KEY (run_id, cell_key)
);
CREATE TABLE IF NOT EXISTS cells (
  cell_key TEXT PRIMARY KEY, run_id TEXT, suite TEXT, sampler TEXT, adapter TEXT, family TEXT,
  nfe_requested INTEGER, nfe_counted REAL, resolution INTEGER, hardware TEXT, status TEXT, error TEXT,
  phases TEXT, info TEXT, samples_dir TEXT, started REAL, finished REAL, axes TEXT, spec TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
  cell_key TEXT NOT NULL, name TEXT NOT NULL, value REAL, ci_low REAL, ci_high REAL, n INTEGER,
  higher_is_better INTEGER, provenance TEXT, PRIMARY KEY (cell_key, name)
);
CREATE INDEX IF NOT EXISTS runs_suite ON runs (suite, started);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS evidence (
  cell_key TEXT PRIMARY KEY, file TEXT NOT NULL, sha256 TEXT NOT NULL, metrics TEXT, bytes INTEGER
);
"""
# 1: the first release (no meta table). 2: per-image evidence sidecars (bench.evidence) and this version number.
# 3: cells as data: every cell's frozen spec (bench.spec.CellSpec) and its axes as JSON, the run's resolved suite.
SCHEMA_VERSION = 3
# Columns version 3 added (table -> column); a migrated store fills `axes` from the old columns and leaves the
# spec NULL (those cells were planned before specs existed: readers fall back to the stored suite text).
_ADDED_IN_3 = {"runs": ("run_spec",), "run_cells": ("axes", "spec"), "cells": ("axes", "spec")}
EVIDENCE_DIR = "evidence"


@dataclass
class CellResult:
    """What a worker reports for one cell (plain data, picklable across processes)."""

    key: str
    status: str  # done | failed
    error: str | None = None
    nfe_counted: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    metrics: list[MetricResult] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    samples_dir: str | None = None
    started: float = 0.0
    finished: float = 0.0
    evidence: dict[str, Evidence] = field(default_factory=dict)  # metric -> per-image rows (sidecar file)
    shard: dict[str, Any] | None = None  # a shard's features and measurements (bench.shards), never stored here


class Store:
    """The results ledger at `path` (created on first write); use as a context manager."""

    def __init__(self, path: str | Path = DEFAULT_STORE, readonly: bool = False) -> None:
        self.path = Path(path)
        self._opened = False
        try:
            self._open(readonly)
            self.schema_version = self._read_version()
            if readonly and self.schema_version == 0:
                raise BenchError(f"results store {self.path} holds no results (an empty or foreign SQLite file; "
                                 "is it a flowmap-bench store? pass another --store)")
            if self.schema_version > SCHEMA_VERSION:
                raise BenchError(f"results store {self.path} has schema version {self.schema_version}; this "
                                 f"flowmap-bench reads versions up to {SCHEMA_VERSION} (upgrade flowmap-bench)")
            if not readonly:
                self._migrate()
            if not readonly:
                self._mark_interrupted()
        except (sqlite3.DatabaseError, OSError, BenchError) as e:  # not SQLite, truncated, unwritable, locked
            if self._opened:
                self.db.close()
            if isinstance(e, BenchError):
                raise
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            if not readonly and self._read_only_place():
                raise BenchError(f"results store {self.path} is read-only (the file or its folder "
                                 f"{self.path.parent} is not writable): read-only commands (export, report, gate, "
                                 "runs list/show) work on it; to run into it copy it to a writable folder, or pass "
                                 "another --store") from None
            raise BenchError(f"results store {self.path} cannot be opened{'' if readonly else ' for writing'}: "
                             f"{why} (is it a flowmap-bench store? pass another --store)") from None

    def _read_only_place(self) -> bool:
        folder = self.path.parent if str(self.path.parent) else Path(".")
        if self.path.exists() and not os.access(self.path, os.W_OK):
            return True
        return folder.is_dir() and not os.access(folder, os.W_OK)

    def _open(self, readonly: bool) -> None:
        if readonly:
            if not self.path.is_file():
                raise BenchError(f"no results store at {self.path} (run `bench run SUITE` first, or pass --store)")
            uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
            self.db = sqlite3.connect(uri, uri=True, timeout=30)
            self._opened = True
            try:
                self.db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:
                # A WAL store in a folder this user cannot write: SQLite cannot create the shared-memory file a
                # reader needs. Nobody can be writing it from here either, so read it as immutable (a WAL file
                # left by a crashed writer is then not read: its last cells show after the next writable open).
                self.db.close()
                self.db = sqlite3.connect(uri + "&immutable=1", uri=True, timeout=30)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30)
            self._opened = True
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.row_factory = sqlite3.Row

    def _read_version(self) -> int:
        """0: empty (new) store; 1: written by the first release (no meta table); else the recorded version."""
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            return 1 if "cells" in tables else 0
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        try:
            return int(row[0]) if row else 1
        except (TypeError, ValueError):
            raise BenchError(f"results store {self.path} has a damaged schema version {row[0]!r:.20}") from None

    def _migrate(self) -> None:
        """Bring a new or older store to SCHEMA_VERSION. 1 -> 2 only adds tables: old cells keep their numbers
        and have no per-image evidence (comparisons that need it say so and fall back). 2 -> 3 adds the spec
        and axes columns; old cells get their axes (nfe, resolution, hardware) from the columns they have."""
        if self.schema_version == SCHEMA_VERSION:
            return
        with self.db:
            self.db.executescript(SCHEMA)
            for table, columns in _ADDED_IN_3.items():
                have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
                for col in columns:
                    if col not in have:
                        self.db.execute(f"ALTER TABLE {table} ADD COLUMN {col} TEXT")
            if self.schema_version:
                for table in ("run_cells", "cells"):
                    rows = self.db.execute(f"SELECT rowid, nfe_requested, resolution, hardware FROM {table} "
                                           "WHERE axes IS NULL").fetchall()
                    self.db.executemany(f"UPDATE {table} SET axes=? WHERE rowid=?", [
                        (json.dumps({"nfe": r[1], "resolution": r[2], "hardware": r[3]}), r[0]) for r in rows])
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('migrated_from', ?)", (str(self.schema_version),))
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        self.schema_version = SCHEMA_VERSION

    def _mark_interrupted(self) -> None:
        """Runs left `running` by a driver that is gone (kill -9, power loss) become `interrupted`."""
        stale = [r["run_id"] for r in self.db.execute("SELECT run_id FROM runs WHERE status='running'")
                 if not self._driver_alive(r["run_id"])]
        if stale:
            with self.db:
                self.db.executemany("UPDATE runs SET status='interrupted' WHERE run_id=?", [(r,) for r in stale])
                self.db.executemany("DELETE FROM meta WHERE key=?", [(_DRIVER + r,) for r in stale])

    def _driver_alive(self, run_id: str) -> bool:
        """Whether the process that started `run_id` still runs: False only when it provably does not (same
        host, and no process with that pid and start time); runs without a driver record count as alive."""
        if self.schema_version < 2:
            return True
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (_DRIVER + run_id,)).fetchone()
        try:
            driver = json.loads(row[0]) if row else None
        except ValueError:
            return True
        if not isinstance(driver, dict) or driver.get("host") != socket.gethostname():
            return True
        return _process_alive(driver.get("pid"), driver.get("created"))

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def samples_dir(self, key: str) -> Path:
        return self.root / "samples" / key

    def evidence_path(self, key: str) -> Path:
        return self.root / EVIDENCE_DIR / f"{key}.npz"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    # -- writing (driver only) ------------------------------------------------------------------
    def start_run(self, suite_name: str, suite_hash: str, suite_path: str, suite_text: str, *,
                  git_commit: str | None, fingerprint: dict[str, Any], versions: dict[str, Any],
                  executor: str, argv: list[str], run_spec: dict[str, Any] | None = None) -> str:
        """Record a run; `run_spec` is the resolved suite (what report and gate read; the text is provenance)."""
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        with self.db:
            self.db.execute(
                "INSERT INTO runs (run_id, suite, suite_hash, suite_path, suite_text, git_commit, fingerprint, "
                "versions, executor, argv, started, finished, status, run_spec) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, suite_name, suite_hash, suite_path, suite_text, git_commit, json.dumps(fingerprint),
                 json.dumps(versions), executor, json.dumps(argv), time.time(), None, "running",
                 None if run_spec is None else json.dumps(run_spec, default=str)),
            )
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_DRIVER + run_id, json.dumps(_this_driver())))
        return run_id

    def record_plan(self, run_id: str, cells: list[Cell], done: set[str]) -> None:
        rows = []
        for c in cells:
            status = c.status if c.status == "skipped" else ("done" if c.key in done else "planned")
            rows.append((run_id, c.key, status, c.reason, int(c.key in done), c.sampler_id, c.adapter, c.family,
                         c.nfe, c.resolution, c.hardware, json.dumps(c.axes), json.dumps(c.spec.to_dict(), default=str)))
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO run_cells (run_id, cell_key, status, reason, reused, sampler, adapter, family, "
                "nfe_requested, resolution, hardware, axes, spec) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def commit_cell(self, run_id: str, cell: Cell, result: CellResult) -> None:
        """Write one cell's outcome and metrics in one transaction (its evidence sidecar first, atomically).

        A failed result never replaces a cell already stored as done (`bench run --force` after, say, a cache
        problem): the run records the failure, and the good result stays for the next run to reuse."""
        if result.status != "done":
            row = self.db.execute("SELECT status FROM cells WHERE cell_key=?", (cell.key,)).fetchone()
            if row is not None and row[0] == "done":
                with self.db:
                    self.db.execute("UPDATE run_cells SET status=?, reason=?, reused=0 WHERE run_id=? AND cell_key=?",
                                    (result.status, result.error, run_id, cell.key))
                return
        evidence_row = None
        if result.evidence:
            from bench.evidence import to_arrays, write_npz

            path = self.evidence_path(cell.key)
            sha = write_npz(path, to_arrays(result.evidence))
            evidence_row = (cell.key, path.name, sha, json.dumps(sorted(result.evidence)), path.stat().st_size)
        with self.db:
            self.db.execute("DELETE FROM evidence WHERE cell_key=?", (cell.key,))
            if evidence_row is not None:
                self.db.execute("INSERT INTO evidence VALUES (?,?,?,?,?)", evidence_row)
            self.db.execute(
                "INSERT OR REPLACE INTO cells (cell_key, run_id, suite, sampler, adapter, family, nfe_requested, "
                "nfe_counted, resolution, hardware, status, error, phases, info, samples_dir, started, finished, axes, "
                "spec) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (cell.key, run_id, cell.suite, cell.sampler_id, cell.adapter, cell.family, cell.nfe,
                 result.nfe_counted, cell.resolution, cell.hardware, result.status, result.error,
                 json.dumps(result.phases), json.dumps(result.info, default=str), self._stored_path(result.samples_dir),
                 result.started, result.finished, json.dumps(cell.axes), json.dumps(cell.spec.to_dict(), default=str)),
            )
            self.db.execute("DELETE FROM metrics WHERE cell_key=?", (cell.key,))
            self.db.executemany(
                "INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?,?,?,?)",
                [(cell.key, m.name, m.value, m.ci_low, m.ci_high, m.n, int(m.higher_is_better),
                  json.dumps(m.provenance, default=str)) for m in result.metrics],
            )
            self.db.execute("UPDATE run_cells SET status=?, reason=? WHERE run_id=? AND cell_key=?",
                            (result.status, result.error, run_id, cell.key))

    def _stored_path(self, path: str | None) -> str | None:
        """A path as stored: relative to the store's folder when inside it (the store can move), else absolute."""
        if not path:
            return path
        p = Path(path).resolve()
        try:
            return p.relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(p)

    def stored_path(self, stored: Any) -> Any:
        """The absolute path of a stored path (store-relative since schema 3's samples paths; older stores wrote
        paths relative to the run's working directory, which are returned as they are)."""
        if not isinstance(stored, str) or not stored:
            return stored
        p = Path(stored)
        if p.is_absolute() or p.parts[:1] != ("samples",):
            return stored
        return str(self.root.resolve() / p)

    def finish_run(self, run_id: str, status: str) -> None:
        with self.db:
            self.db.execute("UPDATE runs SET finished=?, status=? WHERE run_id=?", (time.time(), status, run_id))
            self.db.execute("DELETE FROM meta WHERE key=?", (_DRIVER + run_id,))

    def remove_run(self, run_id: str) -> int:
        """Delete a run and its plan; returns the number of planned cells removed. Cell results stay: they are
        keyed by the cell, and later runs of the same cells reuse them (`bench run --force` recomputes)."""
        self.run(run_id)  # one line when there is no such run
        with self.db:
            n = self.db.execute("DELETE FROM run_cells WHERE run_id=?", (run_id,)).rowcount
            self.db.execute("DELETE FROM runs WHERE run_id=?", (run_id,))
            self.db.execute("DELETE FROM meta WHERE key=?", (_DRIVER + run_id,))
        return int(n)

    # -- reading ----------------------------------------------------------------------------------
    def evidence_record(self, key: str) -> dict[str, Any] | None:
        """The evidence row of a cell (file name, sha256, metrics), or None (no evidence, or a version-1 store)."""
        if self.schema_version < 2:
            return None
        row = self.db.execute("SELECT file, sha256, metrics, bytes FROM evidence WHERE cell_key=?", (key,)).fetchone()
        if row is None:
            return None
        return {"file": row["file"], "sha256": row["sha256"], "metrics": json.loads(row["metrics"] or "[]"),
                "bytes": row["bytes"]}

    def evidence(self, key: str) -> dict[str, Evidence]:
        """A cell's per-image evidence (metric -> Evidence), hash-checked; {} when it has none."""
        from bench.evidence import from_arrays, read_npz

        rec = self.evidence_record(key)
        if rec is None:
            return {}
        return from_arrays(read_npz(self.root / EVIDENCE_DIR / rec["file"], rec["sha256"]))

    def done_keys(self, keys: list[str] | None = None) -> set[str]:
        rows = self.db.execute("SELECT cell_key FROM cells WHERE status='done'").fetchall()
        done = {r[0] for r in rows}
        return done if keys is None else done & set(keys)

    def runs(self, suite: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT run_id, suite, suite_hash, started, finished, status, git_commit FROM runs"
        args: tuple[Any, ...] = ()
        if suite:
            q, args = q + " WHERE suite=?", (suite,)
        out = [dict(r) for r in self.db.execute(q + " ORDER BY started", args)]
        for r in out:  # a read-only open cannot write `interrupted`, but shows it
            if r["status"] == "running" and not self._driver_alive(r["run_id"]):
                r["status"] = "interrupted"
        return out

    def run(self, run_id: str) -> dict[str, Any]:
        row = self.db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            raise BenchError(f"no run {run_id!r} in {self.path} (list them with `bench runs --store {self.path}`)")
        out = dict(row)
        for k in ("fingerprint", "versions", "argv", "run_spec"):
            out[k] = json.loads(out[k]) if out.get(k) else None
        return out

    def latest_run_id(self, suite: str | None = None) -> str:
        runs = self.runs(suite)
        if not runs:
            where = f" for suite {suite!r}" if suite else ""
            raise BenchError(f"no runs{where} in {self.path}")
        return str(runs[-1]["run_id"])

    def results(self, run_id: str | None = None, suite: str | None = None) -> pd.DataFrame:
        """The tidy long table (export schema EXPORT_SCHEMA_VERSION): one row per cell x metric (cells without
        metrics get one row, metric NULL); one column per axis beyond nfe / resolution / hardware."""
        import pandas as pd

        run_id = run_id or self.latest_run_id(suite)
        run = self.run(run_id)
        q = """
        SELECT rc.run_id, ? AS suite, rc.sampler, rc.family, rc.nfe_requested AS nfe, c.nfe_counted,
               rc.resolution, rc.hardware,
               CASE WHEN rc.status IN ('skipped','failed','planned') THEN rc.status ELSE c.status END AS status,
               m.name AS metric, m.value, m.ci_low, m.ci_high, m.n, m.higher_is_better,
               COALESCE(rc.reason, c.error) AS reason, rc.cell_key, rc.reused, c.phases, m.provenance,
               c.samples_dir, {axes}
        FROM run_cells rc
        LEFT JOIN cells c ON c.cell_key = rc.cell_key
        LEFT JOIN metrics m ON m.cell_key = rc.cell_key AND rc.status != 'skipped'
             AND (rc.status != 'failed' OR c.run_id = rc.run_id)  -- a failed cell keeps the metrics it got
        WHERE rc.run_id = ?
        ORDER BY rc.rowid, m.name
        """
        q = q.replace("{axes}", "rc.axes AS cell_axes" if self.schema_version >= 3 else "NULL AS cell_axes")  # read-only old store
        df = pd.read_sql_query(q, self.db, params=(run["suite"], run_id))
        df["higher_is_better"] = df["higher_is_better"].map(lambda v: None if pd.isna(v) else bool(v))
        df["reused"] = df["reused"].astype(bool)
        df["unstable"] = df["provenance"].map(_unstable)
        axes = [json.loads(a) if isinstance(a, str) and a else
                {"nfe": int(n), "resolution": int(r), "hardware": h}
                for a, n, r, h in zip(df["cell_axes"], df["nfe"], df["resolution"], df["hardware"], strict=True)]
        df["cell_axes"] = [json.dumps(a) for a in axes]  # not "axes": that is DataFrame.axes
        df["samples_dir"] = df["samples_dir"].map(self.stored_path)
        extra: list[str] = []
        for a in axes:
            extra += [k for k in a if k not in ("nfe", "resolution", "hardware") and k not in extra]
        at = list(df.columns).index("hardware") + 1
        for i, name in enumerate(extra):
            df.insert(at + i, name, [a.get(name) for a in axes])
        from bench.results import EXPORT_SCHEMA_VERSION, Results

        out = Results(df)
        out.attrs["schema_version"] = EXPORT_SCHEMA_VERSION
        out.attrs["axes"] = ["nfe", "resolution", "hardware", *extra]
        return out


_DRIVER = "driver:"  # meta key prefix: the process that runs a run (host, pid, start time), removed when it ends


def _this_driver() -> dict[str, Any]:
    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(), "created": psutil.Process().create_time()}


def _process_alive(pid: Any, created: Any) -> bool:
    import psutil

    if not isinstance(pid, int):
        return True
    try:
        proc = psutil.Process(pid)
        return not isinstance(created, (int, float)) or abs(proc.create_time() - created) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def _unstable(provenance: Any) -> bool:
    """A measurement flagged as unusable for verdicts (latency: too few timed runs or too wide an IQR)."""
    if not isinstance(provenance, str) or '"unstable"' not in provenance:
        return False
    try:
        return bool(json.loads(provenance).get("unstable"))
    except (ValueError, AttributeError):
        return False
