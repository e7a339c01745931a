"""What a report reads: one run's tidy table from the store, organised per cell and per metric.

Reads only the store (and, for image-grid captions, the dataset named by the run's suite text). Every
optional piece (prompts, sample images) is guarded: a report still renders without it.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis import Timing, timing_of
from bench.errors import BenchError
from bench.evidence import Evidence
from bench.metrics.catalogue import result_label, result_role
from bench.results import extra_axes
from bench.spec import axes_label
from bench.store import Store

CELL_COLUMNS = ["sampler", "family", "nfe", "nfe_counted", "resolution", "hardware", "status", "reason",
                "cell_key", "reused", "samples_dir"]
LATENCY_PREFERENCE = ("latency_ms_per_image", "latency_ms_batch1")
# Quality metrics drawn against latency / NFE, in this order of preference (by name before any ':').
PLOTTED_QUALITY = ("fd", "clip_score")
@dataclass(frozen=True)
class MetricInfo:
    """A metric of the run: name, direction and what kind of number it is (decides where it is shown)."""

    name: str
    higher_is_better: bool | None
    kind: str  # quality | latency | memory | calibration | reference | other
    scope: str = "call"  # latency only: "denoiser" when the suite's latency.scope times the denoising phase
    batch: str = ""  # latency only: the batch size it was timed at ('16'; '16 or 32' when cells differ)

    @property
    def base(self) -> str:
        return self.name.split(":", 1)[0]

    @property
    def variant(self) -> str:
        return self.name.split(":", 1)[1] if ":" in self.name else ""

    @property
    def label(self) -> str:
        text = result_label(self.base) or self.base.replace("_", " ")
        if self.scope == "denoiser":
            text = "denoiser " + text
        if self.batch and self.kind == "latency" and "batch" not in text:  # ms/image depends on the batch: say which
            text = text[:-1] + f", batch {self.batch})" if text.endswith(")") else f"{text}, batch {self.batch}"
        return f"{text} [{self.variant}]" if self.variant else text

    @property
    def header_title(self) -> str:
        """What a table column holds, for its header's tooltip (the batch behind a per-image latency)."""
        if self.kind != "latency":
            return self.name
        per_image = self.name.endswith("_per_image") or "_per_image:" in self.name
        how = (f"median time of one call at batch {self.batch or '?'}, divided by the batch (ms per image)"
               if per_image else f"median time of one call at batch {self.batch or '?'} (ms)")
        return f"{self.name}: {how}; ± half the interquartile range of the timed calls"

    @property
    def short(self) -> str:
        """Short lower-case name for sentences ("lower FD", "higher CLIP score")."""
        return (result_label(self.base) or self.base.replace("_", " ")).split(" (")[0]

    @property
    def direction_word(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


def metric_kind(name: str, higher_is_better: bool | None) -> str:
    """The stored number's role in the metric catalogue (quality, reference, latency, memory, calibration); a name
    the catalogue does not know is quality when it has a direction, else other."""
    kind = result_role(name, higher_is_better)
    return "other" if kind == "count" else kind


KIND_ORDER = {"quality": 0, "reference": 1, "latency": 2, "memory": 3, "other": 4, "calibration": 5}


@dataclass(frozen=True)
class Value:
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None

    @property
    def ok(self) -> bool:
        return self.value is not None and math.isfinite(self.value)

    @property
    def half_width(self) -> float | None:
        if not self.ok or self.ci_low is None or self.ci_high is None:
            return None
        if not (math.isfinite(self.ci_low) and math.isfinite(self.ci_high)):
            return None
        return max(self.ci_high - self.ci_low, 0.0) / 2


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


@dataclass
class RunData:
    """One run, ready to report: its metadata, cells (one row each), metric catalogue and values."""

    store_path: Path
    run: dict[str, Any]
    df: pd.DataFrame
    cells: pd.DataFrame
    metrics: list[MetricInfo]
    values: dict[tuple[str, str], Value]
    provenance: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # cell key -> metric -> per-image evidence (bench.evidence); {} for a cell without any (a first-release store)
    evidence: dict[str, dict[str, Evidence]] = field(default_factory=dict)
    evidence_problems: dict[str, str] = field(default_factory=dict)  # cell key -> why its evidence is unreadable
    # The axes beyond nfe / resolution / hardware (guidance, registered axes), in suite order: a cell is identified
    # by its sampler and every one of them, so `cells` has a column per axis, `slice` (their values as text,
    # '' without extra axes) and `line` (sampler + slice: one line in a plot, one row group in a table).
    axes: list[str] = field(default_factory=list)
    axis_values: dict[str, dict[str, Any]] = field(default_factory=dict)  # cell key -> extra axis -> value | None

    @property
    def run_id(self) -> str:
        return str(self.run["run_id"])

    @property
    def suite(self) -> str:
        return str(self.run["suite"])

    def value(self, cell_key: str, metric: str) -> Value:
        return self.values.get((cell_key, metric), Value(None))

    def metric(self, name: str) -> MetricInfo | None:
        return next((m for m in self.metrics if m.name == name), None)

    def cell_evidence(self, cell_key: str, metric: str) -> Evidence | None:
        return self.evidence.get(cell_key, {}).get(metric)

    def has_evidence(self) -> bool:
        return any(self.evidence.values())

    def timing(self, cell_key: str, metric: str) -> Timing | None:
        """The latency `metric` of a cell as bench.analysis reads it: median, IQR and the `unstable` flag."""
        v = self.value(cell_key, metric)
        if not v.ok:
            return None
        return timing_of({"value": v.value, "ci_low": v.ci_low, "ci_high": v.ci_high,
                          "provenance": self.provenance.get((cell_key, metric)) or {}})

    def unstable_reason(self, cell_key: str, metric: str) -> str | None:
        """Why a latency takes part in no verdict ("unstable" when no reason was recorded), or None when stable."""
        t = self.timing(cell_key, metric)
        if t is None or not t.unstable:
            return None
        return t.reason or "unstable"

    @property
    def latency_metric(self) -> MetricInfo | None:
        for name in LATENCY_PREFERENCE:
            m = self.metric(name)
            if m is not None:
                return m
        return next((m for m in self.metrics if m.kind == "latency"), None)

    @property
    def plotted_quality(self) -> list[MetricInfo]:
        """FD and CLIP score (every variant); when a run has neither, its first two quality metrics."""
        quality = [m for m in self.metrics if m.kind == "quality"]
        chosen = [m for base in PLOTTED_QUALITY for m in quality if m.base == base]
        return chosen or quality[:2]

    def floor_for(self, metric: MetricInfo) -> MetricInfo | None:
        """The noise-floor metric that goes with `metric` (fd -> fd_floor, fd:x -> fd_floor:x)."""
        name = f"{metric.base}_floor" + (f":{metric.variant}" if metric.variant else "")
        return self.metric(name)

    def groups(self) -> list[tuple[str, int]]:
        """(hardware, resolution) panels, in plan order."""
        seen: dict[tuple[str, int], None] = {}
        for r in self.cells.itertuples():
            seen[(str(r.hardware), int(r.resolution))] = None
        return list(seen)

    def samplers(self) -> list[str]:
        return list(dict.fromkeys(str(s) for s in self.cells["sampler"]))

    def slices(self) -> list[str]:
        """The extra-axis value combinations (`guidance=1.5`), in axis-value order; [''] without extra axes."""
        firsts = self.cells.drop_duplicates("slice")
        order = sorted(range(len(firsts)), key=lambda i: _value_key([firsts[a].iloc[i] for a in self.axes]))
        return [str(firsts["slice"].iloc[i]) for i in order] or [""]

    def cell_axes(self, cell: Any) -> dict[str, Any]:
        """A cell's values of the extra axes, in order (None where it has none)."""
        return self.axis_values.get(str(cell.cell_key)) or dict.fromkeys(self.axes)

    def families(self) -> list[str]:
        return list(dict.fromkeys(str(s) for s in self.cells["family"].fillna("unknown")))


def load_run(store_path: str | Path, run_id: str | None = None, suite: str | None = None) -> RunData:
    """Read one run (default: the latest, or the latest of `suite`) from the store at `store_path`."""
    with Store(store_path, readonly=True) as store:
        df = store.results(run_id=run_id, suite=suite)
        run = store.run(str(df["run_id"].iloc[0]) if len(df) else (run_id or store.latest_run_id(suite)))
        data = from_frame(df, run, Path(store_path))
        for key in dict.fromkeys(str(k) for k in data.cells.loc[data.cells["status"] == "done", "cell_key"]):
            try:
                ev = store.evidence(key)
            except (BenchError, KeyError, ValueError) as e:  # a corrupt or missing sidecar: that cell's verdicts
                data.evidence_problems[key] = str(e) if isinstance(e, BenchError) else (  # fall back and say why
                    f"evidence of cell {key} is unreadable ({type(e).__name__}: {e})")
                continue
            if ev:
                data.evidence[key] = ev
    return data


def _plain(v: Any) -> Any:
    """A cell's axis value as plain Python (None for a missing one; 2.0 read back as 2 where it is whole)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if hasattr(v, "item"):
        v = v.item()
    return v


def _value_key(values: list[Any]) -> tuple[Any, ...]:
    """Sort key of axis values: numbers by value, then text; a missing value first."""
    out: list[Any] = []
    for v in map(_plain, values):
        if v is None:
            out.append((0, 0.0, ""))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append((1, float(v), ""))
        else:
            out.append((2, 0.0, str(v)))
    return tuple(out)


def from_frame(df: pd.DataFrame, run: dict[str, Any], store_path: Path) -> RunData:
    axes = extra_axes(df)
    wanted = [*CELL_COLUMNS[:CELL_COLUMNS.index("hardware") + 1], *axes, *CELL_COLUMNS[CELL_COLUMNS.index("hardware") + 1:]]
    cells = df.drop_duplicates("cell_key")[[c for c in wanted if c in df.columns]].reset_index(drop=True)
    cells["family"] = cells["family"].fillna("unknown").astype(str)
    cells["sampler"] = cells["sampler"].astype(str)
    values_of = [{a: _plain(v) for a, v in zip(axes, row, strict=True)} for row in
                 cells[axes].itertuples(index=False, name=None)] if axes else [{} for _ in range(len(cells))]
    cells["slice"] = [axes_label({a: v for a, v in vals.items() if v is not None}).strip() for vals in values_of]
    cells["line"] = [f"{s} {sl}" if sl else s for s, sl in zip(cells["sampler"], cells["slice"], strict=True)]
    measured = df[df["metric"].notna()]
    metrics: dict[str, MetricInfo] = {}
    values: dict[tuple[str, str], Value] = {}
    provenance: dict[tuple[str, str], dict[str, Any]] = {}
    for r in measured.itertuples(index=False):
        name = str(r.metric)
        hib = None if r.higher_is_better is None or pd.isna(r.higher_is_better) else bool(r.higher_is_better)
        if name not in metrics:
            scope = "denoiser" if name in LATENCY_PREFERENCE and '"scope": "denoiser"' in str(r.provenance) else "call"
            metrics[name] = MetricInfo(name, hib, metric_kind(name, hib), scope)
        n = _num(r.n)
        values[(str(r.cell_key), name)] = Value(_num(r.value), _num(r.ci_low), _num(r.ci_high),
                                               None if n is None else int(n))
        prov = getattr(r, "provenance", None)
        if isinstance(prov, str) and prov:
            with contextlib.suppress(ValueError):
                provenance[(str(r.cell_key), name)] = json.loads(prov)
    metrics = {n: replace(m, batch=_batch_text(n, provenance)) if m.kind == "latency" else m
               for n, m in metrics.items()}
    ordered = sorted(metrics.values(), key=lambda m: (KIND_ORDER.get(m.kind, 9), _base_rank(m), m.name))
    return RunData(store_path, run, df, cells, ordered, values, provenance, axes=axes,
                   axis_values=dict(zip(cells["cell_key"].astype(str), values_of, strict=True)))


def _batch_text(metric: str, provenance: dict[tuple[str, str], dict[str, Any]]) -> str:
    """The batch size(s) a latency metric was timed at, from its cells' provenance ('' when none is recorded)."""
    sizes = {int(b) for (_, name), prov in provenance.items() if name == metric
             and isinstance(b := prov.get("batch_size"), (int, float)) and not isinstance(b, bool)}
    return " or ".join(str(b) for b in sorted(sizes))


def _base_rank(m: MetricInfo) -> int:
    order = ["fd", "fd_inf", "kid", "cmmd", "precision", "recall", "density", "coverage", "clip_score",
             "latency_ms_per_image", "latency_ms_batch1"]
    return order.index(m.base) if m.base in order else len(order)


def json_text(v: Any) -> str:
    """A structured value as JSON to be read on the page: non-ASCII kept as itself ('±', not '\\u00b1'; the
    template escapes it for HTML), keys sorted."""
    return json.dumps(v, sort_keys=True, default=str, ensure_ascii=False)


def metric_provenance(data: RunData) -> dict[str, dict[str, str]]:
    """Per metric, the provenance keys that are the same in every cell (feature extractor, weights hash,
    CLIP model, ...); keys that vary per cell (digests, repeat counts) are summarised as 'varies'."""
    by_metric: dict[str, dict[str, set[str]]] = {}
    for (_, name), prov in data.provenance.items():
        slot = by_metric.setdefault(name, {})
        for k, v in prov.items():
            text = v if isinstance(v, str) else json_text(v)
            slot.setdefault(k, set()).add(text)
    out: dict[str, dict[str, str]] = {}
    for m in data.metrics:
        keys = by_metric.get(m.name, {})
        out[m.name] = {k: (next(iter(v)) if len(v) == 1 else f"varies ({len(v)} values)") for k, v in sorted(keys.items())}
    return out


# -- suite text, dataset prompts, sample images ------------------------------------------------------

def suite_info(run: dict[str, Any]) -> dict[str, Any]:
    """base_seed, grid size, dataset, description and samples of a run, read from its stored resolved suite
    (`run_spec`); runs recorded before specs were stored fall back to the suite text. {} when neither reads."""
    spec = run.get("run_spec")
    if not isinstance(spec, dict):
        spec = _plain_yaml(run.get("suite_text"))
    try:
        ds = dict(spec.get("dataset") or {})
        name = ds.pop("name", None)
        ds.setdefault("split", "eval")
        return {"base_seed": int(spec.get("base_seed", 0)), "grid": int((spec.get("report") or {}).get("grid", 8)),
                "dataset": name, "dataset_options": ds, "description": str(spec.get("description", "")),
                "samples": spec.get("samples")}
    except (AttributeError, TypeError, ValueError):
        return {}


def _plain_yaml(text: str | None) -> dict[str, Any]:
    import yaml

    try:
        raw = yaml.safe_load(text or "")
    except Exception:  # a YAML error, or PyYAML's constructor on `!!int x1`
        return {}
    return raw if isinstance(raw, dict) else {}


def grid_captions(info: dict[str, Any], count: int) -> list[str] | None:
    """Prompt (or class label) of grid image i, i < count; None when the dataset cannot be built here."""
    if not info.get("dataset") or count <= 0:
        return None
    try:
        from bench.datasets import build_dataset

        cond = build_dataset(info["dataset"], dict(info["dataset_options"])).conditions(range(count))
    except Exception:
        return None
    if cond.prompts:
        return [str(p) for p in cond.prompts[:count]]
    if cond.labels:
        return [f"class {int(x)}" for x in cond.labels[:count]]
    return None


def reference_images(info: dict[str, Any], count: int, resolution: int) -> list[bytes] | None:
    """PNG bytes of the dataset's reference images 0..count-1 (what sample i is conditioned towards)."""
    if not info.get("dataset") or count <= 0:
        return None
    try:
        from PIL import Image

        from bench.datasets import build_dataset

        imgs = build_dataset(info["dataset"], dict(info["dataset_options"])).images(list(range(count)), resolution)
        out = []
        for img in imgs:
            buf = io.BytesIO()
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="PNG")
            out.append(buf.getvalue())
        return out
    except Exception:
        return None


def sample_folder(data: RunData, cell: Any) -> Path | None:
    """Where a cell's grid PNGs are: the stored path, or <store dir>/samples/<key> when run from elsewhere."""
    candidates = []
    if isinstance(cell.samples_dir, str) and cell.samples_dir:
        p = Path(cell.samples_dir)
        candidates.append(p)
        if not p.is_absolute():
            candidates.append(data.store_path.parent / p)
    candidates.append(data.store_path.parent / "samples" / str(cell.cell_key))
    return next((c for c in candidates if c.is_dir()), None)


def sample_pngs(folder: Path | None, count: int) -> list[bytes | None]:
    """PNG bytes of 000.png .. (count-1).png (None where missing), re-encoded smaller when that helps."""
    out: list[bytes | None] = []
    for i in range(count):
        f = folder / f"{i:03d}.png" if folder else None
        out.append(f.read_bytes() if f is not None and f.is_file() else None)
    return out


def count_pngs(folder: Path | None) -> int:
    if folder is None:
        return 0
    n = 0
    while (folder / f"{n:03d}.png").is_file():
        n += 1
    return n


def sprite(pngs: list[bytes | None], size: int, gap: int = 1) -> bytes:
    """One PNG strip of the images side by side (each resized to size x size if needed), `gap` white
    pixels after each; a missing image is a grey hatch. One strip per grid row keeps the page light."""
    import numpy as np
    from PIL import Image

    cell = size + gap
    strip = np.full((size, cell * len(pngs), 3), 255, dtype=np.uint8)
    hatch = np.where((np.add.outer(np.arange(size), np.arange(size)) // 2) % 2 == 0, 225, 245).astype(np.uint8)
    for i, raw in enumerate(pngs):
        x0 = i * cell
        if raw is None:
            strip[:, x0:x0 + size] = hatch[..., None]
            continue
        try:
            img = Image.open(io.BytesIO(raw)).convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.NEAREST)
            strip[:, x0:x0 + size] = np.asarray(img)
        except Exception:
            strip[:, x0:x0 + size] = hatch[..., None]
    buf = io.BytesIO()
    Image.fromarray(strip).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(png).decode("ascii")


# -- number formatting -----------------------------------------------------------------------------

def fmt(value: float | None, half_width: float | None = None) -> str:
    """A number with as many decimals as its uncertainty supports (3 significant digits without one)."""
    if value is None or not math.isfinite(value):
        return "–"
    if half_width is not None and half_width > 0 and math.isfinite(half_width):
        decimals = min(max(0, 1 - math.floor(math.log10(half_width))), 6)
        if value != 0 and round(value, decimals) == 0:  # smaller than its uncertainty: two significant digits
            return f"{value:.2g}"
        return f"{value:.{decimals}f}"
    a = abs(value)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{value:,.0f}"
    if a < 1e-3:
        return f"{value:.2e}"
    decimals = max(0, 2 - math.floor(math.log10(a)))
    return f"{value:.{decimals}f}"


def fmt_ci(v: Value) -> str:
    """'12.3 ± 0.4' (half-width of the stored interval), or the bare value when there is no interval."""
    h = v.half_width
    if not v.ok:
        return "–"
    if h is None:
        return fmt(v.value)
    return f"{fmt(v.value, h)} ± {fmt(h, h)}"
