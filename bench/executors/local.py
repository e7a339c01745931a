"""Run cells in isolated, spawned worker processes: a crash, OOM kill or hang fails only its cell.

Workers are reused for consecutive cells (importing torch costs ~2 s per process, which would dominate
small cells); a worker that dies or times out is replaced by a fresh one. `--isolate` spawns one per cell.
With `devices`, each worker sees one GPU (CUDA_VISIBLE_DEVICES, spread evenly), so the shards of a cuda cell run
one per GPU.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from bench.store import CellResult
from bench.worker import CellTask, serve

OnResult = Callable[[CellTask, CellResult], None]
OnProgress = Callable[[str, str], None]  # (cell label, message)


@dataclass
class _Slot:
    proc: Any
    conn: Connection
    task: CellTask | None = None
    started: float = 0.0
    ready: bool = False
    device: str | None = None  # the GPU this worker sees (CUDA_VISIBLE_DEVICES), when the executor pins them


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "worker vanished"
    if code < 0:
        try:
            return f"worker killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"worker killed by signal {-code}"
    return f"worker exited with code {code}"


class LocalExecutor:
    """Schedules tasks on `jobs` worker processes; calls `on_result` in this (the driver) process."""

    name = "local"

    def __init__(self, jobs: int = 1, timeout: float = 1800.0, isolate: bool = False,
                 devices: Sequence[str] = ()) -> None:
        self.jobs = max(1, jobs)
        self.devices = [str(d) for d in devices]
        self._device_use = dict.fromkeys(self.devices, 0)
        self.timeout = timeout
        self.isolate = isolate
        self._ctx = mp.get_context("spawn")
        self.startup_wait = 0.0  # driver time spent waiting for the first worker to import torch & co.
        self._finished: list[_Slot] = []
        self._prestarted: list[_Slot] = []

    def prestart(self) -> None:
        """Spawn the workers now, so their imports overlap the driver's planning instead of following it."""
        while len(self._prestarted) < self.jobs:
            self._prestarted.append(self._spawn())

    def parallelism(self, hardware: str) -> int:
        """Tasks run at once (`shard_size: auto`): the worker count, whatever the hardware."""
        return self.jobs

    def unpin(self) -> None:
        """Let every worker see every GPU again (a cell names a device index, `cuda:1`, that a pinned worker would
        not have); prestarted pinned workers are replaced."""
        if not self.devices:
            return
        self.devices, self._device_use = [], {}
        count = len(self._prestarted)
        for slot in self._prestarted:
            self._retire(slot, kill=True)
        self._prestarted = [self._spawn() for _ in range(count)]

    def close(self) -> None:
        """Stop workers that were prestarted but never used, and reap the ones released after the run."""
        for slot in self._prestarted:
            self._retire(slot, kill=True)
        for slot in self._finished:
            self._retire(slot)
        self._prestarted, self._finished = [], []

    def _release(self, slot: _Slot) -> None:
        """Tell an idle worker to exit without waiting for it (torch's teardown takes ~1 s); close() reaps it."""
        with contextlib.suppress(OSError):  # BrokenPipeError is an OSError
            slot.conn.send(None)
        self._free_device(slot)
        self._finished.append(slot)

    def _spawn(self) -> _Slot:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=serve, args=(child,), daemon=True, name="bench-worker")
        device = min(self.devices, key=lambda d: self._device_use[d]) if self.devices else None
        with _visible_device(device):
            proc.start()
        child.close()
        if device is not None:
            self._device_use[device] += 1
        return _Slot(proc=proc, conn=parent, device=device)

    def _free_device(self, slot: _Slot) -> None:
        if slot.device in self._device_use:
            self._device_use[slot.device] -= 1
        slot.device = None

    def _retire(self, slot: _Slot, kill: bool = False) -> None:
        self._free_device(slot)
        try:
            if kill:
                slot.proc.kill()
            else:
                slot.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        slot.proc.join(timeout=10)
        if slot.proc.is_alive():
            slot.proc.kill()
            slot.proc.join()
        slot.conn.close()

    def run(self, tasks: list[CellTask], on_result: OnResult, on_progress: OnProgress | None = None) -> None:
        pending = list(tasks)
        slots, self._prestarted = self._prestarted, []
        t_run, first = time.perf_counter(), True
        progress = on_progress or (lambda label, msg: None)
        try:
            while pending or any(s.task for s in slots):
                while len(slots) < min(self.jobs, len(pending) + sum(1 for s in slots if s.task)):
                    slots.append(self._spawn())
                for slot in slots:
                    if slot.task is None and slot.ready and pending:
                        if first:
                            self.startup_wait, first = time.perf_counter() - t_run, False
                        slot.task = pending.pop(0)
                        slot.started = time.time()
                        progress(slot.task.label, "start")
                        slot.conn.send(slot.task)
                busy = [s for s in slots if s.task is not None or not s.ready]
                ready_conns = wait([s.conn for s in busy] + [s.proc.sentinel for s in busy], timeout=0.5)
                for slot in list(slots):
                    if slot.conn in ready_conns or slot.proc.sentinel in ready_conns:
                        self._drain(slot, slots, on_result, progress)
                now = time.time()
                for slot in list(slots):
                    if slot.task is not None and now - slot.started > self._timeout(slot.task):
                        task = slot.task
                        self._retire(slot, kill=True)
                        slots.remove(slot)
                        on_result(task, _failed(task, f"timed out after {self._timeout(task):.0f} s", slot.started))
                if not pending:
                    for slot in [s for s in slots if s.task is None and s.ready]:
                        self._release(slot)
                        slots.remove(slot)
        finally:
            for slot in slots:
                self._retire(slot, kill=True)

    def _timeout(self, task: CellTask) -> float:
        return float(task.extra.get("timeout", self.timeout))

    def _drain(self, slot: _Slot, slots: list[_Slot], on_result: OnResult, progress: OnProgress) -> None:
        while True:
            try:
                if not slot.conn.poll():
                    if not slot.proc.is_alive():
                        raise EOFError
                    return
                kind, payload = slot.conn.recv()
            except (EOFError, OSError):
                slot.proc.join(timeout=5)
                reason = _describe_exit(slot.proc.exitcode)
                task = slot.task
                self._retire(slot, kill=True)
                slots.remove(slot)
                if task is not None:
                    on_result(task, _failed(task, reason, slot.started))
                return
            if kind == "ready":
                slot.ready = True
            elif kind == "progress" and slot.task is not None:
                progress(slot.task.label, str(payload))
            elif kind == "result" and slot.task is not None:
                task, slot.task = slot.task, None
                on_result(task, payload)
                if self.isolate:
                    self._retire(slot)
                    slots.remove(slot)
                    return


@contextlib.contextmanager
def _visible_device(device: str | None) -> Iterator[None]:
    """CUDA_VISIBLE_DEVICES=device for a process spawned inside (a spawned child copies the environment)."""
    if device is None:
        yield
        return
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    try:
        yield
    finally:
        if before is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


def _failed(task: CellTask, reason: str, started: float) -> CellResult:
    return CellResult(key=task.cell.key, status="failed", error=reason, started=started, finished=time.time(),
                      phases={"total": time.time() - started})
