"""Suite files: the YAML schema (pydantic), validation with `FILE:LINE: key.path: message` errors, JSON schema."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.errors import BenchError
from bench.hardware import HardwareSpec
from bench.yaml_lines import LocatedYAML, dotted, load_yaml, parse_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _positive_unique(values: list[int], what: str) -> list[int]:
    if not values:
        raise ValueError(f"{what} must list at least one value")
    for v in values:
        if isinstance(v, bool) or v <= 0:
            raise ValueError(f"{what} values must be positive integers, got {v!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{what} has duplicate values")
    return values


def _hardware_list(values: list[str]) -> list[str]:
    if not values:
        raise ValueError("hardware must list at least one spec")
    for v in values:
        try:
            HardwareSpec.parse(v)
        except BenchError as e:
            raise ValueError(str(e)) from None
    if len(set(values)) != len(values):
        raise ValueError("hardware has duplicate values")
    return values


class DatasetSpec(_Strict):
    """Where prompts / labels and reference images come from; extra keys are the dataset's own options."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)
    name: str
    split: Literal["train", "eval"] = "eval"

    def options(self) -> dict[str, Any]:
        return {"split": self.split, **(self.model_extra or {})}


def _axis_values(name: str, values: Any) -> list[Any]:
    """A registered axis's values (bench.spec.AXES), each validated to its canonical form; duplicates refused."""
    from bench.spec import AXES, find_axis

    axis = find_axis(name)
    if axis is None:
        known = ", ".join(["nfe", "resolution", "hardware", *sorted(AXES)])
        raise ValueError(f"unknown axis {name!r} (axes: {known}; more with bench.spec.register_axis or the "
                         "bench.axes entry point)")
    if not isinstance(values, list):
        values = [values]
    if not values:
        raise ValueError(f"{name} must list at least one value")
    out = [axis.validate(v) for v in values]
    canon = [repr(v) for v in out]
    if len(set(canon)) != len(canon):
        raise ValueError(f"{name} has duplicate values")
    return out


class Axes(_Strict):
    """The sweep: every sampler runs at every combination (per-sampler lists override). Beyond nfe, resolution
    and hardware: `guidance` (a list of guidance scales) and any axis registered with bench.spec.register_axis."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)
    nfe: list[int] = Field(description="Requested steps per sampler (counted NFE is measured).")
    resolution: list[int] = Field(description="Square image sizes in pixels.")
    hardware: list[str] = Field(default_factory=lambda: ["cpu"],
                                description="Hardware specs, e.g. cpu, cpu:threads=1, cuda:0:dtype=float16.")
    guidance: list[float] | None = Field(
        default=None, description="Guidance scales w to sweep (cfg samplers: 2 counted evaluations per step; "
                                  "embedded: 1); samplers that cannot take a value skip it with the reason.")

    @field_validator("nfe")
    @classmethod
    def _nfe(cls, v: list[int]) -> list[int]:
        return _positive_unique(v, "nfe")

    @field_validator("resolution")
    @classmethod
    def _res(cls, v: list[int]) -> list[int]:
        return _positive_unique(v, "resolution")

    @field_validator("hardware")
    @classmethod
    def _hw(cls, v: list[str]) -> list[str]:
        return _hardware_list(v)

    @field_validator("guidance", mode="before")
    @classmethod
    def _guidance(cls, v: Any) -> Any:
        return None if v is None else _axis_values("guidance", v)

    @model_validator(mode="after")
    def _extra_axes(self) -> Axes:
        for name, values in (self.model_extra or {}).items():
            self.model_extra[name] = _axis_values(name, values)  # type: ignore[index]
        return self

    def extra(self) -> dict[str, list[Any]]:
        """The swept axes beyond nfe / resolution / hardware, in suite order (guidance first when set)."""
        out: dict[str, list[Any]] = {"guidance": self.guidance} if self.guidance is not None else {}
        return {**out, **dict(self.model_extra or {})}


class SamplerSpec(_Strict):
    id: str = Field(description="Unique name of this sampler in results and reports.")
    adapter: str = Field(description="Registered sampler name (`bench list samplers`) or 'module.path:ClassName'.")
    options: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the sampler class.")
    guidance: float | list[float] | None = Field(
        default=None, description="Guidance scale(s) for this sampler: overrides axes.guidance (a single value "
                                  "or a list to sweep).")
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict, description="Sampler options to sweep, e.g. {eta: [0.0, 0.5, 1.0]}: each combination "
                                          "is its own sampler in tables and plots (`hyper-sd[eta=0.5]`).")
    axes: dict[str, Any] = Field(default_factory=dict, description="Overrides of other registered axes for this "
                                                                   "sampler, e.g. {guidance: [1, 2]}.")
    nfe: list[int] | None = Field(default=None, description="Overrides axes.nfe for this sampler.")
    resolution: list[int] | None = None
    hardware: list[str] | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("id must not be empty")
        return v

    @field_validator("adapter")
    @classmethod
    def _adapter(cls, v: str) -> str:
        from bench.adapters.registry import resolve_sampler

        try:
            resolve_sampler(v)
        except BenchError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("nfe", "resolution")
    @classmethod
    def _ints(cls, v: list[int] | None, info: Any) -> list[int] | None:
        return None if v is None else _positive_unique(v, info.field_name)

    @field_validator("hardware")
    @classmethod
    def _hw(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _hardware_list(v)

    @field_validator("guidance", mode="before")
    @classmethod
    def _guidance(cls, v: Any) -> Any:
        if v is None:
            return None
        values = _axis_values("guidance", v)
        return values if isinstance(v, list) else values[0]

    @field_validator("sweep")
    @classmethod
    def _sweep(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for name, values in v.items():
            if not values:
                raise ValueError(f"sweep.{name} must list at least one value")
            canon = [repr(x) for x in values]
            if len(set(canon)) != len(canon):
                raise ValueError(f"sweep.{name} has duplicate values")
        return v

    @field_validator("axes")
    @classmethod
    def _axes(cls, v: dict[str, Any]) -> dict[str, Any]:
        builtin = {"nfe", "resolution", "hardware"} & set(v)
        if builtin:
            raise ValueError(f"set {', '.join(sorted(builtin))} as the sampler's own key, not under axes")
        return {name: _axis_values(name, values) for name, values in v.items()}

    def axis_values(self, suite_axes: Axes) -> dict[str, list[Any]]:
        """This sampler's values of every axis beyond nfe / resolution / hardware (its overrides win)."""
        out = suite_axes.extra()
        for name in self.axes:
            out[name] = self.axes[name]
        if self.guidance is not None:
            out["guidance"] = self.guidance if isinstance(self.guidance, list) else [self.guidance]
        return out


class GateRule(_Strict):
    """Tolerance for one metric (the key `fd` also covers its variants `fd:<space>`); the direction comes from
    the metric's higher_is_better. A change fails `bench gate` when it is worse than the baseline by more than
    the tolerance (the larger of rel_tol x |baseline| and abs_tol) with confidence: `paired`, the paired
    bootstrap interval of the difference (same seeds, same reference: bench.analysis) lies beyond it; `ci`, the
    run's and the baseline's own intervals do not overlap (IQR for latency); `none`, the value alone. Defaults
    are each metric's default gate rule in bench/metrics/catalogue.py."""

    rel_tol: float | None = Field(default=None, ge=0, description="Allowed relative worsening, e.g. 0.1 = 10%.")
    abs_tol: float | None = Field(default=None, ge=0, description="Allowed absolute worsening, in the metric's unit.")
    significance: Literal["paired", "ci", "none"] = Field(
        default="ci", description="paired: the paired bootstrap CI of the change lies beyond the tolerance (needs "
                                  "per-image evidence; falls back to ci with a note); ci: the confidence intervals "
                                  "(IQR for latency) do not overlap; none: the value alone.")
    normalize: Literal["auto", "calibration", "none"] = Field(
        default="auto", description="calibration: compare value / calibration_ms (hardware-normalised); auto: "
                                    "calibration for latency_* metrics, none otherwise.")


class FrontGate(_Strict):
    """Quality-vs-latency front: every point of the baseline's Pareto front (per hardware x resolution) must
    still be kept by some point of the run: quality not worse than the front point's by more than tol_quality
    (relative; paired evidence as for the per-metric rules) at a latency within tol_latency (or, with
    significance ci, an overlapping IQR). Unset tolerances take bench/gate.py's defaults."""

    quality: str = Field(default="fd", description="Lower-is-better quality metric (fd also covers fd:<space>).")
    latency: str = "latency_ms_per_image"
    tol_quality: float | None = Field(default=None, ge=0)
    tol_latency: float | None = Field(default=None, ge=0)
    normalize: Literal["calibration", "none"] = "calibration"
    significance: Literal["paired", "ci", "none"] = Field(
        default="paired", description="paired: quality compared by the paired bootstrap (unpaired intervals when "
                                      "no evidence), latency by IQR overlap; ci: a run point whose interval (CI "
                                      "for quality, IQR for latency) overlaps the front point's also keeps it.")


class Gates(_Strict):
    """Regression gates for `bench gate` (see docs/ci.md)."""

    defaults: bool = Field(default=True, description="Also apply the built-in rules (fd, latency_ms_per_image, "
                                                      "nfe_counted) and front gate, unless overridden here.")
    metrics: dict[str, GateRule] = Field(default_factory=dict)
    front: FrontGate | None = None
    calibration: Literal["cell", "run"] = Field(
        default="cell", description="cell: divide each cell's latency by the calibration timed right after it; "
                                    "run: by the median calibration of the run on that hardware.")
    drift: bool = Field(
        default=True, description="Widen latency tolerances by the calibration drift (max / min calibration time "
                                  "across a run's cells): a change inside the machine's own variation is a tie.")


class ReportSpec(_Strict):
    enabled: bool = True
    out: str | None = Field(default=None, description="Default reports/<suite>.html")
    grid: int = Field(default=8, ge=0, le=64, description="Images per cell saved for image grids.")


class SaveSamples(_Strict):
    """Keep every cell's images (or the first `max`) as lossless files named by image index and seed
    (`000123-seed123.png`) with a `samples.jsonl` sidecar (index, seed, file, prompt or label), in
    <store folder>/samples/<cell key>/saved/, so they can be rescored elsewhere. Part of the cell key."""

    format: Literal["png"] = Field(default="png", description="Image file format (png: lossless uint8).")
    max: int | None = Field(default=None, gt=0, description="Images per cell to keep, by image index; null = all.")


class Limits(_Strict):
    """Resource budgets checked when the suite loads, so a typo (`samples: 100000000`, `nfe: [10**11]`) is one line
    and exit 2 instead of a machine running out of memory. A suite that needs more raises them here explicitly."""

    max_nfe: int = Field(default=10_000, gt=0, description="Largest requested step count of any cell.")
    max_samples: int = Field(default=1_000_000, gt=0, description="Largest images-per-cell count.")
    max_batch: int = Field(default=4096, gt=0, description="Largest quality or latency batch size.")
    max_feature_values: int = Field(
        default=1_000_000_000, gt=0,
        description="Largest N x D per cell: images x feature dimension, the matrix that KID, precision/recall and "
                    "the bootstrap hold (4 bytes each). D is 3 x resolution^2 when a metric uses the pixels feature "
                    "space, else taken as 2048 (Inception-v3), so the check never loads a feature network.")


FEATURE_DIM_FLOOR = 2048  # the largest common network feature dimension (Inception-v3 pool3)


class SuiteModel(_Strict):
    """A benchmark suite: samplers x axes, with metrics, gates and report options."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)
    name: str
    description: str = ""
    dataset: DatasetSpec
    samples: int = Field(gt=0, description="Images per cell for quality metrics.")
    samples_per_resolution: dict[int, int] = Field(
        default_factory=dict, description="Images per cell at these resolutions instead of `samples`, e.g. {32: 500} "
        "when larger images cost too much; quality numbers are comparable only between cells with the same count.")
    base_seed: int = Field(default=0, ge=0, description="Image i uses seed base_seed + i for every sampler.")
    batch_size: int = Field(default=64, gt=0, description="Batch size for quality sampling.")
    shard_size: int | Literal["auto"] | None = Field(
        default=None, description="Split each cell's quality sampling into shards of this many images (rounded up "
        "to a multiple of batch_size) that run as separate tasks (--jobs, one per GPU, Ray) and resume one by one; "
        "the numbers are the same as unsharded. `auto`: one shard per worker that can run the cell at once (--jobs "
        "locally, the cluster's capacity on Ray), and shards of at most 10,000 images. Default: cells are not split.")
    timeout: float = Field(default=1800, gt=0, description="Seconds before a cell is killed and failed.")
    samplers: list[SamplerSpec]
    axes: Axes
    metrics: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    gates: Gates = Field(default_factory=Gates)
    report: ReportSpec = Field(default_factory=ReportSpec)
    save_samples: SaveSamples | None = Field(
        default=None, description="Keep the images the metrics scored as files (default: off; report.grid saves "
                                  "a few for the report either way).")
    limits: Limits = Field(default_factory=Limits)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("name must be letters, digits, '_', '-' or '.' (it names files)")
        return v

    @field_validator("shard_size")
    @classmethod
    def _shard_size(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and v < 1:
            raise ValueError("shard_size must be a positive number of images, or auto")
        return v

    @field_validator("samples_per_resolution")
    @classmethod
    def _samples_per_resolution(cls, v: dict[int, int]) -> dict[int, int]:
        bad = [f"{r}: {n}" for r, n in v.items() if r <= 0 or n <= 0]
        if bad:
            raise ValueError(f"resolutions and sample counts must be positive ({', '.join(bad)})")
        return v

    def samples_at(self, resolution: int) -> int:
        """Images per cell at this resolution."""
        return self.samples_per_resolution.get(resolution, self.samples)

    @field_validator("samplers")
    @classmethod
    def _samplers(cls, v: list[SamplerSpec]) -> list[SamplerSpec]:
        if not v:
            raise ValueError("samplers must list at least one sampler")
        ids = [s.id for s in v]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate sampler ids: {', '.join(dup)}")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any] | None]:
        from bench.metrics.registry import SYSTEM_METRICS, get_metric, metric_names

        known = set(metric_names()) | set(SYSTEM_METRICS)
        for name in v:
            if ":" in name:
                try:
                    get_metric(name)
                except BenchError as e:
                    raise ValueError(str(e)) from None
            elif name not in known:
                raise ValueError(f"unknown metric {name!r} (known: {', '.join(sorted(known))}; "
                                 "or 'module.path:function')")
        from bench.metrics.catalogue import validate_options

        for name, options in v.items():  # against the catalogue: errors name metrics.<metric>.<option>
            validate_options(name, options)
        return v


class Suite:
    """A validated suite plus where it came from (text, path, hash) for provenance."""

    def __init__(self, model: SuiteModel, text: str, path: str) -> None:
        self.model, self.text, self.path = model, text, path
        self.hash = hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return self.model.name


def apply_overrides(located: LocatedYAML, overrides: Sequence[str]) -> list[tuple[str | int, ...]]:
    """Apply `KEY.PATH=VALUE` overrides (VALUE parsed as YAML; list items by index, e.g. samplers.0.nfe=[1, 2])
    to the parsed suite, in order; returns the overridden paths so errors can name `--set` instead of a line."""
    paths: list[tuple[str | int, ...]] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise BenchError(f"--set {item!r}: expected KEY=VALUE, e.g. base_seed=1 or axes.resolution=[16]")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except Exception:  # a YAML error, or PyYAML's constructor on `!!int x1`
            raise BenchError(f"--set {key}: the value {raw!r} is not valid YAML") from None
        path: tuple[str | int, ...] = tuple(int(p) if p.isdigit() else p for p in key.split("."))
        node = located.data
        for i, part in enumerate(path[:-1]):
            nxt = _child(node, part)
            if nxt is None:
                if not isinstance(node, dict) or isinstance(part, int):
                    raise BenchError(f"--set {key}: {dotted(path[:i + 1])} does not exist in the suite")
                nxt = node[_key(node, part)] = {}
            node = nxt
        last = path[-1]
        if isinstance(node, list):
            if not isinstance(last, int) or last >= len(node):
                raise BenchError(f"--set {key}: {dotted(path)} does not exist in the suite")
            node[last] = value
        elif isinstance(node, dict):
            node[_key(node, last)] = value
        else:
            raise BenchError(f"--set {key}: {dotted(path[:-1])} is not a mapping or list")
        paths.append(path)
    return paths


def _key(node: dict[Any, Any], part: str | int) -> str | int:
    """The mapping key `part` names: YAML keys may be ints (samples_per_resolution: {32: 500}) or strings."""
    return part if part in node or str(part) not in node else str(part)


def _child(node: Any, part: str | int) -> Any:
    if isinstance(node, list) and isinstance(part, int):
        return node[part] if part < len(node) else None
    if isinstance(node, dict):
        return node.get(_key(node, part))
    return None


def _validate(located: LocatedYAML, text: str, overridden: Sequence[tuple[str | int, ...]] = ()) -> Suite:
    if not isinstance(located.data, dict):
        raise BenchError(f"{located.file}:1: a suite must be a mapping of keys (name, dataset, samplers, axes, ...)")
    try:
        model = SuiteModel.model_validate(located.data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
        if any(loc[:len(p)] == p for p in overridden):
            raise BenchError(f"{located.file} --set {dotted(loc)}: {msg}{more}") from None
        line = located.line_of(loc)
        raise BenchError(f"{located.file}:{line}: {dotted(loc)}: {msg}{more}") from None
    model = _with_reference_stats(model, located, overridden)
    problem = limit_problem(model)
    if problem:
        loc, msg = problem
        where = (f"{located.file} --set {dotted(loc)}" if any(loc[:len(p)] == p for p in overridden)
                 else f"{located.file}:{located.line_of(loc)}: {dotted(loc)}")
        raise BenchError(f"{where}: {msg}")
    return Suite(model, text, located.file)


def _with_reference_stats(model: SuiteModel, located: LocatedYAML,
                          overridden: Sequence[tuple[str | int, ...]]) -> SuiteModel:
    """Check every `reference_stats:` file now (exists, loads), before anything runs, and pin its absolute path and
    sha256 in the metric's options (bench.metrics.statsfile); a bad file is `FILE:LINE: key: message`."""
    metrics = dict(model.metrics)
    for name, opts in model.metrics.items():
        if not isinstance(opts, dict) or "reference_stats" not in opts:
            continue
        from bench.metrics.statsfile import resolve_reference_stats

        try:
            metrics[name] = resolve_reference_stats(name, opts, Path(located.file).resolve().parent)
        except BenchError as e:
            loc: tuple[str | int, ...] = ("metrics", name, "reference_stats")
            where = (f"{located.file} --set {dotted(loc)}" if any(loc[:len(p)] == p for p in overridden)
                     else f"{located.file}:{located.line_of(loc)}: {dotted(loc)}")
            raise BenchError(f"{where}: {e}") from None
    return model if metrics == model.metrics else model.model_copy(update={"metrics": metrics})


def limit_problem(model: SuiteModel) -> tuple[tuple[str | int, ...], str] | None:
    """The first value over the suite's `limits` (key path, message), or None."""
    lim = model.limits

    def over(value: int, limit: int, name: str, what: str) -> str:
        return (f"{what} {value:,} is over limits.{name} = {limit:,}; if this machine has the memory and time, "
                f"raise it in the suite (limits: {{{name}: {value}}})")

    nfe_lists: list[tuple[tuple[str | int, ...], list[int]]] = [(("axes", "nfe"), model.axes.nfe)]
    nfe_lists += [(("samplers", i, "nfe"), s.nfe) for i, s in enumerate(model.samplers) if s.nfe]
    for loc, values in nfe_lists:
        if max(values) > lim.max_nfe:
            return loc, over(max(values), lim.max_nfe, "max_nfe", "requested steps")
    resolutions = set(model.axes.resolution)
    for s in model.samplers:
        resolutions |= set(s.resolution or ())
    counts: list[tuple[tuple[str | int, ...], int, int]] = [(("samples",), model.samples, r) for r in resolutions
                                                              if r not in model.samples_per_resolution]
    counts += [(("samples_per_resolution", r), n, r) for r, n in model.samples_per_resolution.items()]
    pixels = any(isinstance(o, dict) and o.get("feature_space") == "pixels" for o in model.metrics.values())
    for loc, n, r in counts:
        if n > lim.max_samples:
            return loc, over(n, lim.max_samples, "max_samples", "images per cell")
        dim = max(3 * r * r, FEATURE_DIM_FLOOR) if pixels else FEATURE_DIM_FLOOR
        n_values = n * dim
        if n_values > lim.max_feature_values:
            return loc, (f"{n:,} images at resolution {r} need about {n_values:,} feature values per cell (N x D, "
                         f"D = {dim}), over limits.max_feature_values = "
                         f"{lim.max_feature_values:,}; lower the count or raise the limit in the suite "
                         f"(limits: {{max_feature_values: {n_values}}})")
    if model.batch_size > lim.max_batch:
        return ("batch_size",), over(model.batch_size, lim.max_batch, "max_batch", "batch size")
    latency = model.metrics.get("latency") or {}
    sizes = latency.get("batch_sizes") if isinstance(latency, dict) else None
    if isinstance(sizes, list) and sizes and max(sizes) > lim.max_batch:
        return ("metrics", "latency", "batch_sizes"), over(max(sizes), lim.max_batch, "max_batch",
                                                           "latency batch size")
    return None


def load_suite(path: str | Path, overrides: Sequence[str] = ()) -> Suite:
    """Read and validate a suite file; every problem is a one-line BenchError `FILE:LINE: key: message`.

    `overrides` (`bench run --set KEY=VALUE`) change the parsed suite before validation; they are appended to
    the stored suite text as comments, so the run's provenance and suite hash show them.
    """
    located = load_yaml(path)
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    overridden = apply_overrides(located, overrides)
    if overrides:
        text += "".join(f"\n# --set {o}" for o in overrides) + "\n"
    return _validate(located, text, overridden)


def parse_suite(text: str, file: str = "<string>") -> Suite:
    return _validate(parse_yaml(text, file), text)


def json_schema() -> dict[str, Any]:
    """JSON schema of the suite format, for editors (`bench schema`)."""
    schema = SuiteModel.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "flowmap-bench suite"
    from bench.metrics.catalogue import specs

    props = {}
    for spec in specs():  # every catalogued metric's options (bench/metrics/catalogue.py)
        model = spec.options_model() if spec.in_suite else None
        if model is not None:
            props[spec.name] = {"anyOf": [model.model_json_schema(), {"type": "null"}], "description": spec.description}
    schema["properties"]["metrics"]["properties"] = props
    return schema
