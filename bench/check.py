"""`bench check ADAPTER`: what a plugin author runs before a sweep, on a few images, in a few seconds.

The checks are the worker's own (bench/contract.py: the output contract, counted NFE, the determinism probe),
called on one small batch outside any suite, plus batch-size invariance (the batch sampled again as batches of
one image must give the same images) and repeatability (the same batch twice). One line per check; a failed
check does not stop the others that do not depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench import contract
from bench.errors import BenchError

PROMPTS = ("a small red circle at the top left", "a large blue square in the middle", "a green triangle",
           "two yellow circles on a grey background")


@dataclass
class Check:
    name: str
    status: str  # ok | FAIL | skip
    message: str

    def line(self) -> str:
        return f"{self.status:<4} {self.name}: {self.message}"


def _request(info: Any, n: int, nfe: int, resolution: int, guidance: float | None) -> Any:
    from bench.adapters.protocol import SampleRequest

    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)] if info.conditioning == "text" else None
    labels = list(range(n)) if info.conditioning == "class" else None
    return SampleRequest(seeds=list(range(n)), nfe=nfe, height=resolution, width=resolution, prompts=prompts,
                         labels=labels, guidance=guidance)


def _first_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return text.splitlines()[0]


def check_adapter(adapter: str, options: dict[str, Any] | None = None, nfe: int | None = None,
                  resolution: int | None = None, hardware: str = "cpu", images: int = 4,
                  guidance: float | None = None) -> list[Check]:
    """Run every check on `images` images; BenchError for bad input (unknown adapter, unsupported cell)."""
    from bench.adapters.registry import build_sampler
    from bench.hardware import HardwareSpec
    from bench.metrics.nfe import NFECounter
    from bench.runtime import cell_runtime

    if images < 2:
        raise BenchError("bench check needs at least 2 images (batch-size invariance compares batches)")
    hw = HardwareSpec.parse(hardware)
    sampler = build_sampler(adapter, dict(options or {}))
    info = sampler.info
    nfe = nfe or _default_nfe(info.nfe)
    resolution = resolution or (min(info.resolutions) if info.resolutions else 16)
    reason = info.unsupported(nfe, resolution, hw) or info.guidance_unsupported(guidance)
    if reason:
        raise BenchError(f"{adapter} cannot run nfe={nfe} resolution={resolution} on {hw.label}: {reason} (pick "
                         "another with --nfe / --resolution)")
    who = f"sampler {adapter!r}"
    tolerance = contract.probe_tolerance(hw.torch_device(), hw.dtype)
    checks = [Check("info", "ok", f"family {info.family}, nfe {info.nfe.describe()}, conditioning "
                                  f"{info.conditioning}, version {info.version}; checking nfe={nfe} "
                                  f"resolution={resolution} on {hw.label}, {images} images")]
    with cell_runtime(threads=hw.threads, dtype=hw.dtype, compile=hw.compile):
        try:
            sampler.load(hw)
        except Exception as e:
            return [*checks, Check("load", "FAIL", _first_line(e))]
        checks.append(Check("load", "ok", f"loaded on {hw.label}"))
        req = _request(info, images, nfe, resolution, guidance)
        try:
            with NFECounter(sampler.networks()) as counter:
                out = sampler.sample(req)
            batch = contract.checked_uint8(out, images, resolution, resolution, who)
        except Exception as e:
            return [*checks, Check("contract", "FAIL", _first_line(e))]
        dtype = str(out.dtype).removeprefix("torch.")
        kind = dtype if dtype == "uint8" else f"{dtype} in [0, 1]"
        checks.append(Check("contract", "ok", f"({images}, 3, {resolution}, {resolution}) {kind}, finite"))
        per_image = counter.per_image(images)
        try:
            contract.check_nfe(per_image, len(counter.modules), len(sampler.networks()), who)
            note = "" if per_image == nfe else f" (requested {nfe} steps: e.g. 2 per step for Heun or CFG)"
            checks.append(Check("nfe", "ok", f"counted {per_image:g} network evaluations per image over "
                                             f"{len(counter.modules)} hooked module(s){note}"))
        except contract.ContractError as e:
            checks.append(Check("nfe", "FAIL", str(e)))
        checks.append(_repeat(sampler, req, batch, tolerance, who))
        checks.append(_batch_invariance(sampler, req, batch, tolerance, who))
        try:
            probe = contract.determinism_probe(sampler, req, batch, tolerance, who=who)
            checks.append(Check("determinism", "ok", f"image {probe.index} alone vs in its batch of {probe.batch}: "
                                                     f"max difference {probe.max_abs_diff} uint8 levels "
                                                     f"(tolerance {probe.tolerance})"))
        except Exception as e:
            checks.append(Check("determinism", "FAIL", _first_line(e) if not isinstance(e, contract.ContractError)
                                else str(e)))
    return checks


def _default_nfe(support: Any) -> int:
    """4 steps when supported (at 1 step some samplers land on the data mean whatever the noise, which would hide
    a sampler that ignores its seeds), else the nearest supported count."""
    if support.values:
        below = [v for v in support.values if v <= 4]
        return max(below) if below else min(support.values)
    return max(support.min, min(4, support.max or 4))


def _repeat(sampler: Any, req: Any, batch: Any, tolerance: int, who: str) -> Check:
    """The same request twice gives the same images (no state carried between calls)."""
    try:
        again = contract.checked_uint8(sampler.sample(req), len(req), req.height, req.width, who)
        diff = int((again.int() - batch.int()).abs().max())
    except Exception as e:
        return Check("repeat", "FAIL", _first_line(e))
    if diff > tolerance:
        return Check("repeat", "FAIL", f"{who}: the same request sampled twice differs by up to {diff} uint8 levels "
                                       f"(tolerance {tolerance}); sample() must not depend on earlier calls or on "
                                       "the global RNG")
    return Check("repeat", "ok", f"the same batch twice: max difference {diff} uint8 levels")


def _batch_invariance(sampler: Any, req: Any, batch: Any, tolerance: int, who: str) -> Check:
    """Every image of the batch sampled again in a batch of its own equals its batch version (image i depends
    on seed i only), checked with the worker's comparison (contract.compare_probe)."""
    from dataclasses import replace

    half = len(req) // 2
    worst = 0
    try:
        for lo, hi in ((0, half), (half, len(req))):
            sub = replace(req, seeds=list(req.seeds[lo:hi]),
                          prompts=list(req.prompts[lo:hi]) if req.prompts is not None else None,
                          labels=list(req.labels[lo:hi]) if req.labels is not None else None, extra=dict(req.extra))
            part = contract.checked_uint8(sampler.sample(sub), hi - lo, req.height, req.width, who)
            for i in range(hi - lo):
                worst = max(worst, contract.compare_probe(part[i], batch[lo + i], tolerance, lo + i, len(req), who))
    except Exception as e:
        return Check("batch-size", "FAIL", str(e) if isinstance(e, contract.ContractError) else _first_line(e))
    return Check("batch-size", "ok", f"batches of {half} and {len(req) - half} vs one of {len(req)}: max difference "
                                     f"{worst} uint8 levels (tolerance {tolerance})")
