"""Per-cell runtime state the harness owns, in one bottom-level module (it imports torch only).

- **Process state** (`cell_runtime`): a worker process is reused across cells, so anything one cell changes on
  the process (torch's intra-op thread count, the default dtype, grad mode) must be put back, or the next cell
  runs under it while its results name a different hardware spec. `cell_runtime` snapshots every `Knob` on
  entry, applies the values the cell asks for, and restores every knob on exit, also when the cell raised or
  changed a knob itself (a sampler calling torch.set_num_threads or torch.set_default_dtype).
- **dtype and compile** reach a sampler through the `HardwareSpec` its `load()` gets; they are never set
  process-wide (the harness's own maths, features and statistics, stays float32/float64). A sampler that
  cannot honour one says so in its `SamplerInfo` (`dtypes`, `compile`), and the cell is skipped with that
  reason instead of running without it.
- **The quantiser** (`to_uint8`): float images -> uint8 by one rule, float32 round half up, for every sampler,
  dataset and float output the worker receives, so two samplers never differ by their rounding.
- **The seeding rule** (`image_seeds`, `noise_seed`, `per_image_noise`): image i of a cell gets seed
  base_seed + i for every sampler (common random numbers), and every image draws its noise from its own
  generator, stream k of image seed s seeded with `noise_seed(s, k)`, so an image never depends on batch size,
  batch order or the global RNG.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "float16", "bfloat16")
"""The dtypes a hardware spec may ask for (`cpu:dtype=float16`)."""

STREAM_DOMAIN = b"flowmap-bench noise stream v2"
"""Stream k > 0 of image seed s is seeded from SHA-256(STREAM_DOMAIN, s, k) (stream 0 is the seed itself)."""


# ------------------------------------------------------------------------------------------- process state
@dataclass(frozen=True)
class Knob:
    """One piece of process state a cell may set (or a sampler may change): how to read it and how to set it."""

    name: str
    get: Callable[[], Any]
    set: Callable[[Any], None]


def _set_grad_enabled(on: Any) -> None:
    import torch

    torch.set_grad_enabled(bool(on))  # also a context manager class; called, it sets the global mode


def knobs() -> list[Knob]:
    """Every knob `cell_runtime` snapshots and restores, in the order they are applied."""
    import torch

    return [
        Knob("threads", torch.get_num_threads, torch.set_num_threads),
        Knob("default_dtype", torch.get_default_dtype, torch.set_default_dtype),
        Knob("grad_enabled", torch.is_grad_enabled, _set_grad_enabled),
    ]


@contextmanager
def cell_runtime(*, threads: int | None = None, dtype: str | None = None,
                 compile: bool | None = None) -> Iterator[dict[str, Any]]:
    """Run a cell under this runtime state (None: leave as the process has it) and restore all knobs after.

    `threads` is set on the process; `dtype` and `compile` are validated and reported, not set process-wide
    (they reach the sampler through its hardware spec). Yields the state in effect inside the cell, e.g.
    {"threads": 1, "default_dtype": torch.float32, "grad_enabled": True, "dtype": "float16", "compile": False}.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if compile is not None and not isinstance(compile, bool):
        raise ValueError(f"compile must be true or false, got {compile!r}")
    wanted: dict[str, Any] = {"threads": threads}
    ks = knobs()
    saved = {k.name: k.get() for k in ks}
    try:
        for k in ks:
            value = wanted.get(k.name)
            if value is not None and value != saved[k.name]:
                k.set(value)
        yield {**{k.name: k.get() for k in ks}, "dtype": dtype or "float32", "compile": bool(compile)}
    finally:
        for k in reversed(ks):
            if k.get() != saved[k.name]:
                k.set(saved[k.name])


# ------------------------------------------------------------------------------------------------ quantiser
UINT8_RULE = "float32: clamp to [lo, hi], scale to [0, 255], floor(v + 0.5)"
"""`to_uint8`'s rule in words, recorded in pipeline fingerprints (bench.metrics.statsfile)."""


class NonFiniteImagesError(ValueError):
    """`to_uint8` was given NaN or inf: clamp-then-cast would turn them into black (0) / white (255) pixels."""


def to_uint8(x: torch.Tensor, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    """Float images with values in [lo, hi] -> uint8 [0, 255] on the CPU: THE quantiser of the harness.

    Computed in float32: clamp to [lo, hi], scale to [0, 255], round half up (floor(v + 0.5)), so a value
    exactly 0.5 levels above level k gives k + 1 and anything outside the range clamps to 0 or 255. The default
    range is model space [-1, 1]; pass lo=0 for images in [0, 1]. Every stored number was computed with this
    rounding; changing it moves them.

    NaN / inf raise `NonFiniteImagesError` (finite values are never judged). The output contract checks
    float output before quantising it, but the embedded samplers quantise their own model-space floats and
    return uint8, which cannot hold NaN: without this check a diverged sample became a black image, and scored.
    """
    import torch

    if not hi > lo:
        raise ValueError(f"to_uint8: hi must exceed lo, got [{lo}, {hi}]")
    if x.is_floating_point() and not bool(x.isfinite().all()):
        bad = ~x.isfinite()
        nan = int(x.isnan().sum())
        inf = int(bad.sum()) - nan
        where = f" in {int(bad.flatten(1).any(1).sum())} of {len(x)} images" if x.dim() > 1 else ""
        what = " and ".join(p for p in (f"{nan} NaN" if nan else "", f"{inf} inf" if inf else "") if p)
        raise NonFiniteImagesError(f"{what} values{where} before quantising to uint8; images must be finite")
    v = (x.detach().float().clamp(lo, hi) - lo) * (255.0 / (hi - lo)) + 0.5
    return v.floor().clamp(0, 255).to(torch.uint8).cpu()


# ------------------------------------------------------------------------------------------------- seeding
def image_seeds(base_seed: int, indices: Iterable[int]) -> list[int]:
    """The seed of each image index: base_seed + i, the same for every sampler of a suite."""
    return [int(base_seed) + int(i) for i in indices]


def noise_seed(seed: int, stream: int = 0) -> int:
    """Generator seed of noise stream `stream` of the image with seed `seed` (stream 0: the initial noise).

    Adapters that need more random numbers per image (re-noising per step, a scheduler's stochastic steps) take
    stream 1, 2, ... of the same image, so every draw still depends on the image's seed only.
    """
    if isinstance(stream, bool) or not isinstance(stream, int) or stream < 0:
        raise ValueError(f"noise stream must be a non-negative integer, got {stream!r}")
    if not stream:
        return int(seed)
    import hashlib

    # a 63-bit hash, not s * stride + k: that put stream k of seed 0 on image k's own initial noise; image seeds
    # are base_seed + i, so a hash lands on one with probability ~ N / 2^63
    digest = hashlib.sha256(STREAM_DOMAIN + int(seed).to_bytes(16, "little", signed=True)
                            + int(stream).to_bytes(8, "little")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def image_generators(seeds: Sequence[int], stream: int = 0, device: Any = "cpu") -> list[torch.Generator]:
    """One generator per image, seeded by `noise_seed(seed, stream)` (e.g. for a diffusers scheduler)."""
    import torch

    return [torch.Generator(device=device).manual_seed(noise_seed(s, stream)) for s in seeds]


def per_image_noise(
    seeds: Sequence[int], shape: Sequence[int], device: Any = "cpu", dtype: Any = None, offset: int = 0
) -> torch.Tensor:
    """Standard normal noise, one generator per image, so image i never depends on batch size or order.

    `offset` selects an independent stream per image (e.g. re-noising in multistep consistency sampling):
    stream k of image i is seeded with noise_seed(seed_i, k), so stream 0 is the initial noise. Drawn on the
    CPU in float32, then moved, so the numbers are the same on every device and dtype.
    """
    import torch

    out = [torch.randn(*shape, generator=g) for g in image_generators(seeds, offset)]
    x = torch.stack(out) if out else torch.zeros(0, *shape)
    return x.to(device=device, dtype=dtype or torch.float32)
