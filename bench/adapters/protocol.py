"""The sampler protocol: what the harness asks of every model family, and what a family declares it can do."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bench.runtime import DTYPES, per_image_noise

__all__ = ["FAMILIES", "NFESupport", "SampleRequest", "Sampler", "SamplerInfo", "per_image_noise"]
# per_image_noise lives in bench.runtime (the seeding rule); it is re-exported here because adapters, third-party
# ones included, import it from bench.adapters.protocol.

if TYPE_CHECKING:
    import torch

    from bench.hardware import HardwareSpec

FAMILIES = ("flow_map", "consistency", "lcm", "adversarial", "ode", "other")


@dataclass(frozen=True)
class NFESupport:
    """Which requested step counts a sampler accepts: an explicit set, or an inclusive range."""

    values: frozenset[int] | None = None
    min: int = 1
    max: int | None = None

    def supports(self, nfe: int) -> bool:
        if self.values is not None:
            return nfe in self.values
        return nfe >= self.min and (self.max is None or nfe <= self.max)

    def describe(self) -> str:
        if self.values is not None:
            return "{" + ", ".join(str(v) for v in sorted(self.values)) + "}"
        return f"{self.min}..{self.max if self.max is not None else '∞'}"


@dataclass(frozen=True)
class SamplerInfo:
    """Capabilities the planner checks before a cell runs (unsupported cells are skipped with a reason)."""

    family: str
    nfe: NFESupport = field(default_factory=NFESupport)
    resolutions: tuple[int, ...] | None = None  # None: any resolution
    conditioning: str = "none"  # none | class | text
    devices: tuple[str, ...] = ("cpu", "cuda", "mps")
    dtypes: tuple[str, ...] = DTYPES  # the dtypes load(hw) really computes in (hw.dtype)
    compile: bool = True  # whether load(hw) applies torch.compile when hw.compile is set
    description: str = ""
    version: str = "0"  # changes when weights or sampling code change; part of the cell key
    dtype_note: str = ""  # why a dtype outside `dtypes` cannot be honoured (ends the skip reason)
    compile_note: str = ""  # why compile cannot be honoured (ends the skip reason)
    # How a guidance scale w is used: "cfg" (classifier-free guidance: conditional + unconditional evaluation,
    # both counted), "embedded" (w is an input of the network, e.g. LCM's w-embedding: no extra evaluation),
    # "none" (no knob: distilled at one w). None: not declared; the value is passed on as req.guidance.
    guidance: str | None = None
    guidance_range: tuple[float, float] | None = None  # the w it accepts (for "none": the w it was distilled at)

    def guidance_unsupported(self, w: float | None) -> str | None:
        """None when the sampler can take guidance scale `w` (None: its default), else the reason it cannot."""
        if w is None:
            return None
        if self.conditioning == "none":
            return "guidance set but the sampler is unconditional"
        lo, hi = self.guidance_range or (0.0, float("inf"))
        if self.guidance == "none" and not lo <= w <= hi:
            at = f"w = {lo:g}" if lo == hi else f"w in [{lo:g}, {hi:g}]"
            return f"takes no guidance scale (distilled at {at}); guidance {w:g} is not available"
        if not lo <= w <= hi:
            return f"guidance {w:g} outside the range it supports [{lo:g}, {hi:g}] ({self.guidance or 'declared'})"
        return None

    def unsupported(self, nfe: int, resolution: int, hw: HardwareSpec) -> str | None:
        """None when the sampler can run this cell, else the reason it cannot.

        A hardware spec's dtype and compile are part of the cell: a sampler that would run without them (in
        float32, or eagerly) while the result names them is skipped with the reason instead.
        """
        if not self.nfe.supports(nfe):
            return f"NFE {nfe} not supported (supports {self.nfe.describe()})"
        if self.resolutions is not None and resolution not in self.resolutions:
            return f"resolution {resolution} not supported (supports {', '.join(map(str, self.resolutions))})"
        if hw.kind not in self.devices:
            return f"device {hw.kind} not supported (supports {', '.join(self.devices)})"
        if hw.dtype not in self.dtypes:
            return (f"cannot run in {hw.dtype}: {self.dtype_note or 'the adapter does not compute in it'} "
                    f"(supports {', '.join(self.dtypes)})")
        if hw.compile and not self.compile:
            return f"cannot run with compile=true: {self.compile_note or 'the adapter does not apply torch.compile'}"
        return None


@dataclass
class SampleRequest:
    """One batch to generate. Image i starts from the noise of `seeds[i]` (common random numbers)."""

    seeds: Sequence[int]
    nfe: int
    height: int
    width: int
    prompts: Sequence[str] | None = None
    labels: Sequence[int] | None = None
    guidance: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.seeds)


@runtime_checkable
class Sampler(Protocol):
    """A configured generator. Constructed with the suite's `options` as keyword arguments.

    `info` must be available before `load` (the planner reads it without loading weights).
    `networks()` returns the modules whose forward calls count as function evaluations.
    `sample` returns uint8 NCHW, or float NCHW in [0, 1].
    """

    info: SamplerInfo

    def load(self, hw: HardwareSpec) -> None: ...

    def networks(self) -> Sequence[torch.nn.Module]: ...

    def sample(self, req: SampleRequest) -> torch.Tensor: ...
