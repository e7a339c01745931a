"""Folders of images: one reader (PNG / JPEG / WebP through PIL, sorted names, RGB) and the `folder` dataset.

    dataset: {name: folder, path: /data/imagenet64-val}            # a suite's reference images
    bench stats /data/ref -o ref.npz;  bench score samples/ /data/ref   # the same reader

The reader refuses what it cannot score honestly instead of guessing: an empty folder, files PIL cannot decode
(one line naming the first and the count), and images of different sizes unless a resize is asked for
(`resize: true` / `--resize R`: centre-crop to a square, then PIL bicubic to R x R, as the `prompts` dataset
does). Fitting images to a feature space's input (299 for Inception, ...) is the feature space's job, not the
reader's. A folder has no conditions (`conditioning: none`) and no matched draws (disjoint-block noise floor).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.datasets import Conditions
from bench.errors import BenchError

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VERSION = "v1"
FILE_UINT8 = "decoded image files (PIL, RGB)"  # the uint8 rule of a folder's images, for pipeline fingerprints


def image_files(folder: str | Path) -> list[Path]:
    """The image files under `folder` (recursive), sorted by their path relative to it; BenchError if none."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise BenchError(f"{root}: no such folder of images")
    files = sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: str(p.relative_to(root)))
    if not files:
        raise BenchError(f"{root}: no images (looked for {', '.join(IMAGE_SUFFIXES)} files, recursively); "
                         "nothing was scored")
    return files


@dataclass(frozen=True)
class FolderScan:
    """The files of a folder and each one's (width, height), read from the headers only (cheap)."""

    root: Path
    files: list[Path]
    sizes: list[tuple[int, int]]

    @property
    def uniform_size(self) -> tuple[int, int] | None:
        """(width, height) when every image has it, else None."""
        return self.sizes[0] if len(set(self.sizes)) == 1 else None

    def digest(self) -> str:
        """Identity of the folder's contents for cache keys: names, byte sizes and modification times."""
        h = hashlib.sha256()
        for p in self.files:
            st = p.stat()
            h.update(f"{p.relative_to(self.root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


def _unreadable(root: Path, bad: list[tuple[Path, str]], total: int) -> BenchError:
    first, why = bad[0]
    return BenchError(f"{root}: {len(bad)} of {total} image files cannot be read (first: {first.relative_to(root)}: "
                      f"{why}); nothing was scored: remove or fix them")


def _why(e: Exception) -> str:
    return (str(e).splitlines() or [""])[0] or type(e).__name__


def scan_folder(folder: str | Path, allow_mixed: bool = False) -> FolderScan:
    """List and size-check a folder: unreadable headers and (unless `allow_mixed`: a resize will follow) images
    of different sizes are one-line errors."""
    from PIL import Image, UnidentifiedImageError

    files = image_files(folder)
    root = Path(folder).expanduser()
    sizes: list[tuple[int, int]] = []
    bad: list[tuple[Path, str]] = []
    for p in files:
        try:
            with Image.open(p) as im:
                sizes.append((int(im.size[0]), int(im.size[1])))
        except (OSError, UnidentifiedImageError, ValueError) as e:
            bad.append((p, _why(e)))
    if bad:
        raise _unreadable(root, bad, len(files))
    scan = FolderScan(root, files, sizes)
    if not allow_mixed and scan.uniform_size is None:
        counts: dict[tuple[int, int], list[Path]] = {}
        for p, s in zip(files, sizes, strict=True):
            counts.setdefault(s, []).append(p)
        top = sorted(counts.items(), key=lambda kv: -len(kv[1]))[:3]
        what = "; ".join(f"{w}x{h}: {len(ps)} (e.g. {ps[0].relative_to(root)})" for (w, h), ps in top)
        raise BenchError(f"{root}: images of {len(counts)} different sizes ({what}); nothing was scored: pass "
                         "--resize R (suite: resize: true) to centre-crop and resize every image to R x R")
    return scan


def read_images(scan: FolderScan, indices: Sequence[int], size: int | None = None) -> torch.Tensor:
    """uint8 (N, 3, H, W) images of `scan.files[indices]` in RGB; with `size`, centre-cropped and resized (PIL
    bicubic) to size x size. Files that fail to decode are collected and reported in one line."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    arrays: list[np.ndarray] = []
    bad: list[tuple[Path, str]] = []
    for i in indices:
        p = scan.files[int(i)]
        try:
            with Image.open(p) as im:
                rgb = im.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as e:
            bad.append((p, _why(e)))
            continue
        if size is not None and rgb.size != (size, size):
            w, h = rgb.size
            s = min(w, h)
            left, top = (w - s) // 2, (h - s) // 2
            rgb = rgb.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(rgb, dtype=np.uint8))
    if bad:
        raise _unreadable(scan.root, bad, len(indices))
    if arrays and len({a.shape for a in arrays}) > 1:
        raise BenchError(f"{scan.root}: images of different sizes; pass --resize R (suite: resize: true)")
    if not arrays:
        return torch.zeros((0, 3, size or 1, size or 1), dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class FolderDataset:
    """Dataset `folder`: reference image i is file i of the sorted folder; no conditions.

    `resize: true` centre-crops and resizes (PIL bicubic) every image to the cell's resolution; without it the
    images must already be R x R at the cell's resolution R (else a one-line error)."""

    name = "folder"
    conditioning = "none"
    uint8_rule = FILE_UINT8

    def __init__(self, path: str, split: str = "eval", resize: bool = False) -> None:
        if not isinstance(resize, bool):
            raise BenchError(f"dataset folder: resize must be true or false, got {resize!r}")
        self.split, self.resize = split, resize
        self.scan = scan_folder(path, allow_mixed=resize)

    def __len__(self) -> int:
        return len(self.scan.files)

    def key(self) -> str:
        return (f"folder(path={self.scan.root.resolve()},files={len(self.scan.files)},"
                f"sha={self.scan.digest()[:16]},resize={self.resize},{VERSION})")

    def conditions(self, indices: Sequence[int]) -> Conditions:
        return Conditions()

    def images(self, indices: Sequence[int], resolution: int) -> torch.Tensor:
        n = len(self.scan.files)
        if indices and max(indices) >= n:
            raise BenchError(f"dataset folder: reference image {max(indices)} needed but {self.scan.root} holds {n} "
                             "images (the FD noise floor needs 2x samples; or fd: {noise_floor: false})")
        if not self.resize:
            w, h = self.scan.uniform_size or (0, 0)
            if (w, h) != (resolution, resolution):
                raise BenchError(f"dataset folder: {self.scan.root} holds {w}x{h} images but the cell's resolution "
                                 f"is {resolution}; set resize: true to centre-crop and resize them")
            return read_images(self.scan, indices)
        return read_images(self.scan, indices, int(resolution))
