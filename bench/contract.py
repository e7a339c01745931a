"""The sampler output contract: what `sample()` must return, checked before anything is scored.

After every `sample(req)` call of a cell the worker checks (and `bench check ADAPTER`, bench/check.py, calls
the same functions):

- the output is a `torch.Tensor` of shape exactly `(N, 3, H, W)` for the request's N, H, W;
- its dtype is uint8, or a float dtype whose values lie in [0, 1] up to `RANGE_TOLERANCE` (then clamped);
- it is finite (no NaN, no inf); uint8 output cannot show NaN, so the harness's one quantiser
  (bench.runtime.to_uint8), which the embedded samplers use on their model-space floats, refuses NaN / inf
  too (clamp-then-cast would turn NaN into black and inf into white). Nothing here judges a finite image by
  its statistics: a constant image passes the contract and the probe (it is deterministic) and shows up in FD;
- counted NFE is > 0: a sampler whose `networks()` lists modules must call at least one of them (a network
  called but missing from `networks()` counts 0), and `networks()` must not be empty.

Once per cell a **determinism probe** checks the fairness rule "image i starts from the noise of seed
base_seed + i, one generator per image": one image of the first batch is sampled again alone (a batch of
1) and the two uint8 images must agree within `probe_tolerance(device, dtype)` levels. A sampler that draws
from the global RNG, or seeds by batch position, fails it.

Each violation raises a subclass of `ContractError` (a `BenchError`) whose message is one line naming the
sampler and what was expected vs got. This module sits at the bottom: it imports torch, bench.errors,
bench.runtime and bench.adapters.protocol only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from bench.adapters.protocol import SampleRequest
from bench.errors import BenchError
from bench.runtime import to_uint8

RANGE_TOLERANCE = 1e-3
"""How far float output may stray outside [0, 1] (rounding in a decoder) before it is a violation; it is
then clamped. 1e-3 is a quarter of one uint8 level: [-1, 1] output, or unnormalised output, is far outside."""

PROBE_TOLERANCE_CPU_FP32 = 1
"""Determinism probe, CPU in float32 / float64: max |alone - in batch| in uint8 levels. Batched kernels may
sum in another order, which can move a value across a rounding boundary: one level, no more (measured on
the zoo teacher / students and the tiny diffusers pipelines: 0 or 1)."""

PROBE_TOLERANCE_REDUCED = 32
"""Determinism probe on a GPU / MPS, or in float16 / bfloat16 anywhere: max |alone - in batch| in uint8
levels. Conservative: batch-size-dependent kernels and half precision round differently per batch size and
the difference can grow over sampling steps. Measured on one H200 (docs/adapters.md): 1 level for the zoo
samplers in fp32 and fp16 and for the tiny diffusers pipelines; on the CPU, float16 and bfloat16 zoo samplers
measured 0 or 1. Images from other noise differ by far more on the shapes world
(about 90-155 levels at 16-32 px); but on a world whose images barely depend on the noise (the analytic
gmm: about 13) a global-RNG sampler would pass at this tolerance, so that is left to the fp32 CPU probe."""


class ContractError(BenchError):
    """A sampler broke the output contract; `str(err)` is one line: `<who>: <what was expected vs got>`."""

    def __init__(self, who: str, reason: str) -> None:
        self.who, self.reason = who, reason
        super().__init__(f"{who}: {reason}" if who else reason)


class OutputTypeError(ContractError):
    """sample() returned something that is not a tensor, or a tensor of a dtype other than uint8 / float."""


class OutputShapeError(ContractError):
    """sample() returned a tensor whose shape is not (N, 3, H, W) for the request."""


class NonFiniteOutputError(ContractError):
    """sample() returned NaN or inf."""


class OutputRangeError(ContractError):
    """sample() returned float values outside [0, 1] (beyond RANGE_TOLERANCE)."""


class UncountedNFEError(ContractError):
    """No network call was counted: networks() is empty, or it omits the network sample() calls."""


class NondeterministicSamplerError(ContractError):
    """An image sampled alone differs from the same image sampled in a batch (global RNG, batch seeding)."""


def _shape(x: Any) -> str:
    return "(" + ", ".join(str(int(d)) for d in x) + ")"


def check_images(images: Any, n: int, height: int, width: int, who: str = "sampler") -> None:
    """Raise a ContractError unless `images` is (n, 3, height, width), uint8 or float in [0, 1], finite."""
    want = _shape((n, 3, height, width))
    if not isinstance(images, torch.Tensor):
        raise OutputTypeError(who, f"sample() returned a {type(images).__name__}; the cell asks for a torch.Tensor "
                                   f"of shape {want}")
    if tuple(images.shape) != (n, 3, height, width):
        raise OutputShapeError(who, f"sample() returned images of shape {_shape(images.shape)}; the cell asks "
                                    f"for {want}")
    if images.dtype == torch.uint8:
        return
    if not images.is_floating_point():
        raise OutputTypeError(who, f"sample() returned {str(images.dtype).removeprefix('torch.')} images; the "
                                   f"contract asks for uint8, or float in [0, 1]")
    x = images.detach()
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = ~finite
        nan = int(torch.isnan(x).sum())
        inf = int(bad.sum()) - nan
        per_image = int(bad.flatten(1).any(1).sum())
        what = " and ".join(p for p in (f"{nan} NaN" if nan else "", f"{inf} inf" if inf else "") if p)
        raise NonFiniteOutputError(who, f"sample() returned {what} values in {per_image} of {n} images; images "
                                        f"must be finite")
    lo, hi = (float(v) for v in torch.aminmax(x.float()))
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise OutputRangeError(who, f"sample() returned float images with values in [{lo:.4g}, {hi:.4g}]; the "
                                    f"contract asks for [0, 1] (tolerance {RANGE_TOLERANCE:g}) or uint8")


def quantise(images: torch.Tensor) -> torch.Tensor:
    """uint8 on the CPU: uint8 passes through, float in [0, 1] goes through the harness's one quantiser
    (bench.runtime.to_uint8: float32, round half up), the rounding the built-in samplers and datasets use too.
    """
    out = images.detach().cpu()
    return out if out.dtype == torch.uint8 else to_uint8(out, lo=0.0)


def checked_uint8(images: Any, n: int, height: int, width: int, who: str = "sampler") -> torch.Tensor:
    """`check_images` then `quantise`: what the worker stores and scores."""
    check_images(images, n, height, width, who)
    return quantise(images)


def check_nfe(counted_per_image: float, hooked: int, listed: int | None = None, who: str = "sampler") -> None:
    """Raise UncountedNFEError unless some network call was counted.

    `hooked`: modules the counter was attached to (networks() before sample()); `listed`: networks() after
    sample() (default: the same).
    """
    listed = hooked if listed is None else listed
    if listed == 0:
        raise UncountedNFEError(who, "networks() returned no modules; NFE cannot be counted (list the network(s) "
                                     "sample() calls)")
    if counted_per_image > 0:
        return
    if hooked == 0:
        raise UncountedNFEError(who, "networks() was empty when sample() started, so no call could be counted "
                                     "(create the networks in load())")
    raise UncountedNFEError(who, f"counted NFE is 0: sample() called none of the {hooked} module(s) networks() "
                                 f"lists (list every network sample() calls in networks())")


def probe_tolerance(device: Any, dtype: Any) -> int:
    """Max uint8-level difference the determinism probe allows on this device and dtype.

    `device`: a torch.device or a string (`cpu`, `cuda:1`, `mps`); `dtype`: a torch.dtype or its name.
    """
    kind = str(device).split(":")[0]
    name = str(dtype).removeprefix("torch.")
    if kind == "cpu" and name in ("float32", "float64", "float", "double"):
        return PROBE_TOLERANCE_CPU_FP32
    return PROBE_TOLERANCE_REDUCED


def single_request(req: SampleRequest, index: int) -> SampleRequest:
    """The batch-1 request for image `index` of `req` (same seed, condition, NFE, size and guidance)."""
    return replace(
        req, seeds=[req.seeds[index]],
        prompts=[req.prompts[index]] if req.prompts is not None else None,
        labels=[req.labels[index]] if req.labels is not None else None,
        extra=dict(req.extra),
    )


def compare_probe(alone: torch.Tensor, in_batch: torch.Tensor, tolerance: int, index: int, batch: int,
                  who: str = "sampler") -> int:
    """Max |alone - in_batch| in uint8 levels; NondeterministicSamplerError when it exceeds `tolerance`."""
    diff = int((alone.to(torch.int16) - in_batch.to(torch.int16)).abs().max()) if alone.numel() else 0
    if diff > tolerance:
        raise NondeterministicSamplerError(
            who, f"image {index} sampled alone differs from image {index} of its batch of {batch} by up to {diff} "
                 f"uint8 levels (tolerance {tolerance}); image i must start from the noise of its own seed "
                 f"(per_image_noise(req.seeds, ...)), not the global RNG or its place in the batch")
    return diff


@dataclass(frozen=True)
class ProbeResult:
    """What the determinism probe measured (stored in the cell's info)."""

    index: int
    batch: int
    max_abs_diff: int
    mean_abs_diff: float
    tolerance: int
    seconds: float

    def as_info(self) -> dict[str, Any]:
        return {"ran": True, "index": self.index, "batch": self.batch, "max_abs_diff": self.max_abs_diff,
                "mean_abs_diff": self.mean_abs_diff, "tolerance": self.tolerance, "seconds": self.seconds}


def determinism_probe(sampler: Any, req: SampleRequest, batch_images: torch.Tensor, tolerance: int,
                      index: int | None = None, who: str = "sampler") -> ProbeResult:
    """Sample image `index` of `req` alone and compare it with `batch_images[index]` (uint8, from `req`).

    `index` defaults to the last image of the batch: a sampler that ignores the seeds it is given and draws
    a whole batch from one generator still reproduces the first row, but not the last one. Costs one
    batch-1 `sample()` call; its output is checked against the contract too.
    """
    batch = len(req)
    index = batch - 1 if index is None else index
    single = single_request(req, index)
    t0 = time.perf_counter()
    alone = checked_uint8(sampler.sample(single), 1, req.height, req.width, who)
    seconds = time.perf_counter() - t0
    diff = compare_probe(alone[0], batch_images[index], tolerance, index, batch, who)
    mean = float((alone[0].float() - batch_images[index].float()).abs().mean())
    return ProbeResult(index=index, batch=batch, max_abs_diff=diff, mean_abs_diff=mean, tolerance=tolerance,
                       seconds=seconds)


__all__ = [
    "PROBE_TOLERANCE_CPU_FP32", "PROBE_TOLERANCE_REDUCED", "RANGE_TOLERANCE", "ContractError",
    "NonFiniteOutputError", "NondeterministicSamplerError", "OutputRangeError", "OutputShapeError",
    "OutputTypeError", "ProbeResult", "UncountedNFEError", "check_images", "check_nfe", "checked_uint8",
    "compare_probe", "determinism_probe", "probe_tolerance", "quantise", "single_request",
]
