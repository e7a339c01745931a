"""Samplers that misbehave on purpose (at NFE 2), to prove a bad cell fails alone."""

from __future__ import annotations

import ctypes
import os
import time
from typing import Any

from bench.adapters.analytic import AnalyticEuler
from bench.adapters.protocol import SampleRequest
from bench.adapters.teacher import TeacherEuler


class RaisingSampler(AnalyticEuler):
    def sample(self, req: SampleRequest) -> Any:
        if req.nfe == 2:
            raise ValueError("boom at nfe 2")
        return super().sample(req)


class ExitingSampler(AnalyticEuler):
    def sample(self, req: SampleRequest) -> Any:
        if req.nfe == 2:
            os._exit(3)
        return super().sample(req)


class SegfaultSampler(AnalyticEuler):
    def sample(self, req: SampleRequest) -> Any:
        if req.nfe == 2:
            ctypes.string_at(0)  # reads address 0: SIGSEGV
        return super().sample(req)


class HangingSampler(AnalyticEuler):
    def sample(self, req: SampleRequest) -> Any:
        if req.nfe == 2:
            time.sleep(3600)
        return super().sample(req)


class SlowSampler(AnalyticEuler):
    """Sleeps per batch so a run lasts long enough to be killed midway."""

    def __init__(self, delay: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delay = delay

    def sample(self, req: SampleRequest) -> Any:
        time.sleep(self.delay)
        return super().sample(req)


class RaisesOnSeed(AnalyticEuler):
    """Raises for a batch holding `bad_seed`: one shard of a sharded cell fails, the others do not."""

    def __init__(self, bad_seed: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bad_seed = bad_seed

    def sample(self, req: SampleRequest) -> Any:
        if self.bad_seed in req.seeds:
            raise ValueError(f"boom at seed {self.bad_seed}")
        return super().sample(req)


class OutOfMemoryAbove(AnalyticEuler):
    """Raises torch's OutOfMemoryError for batches larger than `max_batch`, as a GPU that is full would."""

    def __init__(self, max_batch: int = 16, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_batch = max_batch

    def sample(self, req: SampleRequest) -> Any:
        import torch

        if len(req.seeds) > self.max_batch:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate a batch of {len(req.seeds)}")
        return super().sample(req)


class TeacherFailsWhileMarked(TeacherEuler):
    """The zoo teacher, failing for the batch holding `bad_seed` while the file `marker` exists: an interrupted
    sharded cell in the embedded world whose resume, once the file is gone, must equal an uninterrupted run."""

    def __init__(self, marker: str = "", bad_seed: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marker, self.bad_seed = marker, bad_seed

    def sample(self, req: SampleRequest) -> Any:
        if self.marker and os.path.exists(self.marker) and self.bad_seed in req.seeds:
            raise ValueError(f"interrupted at seed {self.bad_seed}")
        return super().sample(req)
