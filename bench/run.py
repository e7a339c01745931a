"""`bench run`: suite -> plan -> executor -> store, resuming finished cells, with a progress bar and summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.plan import Cell, plan
from bench.shards import ShardFiles
from bench.store import DEFAULT_STORE, CellResult, Store
from bench.suite import Suite, load_suite
from bench.worker import CellTask


@dataclass
class RunSummary:
    run_id: str | None
    cells: list[Cell]
    computed: int = 0
    reused: int = 0
    skipped: int = 0
    failed: list[tuple[Cell, str]] = field(default_factory=list)
    wall_seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    startup_seconds: float = 0.0  # waiting for the first worker process to start (spawn + importing torch)
    shards_computed: int = 0  # shards of sharded cells sampled in this run
    shards_reused: int = 0  # shards an interrupted run had finished (their files), not recomputed
    round_seconds: list[float] = field(default_factory=list)  # wall time of each executor round (shards first)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def overhead_fraction(self) -> float:
        """Share of wall time that is the harness's own: outside the cells' phases (load, sample, latency,
        metrics, save) and outside the one-time worker start-up (a new process importing torch)."""
        measured = sum(v for k, v in self.phase_seconds.items() if k not in ("total", "other"))
        own = self.wall_seconds - measured - self.startup_seconds
        return max(own, 0.0) / self.wall_seconds if self.wall_seconds else 0.0


def git_commit(cwd: str | Path = ".") -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5,
                             check=False)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def make_tasks(suite: Suite, cells: list[Cell], store: Store, allow_download: bool = False) -> list[CellTask]:
    m = suite.model
    return [
        CellTask(cell=c, batch_size=m.batch_size, samples_dir=str(store.samples_dir(c.key)),
                 cache_dir=str(store.cache_dir), allow_download=allow_download, extra={"timeout": m.timeout})
        for c in cells
    ]


def _summarise_metrics(result: CellResult) -> str:
    show = {"fd": "fd", "clip_score": "clip", "latency_ms_per_image": "ms/img", "peak_memory_mb": "MB"}
    parts = [f"nfe={result.nfe_counted:g}"] if result.nfe_counted is not None else []
    for m in result.metrics:
        short = show.get(m.name.split(":")[0])
        if short and m.value is not None:
            parts.append(f"{short}={m.value:.3g}")
    return " ".join(parts)


def run_suite(suite_path: str | Path, store_path: str | Path = DEFAULT_STORE, *, executor: str = "local",
              jobs: int = 1, force: bool = False, isolate: bool = False, allow_download: bool = False,
              progress: bool = True, argv: list[str] | None = None, executor_options: dict[str, Any] | None = None,
              overrides: Sequence[str] = (), devices: str = "auto") -> RunSummary:
    """Run every planned cell not already done in the store; failed cells do not stop the sweep.

    `overrides` are `KEY=VALUE` suite edits (`bench run --set`), applied before validation. `devices` spreads the
    local workers over GPUs, one each (bench.hardware.worker_devices).
    """
    t_start = time.perf_counter()
    options = dict(executor_options or {})
    if executor == "local":
        from bench.hardware import worker_devices

        options["devices"] = worker_devices(devices, jobs)
    ex = _executor(executor, jobs, 1800.0, isolate, options, Path(store_path).parent)
    if hasattr(ex, "prestart"):
        ex.prestart()  # worker imports overlap suite validation and planning
    try:
        return _run(ex, t_start, suite_path, store_path, executor, force, allow_download, progress, argv,
                    overrides)
    finally:
        if hasattr(ex, "close"):
            ex.close()


def _run(ex: Any, t_start: float, suite_path: str | Path, store_path: str | Path, executor: str, force: bool,
         allow_download: bool, progress: bool, argv: list[str] | None, overrides: Sequence[str] = ()) -> RunSummary:
    from bench.hardware import fingerprint, library_versions

    suite = load_suite(suite_path, overrides)
    # on Ray the cluster, not this machine, decides; `shard_size: auto` asks the executor how many run at once
    cells = plan(suite, check_hardware=executor != "ray", workers=getattr(ex, "parallelism", None))
    if getattr(ex, "devices", None) and any(_names_gpu_index(c.hardware) for c in cells if c.status == "planned"):
        ex.unpin()  # a pinned worker sees one GPU, as cuda:0; a cell that names cuda:N needs them all
    with Store(store_path) as store:
        keys = [c.key for c in cells if c.status == "planned"]
        done = set() if force else store.done_keys(keys)
        run_id = store.start_run(
            suite.name, suite.hash, str(suite_path), suite.text, git_commit=git_commit(), fingerprint=fingerprint(),
            versions=library_versions(), executor=executor, argv=argv or sys.argv,
            run_spec=suite.model.model_dump(mode="json"),
        )
        store.record_plan(run_id, cells, done)
        todo = [c for c in cells if c.status == "planned" and c.key not in done]
        summary = RunSummary(run_id, cells, reused=len(done), skipped=sum(c.status == "skipped" for c in cells))
        tasks = make_tasks(suite, todo, store, allow_download)
        bar = _progress_bar(len(tasks), progress)
        first_round, sharded = _expand_shards(tasks, store, force, summary)

        def on_result(task: CellTask, result: CellResult) -> None:
            cell_progress.finish(task.label)
            if task.shard is not None:
                _on_shard(task, result, store, sharded, summary)
                if task.cell.key in sharded.failed:
                    commit(task, sharded.failed.pop(task.cell.key))
                return
            commit(task, result)

        def commit(task: CellTask, result: CellResult) -> None:
            store.commit_cell(run_id, task.cell, result)
            if task.cell.shards and result.status == "done":
                ShardFiles(store.root, task.cell.key).clear()
            for k, v in result.phases.items():
                summary.phase_seconds[k] = summary.phase_seconds.get(k, 0.0) + v
            if result.status == "done":
                summary.computed += 1
                bar.set_postfix_str(f"{task.cell.sampler_id}@{task.cell.nfe}: {_summarise_metrics(result)}")
            elif result.status == "skipped":  # the executor found no place to run it (e.g. no such GPU on Ray)
                summary.skipped += 1
                bar.write(f"SKIPPED {task.cell.label}: {result.error}")
            else:
                summary.failed.append((task.cell, result.error or "failed"))
                bar.write(f"FAILED {task.cell.label}: {result.error}")
            bar.update(1)

        cell_progress = CellProgress(first_round)

        def on_progress(label: str, message: str) -> None:
            text = cell_progress.update(label, message)
            bar.set_description_str(f"{cell_progress.title(label)} [{text}]", refresh=True)

        status = "interrupted"
        try:
            t_round = time.perf_counter()
            ex.run(first_round, on_result, on_progress)
            summary.round_seconds.append(time.perf_counter() - t_round)
            merged = [_merged_task(t, store) for t in sharded.cells.values() if t.cell.key not in sharded.gone]
            if merged:
                t_round = time.perf_counter()
                ex.run(merged, on_result, on_progress)
                summary.round_seconds.append(time.perf_counter() - t_round)
            status = "failed" if summary.failed else "done"
        finally:
            bar.close()
            store.finish_run(run_id, status)
        summary.wall_seconds = time.perf_counter() - t_start
        summary.startup_seconds = float(getattr(ex, "startup_wait", 0.0))
    return summary


@dataclass
class _Sharded:
    """The sharded cells of a run: their tasks by cell key, shard failures not yet committed, cells given up."""

    cells: dict[str, CellTask] = field(default_factory=dict)
    failed: dict[str, CellResult] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)


def _expand_shards(tasks: list[CellTask], store: Store, force: bool,
                   summary: RunSummary) -> tuple[list[CellTask], _Sharded]:
    """The first round of tasks: whole cells as they are, sharded cells as their missing shards (finished shard
    files of an interrupted run are kept and not recomputed; --force recomputes them)."""
    from dataclasses import replace

    out: list[CellTask] = []
    sharded = _Sharded()
    for t in tasks:
        if not t.cell.shards:
            out.append(t)
            continue
        files = ShardFiles(store.root, t.cell.key)
        if force:
            files.clear()
        done = set(files.done(t.cell.shards))
        summary.shards_reused += len(done)
        sharded.cells[t.cell.key] = t
        out += [replace(t, shard=r) for r in t.cell.shards if r not in done]
    return out, sharded


def _on_shard(task: CellTask, result: CellResult, store: Store, sharded: _Sharded, summary: RunSummary) -> None:
    """A finished shard is written to its file (the unit of resume); a failed one fails its cell, once."""
    key = task.cell.key
    if result.status == "done" and result.shard is not None and task.shard is not None:
        ShardFiles(store.root, key).write(task.shard, {**result.shard, "phases": result.phases,
                                                       "wall_s": (result.finished or 0) - (result.started or 0)})
        summary.shards_computed += 1
        for k, v in result.phases.items():
            summary.phase_seconds[k] = summary.phase_seconds.get(k, 0.0) + v
        return
    if key in sharded.gone:
        return
    sharded.gone.add(key)
    lo, hi = task.shard or (0, 0)
    why = f"shard of images {lo}-{hi - 1} {result.status}: {result.error or 'no result'}"
    sharded.failed[key] = CellResult(key=key, status="failed", error=why, started=result.started,
                                     finished=result.finished, phases=result.phases)


def _merged_task(task: CellTask, store: Store) -> CellTask:
    """The cell's task over its finished shards: it scores their concatenated features and times the sampler."""
    from dataclasses import replace

    return replace(task, merged=ShardFiles(store.root, task.cell.key).merged(task.cell.shards))


def _names_gpu_index(hardware: str) -> bool:
    from bench.hardware import HardwareSpec

    hw = HardwareSpec.parse(hardware)
    return hw.kind == "cuda" and hw.device != "cuda"


def _executor(name: str, jobs: int, timeout: float, isolate: bool, options: dict[str, Any],
              run_dir: Path | None = None) -> Any:
    if name == "local":
        from bench.executors.local import LocalExecutor

        return LocalExecutor(jobs=jobs, timeout=timeout, isolate=isolate, devices=options.get("devices", ()))
    if name == "ray":
        try:
            from bench.executors.ray import RayExecutor
        except ImportError as e:
            raise BenchError(f"the ray executor needs the [ray] extra: pip install 'flowmap-bench[ray]' ({e})") from None
        return RayExecutor(timeout=timeout, run_dir=run_dir or "runs", **options)
    raise BenchError(f"unknown executor {name!r} (local, ray)")


_SAMPLED = re.compile(r"^sample (\d+)/(\d+)$")
PROGRESS_INTERVAL = 30.0
"""Seconds between progress lines inside a cell when stderr is not a terminal (CI logs); the environment
variable BENCH_PROGRESS_INTERVAL overrides it."""


@dataclass
class _Sampling:
    t0: float
    done: int = 0


@dataclass
class _ShardedCell:
    total: int  # the cell's images
    finished: int  # images in shards already done (reused from an interrupted run, or finished in this run)
    before: int = 0  # of those, the images done before this run (reused shard files)
    labels: list[str] = field(default_factory=list)  # its shard tasks in this run
    t0: float | None = None  # the first shard's start of sampling


class CellProgress:
    """Images sampled per cell, with rate and ETA, from the workers' `sample DONE/N` messages. The shards of a
    sharded cell count together: images done over the whole cell (shards finished, reused and running), at the
    cell's rate since its first shard began sampling, so the ETA is the cell's, not one shard's."""

    def __init__(self, tasks: Sequence[CellTask] = ()) -> None:
        self.label, self.done, self.total = "", 0, 0  # the last update's cell and its count
        self._runs: dict[str, _Sampling] = {}  # by task label, while the task runs
        self._shard_of: dict[str, tuple[str, int]] = {}  # shard task label -> (cell label, its images)
        self._cells: dict[str, _ShardedCell] = {}
        for t in tasks:
            if t.shard is not None:
                size = t.shard[1] - t.shard[0]
                self._shard_of[t.label] = (t.cell.label, size)
                cell = self._cells.setdefault(t.cell.label, _ShardedCell(t.cell.spec.samples, t.cell.spec.samples))
                cell.finished -= size
                cell.before = cell.finished
                cell.labels.append(t.label)

    def title(self, label: str) -> str:
        """What the bar shows for a task: a shard shows its cell."""
        return self._shard_of[label][0] if label in self._shard_of else label

    def update(self, label: str, message: str) -> str:
        """The text to show for this message: the phase, or images done with rate and ETA while sampling."""
        now = time.perf_counter()
        if message == "sample" or label not in self._runs:  # the worker says "sample" as sampling starts
            self._runs[label] = _Sampling(now)
        m = _SAMPLED.match(message)
        if not m:
            self.label, self.done, self.total = self.title(label), 0, 0
            return message
        run = self._runs[label]
        run.done = int(m.group(1))
        if label not in self._shard_of:
            self.label, self.done, self.total = label, run.done, int(m.group(2))
            return self._text(self.done, self.total, now - run.t0, run.done, "")
        cell_label, _ = self._shard_of[label]
        cell = self._cells[cell_label]
        if cell.t0 is None:
            cell.t0 = run.t0
        running = [self._runs[x] for x in cell.labels if x in self._runs]
        self.label, self.done, self.total = cell_label, cell.finished + sum(r.done for r in running), cell.total
        return self._text(self.done, self.total, now - cell.t0, self.done - cell.before,
                          f" ({len(running)} of {len(cell.labels)} shards running)")

    def finish(self, label: str) -> None:
        """A task's result arrived: a finished shard's images count as done for its cell."""
        self._runs.pop(label, None)
        if label in self._shard_of:
            cell_label, size = self._shard_of[label]
            self._cells[cell_label].finished += size

    @staticmethod
    def _text(done: int, total: int, elapsed: float, sampled_now: int, shards: str) -> str:
        if sampled_now <= 0 or elapsed <= 0:
            return f"sampled {done}/{total} images{shards}"
        rate = sampled_now / elapsed
        return (f"sampled {done}/{total} images{shards}, {rate:.3g} img/s, "
                f"sampling eta {(total - done) / rate:.0f} s")


class _LineProgress:
    """Progress for logs (no TTY): one line per finished cell instead of a redrawn bar, and inside a long cell
    a line every PROGRESS_INTERVAL seconds (images sampled, rate, ETA), so a CI log never sits silent."""

    def __init__(self, total: int, enabled: bool, interval: float | None = None) -> None:
        self.total, self.n, self.enabled, self.t0 = total, 0, enabled, time.perf_counter()
        self.desc = ""
        if interval is None:
            try:
                interval = float(os.environ.get("BENCH_PROGRESS_INTERVAL", PROGRESS_INTERVAL))
            except ValueError:
                interval = PROGRESS_INTERVAL
        self.interval, self.last_line = interval, time.perf_counter()

    def set_description_str(self, desc: str, refresh: bool = True) -> None:
        self.desc, _, detail = desc.partition(" [")
        now = time.perf_counter()
        if self.enabled and detail and now - self.last_line >= self.interval:
            self.last_line = now
            print(f"  {self.desc}: {detail.rstrip(']')} ({now - self.t0:.0f} s)", file=sys.stderr, flush=True)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def update(self, n: int) -> None:
        self.n += n
        self.last_line = time.perf_counter()
        if self.enabled:
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / self.n * (self.total - self.n)
            print(f"[{self.n}/{self.total}] {self.desc} {getattr(self, 'postfix', '')} "
                  f"({elapsed:.0f} s, eta {eta:.0f} s)", file=sys.stderr, flush=True)
            self.postfix = ""

    def write(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool) -> Any:
    """A tqdm bar (current cell, phase, ETA, last metrics) on a terminal; plain lines otherwise."""
    if not sys.stderr.isatty():
        return _LineProgress(total, enabled)
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="cell", disable=not enabled, dynamic_ncols=True,
                bar_format="{l_bar}{bar:20}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")
