"""The `bench` command line: run | runs | report | gate | export | list | zoo | doctor | schema | check | stats |
score."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.store import DEFAULT_STORE


def _cmd_run(args: argparse.Namespace) -> int:
    if args.report and args.no_report:
        raise BenchError("--report PATH and --no-report contradict each other; give one")
    if args.report and Path(args.report).is_dir():
        raise BenchError(f"--report {args.report} is a folder; give a file name such as "
                         f"{Path(args.report) / 'report.html'}")
    if args.devices not in ("auto", "none"):  # a malformed list is reported before anything runs
        from bench.hardware import worker_devices

        worker_devices(args.devices, args.jobs)
    if args.dry_run:
        return _dry_run(args.suite, args.set, args.store, args.force,
                        jobs=args.jobs if args.executor == "local" else None)
    from bench.run import run_suite

    summary = run_suite(args.suite, args.store, executor=args.executor, jobs=args.jobs, force=args.force,
                        isolate=args.isolate, allow_download=args.allow_download, progress=not args.no_progress,
                        argv=sys.argv, executor_options={"address": args.address} if args.address else None,
                        overrides=args.set, devices=args.devices)
    n_planned = sum(c.status == "planned" for c in summary.cells)
    overhead = (f", harness overhead {100 * summary.overhead_fraction:.1f}%, worker start-up "
                f"{summary.startup_seconds:.1f} s" if summary.computed else "")
    print(f"run {summary.run_id}: {n_planned} cells planned: {summary.computed} computed, {summary.reused} reused "
          f"from earlier runs, {len(summary.failed)} failed; {summary.skipped} skipped "
          f"({summary.wall_seconds:.1f} s{overhead})")
    if summary.shards_computed or summary.shards_reused:
        rounds = summary.round_seconds
        timing = f" (sampling round {rounds[0]:.1f} s, scoring round {rounds[1]:.1f} s)" if len(rounds) == 2 else ""
        print(f"shards: {summary.shards_computed} computed, {summary.shards_reused} reused from an interrupted run"
              f"{timing}")
    print(f"results: {args.store}  (bench export --store {args.store} --run {summary.run_id})")
    from bench.report.command import report_after_run

    report_after_run(args.store, summary.run_id, out=args.report, enabled=False if args.no_report else None)
    if summary.failed:
        print(f"{len(summary.failed)} failed cell(s):", file=sys.stderr)
        for cell, err in summary.failed:
            print(f"  {cell.label}: {err}", file=sys.stderr)
        return 1
    return 0


def _dry_run(suite_path: str, overrides: list[str], store_path: str, force: bool, jobs: int | None = 1) -> int:
    """The plan as a table; `jobs`: the local workers `shard_size: auto` splits for (None: a Ray cluster's, not
    known without connecting)."""
    from bench.plan import plan
    from bench.store import Store
    from bench.suite import load_suite

    suite = load_suite(suite_path, overrides)
    cells = plan(suite, workers=None if jobs is None else (lambda hardware: jobs))
    done: set[str] = set()
    if Path(store_path).exists():  # the store the run would write: unreadable is an error now, not after planning
        with Store(store_path, readonly=True) as store:
            done = set() if force else store.done_keys([c.key for c in cells])
    extra: list[str] = []
    for c in cells:
        extra += [k for k in c.spec.extra_axes if k not in extra]
    rows = [("sampler", "family", "nfe", "res", "hardware", *extra, "status")]
    for c in cells:
        status = f"skipped: {c.reason}" if c.status != "planned" else "done (reused)" if c.key in done else "planned"
        if c.status == "planned" and c.key not in done and (c.shards or c.shard_note):
            status += f", {len(c.shards)} shards" if c.shards else f" ({c.shard_note})"
        rows.append((c.sampler_id, c.family, str(c.nfe), str(c.resolution), c.hardware,
                     *(_axis_text(c.axes.get(k)) for k in extra), status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[-1])
    planned = sum(c.status == "planned" for c in cells)
    reused = f"; {len(done)} of them done in {store_path} and reused (--force recomputes)" if done else ""
    print(f"{len(cells)} cells: {planned} planned, {len(cells) - planned} skipped{reused}")
    return 0


def _axis_text(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _cmd_export(args: argparse.Namespace) -> int:
    from bench.store import Store

    with Store(args.store, readonly=True) as store:
        df = store.results(run_id=args.run, suite=args.suite)
    out = Path(args.output) if args.output else None
    if args.format == "csv":
        if out:
            df.to_csv(out, index=False)
        else:
            df.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        text = json.dumps(_typed_records(df), indent=1, allow_nan=False)
        if out:
            out.write_text(text)
        else:
            print(text)
    else:
        if not out:
            raise BenchError("--format parquet needs -o FILE")
        df.to_parquet(out, index=False)
    if out:
        print(f"wrote {len(df)} rows to {out}", file=sys.stderr)
    return 0


_JSON_COLUMNS = ("phases", "provenance", "cell_axes")  # JSON text in the table, objects in a JSON export
_INT_COLUMNS = ("nfe", "nfe_counted", "resolution", "n")  # ints where integral (pandas makes them floats next to NaN)


def _typed_records(df: Any) -> list[dict[str, Any]]:
    """The export table as JSON-ready rows: numbers as numbers (ints where integral, NaN as null), the JSON text
    columns as objects."""
    import math

    rows = []
    for rec in df.to_dict("records"):
        out: dict[str, Any] = {}
        for k, v in rec.items():
            if hasattr(v, "item") and not isinstance(v, (str, bytes)):
                v = v.item()  # numpy scalar -> Python
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            if k in _JSON_COLUMNS and isinstance(v, str) and v:
                with contextlib.suppress(ValueError):  # not JSON: kept as text
                    v = json.loads(v)
            elif k in _INT_COLUMNS and isinstance(v, float) and v.is_integer():
                v = int(v)
            out[str(k)] = v
        rows.append(out)
    return rows


def _cmd_runs(args: argparse.Namespace) -> int:
    import time

    from bench.store import Store

    def when(t: Any) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if isinstance(t, (int, float)) else "-"

    if args.action == "rm":
        if not args.run_id:
            raise BenchError("bench runs rm needs a run id (list them with `bench runs --store STORE`)")
        with Store(args.store) as store:
            run_id = store.latest_run_id() if args.run_id == "latest" else args.run_id
            n = store.remove_run(run_id)
        print(f"removed run {run_id} ({n} planned cells) from {args.store}; cell results stay for reuse by later "
              "runs (bench run --force recomputes them)")
        return 0
    with Store(args.store, readonly=True) as store:
        if args.action == "list":
            if args.run_id:
                raise BenchError("bench runs list takes no run id (bench runs show ID)")
            runs = store.runs()
            counts = {r["run_id"]: dict(zip(("planned", "done", "failed", "skipped"), r[1:], strict=True))
                      for r in store.db.execute(
                          "SELECT run_id, COUNT(*), SUM(status='done'), SUM(status='failed'), SUM(status='skipped') "
                          "FROM run_cells GROUP BY run_id")}
            if not runs:
                print(f"no runs in {args.store}")
                return 0
            rows = [("run", "suite", "status", "started", "cells", "done", "failed", "skipped", "commit")]
            for r in runs:
                c = counts.get(r["run_id"], {})
                rows.append((r["run_id"], r["suite"], r["status"] or "-", when(r["started"]),
                             *(str(c.get(k) or 0) for k in ("planned", "done", "failed", "skipped")),
                             (r["git_commit"] or "-")[:12]))
            widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
            for row in rows:
                print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
            return 0
        run_id = store.latest_run_id() if args.run_id in (None, "latest") else args.run_id
        run = store.run(run_id)
        status = next((r["status"] for r in store.runs() if r["run_id"] == run_id), run["status"])
        print(f"run {run_id}: suite {run['suite']} ({run['suite_hash']}), {status}, started {when(run['started'])}, "
              f"finished {when(run['finished'])}, executor {run['executor']}, commit {run['git_commit'] or '-'}")
        print(f"  suite file {run['suite_path']}; command: {' '.join(run['argv'] or [])}")
        for c in store.db.execute("SELECT sampler, nfe_requested, resolution, hardware, axes, status, reason, reused "
                                  "FROM run_cells WHERE run_id=? ORDER BY rowid", (run_id,)):
            axes = json.loads(c["axes"]) if c["axes"] else {}
            more = "".join(f" {k}={v}" for k, v in axes.items() if k not in ("nfe", "resolution", "hardware"))
            why = f": {c['reason']}" if c["reason"] else ""
            print(f"  {c['sampler']} nfe={c['nfe_requested']} res={c['resolution']} hw={c['hardware']}{more}  "
                  f"{c['status']}{' (reused)' if c['reused'] else ''}{why}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "samplers":
        from bench.adapters.registry import build_sampler, list_samplers

        print("Registered samplers (entry-point group bench.samplers); a suite may also name 'module.path:ClassName'.")
        for e in list_samplers():
            try:
                info = build_sampler(e.name, {}).info
                desc = f"{info.family:<12} nfe {info.nfe.describe():<8} {info.description}"
            except Exception as exc:  # a broken third-party plugin must not hide the others
                desc = f"(cannot instantiate with default options: {str(exc).splitlines()[0]})"
            print(f"  {e.name:<28} {desc}  [{e.source}: {e.target}]")
    elif args.what == "datasets":
        from bench.datasets import dataset_names

        print("Registered datasets (entry-point group bench.datasets included); `dataset: {name: NAME, ...}` in a "
              "suite, its other keys are the class's options.")
        for n in dataset_names():
            print(f"  {n:<10} {_dataset_summary(n)}")
    else:
        _list_metrics()
    return 0


def _dataset_summary(name: str) -> str:
    """The first line of a dataset class's docstring and its options, or why it cannot be imported."""
    import inspect

    from bench.datasets import dataset_target
    from bench.importing import import_target

    try:
        cls = import_target(dataset_target(name))
    except Exception as e:  # a broken third-party plugin must not hide the others
        return f"(cannot import: {str(e).splitlines()[0] if str(e) else type(e).__name__})"
    doc = (inspect.getdoc(cls) or "").splitlines()
    try:
        params = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    except (TypeError, ValueError):
        params = []
    return f"{doc[0] if doc else ''}  options: {', '.join(params) or '-'}"


def _list_metrics() -> None:
    """The metric catalogue: kind, unit, direction and options of every metric a suite may name."""
    from bench.metrics.catalogue import spec_of, specs
    from bench.metrics.features import feature_space_names
    from bench.metrics.registry import SYSTEM_METRICS, metric_names

    print("Metrics (bench/metrics/catalogue.py; entry-point group bench.metrics; or 'module.path:function'). "
          "`name:variant` asks for one metric again, e.g. fd:pixels.")
    catalogued = {s.name: s for s in specs()}
    for name in sorted({*metric_names(), *SYSTEM_METRICS, *catalogued}):
        try:
            spec = catalogued.get(name) or spec_of(name)
        except Exception as exc:  # a broken third-party plugin must not hide the others
            print(f"  {name:<18} (cannot import: {str(exc).splitlines()[0]})")
            continue
        if spec is None:
            print(f"  {name:<18} quality  (declares no spec: kind, unit and direction unknown; options pass "
                  "through unchecked)")
            continue
        way = {True: "higher is better", False: "lower is better", None: "no direction"}[spec.higher_is_better]
        always = "" if spec.in_suite else "  [always measured]"
        print(f"  {name:<18} {spec.kind:<8} {spec.unit:<18} {way:<17} {spec.description}{always}")
        model = spec.options_model() if spec.in_suite else None
        if model is None and spec.in_suite:
            print("      options: unchecked")
        elif model is not None:
            opts = [n for n in model.model_fields if n != "variant"]
            print(f"      options: {', '.join(opts) or 'none'}")
        stored = ", ".join(r.name + (f" [gate: {_rule_text(r.gate)}]" if r.gate else "") for r in spec.results)
        if stored:
            print(f"      stores: {stored}")
    print(f"Feature spaces (entry-point group bench.feature_spaces): {', '.join(feature_space_names())}")


def _rule_text(rule: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in rule.items())


def _cmd_recipes(args: argparse.Namespace) -> int:
    from bench.adapters.hf.recipes import TABLES, format_tables

    if args.family and args.family not in TABLES:
        raise BenchError(f"no recipe table {args.family!r} (tables: {', '.join(TABLES)})")
    print("How each published checkpoint is sampled, per step count (bench/adapters/hf/recipes.py; the row a cell "
          "used is in its provenance).")
    print(format_tables(args.family))
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from bench.hardware import HardwareSpec, fingerprint, library_versions

    fp = fingerprint()
    print("Machine:")
    for k, v in fp.items():
        print(f"  {k}: {v}")
    print("Libraries:")
    for k, v in library_versions().items():
        print(f"  {k}: {v or 'not installed'}")
    print("Hardware specs:")
    for spec in ("cpu", "cuda", "mps"):
        reason = HardwareSpec.parse(spec).availability()
        print(f"  {spec}: {'available' if reason is None else reason}")
    print("Offline weights and feature extractors:")
    for name, ok, detail in _offline_checks():
        print(f"  {name}: {'ok' if ok else 'missing'} ({detail})")
    return 0


def _offline_checks() -> list[tuple[str, bool, str]]:
    checks: list[tuple[str, bool, str]] = []
    from bench.metrics.features import build_feature_space

    for space in ("pixels", "shapes-clip", "inception-v3"):
        try:
            build_feature_space(space, {}, "cpu", allow_download=False)
            checks.append((f"feature space {space}", True, "loads offline"))
        except Exception as e:  # report, don't stop: doctor lists everything that is missing
            checks.append((f"feature space {space}", False, str(e).splitlines()[0] if str(e) else repr(e)))
    try:
        from bench.zoo.cli_impl import verify

        checks.extend(verify())
    except ImportError:
        checks.append(("zoo weights", False, "bench.zoo not available"))
    except BenchError as e:  # a malformed manifest: doctor lists it with the rest
        checks.append(("zoo weights", False, str(e)))
    try:
        from bench.adapters.hf.weights import offline_status as hf_status

        checks.extend(hf_status())
    except ImportError:
        pass
    return checks


def _cmd_schema(args: argparse.Namespace) -> int:
    from bench.suite import json_schema

    text = json.dumps(json_schema(), indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    try:
        from bench.zoo import cli_impl
    except ImportError as e:
        raise BenchError(f"the embedded zoo is not available in this install ({e})") from None
    if args.zoo_cmd == "train":
        cli_impl.train(args.model, out_dir=args.out, device=args.device)
    elif args.zoo_cmd == "verify":
        bad = 0
        for name, ok, msg in cli_impl.verify():
            print(f"{'ok  ' if ok else 'FAIL'} {name}: {msg}")
            bad += not ok
        return 1 if bad else 0
    else:
        print(cli_impl.card())
    return 0


def _key_values(items: list[str], flag: str) -> dict[str, Any]:
    """`KEY=VALUE` flags (VALUE parsed as YAML) as a dict."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} dim=64")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except Exception:  # a YAML error, or PyYAML's constructor on `!!int x1`
            raise BenchError(f"{flag} {key}: the value {raw!r} is not valid YAML") from None
    return out


def _cmd_stats(args: argparse.Namespace) -> int:
    from bench.refstats import make_stats

    s = make_stats(args.source, args.output, feature_space=args.feature_space,
                   space_options=_key_values(args.feature_option, "--feature-option"), resolution=args.resolution,
                   samples=args.samples, split=args.split, dataset_options=_key_values(args.option, "--option"),
                   resize=args.resize, batch_size=args.batch_size, device=args.device,
                   allow_download=args.allow_download)
    print(f"wrote {s.path}: mu, sigma of {s.n} images in {s.feature_space} (D={s.dim}), with its pipeline fingerprint")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from bench.score import ScoreRequest, parse_metrics, render, score

    req = ScoreRequest(gen=args.gen, ref=args.ref, metrics=parse_metrics(args.metrics),
                       feature_space=args.feature_space,
                       space_options=_key_values(args.feature_option, "--feature-option"), seed=args.seed,
                       batch_size=args.batch_size, bootstrap=args.bootstrap, resize=args.resize, device=args.device,
                       cache_dir=str(Path(args.store).parent / "cache"), allow_download=args.allow_download)
    print(render(score(req), args.format))
    return 0


def _register_stats(sub: Any) -> None:
    s = sub.add_parser("stats", help="write reference statistics (.npz of mu, sigma + pipeline fingerprint)",
                       description="Embed a folder of images, or items 0..N-1 of a dataset split, in a feature space "
                                   "and write mu, sigma, n and the pipeline fingerprint to an .npz, for "
                                   "`metrics.fd.reference_stats` or `bench score`. Exit 2 on bad input.")
    s.add_argument("source", metavar="REF_DIR|DATASET", help="a folder of images, or a dataset name (shapes, ...)")
    s.add_argument("-o", "--output", required=True, help="the .npz file to write")
    s.add_argument("--feature-space", default="shapes-clip", help="default shapes-clip; e.g. inception-v3, pixels")
    s.add_argument("--feature-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a feature-space option, as in a suite (weights=..., resize=clean, dim=64); repeatable")
    s.add_argument("--resolution", type=int, help="dataset: the image size to render / resize to")
    s.add_argument("--samples", type=int, help="dataset: N (items 0..N-1); folder: the first N files (default all)")
    s.add_argument("--split", default="eval", help="dataset split (default eval)")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a dataset option; repeatable")
    s.add_argument("--resize", type=int, metavar="R", help="folder: centre-crop and resize every image to R x R")
    s.add_argument("--batch-size", type=int, default=256, help="images per feature batch (default 256)")
    s.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, mps")
    s.add_argument("--allow-download", action="store_true", help="let the feature space download its weights")
    s.set_defaults(fn=_cmd_stats)


def _register_score(sub: Any) -> None:
    s = sub.add_parser("score", help="score a folder of images against a folder or a statistics file",
                       description="FD (with its bootstrap CI), KID, precision and recall of the images in GEN against "
                                   "REF (a folder, or an .npz of mu, sigma: FD only), with the metric functions of "
                                   "`bench run`. Exit 2 on bad input (empty folder, unreadable images, mixed sizes).")
    s.add_argument("gen", metavar="GEN", help="folder of generated images (png, jpg, webp; sorted names)")
    s.add_argument("ref", metavar="REF", help="folder of reference images, or a statistics .npz")
    s.add_argument("--metrics", default="fd", help="comma-separated: fd, kid, precision, recall (default fd)")
    s.add_argument("--feature-space", default="shapes-clip", help="default shapes-clip; e.g. inception-v3, pixels")
    s.add_argument("--feature-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a feature-space option, as in a suite; repeatable")
    s.add_argument("--format", choices=["md", "json"], default="md")
    s.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the KID subsets (default 0)")
    s.add_argument("--bootstrap", type=int, default=200, help="FD bootstrap resamples (default 200; 0: no CI)")
    s.add_argument("--batch-size", type=int, default=256, help="images per feature batch (default 256)")
    s.add_argument("--resize", type=int, metavar="R", help="centre-crop and resize every image to R x R (PIL bicubic)")
    s.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, mps")
    s.add_argument("--store", default=DEFAULT_STORE, help="reference features are cached next to this store")
    s.add_argument("--allow-download", action="store_true", help="let the feature space download its weights")
    s.set_defaults(fn=_cmd_score)


# ------------------------------------------------------------------------------------------- the parser
# Every subcommand is wired the same way: a `register(subparsers)` function adds its parser and sets
# `fn=<command function>`; `main` calls `args.fn(args)`, whose int is the exit code, and turns a BenchError from
# any of them into one line on stderr and exit 2. Commands that live with their module (baseline/gate in
# bench.gate, report in bench.report.command) export `register_cli` of the same shape.


def _register_run(sub: Any) -> None:
    r = sub.add_parser("run", help="run a suite (resumes: finished cells are not recomputed)",
                       description="Plan a suite into cells and run each in an isolated worker; results are "
                                   "committed to the store per cell. Exit 0 all done, 1 some cell failed, 2 bad input.")
    r.add_argument("suite", help="suite YAML file, e.g. suites/nfe_sweep.yaml")
    r.add_argument("--store", default=DEFAULT_STORE, help=f"results database (default {DEFAULT_STORE})")
    r.add_argument("--dry-run", action="store_true", help="print the plan (one row per cell) and exit")
    r.add_argument("--force", action="store_true", help="recompute cells already done in the store")
    r.add_argument("--jobs", type=int, default=1, help="worker processes in parallel (default 1: fair timings)")
    r.add_argument("--isolate", action="store_true", help="a fresh worker process for every cell")
    r.add_argument("--devices", default="auto", metavar="auto|none|0,1,...",
                   help="GPUs the local workers spread over, one per worker (CUDA_VISIBLE_DEVICES): auto (default) "
                        "= every visible GPU when there are several and --jobs > 1, so --jobs 8 on 8 GPUs runs a "
                        "sharded cuda cell's shards one per GPU; none = every worker sees every GPU; or a list. "
                        "A suite with cells that name cuda:N runs unpinned")
    r.add_argument("--executor", default="local", choices=["local", "ray"], help="where cells run")
    r.add_argument("--address", default=None, help="Ray cluster address (with --executor ray)")
    r.add_argument("--allow-download", action="store_true", help="let feature extractors download weights")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--report", metavar="PATH", help="write the HTML report here (default: the suite's report.out, "
                                                    "else <store folder>/reports/<suite>.html)")
    r.add_argument("--no-report", action="store_true", help="write no HTML report (bench report writes one later)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite field for this run (VALUE is YAML; repeatable), e.g. --set base_seed=1000000 "
                        "--set axes.resolution=[16]; recorded with the run, and part of every cell key it changes")
    r.set_defaults(fn=_cmd_run)


def _register_export(sub: Any) -> None:
    e = sub.add_parser("export", help="write results as one tidy table (csv, parquet, json)")
    e.add_argument("--store", default=DEFAULT_STORE)
    g = e.add_mutually_exclusive_group()
    g.add_argument("--run", help="run id (default: the latest run)")
    g.add_argument("--suite", help="latest run of this suite")
    e.add_argument("--format", choices=["csv", "parquet", "json"], default="csv")
    e.add_argument("-o", "--output", help="output file (default stdout; required for parquet)")
    e.set_defaults(fn=_cmd_export)


def _register_runs(sub: Any) -> None:
    r = sub.add_parser("runs", help="list, show or remove the runs of a store",
                       description="bench runs [list]: every run with its status and cell counts; bench runs show ID "
                                   "(or latest): its cells and their status; bench runs rm ID: remove a run (its "
                                   "cell results stay for reuse). A run whose driver was killed shows as "
                                   "interrupted. Exit 2 on bad input.")
    r.add_argument("action", nargs="?", default="list", choices=["list", "show", "rm"])
    r.add_argument("run_id", nargs="?", help="run id, or latest")
    r.add_argument("--store", default=DEFAULT_STORE, help=f"results database (default {DEFAULT_STORE})")
    r.set_defaults(fn=_cmd_runs)


def _cmd_merge(args: argparse.Namespace) -> int:
    from bench.merge import merge_stores

    res = merge_stores(args.stores, args.out)
    if res.conflicts:
        print(f"bench: error: {len(res.conflicts)} conflict(s) between the stores; nothing written to {args.out}",
              file=sys.stderr)
        for c in res.conflicts:
            print(f"  {c}", file=sys.stderr)
        return 2
    for note in res.notes:
        print(f"note: {note}")
    print(f"merged {len(args.stores)} store(s) into {res.out}: {res.runs} run(s), {res.cells} cell(s) "
          f"({res.shared} present in several stores, identical)")
    if res.combined:
        print(f"run {res.combined} holds every merged cell (report, export and gate read it by default)")
    return 0


def _register_merge(sub: Any) -> None:
    m = sub.add_parser("merge", help="merge stores from several machines into one new store",
                       description="bench merge STORE... -o OUT: the runs, cells, metrics, per-image evidence and "
                                   "saved samples of every STORE in one new store OUT. A cell key in several stores "
                                   "must hold the same result (status, counted NFE, every metric's value, interval "
                                   "and N, the same evidence): otherwise every conflict is listed, nothing is "
                                   "written and the exit code is 2. A cell done in one store and failed in another "
                                   "is kept as done. When every run is of one suite, a new run holding all their cells "
                                   "is added last, so report, export and gate see the whole sweep. The inputs are "
                                   "never modified.")
    m.add_argument("stores", nargs="+", help="results databases to merge")
    m.add_argument("-o", "--out", required=True, help="the new merged store (must not exist)")
    m.set_defaults(fn=_cmd_merge)


def _cmd_check(args: argparse.Namespace) -> int:
    from bench.check import check_adapter

    try:
        options = json.loads(args.options) if args.options else {}
    except ValueError as e:
        raise BenchError(f"--options {args.options!r} is not JSON ({e}); e.g. --options '{{\"steps\": 4}}'") from None
    if not isinstance(options, dict):
        raise BenchError(f"--options must be a JSON object of keyword arguments, got {type(options).__name__}")
    checks = check_adapter(args.adapter, options, nfe=args.nfe, resolution=args.resolution, hardware=args.hardware,
                           images=args.images, guidance=args.guidance)
    for c in checks:
        print(c.line())
    failed = [c.name for c in checks if c.status == "FAIL"]
    print(f"{args.adapter}: {'FAILED ' + ', '.join(failed) if failed else 'all checks passed'}")
    return 1 if failed else 0


def _register_check(sub: Any) -> None:
    c = sub.add_parser("check", help="check a sampler adapter on a few images before a sweep",
                       description="Build, load and sample an adapter on a few images and check what the worker "
                                   "checks in every cell: the output contract, counted NFE, batch-size invariance, "
                                   "repeatability and the determinism probe (bench/contract.py). One line per "
                                   "check. Exit 0 all passed, 1 a check failed, 2 bad input.")
    c.add_argument("adapter", help="registered name (bench list samplers) or module.path:ClassName")
    c.add_argument("--options", help="the suite's options: as JSON, e.g. '{\"components\": 4}'")
    c.add_argument("--nfe", type=int, help="requested steps (default 4, or the nearest count it supports)")
    c.add_argument("--resolution", type=int, help="image size (default: the smallest it supports, else 16)")
    c.add_argument("--hardware", default="cpu", help="hardware spec (default cpu)")
    c.add_argument("--guidance", type=float, help="guidance scale w (default: none, the sampler's own)")
    c.add_argument("--images", type=int, default=4, help="images per batch (default 4)")
    c.set_defaults(fn=_cmd_check)


def _register_list(sub: Any) -> None:
    ls = sub.add_parser("list", help="list registered samplers, datasets or metrics")
    ls.add_argument("what", choices=["samplers", "datasets", "metrics"])
    ls.set_defaults(fn=_cmd_list)


def _register_recipes(sub: Any) -> None:
    rc = sub.add_parser("recipes", help="print the real-model recipes (scheduler, timesteps, eta, guidance, ...) "
                                        "per checkpoint and step count, with their sources")
    rc.add_argument("family", nargs="?", help="one table, e.g. hyper-sd (default: all)")
    rc.set_defaults(fn=_cmd_recipes)


def _register_doctor(sub: Any) -> None:
    d = sub.add_parser("doctor", help="print the hardware fingerprint and what is available offline")
    d.set_defaults(fn=_cmd_doctor)


def _register_schema(sub: Any) -> None:
    s = sub.add_parser("schema", help="print the JSON schema of suite files (for editors)")
    s.add_argument("-o", "--output")
    s.set_defaults(fn=_cmd_schema)


def _register_zoo(sub: Any) -> None:
    z = sub.add_parser("zoo", help="embedded reference models: train, verify, card")
    zs = z.add_subparsers(dest="zoo_cmd", required=True, metavar="ZOO_COMMAND")
    zt = zs.add_parser("train", help="reproduce a zoo checkpoint from its recorded recipe")
    zt.add_argument("model")
    zt.add_argument("--out", default=None, help="output folder (default: the package's weights folder)")
    zt.add_argument("--device", default=None, help="cuda when available, else cpu")
    zs.add_parser("verify", help="check shipped weights against their recorded hashes")
    zs.add_parser("card", help="print each model's recipe, size and measured quality")
    z.set_defaults(fn=_cmd_zoo)


def _registrars() -> list[Callable[[Any], None]]:
    """Every subcommand's `register(subparsers)`, in the order `bench --help` lists them."""
    from bench.gate import register_cli as register_baseline_and_gate
    from bench.report.command import register_cli as register_report

    return [_register_run, _register_runs, _register_export, _register_list, _register_recipes, _register_doctor,
            _register_schema, _register_zoo, _register_check, _register_stats, _register_score, _register_merge,
            register_baseline_and_gate, register_report]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench",
        description="Benchmark few-step image samplers (flow maps, distilled samplers, ODE solvers) on equal "
                    "terms across NFE x resolution x hardware.",
        epilog="Start with: bench run suites/smoke.yaml   (see README.md)",
    )
    from bench import __version__

    p.add_argument("--version", action="version", version=f"flowmap-bench {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for register in _registrars():
        register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    import logging

    # torch.utils.cpp_extension warns "No CUDA runtime is found" on every CPU-only import: not news to users.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except BenchError as e:
        print(f"bench: error: {_one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except sqlite3.DatabaseError as e:  # a store damaged in a way its opener did not catch: still one line
        store = getattr(args, "store", None)
        print(f"bench: error: results store {store}: {_one_line(str(e))} (is it a flowmap-bench store? pass "
              "another --store)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted (finished cells are saved; rerun to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `bench export | head`
        sys.stderr.close()
        return 0


def _one_line(text: str) -> str:
    """An error message on one line: control characters from user input (a key with a newline) shown escaped."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text)


def _entry() -> Any:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
