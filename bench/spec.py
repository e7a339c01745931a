"""Frozen, resolved specs: what the planner decided for a run and for each of its cells.

The planner resolves a suite once into one `CellSpec` per cell (the sampler with its resolved options and
version, an ordered mapping of axis values, the dataset, seeds, sample count and metric options). It is stored
with every cell; worker, store, export, report and gate read it and never re-parse the suite text (kept for
provenance only). The cell key is the hash of the spec: same spec, same numbers, so a rerun reuses the cell.

Axes are data. `nfe` (requested steps), `resolution` and `hardware` are in every cell; `guidance` and any axis
registered with `register_axis` appear when a suite sets them. An axis value reaches the sampler through its
`SampleRequest` field (`nfe`, `height`/`width`, `guidance`) or, for every other axis, `req.extra[name]`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.adapters.protocol import SamplerInfo

SPEC_FORMAT = 1  # bump when the meaning of a stored spec changes (not when a field is added with a default)
BUILTIN_AXES = ("nfe", "resolution", "hardware")  # in every cell, in this order


@dataclass(frozen=True)
class Axis:
    """An axis a suite may sweep beyond the built-in three.

    `validate` turns one suite value into its canonical JSON value (ValueError for a bad one); `check` returns
    the reason a sampler cannot take a value (the cell is then skipped with it), or None. Values reach the
    sampler as `req.extra[name]` unless `request_field` names a SampleRequest field.
    """

    name: str
    description: str
    validate: Callable[[Any], Any]
    check: Callable[[SamplerInfo, Any], str | None] | None = None
    request_field: str | None = None


def _guidance_value(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ValueError(f"guidance values must be finite numbers >= 0, got {v!r}")
    return float(v)


def _guidance_check(info: SamplerInfo, w: Any) -> str | None:
    return info.guidance_unsupported(w)


AXES: dict[str, Axis] = {}


def register_axis(axis: Axis) -> None:
    """Make `axis` sweepable in suites (`axes: {name: [...]}`, per-sampler `axes: {name: [...]}`)."""
    if axis.name in BUILTIN_AXES or not axis.name.isidentifier():
        raise ValueError(f"cannot register axis {axis.name!r}")
    AXES[axis.name] = axis


def unregister_axis(name: str) -> None:
    AXES.pop(name, None)


ENTRY_POINT_GROUP = "bench.axes"  # a package's `[project.entry-points."bench.axes"] name = "module:AXIS_OBJECT"`


def find_axis(name: str) -> Axis | None:
    """The registered axis `name`, loading axes that installed packages declare (entry points) on first miss."""
    if name not in AXES:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name and name not in AXES:
                axis = ep.load()
                if not isinstance(axis, Axis):
                    raise ValueError(f"entry point {ep.value!r} (group {ENTRY_POINT_GROUP}) is not a bench.spec.Axis")
                register_axis(axis)
    return AXES.get(name)


register_axis(Axis("guidance", "Guidance scale w: classifier-free guidance (2 evaluations per step), an "
                               "embedded w-condition (1), or none; per sampler in SamplerInfo.guidance.",
                   _guidance_value, _guidance_check, request_field="guidance"))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def variant_label(base_id: str, variant: Mapping[str, Any]) -> str:
    """`hyper-sd[eta=0.5]`: a swept sampler option's variant, as plots and tables name it."""
    if not variant:
        return base_id
    return base_id + "[" + ",".join(f"{k}={_short(v)}" for k, v in variant.items()) + "]"


def _short(v: Any) -> str:
    return _canonical(v).strip('"') if not isinstance(v, float) else f"{v:g}"


@dataclass(frozen=True)
class CellSpec:
    """One cell, fully resolved. JSON-serialisable (`to_dict`/`from_dict`); its `key` is the hash of what
    determines the numbers: suite, dataset, seeds, sample count, sampler (adapter, options, version), axes,
    metric options, saved-grid size, saved samples (when set). Not the package version: a release keeps stored cells reusable, a
    sampler's `version` change does not."""

    suite: str
    sampler: str  # the id in plots and tables, variant included (`hyper-sd[eta=0.5]`)
    adapter: str
    family: str
    version: str
    options: dict[str, Any] = field(hash=False)
    axes: dict[str, Any] = field(hash=False)  # nfe, resolution, hardware first, then the suite's other axes
    dataset: dict[str, Any] = field(hash=False)
    samples: int = 0
    base_seed: int = 0
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    grid: int = 0
    variant: dict[str, Any] = field(default_factory=dict, hash=False)  # swept options behind `sampler`'s [..]
    dataset_key: str = ""  # the dataset's own identity with its data version (Dataset.key())
    save_samples: dict[str, Any] | None = field(default=None, hash=False)  # {format, max}; None: images not kept

    @property
    def nfe(self) -> int:
        return int(self.axes["nfe"])

    @property
    def resolution(self) -> int:
        return int(self.axes["resolution"])

    @property
    def hardware(self) -> str:
        return str(self.axes["hardware"])

    @property
    def guidance(self) -> float | None:
        g = self.axes.get("guidance")
        return None if g is None else float(g)

    @property
    def extra_axes(self) -> dict[str, Any]:
        """The axes beyond nfe / resolution / hardware (guidance included), in suite order."""
        return {k: v for k, v in self.axes.items() if k not in BUILTIN_AXES}

    def request_extra(self) -> dict[str, Any]:
        """What reaches `SampleRequest.extra`: every axis that has no request field of its own."""
        out = {}
        for k, v in self.extra_axes.items():
            axis = AXES.get(k)
            if axis is None or axis.request_field is None:
                out[k] = v
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": SPEC_FORMAT, "suite": self.suite, "sampler": self.sampler, "adapter": self.adapter,
                "family": self.family, "version": self.version, "options": self.options, "variant": self.variant,
                "axes": self.axes, "dataset": self.dataset, "dataset_key": self.dataset_key, "samples": self.samples, "base_seed": self.base_seed,
                "metrics": self.metrics, "grid": self.grid,
                **({"save_samples": self.save_samples} if self.save_samples else {})}  # absent: old keys stay

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CellSpec:
        return cls(suite=d["suite"], sampler=d["sampler"], adapter=d["adapter"], family=d["family"],
                   version=d["version"], options=dict(d.get("options") or {}), axes=dict(d["axes"]),
                   dataset=dict(d.get("dataset") or {}), samples=int(d.get("samples", 0)),
                   base_seed=int(d.get("base_seed", 0)), metrics=dict(d.get("metrics") or {}),
                   grid=int(d.get("grid", 0)), variant=dict(d.get("variant") or {}),
                   dataset_key=str(d.get("dataset_key", "")), save_samples=d.get("save_samples") or None)

    @functools.cached_property
    def key(self) -> str:
        body = self.to_dict()
        body.pop("family")  # read from the sampler's info, which `version` already covers
        return hashlib.sha256(_canonical(body).encode()).hexdigest()[:20]

    def label(self) -> str:
        extra = "".join(f" {k}={_short(v)}" for k, v in self.extra_axes.items())
        return f"{self.sampler} nfe={self.nfe} res={self.resolution} hw={self.hardware}{extra}"


def axes_identity(sampler: str, axes: Mapping[str, Any]) -> tuple[str, str]:
    """What identifies a cell across runs for matching (gate, compare): the sampler id and every axis value."""
    return str(sampler), _canonical({k: axes[k] for k in axes})


def axes_label(axes: Mapping[str, Any]) -> str:
    """` guidance=1.5 toy=2` for the axes beyond the built-in three ('' when there are none)."""
    return "".join(f" {k}={_short(v)}" for k, v in axes.items() if k not in BUILTIN_AXES)


__all__ = ["AXES", "BUILTIN_AXES", "ENTRY_POINT_GROUP", "SPEC_FORMAT", "Axis", "CellSpec", "axes_identity",
           "axes_label", "find_axis", "register_axis", "unregister_axis", "variant_label"]
