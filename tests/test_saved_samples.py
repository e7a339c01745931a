"""save_samples: the saved PNGs are bit-identical to the tensor the metrics scored, the sidecar lists them with
their index, seed and condition, a failed save leaves no listing, and bad options are refused at load."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bench
from bench.cli import main
from bench.datasets import build_dataset
from bench.errors import BenchError
from bench.runtime import image_seeds
from bench.samples import SIDECAR, file_name, read_sidecar, save_samples
from bench.suite import parse_suite

SUITE = """
name: saved
dataset: {{name: gmm, split: eval, components: 4}}
samples: 10
base_seed: {seed}
batch_size: 4
samplers:
  - {{id: euler, adapter: analytic-euler}}
axes: {{nfe: [2], resolution: [4], hardware: [cpu]}}
metrics:
  tests.plugins.metrics:sample_stats: {{}}
report: {{grid: 2, enabled: false}}
save_samples: {save}
"""


def _decode(folder: Path, rows: list[dict]) -> torch.Tensor:
    arrays = [np.asarray(Image.open(folder / r["file"]).convert("RGB")) for r in rows]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _run(write_suite, tmp_path: Path, seed: int, save: str) -> tuple[Path, dict, dict]:
    suite = write_suite(SUITE.format(seed=seed, save=save), f"saved-{seed}.yaml")
    store = tmp_path / f"s{seed}.sqlite"
    assert main(["run", str(suite), "--store", str(store), "--no-progress", "--no-report"]) == 0
    df = bench.load_results(str(store))
    row = df[df.metric == "pixel_mean"].iloc[0]
    with sqlite3.connect(store) as db:
        info = json.loads(db.execute("SELECT info FROM cells WHERE cell_key = ?", (row.cell_key,)).fetchone()[0])
    prov = row.provenance if isinstance(row.provenance, dict) else json.loads(row.provenance)
    return Path(row.samples_dir), prov, info


def test_saved_images_are_what_the_metric_scored(write_suite, tmp_path):
    samples_dir, prov, info = _run(write_suite, tmp_path, 3, "{format: png}")
    saved = info["saved_samples"]
    assert (saved["count"], saved["format"], saved["max"]) == (10, "png", None)
    folder = samples_dir / saved["folder"]
    rows = read_sidecar(folder)
    indices = list(range(10))
    seeds = image_seeds(3, indices)
    cond = build_dataset("gmm", {"split": "eval", "components": 4}).conditions(indices)
    assert rows == [{"index": i, "seed": s, "file": file_name(i, s), "prompt": p, "label": lab}
                    for i, s, p, lab in zip(indices, seeds, cond.prompts, cond.labels, strict=True)]
    assert rows[3]["file"] == "000003-seed6.png"
    assert sorted(p.name for p in folder.iterdir()) == sorted([r["file"] for r in rows] + [SIDECAR])
    images = _decode(folder, rows)
    assert images.dtype == torch.uint8 and images.shape == (10, 3, 4, 4)
    # sample_stats hashed the uint8 tensor the metrics were given (tests/plugins/metrics.py)
    assert hashlib.sha256(images.numpy().tobytes()).hexdigest() == prov["sha256"]


def test_max_keeps_the_first_images_by_index(write_suite, tmp_path):
    samples_dir, prov, info = _run(write_suite, tmp_path, 7, "{max: 4}")
    folder = samples_dir / info["saved_samples"]["folder"]
    rows = read_sidecar(folder)
    assert [r["index"] for r in rows] == [0, 1, 2, 3] and [r["seed"] for r in rows] == [7, 8, 9, 10]
    assert len(list(folder.glob("*.png"))) == 4
    assert hashlib.sha256(_decode(folder, rows).numpy().tobytes()).hexdigest() != prov["sha256"]  # 4 of 10


def test_a_failed_save_leaves_no_listing(tmp_path):
    good = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    save_samples(tmp_path, good, [0, 1], [10, 11], prompts=["a", "b"])
    assert [r["prompt"] for r in read_sidecar(tmp_path)] == ["a", "b"]
    broken = [good[0], good[1], torch.zeros(5, 4, 4, dtype=torch.uint8)]  # PIL cannot write 5 channels
    with pytest.raises((TypeError, ValueError, OSError)):
        save_samples(tmp_path, broken, [0, 1, 2], [10, 11, 12])
    assert not (tmp_path / SIDECAR).exists()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    save_samples(tmp_path, good[:1], [0], [10])  # a smaller save lists only its own files and removes the rest
    assert [p.name for p in tmp_path.glob("*.png")] == [file_name(0, 10)]


@pytest.mark.parametrize("value, line_key, fragment", [
    ("{format: jpg}", "save_samples.format", "'png'"),
    ("{max: 0}", "save_samples.max", "greater than 0"),
    ("{maximum: 3}", "save_samples.maximum", "unknown key"),
])
def test_bad_save_samples_is_one_located_line(value, line_key, fragment):
    with pytest.raises(BenchError) as e:
        parse_suite(SUITE.format(seed=0, save=value).lstrip(), "s.yaml")
    assert str(e.value).startswith(f"s.yaml:12: {line_key}: ") and fragment in str(e.value), str(e.value)


def test_save_samples_is_in_the_cell_key_only_when_set():
    from bench.plan import plan

    off = plan(parse_suite(SUITE.format(seed=0, save="null").lstrip()), check_hardware=False)[0]
    on = plan(parse_suite(SUITE.format(seed=0, save="{max: 2}").lstrip()), check_hardware=False)[0]
    assert "save_samples" not in off.spec.to_dict() and on.spec.to_dict()["save_samples"] == {"format": "png", "max": 2}
    assert off.key != on.key


def test_ray_brings_saved_samples_back_into_their_subfolder(tmp_path):
    """A remote Ray actor returns the cell's files by relative path; the driver places saved/ under the cell."""
    from bench.executors.ray import write_missing

    files = {"000.png": b"grid", "saved/000000-seed0.png": b"img", "saved/samples.jsonl": b"{}\n",
             "../outside.png": b"no", "/abs.png": b"no"}
    write_missing(tmp_path / "cell", files)
    got = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert got == {"cell/000.png": b"grid", "cell/saved/000000-seed0.png": b"img", "cell/saved/samples.jsonl": b"{}\n"}
