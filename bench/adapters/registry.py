"""Find sampler classes by name: entry points in the group `bench.samplers`, or `module.path:ClassName`."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from bench.errors import BenchError
from bench.importing import MalformedTarget, MissingAttribute, import_target, split_target

GROUP = "bench.samplers"


@dataclass(frozen=True)
class SamplerEntry:
    name: str
    target: str  # "module:Class"
    source: str  # distribution name that registered it, or "path"


def _entry_points() -> dict[str, SamplerEntry]:
    found: dict[str, SamplerEntry] = {}
    for ep in entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        found[ep.name] = SamplerEntry(ep.name, ep.value, dist.name if dist else "?")
    return found


def list_samplers() -> list[SamplerEntry]:
    """Every sampler registered through entry points, sorted by name."""
    return sorted(_entry_points().values(), key=lambda e: e.name)


def _import_target(target: str) -> Any:
    try:
        return import_target(target)
    except MalformedTarget:
        raise BenchError(f"adapter {target!r}: expected a registered name or 'module.path:ClassName'") from None
    except ImportError as e:
        raise BenchError(f"adapter {target!r}: cannot import module {split_target(target)[0]!r} ({e})") from None
    except MissingAttribute:
        module_name, attr = split_target(target)
        raise BenchError(f"adapter {target!r}: module {module_name!r} has no attribute {attr!r}") from None


def resolve_sampler(adapter: str) -> type:
    """The sampler class for a registered name or a `module:Class` string; BenchError if there is none."""
    if ":" in adapter:
        cls = _import_target(adapter)
    else:
        eps = _entry_points()
        if adapter not in eps:
            known = ", ".join(sorted(eps)) or "none"
            raise BenchError(f"unknown adapter {adapter!r} (registered: {known}; or use 'module.path:ClassName')")
        cls = _import_target(eps[adapter].target)
    if not isinstance(cls, type):
        raise BenchError(f"adapter {adapter!r} is not a class")
    for attr in ("load", "sample", "networks"):
        if not callable(getattr(cls, attr, None)):
            raise BenchError(f"adapter {adapter!r}: class {cls.__name__} has no method {attr}() (see docs/adapters.md)")
    return cls


def build_sampler(adapter: str, options: dict[str, Any]) -> Any:
    """Instantiate a sampler with the suite's options; bad options become a one-line BenchError."""
    cls = resolve_sampler(adapter)
    try:
        sampler = cls(**options)
    except TypeError as e:
        raise BenchError(f"adapter {adapter!r}: bad options {sorted(options)}: {e}") from None
    if not hasattr(sampler, "info"):
        raise BenchError(f"adapter {adapter!r}: instance has no 'info' (SamplerInfo)")
    return sampler
