"""`bench score GEN REF`: two folders give clean-fid's FID on the same features; a stats file made by `bench stats`
from REF gives the folder's FD; every bad input is one line and exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main


def _write(folder, images, start=0, suffix="png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(folder / f"{start + i:04d}.{suffix}")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """GEN: 120 train-split shapes; REF: 150 eval-split shapes (16 x 16 PNGs)."""
    from bench.zoo.shapes import ShapesDataset

    root = tmp_path_factory.mktemp("score")
    gen = _write(root / "gen", ShapesDataset("train").images(list(range(120)), 16))
    ref = _write(root / "ref", ShapesDataset("eval").images(list(range(150)), 16))
    return root, gen, ref


def _score(capsys, *argv):
    assert main(["score", *map(str, argv), "--format", "json"]) == 0
    return {r["metric"]: r for r in json.loads(capsys.readouterr().out)}


class _PixelsForCleanFid(torch.nn.Module):
    """Our `pixels` space as clean-fid's custom feature extractor (clean-fid hands it floats in [0, 255])."""

    def __init__(self, space):
        super().__init__()
        self.space = space

    def forward(self, x):
        return self.space.embed_batch(x.round().clamp(0, 255).to(torch.uint8))


def test_two_folders_equal_clean_fid_compute_fid_on_the_same_features(folders, capsys):
    from cleanfid.fid import compute_fid

    from bench.metrics.features import build_feature_space

    root, gen, ref = folders
    got = _score(capsys, gen, ref, "--feature-space", "pixels", "--metrics", "fd,kid,precision,recall",
                 "--store", root / "runs" / "s.sqlite")
    expected = compute_fid(str(gen), str(ref), mode="clean", custom_feat_extractor=_PixelsForCleanFid(
        build_feature_space("pixels")), custom_fn_resize=lambda a: a, device=torch.device("cpu"), num_workers=0,
        batch_size=64, verbose=False, use_dataparallel=False)
    fd = got["fd"]
    assert abs(fd["value"] - expected) <= 1e-6 * expected and expected > 0.1
    assert fd["n"] == 120 and fd["provenance"]["reference"]["n"] == 150  # every REF image is the reference
    assert fd["ci_low"] <= fd["value"] <= fd["ci_high"]
    assert fd["provenance"]["fingerprint"]["uint8"].startswith("decoded image files")
    assert set(got) == {"fd", "kid", "precision", "recall"}
    assert all(0 <= got[m]["value"] <= 1 for m in ("precision", "recall"))


def test_a_stats_file_of_ref_gives_the_folders_fd(folders, capsys, tmp_path):
    root, gen, ref = folders
    stats = tmp_path / "ref.npz"
    assert main(["stats", str(ref), "--feature-space", "pixels", "-o", str(stats)]) == 0
    capsys.readouterr()
    store = root / "runs" / "s.sqlite"
    a = _score(capsys, gen, ref, "--feature-space", "pixels", "--store", store)["fd"]
    b = _score(capsys, gen, stats, "--feature-space", "pixels", "--store", store)["fd"]
    assert abs(a["value"] - b["value"]) <= 1e-9 * a["value"]
    assert b["provenance"]["comparable"] is True and b["provenance"]["reference"]["layout"] == "bench"
    # Another resize filter in the file: the table says it is not comparable.
    clean = tmp_path / "clean.npz"
    assert main(["stats", str(ref), "--feature-space", "pixels", "--feature-option", "resize=clean",
                 "-o", str(clean)]) == 0
    capsys.readouterr()
    assert main(["score", str(gen), str(clean), "--feature-space", "pixels", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "| fd |" in out and "not comparable with clean.npz: preprocessing" in out


def test_resize_brings_mixed_sizes_to_one(folders, capsys, tmp_path):
    from bench.zoo.shapes import ShapesDataset

    _, _, ref = folders
    mixed = _write(tmp_path / "mixed", ShapesDataset("train").images(list(range(70)), 16))
    _write(mixed, ShapesDataset("train").images(list(range(70, 140)), 24), start=70, suffix="jpg")
    got = _score(capsys, mixed, ref, "--feature-space", "pixels", "--resize", "16", "--bootstrap", "0",
                 "--store", tmp_path / "s.sqlite")
    assert got["fd"]["n"] == 140 and got["fd"]["provenance"]["resolution"] == 16


def test_bad_input_is_one_line_exit_2(folders, capsys, tmp_path):
    from bench.zoo.shapes import ShapesDataset

    _, gen, ref = folders
    (tmp_path / "empty").mkdir()
    bad = _write(tmp_path / "bad", ShapesDataset("eval").images(list(range(3)), 16))
    (bad / "0001.png").write_bytes(b"not a png")
    (bad / "0002.jpg").write_bytes(b"")
    mixed = _write(tmp_path / "mixed", ShapesDataset("eval").images(list(range(3)), 16))
    _write(mixed, ShapesDataset("eval").images([3], 24), start=3)
    big = _write(tmp_path / "big", ShapesDataset("eval").images(list(range(3)), 24))
    wide = tmp_path / "wide"
    wide.mkdir()
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(wide / "a.png")
    np.savez(tmp_path / "s.npz", mu=np.zeros(64), sigma=np.eye(64))
    cases = [
        ([tmp_path / "empty", ref], "no images"),
        ([tmp_path / "nowhere", ref], "no such folder of images"),
        ([bad, ref], "2 of 4 image files cannot be read (first: 0001.png"),
        ([mixed, ref], "images of 2 different sizes (16x16: 3 (e.g. 0000.png); 24x24: 1 (e.g. 0003.png)); nothing "
                       "was scored: pass --resize R"),
        ([big, ref], "holds 24x24 images and REF"),
        ([wide, ref], "images are 20x16, not square"),
        ([gen, tmp_path / "s.npz", "--metrics", "fd,kid"], "kid needs reference images; nothing was scored"),
        ([gen, ref, "--metrics", "fd,cmmd"], "--metrics 'fd,cmmd': choose from fd, kid, precision, recall"),
        ([gen, tmp_path / "text.npz"], "text.npz: no such folder of images"),
    ]
    for argv, message in cases:
        assert main(["score", *map(str, argv), "--feature-space", "pixels",
                     "--store", str(tmp_path / "r" / "s.sqlite")]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (argv, err)


def test_folder_dataset_serves_reference_images_at_the_cells_resolution(folders, tmp_path):
    from bench.datasets import build_dataset
    from bench.errors import BenchError
    from bench.zoo.shapes import ShapesDataset

    _, _, ref = folders
    ds = build_dataset("folder", {"split": "eval", "path": str(ref)})
    want = ShapesDataset("eval").images([0, 5], 16)
    assert torch.equal(ds.images([0, 5], 16), want)  # PNG round trip is lossless
    assert ds.conditions([0, 1]).prompts is None and str(ref.resolve()) in ds.key()
    with pytest.raises(BenchError, match="holds 16x16 images but the cell's resolution is 8; set resize: true"):
        ds.images([0], 8)
    assert build_dataset("folder", {"path": str(ref), "resize": True}).images([0, 1], 8).shape == (2, 3, 8, 8)
    with pytest.raises(BenchError, match=r"reference image 150 needed but .* holds 150 images"):
        ds.images([150], 16)
