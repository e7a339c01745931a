"""Run cells on a Ray cluster: the same plan, results streamed back to the driver, which alone writes the store.

Workers are Ray actors, one pool per hardware label, each holding a `bench.worker.Worker`: an actor takes a
whole (sampler, hardware) group and runs its cells one after the other, so the model stays loaded across the
sampler's NFE cells, and the process (torch imported once) goes on to the next group, as the local executor's
reused worker does. Resources come from the hardware spec:

    cpu:threads=N          num_cpus=N
    cpu                    num_cpus = the CPUs of the largest node (torch uses every core, as in a local run)
    cuda / cuda:0          num_gpus=1, num_cpus = threads or 1
    ...,accelerator=H100   also Ray's accelerator_type H100 (resource accelerator_type:H100), or a custom
                           resource accelerator:H100 declared with `ray start --resources`

Before submitting anything, each label's request is compared with the nodes of the cluster; a cell that no
node can run is reported skipped with the reason at once (the local instance also enables Ray's early exit for
infeasible requests, so a node lost later cannot make the run hang). An actor that dies (crash, SIGKILL, lost
node) or a cell that exceeds the suite timeout fails only that cell; a fresh actor takes the next cells.

Files: an actor on the driver's node writes sample grids and reference statistics into the store's folders as
a local worker does. An actor on another node works in a scratch folder; its grids come back with the result
and the driver writes them. Reference statistics are computed once per key: the first cell of a key runs
alone, the files it wrote under `<cache>/reference_stats` go into the object store (`ray.put`, once), and every
later cell receives their refs and finds them in its cache before it starts.

Sharded cells (bench.shards): each shard is a task of its own (keyed by cell and image range), in groups by
image range, so the shards of one cell run side by side on different actors and nodes. A shard returns its
features (and the node that sampled it) in the result; the driver writes the shard file, so no worker needs the
driver's filesystem. A shard reads no reference statistics; the cell's merged task (its features sent with
the task) scores them and times the sampler, once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.hardware import HardwareSpec
from bench.store import CellResult
from bench.worker import CellTask

if importlib.util.find_spec("ray") is None:  # bench.run turns this into "needs the [ray] extra"
    raise ImportError("No module named 'ray'")

OnResult = Callable[[CellTask, CellResult], None]
OnProgress = Callable[[str, str], None]

SOCKET_PATH_MAX = 107  # AF_UNIX sun_path
# What Ray appends to its temp dir for its longest socket: /session_<date>_<time>_<us>_<pid>/sockets/plasma_store
_SOCKET_SUFFIX = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")
MAX_QUICK_DEATHS = 3  # actors of one label dying before finishing any cell: give up on that label


# -- resources ---------------------------------------------------------------------------------------------
@dataclass
class Request:
    """What one hardware label asks of Ray, or why no node can give it."""

    options: dict[str, Any] = field(default_factory=dict)  # actor options: num_cpus, num_gpus, ...
    needs: dict[str, float] = field(default_factory=dict)  # the same as a resource dict, for the checks
    reason: str | None = None

    def capacity(self, nodes: list[dict[str, float]]) -> int:
        """How many actors with this request fit on the cluster at once (at least 1 if feasible)."""
        total = 0
        for res in nodes:
            fits = [int(res.get(k, 0.0) / v + 1e-9) for k, v in self.needs.items() if v > 0]
            total += min(fits) if fits else 1
        return total


def _find_label(accelerator: str, nodes: list[dict[str, float]]) -> str | None:
    """The resource name that labels nodes with `accelerator`: accelerator_type:X (Ray's) or accelerator:X."""
    wanted = accelerator.lower()
    for prefix in ("accelerator_type:", "accelerator:"):
        for res in nodes:
            for name in res:
                if name.lower() == prefix + wanted:
                    return name
    return None


def _describe(nodes: list[dict[str, float]]) -> str:
    cpus = sum(r.get("CPU", 0.0) for r in nodes)
    gpus = sum(r.get("GPU", 0.0) for r in nodes)
    labels = sorted({k for r in nodes for k in r if k.startswith(("accelerator_type:", "accelerator:"))})
    return (f"{len(nodes)} node(s), CPU={cpus:g}, GPU={gpus:g}"
            + (f", labels {', '.join(labels)}" if labels else ", no accelerator labels"))


def resource_request(hardware: str, nodes: list[dict[str, float]]) -> Request:
    """Actor options for a hardware label, checked against the alive nodes' total resources."""
    hw = HardwareSpec.parse(hardware)
    if hw.kind == "mps":
        return Request(reason="MPS devices cannot be scheduled through Ray (run mps cells with the local executor)")
    if hw.kind == "cuda" and ":" in hw.device and hw.device != "cuda:0":
        return Request(reason=f"{hw.device} names a device index; on Ray use `cuda` (Ray assigns each worker its GPU)")
    needs: dict[str, float] = {}
    options: dict[str, Any] = {}
    candidates = nodes
    if hw.accelerator:
        label = _find_label(hw.accelerator, nodes)
        if label is None:
            return Request(reason=f"no Ray node has accelerator {hw.accelerator} (resource accelerator_type:"
                                  f"{hw.accelerator} or accelerator:{hw.accelerator}; cluster: {_describe(nodes)})")
        if label.startswith("accelerator_type:"):
            options["accelerator_type"] = label.split(":", 1)[1]
            needs[label] = 0.001  # what Ray's accelerator_type option asks for
        else:
            options["resources"] = {label: 1}
            needs[label] = 1.0
        candidates = [r for r in nodes if r.get(label, 0.0) >= needs[label]]
    if hw.kind == "cuda":
        options["num_gpus"] = needs["GPU"] = 1
        options["num_cpus"] = needs["CPU"] = hw.threads or 1
    else:
        options["num_gpus"] = 0
        cpus = hw.threads or int(max((r.get("CPU", 0.0) for r in candidates), default=0.0))
        options["num_cpus"] = needs["CPU"] = max(cpus, 1)
    if not any(all(r.get(k, 0.0) >= v for k, v in needs.items()) for r in nodes):
        want = ", ".join(f"{k}={v:g}" for k, v in needs.items())
        return Request(reason=f"no Ray node can run {hardware} (needs {want}; cluster: {_describe(nodes)})")
    return Request(options=options, needs=needs)


def _alive_nodes(ray: Any) -> list[dict[str, float]]:
    return [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]


# -- the actor -----------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What an actor returns for one cell: the result plus files the driver must place (remote actors)."""

    result: CellResult
    grid: dict[str, bytes] = field(default_factory=dict)  # sample files (grid, saved/), when written in a scratch folder
    references: dict[str, bytes] = field(default_factory=dict)  # reference_stats files this cell created


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    if not folder.is_dir():
        return {}
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir()
            if p.is_file() and not p.name.endswith(".tmp")}


def write_missing(folder: Path, files: dict[str, bytes]) -> None:
    """Write files that are not there yet, atomically (temporary file + rename), as the metrics cache does."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:  # names are relative paths inside `folder`, never outside it
            continue
        path = folder / rel
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)


class BenchWorker:
    """A Ray actor around `bench.worker.Worker` (which keeps the loaded sampler between cells)."""

    def __init__(self, driver_node: str | None, threads: int | None) -> None:
        if threads is None:
            # Ray sets OMP_NUM_THREADS to the actor's CPUs; a spec without threads means torch's own default,
            # as in a local worker (torch is not imported yet in this process).
            os.environ.pop("OMP_NUM_THREADS", None)
        os.environ.setdefault("TQDM_DISABLE", "1")
        import ray

        from bench.worker import Worker, _preload

        _preload()
        self.worker = Worker()
        self.node = ray.get_runtime_context().get_node_id()
        self.local = driver_node is not None and self.node == driver_node
        self.scratch = None if self.local else Path(tempfile.mkdtemp(prefix="bench-ray-"))
        self.applied: set[str] = set()
        self.unavailable: dict[str, str | None] = {}

    def ready(self) -> dict[str, Any]:
        import socket

        return {"pid": os.getpid(), "node": self.node, "host": socket.gethostname(), "driver_node": self.local}

    def run(self, task: CellTask, shared: list[Any]) -> Outcome:
        import ray

        reason = self._availability(task.cell.hardware)
        if reason is not None:
            now = time.time()
            return Outcome(CellResult(key=task.cell.key, status="skipped", error=reason, started=now, finished=now))
        if self.scratch is not None:
            task = dataclasses.replace(task, samples_dir=str(self.scratch / "samples" / task.cell.key),
                                       cache_dir=str(self.scratch / "cache"))
        from bench.metrics.reference import SUBDIR

        refs_dir = Path(task.cache_dir) / SUBDIR
        todo = [r for r in shared if r.hex() not in self.applied]
        for ref, files in zip(todo, ray.get(todo), strict=True):
            write_missing(refs_dir, files)
            self.applied.add(ref.hex())
        before = _snapshot(refs_dir)
        result = self.worker.run(task)
        after = _snapshot(refs_dir)
        result.info["executor"] = {"name": "ray", **self.ready()}
        out = Outcome(result)
        out.references = {n: (refs_dir / n).read_bytes() for n, s in after.items() if before.get(n) != s}
        written = result.samples_dir  # the grid, and saved samples in saved/ (sidecar sorts last)
        if result.shard is not None:
            result.shard["node"] = self.node  # provenance: which node sampled this shard
            written = task.samples_dir if result.shard.get("grid_saved") else None  # its part of the grid
        if self.scratch is not None and written:
            folder = Path(written)
            out.grid = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
                        if p.is_file()}
            shutil.rmtree(folder, ignore_errors=True)
        return out

    def _availability(self, hardware: str) -> str | None:
        """The spec checked on this node (the cluster check only saw resource counts)."""
        if hardware not in self.unavailable:
            hw = HardwareSpec.parse(hardware)
            if hw.kind == "cpu":  # an accelerator label on a cpu spec selects the node; the node checked it
                hw = dataclasses.replace(hw, accelerator=None)
            reason = hw.availability()
            self.unavailable[hardware] = f"on Ray node {self.node[:8]}: {reason}" if reason else None
        return self.unavailable[hardware]

    def close(self) -> None:
        """Remove the scratch folder (called before the driver lets a finished actor go)."""
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


# -- the driver side -------------------------------------------------------------------------------------------
@dataclass
class _Slot:
    label: str
    actor: Any
    ready_ref: Any
    ready: bool = False
    local: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    group: deque[CellTask] | None = None
    task: CellTask | None = None
    ref: Any = None
    started: float = 0.0
    created: float = field(default_factory=time.time)
    finished_cells: int = 0


def task_id(task: CellTask) -> tuple[str, tuple[int, int] | None]:
    """A task's identity in a run: its cell, and its image range when it is one shard of a sharded cell."""
    return task.cell.key, task.shard


def reference_key(task: CellTask) -> str | None:
    """Cells with the same key read the same reference statistics (None: the cell has no quality metric, or
    the task is a shard, which only samples and embeds: its cell's merged task reads the references)."""
    from bench.metrics import SYSTEM_METRICS

    if task.shard is not None:
        return None
    quality = {k: v for k, v in task.metrics.items() if k not in SYSTEM_METRICS}
    if not quality:
        return None
    return json.dumps([task.dataset, task.dataset_options, task.samples, task.base_seed, task.cell.resolution,
                       quality], sort_keys=True, default=str)


def _absolute(task: CellTask) -> CellTask:
    return dataclasses.replace(task, samples_dir=str(Path(task.samples_dir).resolve()),
                               cache_dir=str(Path(task.cache_dir).resolve()))


def _result(task: CellTask, status: str, reason: str, started: float | None = None,
            info: dict[str, Any] | None = None) -> CellResult:
    now = time.time()
    started = now if started is None else started
    return CellResult(key=task.cell.key, status=status, error=reason, started=started, finished=now,
                      phases={"total": now - started} if status == "failed" else {}, info=dict(info or {}))


def _death_reason(exc: BaseException, info: dict[str, Any] | None = None) -> str:
    """One line for a dead actor (Ray's error text is a paragraph): the worker, and the cause Ray gives."""
    text = " ".join(str(exc).split())
    who = f"Ray worker (pid {info['pid']} on {info.get('host', '?')})" if info and "pid" in info else "Ray worker"
    if re.search(r"node (\S+ )?(has )?died|node .{0,60}(was )?(removed|dead|marked as dead)", text, re.I):
        return f"{who} lost: its node died"
    m = re.search(r"Worker exit type: (\w+) Worker exit detail: (.*?)(?: Some common causes.*)?$", text)
    if m:
        return f"{who} died ({m.group(1)}: {m.group(2)[:160]})"
    return f"{who} died ({type(exc).__name__}: {text[:160]})"


class RayExecutor:
    """Runs tasks on Ray; calls `on_result` in this (the driver) process, in completion order.

    `prestart()` starts (or connects to) Ray in a background thread, so that start-up overlaps the driver's
    suite validation and planning; `close()` shuts a local instance down. `run()` alone does both if needed.
    """

    name = "ray"

    def __init__(self, timeout: float = 1800.0, address: str | None = None, run_dir: str | Path = "runs",
                 ready_timeout: float | None = None) -> None:
        self.timeout = timeout
        self.address = address
        self.run_dir = Path(run_dir)
        self.ready_timeout = ready_timeout  # None: the cell timeout
        self.temp_dir: Path | None = None
        self.startup_seconds = 0.0
        self.ready_at = 0.0
        self._starting: threading.Thread | None = None
        self._started = threading.Event()
        self._stop = threading.Event()
        self._start_error: BaseException | None = None

    def prestart(self) -> None:
        if self._starting is None:
            self._started.clear()
            self._stop.clear()
            self._starting = threading.Thread(target=self._hold, name="bench-ray", daemon=True)
            self._starting.start()

    def _hold(self) -> None:
        """Start Ray, then keep this thread alive until close(): Ray's local processes are started with
        PR_SET_PDEATHSIG, which fires when the *thread* that started them exits."""
        try:
            t0 = time.perf_counter()
            with self._cluster():
                self.startup_seconds = time.perf_counter() - t0
                self.ready_at = time.time()
                self._started.set()
                self._stop.wait()
        except BaseException as e:
            self._start_error = e
        finally:
            self._started.set()

    def _ready(self) -> Any:
        self.prestart()
        self._started.wait()
        if self._start_error is not None:
            error, self._start_error = self._start_error, None
            self.close()
            raise error
        import ray

        return ray

    def close(self) -> None:
        thread, self._starting = self._starting, None
        if thread is not None:
            self._stop.set()
            thread.join()

    @contextlib.contextmanager
    def _cluster(self) -> Iterator[None]:
        """Connect to `address`, or start a local instance for the run; shut it down on exit."""
        if self.address is None:
            with _local_instance(self.run_dir) as temp_dir:
                self.temp_dir = temp_dir
                yield
            return
        import ray

        if ray.is_initialized():
            yield
            return
        try:
            ray.init(address=self.address, configure_logging=False, log_to_driver=False, namespace="bench")
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BenchError(f"cannot connect to the Ray cluster at {self.address!r}: {str(e).splitlines()[0]}"
                             ) from None
        try:
            yield
        finally:
            ray.shutdown()

    def parallelism(self, hardware: str) -> int:
        """How many actors of this hardware label the cluster runs at once (`shard_size: auto`); waits for Ray."""
        ray = self._ready()
        nodes = _alive_nodes(ray)
        request = resource_request(hardware, nodes)
        return 1 if request.reason is not None else max(1, request.capacity(nodes))

    def run(self, tasks: list[CellTask], on_result: OnResult, on_progress: OnProgress | None = None) -> None:
        owned = self._starting is None
        try:
            if tasks:
                ray = self._ready()
                _Run(self, ray, tasks, on_result, on_progress or (lambda label, msg: None)).loop()
        finally:
            if owned:
                self.close()


class _Run:
    """One executor run: pools of actors per hardware label, groups of cells per (sampler, hardware)."""

    def __init__(self, ex: RayExecutor, ray: Any, tasks: list[CellTask], on_result: OnResult,
                 progress: OnProgress) -> None:
        self.ex, self.ray, self.on_result, self.progress = ex, ray, on_result, progress
        self.originals = {task_id(t): t for t in tasks}  # shards of one cell are tasks of their own
        # when Ray was ready: a skip's delay is Ray's start-up (if it outlasted planning) plus this check
        self.info = {"executor": {"name": "ray", "ray_ready_at": ex.ready_at, "ray_startup_s": ex.startup_seconds}}
        self.client = _is_client(ray)
        self.driver_node = None if self.client else ray.get_runtime_context().get_node_id()
        self.actor_cls = ray.remote(max_restarts=0, max_task_retries=0)(BenchWorker)
        nodes = _alive_nodes(ray)
        self.requests = {hw: resource_request(hw, nodes) for hw in dict.fromkeys(t.cell.hardware for t in tasks)}
        # (sampler, hardware) groups in plan order; each label's groups wait in a queue for an actor. Shards go
        # in groups by image range, so the shards of one cell run side by side on different actors.
        groups: dict[tuple[str, str, tuple[int, int] | None], deque[CellTask]] = {}
        for t in tasks:
            groups.setdefault((t.cell.sampler_id, t.cell.hardware, t.shard), deque()).append(t)
        self.queues: dict[str, deque[deque[CellTask]]] = {}
        for (_, hw, _), group in groups.items():
            self.queues.setdefault(hw, deque()).append(group)
        self.slots: list[_Slot] = []
        self.quick_deaths: dict[str, int] = {}
        self.shared: list[Any] = []  # ObjectRefs of reference-statistics files, in the order they were made
        self.producers: dict[str, str | None] = {}  # reference key -> cell key running it, or "" when made
        # Cells no node can run: skipped now, before anything is submitted.
        for hw, req in self.requests.items():
            if req.reason is not None:
                self._skip_label(hw, req.reason)
        self.wanted = {hw: min(len(q), max(req.capacity(nodes), 1)) for hw, q in self.queues.items()
                       for req in [self.requests[hw]]}

    def _skip_label(self, hw: str, reason: str, status: str = "skipped") -> None:
        queue = self.queues.pop(hw, deque())
        for slot in self.slots:
            if slot.label == hw and slot.group:
                queue.append(slot.group)
                slot.group = None
        for group in queue:
            while group:
                task = group.popleft()
                self.on_result(self.originals[task_id(task)], _result(task, status, reason, info=self.info))

    def _spawn(self, hw: str) -> None:
        req = self.requests[hw]
        threads = HardwareSpec.parse(hw).threads
        actor = self.actor_cls.options(**req.options).remote(self.driver_node, threads)
        self.slots.append(_Slot(label=hw, actor=actor, ready_ref=actor.ready.remote()))

    def _retire(self, slot: _Slot, graceful: bool = False) -> None:
        if graceful and slot.ready and slot.task is None:
            with contextlib.suppress(Exception):
                self.ray.get(slot.actor.close.remote(), timeout=10)
        with contextlib.suppress(Exception):
            self.ray.kill(slot.actor, no_restart=True)
        self.slots.remove(slot)

    def loop(self) -> None:
        try:
            while self.queues or any(s.task is not None or s.group for s in self.slots):
                self._fill()
                self._dispatch()
                waiting = {s.ready_ref: s for s in self.slots if not s.ready}
                waiting.update({s.ref: s for s in self.slots if s.task is not None})
                if not waiting:
                    time.sleep(0.05)  # only cells held back for a reference being made elsewhere
                    continue
                done, _ = self.ray.wait(list(waiting), num_returns=1, timeout=0.5)
                for ref in done:
                    slot = waiting[ref]
                    if ref == slot.ready_ref and not slot.ready:
                        self._on_ready(slot)
                    elif slot.task is not None:
                        self._on_cell(slot)
                self._check_time()
        finally:  # normally empty by now: each actor was let go when its label ran out of groups
            for slot in list(self.slots):
                self._retire(slot)

    def _fill(self) -> None:
        """Keep up to `wanted` actors per label that still has groups to run."""
        for hw in list(self.queues):
            if not self.queues[hw]:
                continue
            have = sum(1 for s in self.slots if s.label == hw)
            busy = sum(1 for s in self.slots if s.label == hw and s.group)
            for _ in range(min(self.wanted[hw], busy + len(self.queues[hw])) - have):
                self._spawn(hw)

    def _dispatch(self) -> None:
        for slot in list(self.slots):
            if not slot.ready or slot.task is not None:
                continue
            if not slot.group:
                queue = self.queues.get(slot.label)
                if not queue:  # other actors took this label's groups: free the resources
                    self._retire(slot, graceful=True)
                    continue
                slot.group = queue.popleft()
                if not queue:
                    del self.queues[slot.label]
            task = slot.group[0]
            rkey = reference_key(task)
            if rkey is not None:
                state = self.producers.get(rkey)
                if state:  # another cell is making this reference: wait for its files
                    continue
                if state is None:
                    self.producers[rkey] = task.cell.key
            slot.group.popleft()
            slot.task = task
            slot.started = time.time()
            self.progress(task.label, f"start on {slot.info.get('host', '?')}")
            slot.ref = slot.actor.run.remote(_absolute(task) if slot.local else task, list(self.shared))

    def _on_ready(self, slot: _Slot) -> None:
        try:
            slot.info = self.ray.get(slot.ready_ref)
        except Exception as e:
            self._on_death(slot, e)
            return
        slot.ready = True
        slot.local = bool(slot.info.get("driver_node"))

    def _on_cell(self, slot: _Slot) -> None:
        task = slot.task
        assert task is not None
        try:
            out: Outcome = self.ray.get(slot.ref)
        except Exception as e:
            self._on_death(slot, e)
            return
        slot.task, slot.ref = None, None
        slot.finished_cells += 1
        self.quick_deaths[slot.label] = 0
        self._finish(task, out)
        if not slot.group:
            slot.group = None
            if slot.label not in self.queues:
                self._retire(slot, graceful=True)  # nothing left for this label: free its resources

    def _finish(self, task: CellTask, out: Outcome) -> None:
        original = self.originals[task_id(task)]
        result = out.result
        if out.grid:
            write_missing(Path(original.samples_dir), out.grid)
        if result.samples_dir:
            result.samples_dir = original.samples_dir
        rkey = reference_key(task)
        if out.references:
            from bench.metrics.reference import SUBDIR

            self.shared.append(self.ray.put(out.references))
            write_missing(Path(original.cache_dir) / SUBDIR, out.references)
        if rkey is not None and self.producers.get(rkey) == task.cell.key:
            # made (or found in the cache): later cells go ahead; a failed maker hands the job to the next cell
            self.producers[rkey] = "" if result.status == "done" else None
        self.on_result(original, result)

    def _on_death(self, slot: _Slot, exc: BaseException) -> None:
        """The actor is gone: fail its cell (if any), replace it; give up on a label whose actors keep dying."""
        reason = _unschedulable(exc) or _death_reason(exc, slot.info)
        task = slot.task
        self._retire(slot)
        if task is not None:
            self._fail(task, reason, slot.started)
        if slot.group:  # the rest of its group goes back to the front of the label's queue
            self.queues.setdefault(slot.label, deque()).appendleft(slot.group)
        if _unschedulable(exc):
            self._skip_label(slot.label, reason)
            return
        if slot.finished_cells == 0:
            self.quick_deaths[slot.label] = self.quick_deaths.get(slot.label, 0) + 1
            if self.quick_deaths[slot.label] >= MAX_QUICK_DEATHS:
                self._skip_label(slot.label, f"{MAX_QUICK_DEATHS} Ray workers for {slot.label} died in a row; "
                                             f"last: {reason}", status="failed")

    def _fail(self, task: CellTask, reason: str, started: float) -> None:
        rkey = reference_key(task)
        if rkey is not None and self.producers.get(rkey) == task.cell.key:
            self.producers[rkey] = None
        self.on_result(self.originals[task_id(task)], _result(task, "failed", reason, started, self.info))

    def _check_time(self) -> None:
        now = time.time()
        ready_timeout = self.ex.ready_timeout or self.ex.timeout
        if any(s.task is not None for s in self.slots):  # our own cells hold the resources: not stuck
            for slot in self.slots:
                if not slot.ready:
                    slot.created = now
        for slot in list(self.slots):
            if slot.task is not None:
                limit = float(slot.task.extra.get("timeout", self.ex.timeout))
                if now - slot.started > limit:
                    task, started = slot.task, slot.started
                    self._retire(slot)
                    if slot.group:
                        self.queues.setdefault(slot.label, deque()).appendleft(slot.group)
                    self._fail(task, f"timed out after {limit:.0f} s", started)
            elif not slot.ready and now - slot.created > ready_timeout:
                self._retire(slot)
                if not any(s.label == slot.label for s in self.slots):
                    self._skip_label(slot.label, f"no Ray node started a worker for {slot.label} within "
                                                 f"{ready_timeout:.0f} s", status="failed")


def _unschedulable(exc: BaseException) -> str | None:
    from ray import exceptions as rex

    kinds = tuple(getattr(rex, n) for n in ("ActorUnschedulableError", "TaskUnschedulableError") if hasattr(rex, n))
    if isinstance(exc, kinds) or any(isinstance(c, kinds) for c in (exc.__cause__, exc.__context__)):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"no Ray node can run it any more: {first[:200]}"
    return None


def _is_client(ray: Any) -> bool:
    try:
        return bool(ray.util.client.ray.is_connected())
    except AttributeError:
        return False


# -- a local instance --------------------------------------------------------------------------------------------
def _fits(folder: Path) -> bool:
    """Ray's socket paths under `folder` stay within AF_UNIX's limit."""
    return len(str(folder)) + _SOCKET_SUFFIX < SOCKET_PATH_MAX


def short_temp_dir(prefix: str = "bench-ray-") -> Path:
    """A new, empty folder for Ray's files: under the system temp dir (TMPDIR is honoured) when Ray's socket
    paths fit below it, else under /tmp. The caller removes it."""
    base = Path(tempfile.gettempdir())
    if not _fits(base / (prefix + "x" * 8)):
        base = Path("/tmp")
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def temp_dir_for(run_dir: Path) -> tuple[Path, bool]:
    """Ray's temp dir inside the run folder, or a short temporary one when socket paths would be too long."""
    wanted = run_dir.resolve() / "ray-tmp"
    if _fits(wanted):
        return wanted, False
    return short_temp_dir(), True


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Make Ray pick 127.0.0.1 as this node's address (it otherwise resolves localhost to the LAN address).

    Ray does this itself on macOS and Windows (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0); the same switch keeps a
    single-machine instance off the network on Linux. Children started inside inherit the variable.
    """
    old_env = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants  # read at import; patch it in case ray was imported earlier

    old_const = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_const
        if old_env is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = old_env


class _NoSigtermWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


@contextlib.contextmanager
def _quiet_thread_warning() -> Iterator[None]:
    """ray.init warns that it runs outside the main thread (see RayExecutor._hold); that is on purpose."""
    log, flt = logging.getLogger("ray._private.worker"), _NoSigtermWarning()
    log.addFilter(flt)
    try:
        yield
    finally:
        log.removeFilter(flt)


@contextlib.contextmanager
def _python_path() -> Iterator[None]:
    """Ray workers import what this process imports (as spawned local workers do): export our sys.path."""
    old = os.environ.get("PYTHONPATH")
    extra = [os.path.abspath(p or ".") for p in sys.path if os.path.isdir(p or ".")]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(extra + ([old] if old else [])))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@contextlib.contextmanager
def _local_instance(run_dir: Path) -> Iterator[Path | None]:
    """A Ray instance on this machine for one run: all CPUs, no dashboard, 127.0.0.1, temp dir in the run dir."""
    with loopback_only():
        import ray

        if ray.is_initialized():  # the caller already runs Ray in this process: use it, leave it running
            yield None
            return
        temp_dir, fallback = temp_dir_for(run_dir)
        temp_dir.mkdir(parents=True, exist_ok=True)
        if fallback:
            print(f"ray: {run_dir.resolve() / 'ray-tmp'} would make Ray's socket paths longer than "
                  f"{SOCKET_PATH_MAX} bytes; using {temp_dir} (removed after the run)", file=sys.stderr)
        try:
            with _python_path(), _quiet_thread_warning():
                ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                         _temp_dir=str(temp_dir), _node_ip_address="127.0.0.1", configure_logging=False,
                         log_to_driver=False, namespace="bench",
                         _system_config={"enable_autoscaler_v2": True, "enable_infeasible_task_early_exit": True})
            try:
                yield temp_dir
            finally:
                ray.shutdown()
        finally:
            if fallback:
                shutil.rmtree(temp_dir, ignore_errors=True)
