"""One cell: load the sampler, sample with per-image seeds once, count NFE, time, measure memory, score.

Runs inside an isolated worker process (see executors/local.py); `serve` is that process's loop. The
worker keeps loaded samplers between cells of the same (adapter, options, hardware) so a sweep over NFE
does not reload weights; load time is then recorded once, on the first cell that loaded it.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.plan import Cell
from bench.store import CellResult


@dataclass
class CellTask:
    """Everything a worker needs for one cell; plain picklable data. What determines the numbers comes from the
    cell's frozen spec; the rest (batch size, paths, timeout) only says how to compute them."""

    cell: Cell
    batch_size: int
    samples_dir: str
    cache_dir: str
    allow_download: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # Sharded cells (bench.shards): `shard` = (lo, hi) samples only images lo..hi-1 and returns their features
    # (result.shard); `merged` = the shards' features and measurements, so the cell's task only scores and times.
    shard: tuple[int, int] | None = None
    merged: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        if self.shard is None:
            return self.cell.label
        return f"{self.cell.label} images {self.shard[0]}-{self.shard[1] - 1}"

    @property
    def dataset(self) -> str:
        return str(self.cell.spec.dataset["name"])

    @property
    def dataset_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.cell.spec.dataset.items() if k != "name"}

    @property
    def samples(self) -> int:
        return self.cell.spec.samples

    @property
    def base_seed(self) -> int:
        return self.cell.spec.base_seed

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        return self.cell.spec.metrics

    @property
    def grid(self) -> int:
        return self.cell.spec.grid


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0] if text else type(exc).__name__


_RunCell = Callable[["Worker", CellTask, dict[str, float], CellResult], None]


def _in_cell_runtime(run: _RunCell) -> _RunCell:
    """Run a whole cell inside its runtime state (bench.runtime: the hardware spec's threads, dtype and compile),
    restored after, so a reused worker's next cell starts from the process's own state instead of the last
    cell's thread count, default dtype or grad mode."""

    @functools.wraps(run)
    def wrapped(self: Worker, task: CellTask, phases: dict[str, float], result: CellResult) -> None:
        from bench.hardware import HardwareSpec
        from bench.runtime import cell_runtime

        hw = HardwareSpec.parse(task.cell.hardware)
        with cell_runtime(threads=hw.threads, dtype=hw.dtype, compile=hw.compile):
            run(self, task, phases, result)

    return wrapped


class Worker:
    """Holds loaded samplers and datasets across cells; `run` never raises (errors become failed results)."""

    def __init__(self, progress: Any = None) -> None:
        self._samplers: dict[str, Any] = {}
        self._datasets: dict[str, Any] = {}
        self.progress = progress or (lambda msg: None)

    def run(self, task: CellTask) -> CellResult:
        started = time.time()
        phases: dict[str, float] = {}
        result = CellResult(key=task.cell.key, status="failed", started=started)
        try:
            self._run(task, phases, result)
        except BaseException as e:  # a cell's failure must never take the sweep down
            if isinstance(e, (KeyboardInterrupt, DriverGone)):
                raise
            result.status = "failed"
            result.error = _one_line(e)
            result.info["traceback"] = traceback.format_exc(limit=20)
        result.finished = time.time()
        phases["total"] = result.finished - started
        phases["other"] = max(phases["total"] - sum(v for k, v in phases.items() if k != "total"), 0.0)
        result.phases = phases
        return result

    def _sampler(self, task: CellTask, phases: dict[str, float]) -> Any:
        from bench.adapters.registry import build_sampler
        from bench.hardware import HardwareSpec

        c = task.cell
        cache_key = json.dumps([c.adapter, c.options, c.hardware], sort_keys=True, default=str)
        if cache_key in self._samplers:
            phases["load"] = 0.0
            return self._samplers[cache_key]
        self.progress("load")
        t0 = time.perf_counter()
        sampler = build_sampler(c.adapter, dict(c.options))
        sampler.load(HardwareSpec.parse(c.hardware))
        phases["load"] = time.perf_counter() - t0
        self._samplers.clear()  # keep one model resident: memory numbers stay per-sampler
        self._samplers[cache_key] = sampler
        return sampler

    def _dataset(self, task: CellTask) -> Any:
        from bench.datasets import build_dataset

        key = json.dumps([task.dataset, task.dataset_options], sort_keys=True, default=str)
        if key not in self._datasets:
            self._datasets[key] = build_dataset(task.dataset, dict(task.dataset_options))
        return self._datasets[key]

    @_in_cell_runtime
    def _run(self, task: CellTask, phases: dict[str, float], result: CellResult) -> None:
        from bench.hardware import HardwareSpec
        from bench.metrics.registry import MetricResult, QualityContext
        from bench.metrics.streaming import FeatureStream, feature_requests
        from bench.runtime import image_seeds

        c = task.cell
        hw = HardwareSpec.parse(c.hardware)  # its threads are set (and restored) by @_in_cell_runtime
        device = hw.torch_device()
        needs_sampler = task.merged is None or "latency" in task.metrics
        sampler = self._sampler(task, phases) if needs_sampler else None
        if sampler is not None:
            _check_capabilities(sampler, c, hw)
        dataset = self._dataset(task)
        n = task.samples
        indices = list(range(n))
        seeds = image_seeds(task.base_seed, indices)
        cond = dataset.conditions(indices)
        ctx = QualityContext(
            images=None, indices=indices, seeds=seeds, prompts=cond.prompts, labels=cond.labels, dataset=dataset,
            resolution=c.resolution, device=device, cache_dir=Path(task.cache_dir), seed=task.base_seed,
            allow_download=task.allow_download,
        )
        requests, _ = feature_requests(task.metrics)
        keep = requests is None or bool(c.spec.save_samples)  # the images themselves are needed after sampling
        t0 = time.perf_counter()
        stream = FeatureStream(ctx, requests) if requests is not None else None
        phases["features"] = time.perf_counter() - t0

        lo, hi = task.shard if task.shard is not None else (0, n)
        if task.merged is None:
            sampled = self._sample(task, sampler, cond, seeds, lo, hi, stream, keep, phases)
        else:
            sampled = task.merged
        if task.shard is not None:  # a shard returns its features and measurements; the cell's task scores them
            result.shard = {k: v for k, v in sampled.items() if k != "images"}
            result.shard["features"] = stream.arrays() if stream is not None else {}
            result.shard["host"] = socket.gethostname()  # provenance: where each shard ran
            if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:  # the GPU(s) it saw: one, when pinned
                result.shard["device"] = os.environ["CUDA_VISIBLE_DEVICES"]
            result.nfe_counted = sampled["nfe"]
            result.status = "done"
            return

        result.info["determinism_probe"] = sampled["probe"]
        if sampled.get("sampler"):
            result.info["sampler"] = sampled["sampler"]
        if sampled.get("shards"):
            result.info["shards"] = sampled["shards"]
        result.nfe_counted = sampled["nfe"]
        metrics: list[MetricResult] = []
        if "memory" in task.metrics:
            metrics.append(MetricResult("peak_memory_mb", sampled["peak_mb"], higher_is_better=False, n=1,
                                        provenance={**sampled["memory"], "batch_size": task.batch_size}))
        if sampled.get("grid_saved"):
            result.samples_dir = task.samples_dir

        if keep:
            ctx.images = sampled["images"]
        elif stream is not None:
            if task.merged is None:
                stream.finish()
            else:
                stream.load(task.merged["features"])
        t0 = time.perf_counter()
        if c.spec.save_samples:  # exactly the tensor the metrics below score
            from bench.samples import FOLDER, save_samples

            opts = c.spec.save_samples
            result.info["saved_samples"] = save_samples(
                Path(task.samples_dir) / FOLDER, ctx.images, indices, seeds, cond.prompts, cond.labels,
                str(opts.get("format", "png")), opts.get("max"))
            result.samples_dir = task.samples_dir
        phases["save"] = phases.get("save", 0.0) + time.perf_counter() - t0

        if "latency" in task.metrics:
            self.progress("latency")
            t0 = time.perf_counter()
            metrics += _latency(sampler, task, cond, device)
            phases["latency"] = time.perf_counter() - t0

        self.progress("metrics")
        t0 = time.perf_counter()
        metric_errors = _quality(task, ctx, metrics)
        phases["metrics"] = time.perf_counter() - t0
        result.evidence = {m.name: m.evidence for m in metrics if m.evidence is not None}
        for m in metrics:
            m.evidence = None
        result.metrics = metrics
        result.info["nfe_counted_per_image"] = sampled["nfe"]
        if metric_errors:
            result.info["metric_errors"] = metric_errors
            result.error = "; ".join(f"{k}: {v}" for k, v in metric_errors.items())
            result.status = "failed"
        else:
            result.status = "done"

    def _sample(self, task: CellTask, sampler: Any, cond: Any, seeds: list[int], lo: int, hi: int,
                stream: Any, keep: bool, phases: dict[str, float]) -> dict[str, Any]:
        """Quality sampling of images lo..hi-1, every image once from its own seed, in the cell's batches (a
        shard starts on a batch boundary, so its batches are the whole cell's); each batch is embedded at once
        when streaming. Returns the counted NFE, peak memory, determinism probe, grid flag (and the images when
        kept)."""
        import torch

        from bench import contract
        from bench.adapters.protocol import SampleRequest
        from bench.hardware import HardwareSpec
        from bench.metrics.memory import PeakMemory
        from bench.metrics.nfe import NFECounter

        c = task.cell
        hw = HardwareSpec.parse(c.hardware)
        device = hw.torch_device()
        n = task.samples
        self.progress("sample")
        t0 = time.perf_counter()
        embed = 0.0
        images, grid_images = [], []
        first_sample = None
        first_req = first_batch = None
        grid = min(task.grid, n)
        who = f"sampler {c.sampler_id!r} ({c.adapter})"
        with PeakMemory(device) as mem:
            # Hooks go on the modules networks() lists before each batch (a network built inside sample() is
            # not counted: the contract check below says so).
            for b_lo in range(lo, hi, task.batch_size):
                b_hi = min(b_lo + task.batch_size, hi)
                req = SampleRequest(
                    seeds=seeds[b_lo:b_hi], nfe=c.nfe, height=c.resolution, width=c.resolution,
                    prompts=cond.prompts[b_lo:b_hi] if cond.prompts else None,
                    labels=cond.labels[b_lo:b_hi] if cond.labels else None, guidance=c.guidance,
                    extra=c.spec.request_extra(),
                )
                with NFECounter(sampler.networks()) as counter:
                    out = sampler.sample(req)
                batch = contract.checked_uint8(out, b_hi - b_lo, c.resolution, c.resolution, who)
                contract.check_nfe(counter.per_image(b_hi - b_lo), len(counter.modules), len(sampler.networks()), who)
                if first_sample is None:
                    first_sample, first_req, first_batch = counter.per_image(b_hi - b_lo), req, batch
                elif abs(counter.per_image(b_hi - b_lo) - first_sample) > 1e-9:
                    raise RuntimeError("counted NFE differs between batches")
                if b_lo < grid:
                    grid_images.append(batch[: grid - b_lo])
                if keep:
                    images.append(batch)
                if stream is not None:
                    e0 = time.perf_counter()
                    stream.add(batch)
                    embed += time.perf_counter() - e0
                self.progress(f"sample {b_hi - lo}/{hi - lo}")
        phases["sample"] = time.perf_counter() - t0 - embed
        phases["features"] = phases.get("features", 0.0) + embed
        if first_req is None or first_batch is None:
            raise RuntimeError(f"no images to sample in {lo}..{hi - 1}")
        # Determinism probe: the last image of the first batch again, alone (one batch-1 sample() call).
        t0 = time.perf_counter()
        probe = contract.determinism_probe(sampler, first_req, first_batch,
                                           contract.probe_tolerance(device, hw.dtype), who=who)
        phases["probe"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if grid_images:
            _save_grid(torch.cat(grid_images), Path(task.samples_dir), start=lo)
        phases["save"] = time.perf_counter() - t0
        describe = getattr(sampler, "provenance_for", None)  # diffusers adapters: the recipe row this cell ran
        return {
            "nfe": first_sample, "peak_mb": mem.peak_mb, "memory": mem.provenance(), "probe": probe.as_info(),
            "sampler": describe(c.nfe) if callable(describe) else None, "grid_saved": bool(grid_images),
            "images": torch.cat(images) if keep else None,
        }


def _check_capabilities(sampler: Any, cell: Cell, hw: Any) -> None:
    """Refuse a cell the loaded sampler cannot honour (its dtype, compile, NFE, resolution), with the planner's
    reason: a sampler's info may change in load() (the zoo students read their NFE range from the weights), and
    a cell must never run without what its hardware spec names."""
    from bench.errors import BenchError

    reason = sampler.info.unsupported(cell.nfe, cell.resolution, hw)
    if reason is not None:
        raise BenchError(f"sampler {cell.sampler_id!r} ({cell.adapter}) {reason}")


def _save_grid(images: Any, folder: Path, start: int = 0) -> None:
    """Grid images named by their image index (from `start`), so shards that each hold part of the grid fill
    one folder without overwriting each other."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images, start):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")


def _timed_batch(sampler: Any, task: CellTask, cond: Any, b: int) -> Callable[[], Any]:
    """One sample() call of `b` images (the cell's first images, repeated when b > samples): what latency and
    throughput time."""
    from bench.adapters.protocol import SampleRequest
    from bench.runtime import image_seeds

    idx = [i % task.samples for i in range(b)]
    req = SampleRequest(
        seeds=image_seeds(task.base_seed, idx), nfe=task.cell.nfe, height=task.cell.resolution,
        width=task.cell.resolution, guidance=task.cell.guidance,
        prompts=[cond.prompts[i] for i in idx] if cond.prompts else None,
        labels=[cond.labels[i] for i in idx] if cond.labels else None, extra=task.cell.spec.request_extra(),
    )

    def one_batch() -> Any:
        return sampler.sample(req)

    return one_batch


def _latency(sampler: Any, task: CellTask, cond: Any, device: Any) -> list[Any]:
    from bench.metrics import latency
    from bench.metrics.registry import MetricResult

    opts = latency.LatencyOptions.model_validate(task.metrics.get("latency") or {})
    sizes = sorted(set(opts.batch_sizes))
    threads = _threads()
    cpu_time = device.type == "cpu" and threads == 1  # CPU seconds mean something on one thread only
    protocol = {"min_runs": opts.min_runs, "max_time": opts.max_time, "max_iqr_rel": opts.max_iqr_rel}
    out = []
    for b in sizes:
        one_batch = _timed_batch(sampler, task, cond, b)

        nets = list(sampler.networks()) if opts.phases else []  # the phase split hooks the counted networks
        with latency.PhaseClock(nets, device) as clock:
            r = latency.measure(
                one_batch, b, device, warmup=opts.warmup, min_run_time=opts.min_run_time,
                max_run_time=opts.max_run_time, min_runs=opts.min_runs, max_time=opts.max_time, cpu_time=cpu_time,
                phases=clock if nets else None,
            )
        names = ([("latency_ms_batch1", "latency_cpu_ms_batch1")] if b == 1 else []) + (
            [("latency_ms_per_image", "latency_cpu_ms_per_image")] if b == sizes[-1] else [])
        runs = {"batch_size": b, "runs": r.runs, "number_per_run": r.number_per_run, "runs_added": r.runs_added}
        med, q25, q75 = r.per_image_ms()
        unstable, reason = latency.stability(r.runs, med, q25, q75, opts.min_runs, opts.max_iqr_rel)
        prov = {**runs, "median_batch_ms": r.median_s * 1e3, "ci": "interquartile range", "threads": threads,
                "unstable": unstable, "unstable_reason": reason, **protocol}
        out += [MetricResult(wall, med, False, q25, q75, r.runs, dict(prov)) for wall, _ in names]
        out += latency.phase_metrics(r, [wall for wall, _ in names], {"batch_size": b, "threads": threads})
        cpu = r.cpu_per_image_ms()
        if cpu is not None:
            med, q25, q75 = cpu
            unstable, reason = latency.stability(r.runs, med, q25, q75, opts.min_runs, opts.max_iqr_rel)
            prov = {**runs, "median_batch_ms": med * b, "ci": "interquartile range", "threads": threads,
                    "clock": latency.CPU_CLOCK, "unstable": unstable, "unstable_reason": reason, **protocol}
            out += [MetricResult(cpu_name, med, False, q25, q75, r.runs, dict(prov)) for _, cpu_name in names]
    if opts.throughput_max_batch:
        out += _throughput(sampler, task, cond, device, opts, sizes[-1], out)
    if opts.scope == "denoiser":
        out = latency.denoiser_scope(out)
    if opts.calibrate:
        from bench.metrics.calibration import WORKLOAD, calibrate

        c = calibrate(device)
        med, q25, q75 = c.per_image_ms()
        out.append(MetricResult("calibration_ms", med, False, q25, q75, c.runs,
                                {"workload": WORKLOAD, "threads": _threads(),
                                 "ci": "interquartile range"}))
    return out


def _throughput(sampler: Any, task: CellTask, cond: Any, device: Any, opts: Any, largest: int,
                timed: list[Any]) -> list[Any]:
    """Images per second at the batch that gives the most: the largest timed batch, then doubled up to
    `throughput_max_batch`, stopping at the first batch that runs out of device memory (caught, the cache
    emptied). Each candidate gets the latency protocol's adaptive timing; the result keeps every batch tried."""
    import torch

    from bench.metrics import latency
    from bench.metrics.registry import MetricResult

    per_image = next((m for m in timed if m.name == "latency_ms_per_image"), None)
    tried: list[dict[str, Any]] = []
    best: tuple[float, int, float, float, int] | None = None  # img/s, batch, low, high, runs
    if per_image is not None and per_image.value:
        best = (1e3 / per_image.value, largest, 1e3 / (per_image.ci_high or per_image.value),
                1e3 / (per_image.ci_low or per_image.value), int(per_image.n or 0))
        tried.append({"batch_size": largest, "img_s": best[0]})
    stopped = f"cap {opts.throughput_max_batch}"
    b = largest * 2
    while b <= opts.throughput_max_batch:
        one_batch = _timed_batch(sampler, task, cond, b)

        try:
            r = latency.measure(one_batch, b, device, warmup=1,
                                min_run_time=opts.min_run_time, max_run_time=opts.max_run_time,
                                min_runs=opts.min_runs, max_time=opts.max_time)
        except Exception as e:
            if not latency.out_of_memory(e):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            stopped = f"out of memory at batch {b}"
            break
        img_s = b / r.median_s
        tried.append({"batch_size": b, "img_s": img_s})
        if best is None or img_s > best[0]:
            best = (img_s, b, b / r.q75_s, b / r.q25_s, r.runs)
        b *= 2
    if best is None:
        return []
    return [MetricResult("throughput_img_s", best[0], True, best[2], best[3], best[4],
                         {"batch_size": best[1], "tried": tried, "stopped": stopped, "ci": "interquartile range",
                          "threads": _threads()})]


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _quality(task: CellTask, ctx: Any, metrics: list[Any]) -> dict[str, str]:
    from bench.metrics import SYSTEM_METRICS
    from bench.metrics.registry import get_metric

    errors: dict[str, str] = {}
    for name, opts in task.metrics.items():
        if name in SYSTEM_METRICS:
            continue
        try:
            metrics.extend(get_metric(name)(ctx, dict(opts or {})))
        except Exception as e:
            errors[name] = _one_line(e)
    return errors


def _preload() -> None:
    """Import what every cell needs before reporting ready, so first-cell imports are not billed to a cell."""
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime" on CPU boxes
    import PIL.Image  # noqa: F401
    import torch
    import torch.utils.benchmark  # noqa: F401

    import bench.adapters.protocol
    import bench.adapters.registry
    import bench.metrics.latency
    import bench.metrics.memory
    import bench.metrics.nfe  # noqa: F401


class DriverGone(Exception):
    """The driver process is gone (killed): its end of the pipe is closed, so this worker stops quietly."""


def serve(conn: Any) -> None:
    """Worker-process loop: receive CellTasks over the pipe, send progress and results back. When the driver is
    killed the pipe breaks: the worker stops at its next message, without a traceback (the driver's next open of
    the store marks the run interrupted)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    _preload()

    def send(msg: Any) -> None:
        try:
            conn.send(msg)
        except (BrokenPipeError, ConnectionResetError, EOFError) as e:
            raise DriverGone from e

    worker = Worker(progress=lambda msg: send(("progress", msg)))
    try:
        send(("ready", os.getpid()))
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):
                return
            if task is None:
                return
            send(("result", worker.run(task)))
    except DriverGone:
        return
