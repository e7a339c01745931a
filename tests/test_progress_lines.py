"""Progress inside a cell: images sampled with rate and ETA on a terminal, periodic lines in CI logs."""

from __future__ import annotations

from bench.cli import main
from bench.run import CellProgress


def test_cell_progress_counts_images_and_restarts_per_cell():
    p = CellProgress()
    assert p.update("a", "load") == "load"
    assert p.update("a", "sample") == "sample"
    text = p.update("a", "sample 250/1000")
    assert text.startswith("sampled 250/1000 images, ") and "img/s, sampling eta " in text
    assert (p.done, p.total) == (250, 1000)
    assert p.update("b", "latency") == "latency" and (p.label, p.done, p.total) == ("b", 0, 0)


def test_a_run_without_a_terminal_prints_image_progress_lines(tiny_suite, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_PROGRESS_INTERVAL", "0")  # every message becomes a line (default: every 30 s)
    suite = tiny_suite("- {id: euler, adapter: analytic-euler, options: {components: 4}}", samples=64)
    assert main(["run", str(suite), "--store", str(tmp_path / "r.sqlite")]) == 0
    err = capsys.readouterr().err  # captured: not a terminal
    lines = [ln for ln in err.splitlines() if "sampled" in ln]
    # batch_size 16: 4 batches per cell, 3 cells (nfe 1, 2, 4); each line names the cell and counts images
    assert len(lines) == 12 and all("euler" in ln and "nfe=" in ln for ln in lines), err
    assert sum("sampled 64/64 images" in ln for ln in lines) == 3
    assert "[3/3]" in err  # the per-cell line still closes each cell
