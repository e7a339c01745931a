"""The metric catalogue: one spec per metric (kind, unit, label, direction, options schema, default gate rule).

Suite loading validates every metric's options against its spec (an unknown option or feature space is one
`FILE:LINE` line before anything runs), `bench list metrics` prints the catalogue, and the gate and the report read
each stored number's role, direction and default gate rule here instead of guessing them from its name.

To add a metric: one `MetricSpec` in `_SPECS` (its options as a pydantic model, or the metric's tuple of allowed
option names as 'module:ATTR', typed through `OPTION_TYPES`). A third-party metric declares its spec as the `spec`
attribute of its function (entry point group `bench.metrics`, or `module:function` in a suite); without one its
options pass through unchecked. Light on purpose: option schemas are imported only when a suite is validated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model, field_validator

from bench.importing import import_target

# Default gate tolerances (docs/ci.md has the false-alarm experiment behind them). Latency limits are
# (1 + DEFAULT_LATENCY_REL_TOL) x calibration drift: x1.3 to x1.43 on a steady machine (drift 1 to 1.1), so a
# 1.5x slower sampler fails there, while on a busy machine the limit widens with the measured drift.
DEFAULT_QUALITY_REL_TOL = 0.01  # paired: a run worse than its baseline by > 1 % with 95 % confidence fails
DEFAULT_LATENCY_REL_TOL = 0.30

ROLES = ("quality", "reference", "latency", "memory", "calibration", "count", "other")


@dataclass(frozen=True)
class ResultSpec:
    """One number a metric stores: its name (`prefix*` for a family of names), what it is and how it is gated.

    role decides where reports show it and how the gate treats it: quality | reference (a noise floor) | latency
    (compared hardware-normalised, by IQR) | memory | calibration | count. `gate` holds the fields of the default
    bench.suite.GateRule for this name (None: not gated unless a suite asks)."""

    name: str
    role: str
    higher_is_better: bool | None
    unit: str = ""
    label: str | None = None
    gate: dict[str, Any] | None = None
    feature_space: bool = False  # computed in a feature space: its n is the number of images scored

    def matches(self, base: str) -> bool:
        return base.startswith(self.name[:-1]) if self.name.endswith("*") else base == self.name


@dataclass(frozen=True)
class MetricSpec:
    """A metric as a suite names it under `metrics:`: what it is, its options schema and the numbers it stores.

    options: a pydantic model (extra='forbid'), 'module:ATTR' naming one or a tuple of allowed option names
    (typed through OPTION_TYPES), or None (options pass through unchecked). variant: what the text after
    `name:` stands for ("feature_space": checked like that option; "model"; None: no variants)."""

    name: str
    kind: Literal["quality", "system"]
    label: str
    unit: str
    higher_is_better: bool | None
    description: str
    options: Any = None
    results: tuple[ResultSpec, ...] = ()
    variant: str | None = None
    choices: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # option -> allowed values
    refused: dict[str, str] = field(default_factory=dict)  # option a user may expect -> why this metric has none
    in_suite: bool = True  # False: always measured (counted NFE), not named under `metrics:`
    # 'module:function' (metric name, options) -> the FeatureRequests of the samples it reads, so images can be
    # embedded as they are sampled (streamed, sharded); None with reads_samples: it needs the images themselves
    features: str | None = None
    reads_samples: bool = True

    def gate_rules(self) -> dict[str, dict[str, Any]]:
        """Default gate rule fields per stored name."""
        return {r.name: dict(r.gate) for r in self.results if r.gate is not None}

    def options_model(self) -> type[BaseModel] | None:
        """The pydantic model a suite's options for this metric must satisfy (None: unchecked)."""
        target = self.options
        if isinstance(target, str):
            target = import_target(target)
        if target is None or (isinstance(target, type) and issubclass(target, BaseModel)):
            return target
        return options_model(self.name, tuple(target), self.choices, self.variant)


# ------------------------------------------------------------------------------------------- option schemas


def _feature_space(value: str) -> str:
    """A registered feature space `NAME[:ARG]` (entry points included), else ValueError naming the known ones."""
    from bench.metrics.features import feature_space_names

    known = feature_space_names()
    if not isinstance(value, str) or value.partition(":")[0] not in known:
        raise ValueError(f"unknown feature space {value!r} (known: {', '.join(known)}; more with "
                         "register_feature_space or the bench.feature_spaces entry point)")
    return value


def _bootstrap(value: int) -> int:
    if value == 1:
        raise ValueError("bootstrap must be 0 (off) or at least 2 resamples")
    return value


def _fd_inf(value: bool | int) -> bool | int:
    if not isinstance(value, bool) and value < 3:
        raise ValueError(f"fd_inf must be true, false or a number of subset sizes >= 3, got {value!r}")
    return value


_Pos = Annotated[int, Field(ge=1)]
# Option name -> (type, description): the one place an option's type is written; a metric's tuple picks names.
OPTION_TYPES: dict[str, tuple[Any, str]] = {
    "feature_space": (str, "Feature space NAME[:ARG] (`bench list metrics` lists them)."),
    "batch_size": (_Pos, "Images per feature-extraction batch."),
    "weights": (str, "Weights file of the feature network or CLIP model."),
    "resize": (str, "Resize filter before the feature network (space-specific: clean, bicubic, tf, native...)."),
    "size": (_Pos, "Input size of the feature network."),
    "dim": (_Pos, "Feature dimension."),
    "layer": (str, "Feature layer."),
    "repo": (str, "Local hub repository of the feature network."),
    "pretrained": (str, "open_clip pretrained tag."),
    "model": (str, "CLIP model: shapes-clip, or an open_clip model[:tag]."),
    "bootstrap": (Annotated[int, Field(ge=0)], "Bootstrap resamples for the CI (0 = off, else >= 2)."),
    "confidence": (Annotated[float, Field(gt=0, lt=1)], "Confidence level of the interval."),
    "floor_offset": (int, "Index shift of the disjoint-block noise floor's reference set."),
    "backend": (str, "Which implementation computes the number."),
    "noise_floor": (bool, "Also compute the noise floor fd_floor."),
    "fd_inf": (bool | int, "FD∞ extrapolation: true, or the number of subset sizes (>= 3)."),
    "subsets": (_Pos, "KID subsets."),
    "subset_size": (_Pos, "KID subset size."),
    "degree": (_Pos, "Polynomial kernel degree."),
    "coef0": (float, "Polynomial kernel offset."),
    "neighborhood": (_Pos, "k of the k-NN manifolds."),
    "nearest_k": (_Pos, "k of the k-NN balls around reference images."),
    "normalize": (bool, "L2-normalise the embeddings first."),
    # checked (exists, loads) by bench.metrics.statsfile when the suite loads, right after this schema
    "reference_stats": (Any, "Reference statistics file (.npz: ADM, clean-fid, pytorch-fid or bench layout)."),
    "reference_stats_sha256": (Any, "sha256 the reference statistics file must have (pinned at load)."),
}
_VALIDATORS = {"feature_space": _feature_space, "bootstrap": _bootstrap, "fd_inf": _fd_inf}


def options_model(metric: str, names: tuple[str, ...], choices: dict[str, tuple[Any, ...]] | None = None,
                  variant: str | None = None) -> type[BaseModel]:
    """A pydantic model (extra='forbid', strict) accepting exactly `names`, typed through OPTION_TYPES (an option
    not listed there takes any value), each optional: the metric's own default applies when it is absent."""
    choices = choices or {}
    fields: dict[str, Any] = {}
    for name in names:
        typ, desc = OPTION_TYPES.get(name, (Any, ""))
        if name in choices:
            typ = Literal[choices[name]]
        fields[name] = (typ | None, Field(default=None, description=desc))
    validators = {f"_check_{n}": field_validator(n)(_optional(fn)) for n, fn in _VALIDATORS.items() if n in names}
    # `fd:pixels` reaches the metric as options['variant'] (checked by validate_options); a suite may write it too
    fields["variant"] = (str | None, Field(default=None, description="What the text after `name:` says."))
    model = create_model(f"{metric.title().replace('_', '')}Options",
                         __config__=ConfigDict(extra="forbid", frozen=True, strict=True),
                         __validators__=validators, **fields)
    model.__doc__ = f"Options of the `{metric}` metric under a suite's `metrics:` (validated when the suite loads)."
    return model


def _optional(fn: Any) -> Any:
    def check(cls: Any, value: Any) -> Any:
        return None if value is None else fn(value)

    return classmethod(check)


# ------------------------------------------------------------------------------------------- the catalogue

_FD = ResultSpec("fd", "quality", False, "FD", "FD", feature_space=True,
                 gate={"rel_tol": DEFAULT_QUALITY_REL_TOL, "significance": "paired"})
_FD_FLOOR = ResultSpec("fd_floor", "reference", False, "FD", "FD noise floor", feature_space=True)
_FD_INF = ResultSpec("fd_inf", "quality", False, "FD", "FD∞", feature_space=True)
_PRECISION = ResultSpec("precision", "quality", True, "fraction", "precision", feature_space=True)
_RECALL = ResultSpec("recall", "quality", True, "fraction", "recall", feature_space=True)
_SPACE = "feature_space"
_FEATURES = "bench.metrics.common:feature_requests_of"

_SPECS: dict[str, MetricSpec] = {s.name: s for s in (
    MetricSpec("fd", "quality", "FD", "FD", False,
               "Fréchet distance to the reference set in a feature space, bootstrap CI, noise floor, optional FD∞.",
               "bench.metrics.fd:FD_OPTIONS", (_FD, _FD_FLOOR, _FD_INF), variant=_SPACE,
               choices={"backend": ("bench", "torch-fidelity", "clean-fid")},
               features="bench.metrics.fd:feature_requests_of"),
    MetricSpec("fd_floor", "quality", "FD noise floor", "FD", False,
               "Only the FD noise floor (fd already returns it).",
               "bench.metrics.fd:FLOOR_OPTIONS", (_FD_FLOOR,), variant=_SPACE,
               choices={"backend": ("bench", "torch-fidelity", "clean-fid")}, reads_samples=False,
               refused={"reference_stats": "fd_floor cannot use a statistics file: the noise floor needs reference "
                                           "images, and a file has only mu and sigma (fd against a file skips its "
                                           "floor and says so)"}),
    MetricSpec("kid", "quality", "KID", "MMD²", False,
               "Kernel Inception Distance (torch-fidelity's estimator) in a feature space.",
               "bench.metrics.fidelity:KID_OPTIONS",
               (ResultSpec("kid", "quality", False, "MMD²", "KID", feature_space=True),), variant=_SPACE,
               choices={"backend": ("auto", "bench", "torch-fidelity")}, features=_FEATURES),
    MetricSpec("cmmd", "quality", "CMMD", "MMD² x1000", False,
               "CMMD (Jayasumana et al. 2024): biased MMD² with an RBF kernel (sigma 10) x1000, no Gaussian assumption.",
               "bench.metrics.cmmd:CMMD_OPTIONS",
               (ResultSpec("cmmd", "quality", False, "MMD² x1000", "CMMD"),), variant=_SPACE, features=_FEATURES),
    MetricSpec("density_coverage", "quality", "density / coverage", "ratio", True,
               "Density and coverage (Naeem et al. 2020): k-NN balls around the reference images.",
               "bench.metrics.density_coverage:DC_OPTIONS",
               (ResultSpec("density", "quality", True, "ratio", "density"),
                ResultSpec("coverage", "quality", True, "fraction", "coverage")), variant=_SPACE,
               features=_FEATURES),
    MetricSpec("precision_recall", "quality", "precision / recall", "fraction", True,
               "Improved precision and recall (k-NN manifolds) in a feature space.",
               "bench.metrics.fidelity:PR_OPTIONS", (_PRECISION, _RECALL), variant=_SPACE, features=_FEATURES),
    MetricSpec("precision", "quality", "precision", "fraction", True,
               "Fraction of samples inside the reference manifold.",
               "bench.metrics.fidelity:PR_OPTIONS", (_PRECISION,), variant=_SPACE, features=_FEATURES),
    MetricSpec("recall", "quality", "recall", "fraction", True,
               "Fraction of reference images inside the samples' manifold.",
               "bench.metrics.fidelity:PR_OPTIONS", (_RECALL,), variant=_SPACE, features=_FEATURES),
    MetricSpec("clip_score", "quality", "CLIP score", "100·cos", True,
               "100 x max(cos(image, text), 0) per image, then the mean; stored as clip_score:<model>[:<tag>].",
               "bench.metrics.clip_score:CLIP_OPTIONS",
               (ResultSpec("clip_score", "quality", True, "100·cos", "CLIP score"),), variant="model",
               features="bench.metrics.clip_score:feature_requests_of"),
    MetricSpec("latency", "system", "latency", "ms", False,
               "Timed apart from quality sampling: warm-up, device sync, adaptive repeats, median and IQR.",
               "bench.metrics.latency:LatencyOptions", (
                   ResultSpec("latency_ms_per_image", "latency", False, "ms", "latency (ms/image)",
                              gate={"rel_tol": DEFAULT_LATENCY_REL_TOL, "significance": "ci"}),
                   ResultSpec("latency_ms_batch1", "latency", False, "ms", "latency, batch 1 (ms)"),
                   ResultSpec("throughput_img_s", "count", True, "img/s", "throughput (img/s, best batch)"),
                   ResultSpec("latency_*", "latency", False, "ms"),
                   ResultSpec("calibration_ms", "calibration", False, "ms", "calibration (ms)"))),
    MetricSpec("memory", "system", "peak memory", "MB", False,
               "Peak device memory of quality sampling (CUDA allocator; on CPU peak RSS over the idle baseline).",
               "bench.metrics.catalogue:MemoryOptions",
               (ResultSpec("peak_memory_mb", "memory", False, "MB", "peak memory (MB)"),)),
    MetricSpec("nfe", "system", "counted NFE", "evaluations/image", False,
               "Network evaluations per image, counted by hooks (the cell's nfe_counted).",
               results=(ResultSpec("nfe_counted", "count", False, "evaluations/image", "counted NFE",
                                   gate={"abs_tol": 0.0, "significance": "none", "normalize": "none"}),),
               in_suite=False),
)}


class MemoryOptions(BaseModel):
    """The `memory` metric takes no options (its batch is the suite's batch_size)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


_REGISTERED: dict[str, MetricSpec] = {}


def register_spec(spec: MetricSpec) -> None:
    """Add or replace a metric's spec (third-party metrics may also set `spec` on their function)."""
    _REGISTERED[spec.name] = spec


def specs() -> list[MetricSpec]:
    """Every spec of the catalogue (built in and registered), sorted by name."""
    return sorted({**_SPECS, **_REGISTERED}.values(), key=lambda s: s.name)


def spec_of(name: str) -> MetricSpec | None:
    """The spec of a suite metric name: a catalogue entry, `name:variant` (the base's), or the spec a metric
    function declares (`fn.spec`, for entry-point and `module:function` metrics); None when it declares none."""
    found = _REGISTERED.get(name) or _SPECS.get(name)
    if found is not None:
        return found
    base, sep, variant = name.partition(":")
    if sep and variant and (base in _REGISTERED or base in _SPECS):
        return _REGISTERED.get(base) or _SPECS[base]
    from bench.metrics.registry import get_metric, metric_names

    fn = get_metric(base if sep and variant and base in metric_names() else name)
    declared = getattr(fn, "spec", None)
    return declared if isinstance(declared, MetricSpec) else None


def validate_options(name: str, options: dict[str, Any] | None) -> None:
    """Check a suite's options for metric `name` against its spec; a pydantic ValidationError located at
    (name, option) on a bad one. `name:variant` is checked as the base metric, its variant as a feature space
    where the spec says so. A metric without a spec (a plugin that declares none) is not checked."""
    spec = spec_of(name)
    model = spec.options_model() if spec is not None else None
    base, sep, variant = name.partition(":")
    if spec is not None and spec.name == base and sep and variant and spec.variant == "feature_space":
        try:
            _feature_space(variant)
        except ValueError as e:
            raise ValidationError.from_exception_data(
                "metrics", [{"type": "value_error", "loc": (name,), "input": name, "ctx": {"error": e}}]) from None
    for option, why in (spec.refused if spec is not None else {}).items():
        if option in (options or {}):
            raise ValidationError.from_exception_data(
                "metrics", [{"type": "value_error", "loc": (name, option), "input": options,
                             "ctx": {"error": ValueError(why)}}]) from None
    if model is not None:
        TypeAdapter(dict[str, model]).validate_python({name: dict(options or {})})  # type: ignore[valid-type]


# ------------------------------------------------------------------------------------------- stored names


def result_spec(name: str) -> ResultSpec | None:
    """The catalogue's spec of a stored number (`fd:pixels` reads `fd`'s), exact names before `prefix*` ones."""
    base = name.split(":", 1)[0]
    results = [r for s in specs() for r in s.results]
    exact = next((r for r in results if r.name == base), None)
    return exact or next((r for r in results if r.name.endswith("*") and r.matches(base)), None)


def result_role(name: str, higher_is_better: bool | None = None) -> str:
    """Where a stored number belongs (see ResultSpec.role); a name the catalogue does not know is quality when it
    has a direction, else other."""
    r = result_spec(name)
    if r is not None:
        return r.role
    return "other" if higher_is_better is None else "quality"


def result_label(name: str) -> str | None:
    """The catalogue's label of a stored number's base name, or None when it has none."""
    r = result_spec(name)
    return r.label if r is not None else None


def is_latency(name: str) -> bool:
    return result_role(name) == "latency"


def feature_space_results() -> tuple[str, ...]:
    """Stored base names computed in a feature space (their n is the number of images scored)."""
    return tuple(r.name for s in specs() for r in s.results if r.feature_space)


def default_gate_rules() -> dict[str, dict[str, Any]]:
    """Stored name -> fields of its default bench.suite.GateRule (bench gate's built-in rules)."""
    out: dict[str, dict[str, Any]] = {}
    for s in specs():
        out.update(s.gate_rules())
    return out


__all__ = ["DEFAULT_LATENCY_REL_TOL", "DEFAULT_QUALITY_REL_TOL", "OPTION_TYPES", "MemoryOptions", "MetricSpec",
           "ResultSpec", "default_gate_rules", "feature_space_results", "is_latency", "options_model",
           "register_spec", "result_label", "result_role", "result_spec", "spec_of", "specs", "validate_options"]
