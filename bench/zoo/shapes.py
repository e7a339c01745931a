"""The `shapes` world: procedural RGB images of coloured shapes with underspecified captions.

Every item is a pure function of its seed: attributes come from a counter-based hash of (seed, field), so
attribute sampling is vectorised and identical in training and evaluation, and the image of a seed is the
same scene at every resolution (geometry lives in [0, 1]^2 and is rasterised per resolution with signed
distance functions and one-pixel analytic anti-aliasing, in float64 on the CPU).

Scene: a background (a low-saturation tint, half the time a linear gradient between two tints), one *main*
shape (kind x colour x 3x3 region with jitter x size, small rotation) and, half the time, a light-grey
*distractor* shape in another region. The caption always names the main shape's colour and kind, names its
size and its position each with probability 1/2, and never mentions the distractor, so one caption has a
genuinely multimodal set of images.

Splits are disjoint seed ranges: train seeds are [0, EVAL_SEED_OFFSET), eval item i has seed
EVAL_SEED_OFFSET + i.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from bench.datasets import Conditions
from bench.runtime import to_uint8

VERSION = "shapes-v2"  # v2: quantised by bench.runtime.to_uint8 (float32; v1 rounded in float64: a few pixels moved)
EVAL_SEED_OFFSET = 1_000_000_000
MATCHED_SEED_BASE = 2**62  # seeds of condition-matched draws (see matched_seeds); item seeds are below 2^40
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow", "purple", "cyan")
COLOUR_RGB = np.array(
    [
        [0.90, 0.12, 0.12],
        [0.15, 0.75, 0.20],
        [0.15, 0.30, 0.95],
        [0.95, 0.88, 0.12],
        [0.62, 0.20, 0.85],
        [0.10, 0.82, 0.88],
    ]
)
SIZES = ("small", "large")
SIZE_RADIUS = (0.125, 0.2)  # in image widths
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
POSITION_PHRASES = (
    "at the top left", "at the top", "at the top right",
    "on the left", "in the center", "on the right",
    "at the bottom left", "at the bottom", "at the bottom right",
)
REGION_CENTRES = (0.2, 0.5, 0.8)
JITTER = 0.04
ATTRIBUTES = ("colour", "shape", "position", "size")

# Field numbers of the counter-based generator (never renumber: that changes every image).
_F = {name: k for k, name in enumerate((
    "colour", "shape", "size", "region", "jx", "jy", "radius", "angle", "cr", "cg", "cb",
    "say_size", "say_pos", "distractor", "d_shape", "d_region", "d_jx", "d_jy", "d_angle", "d_grey",
    "bg_h1", "bg_s1", "bg_v1", "bg_h2", "bg_s2", "bg_v2", "bg_grad", "bg_dir",
))}


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniform(seeds: np.ndarray, field: str) -> np.ndarray:
    """U[0, 1) per seed for one named field, a pure function of (seed, field)."""
    with np.errstate(over="ignore"):
        x = _splitmix64(_splitmix64(seeds.astype(np.uint64)) ^ np.uint64((_F[field] * 0x632BE59BD9B4E019 + 1) % 2**64))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def _choice(seeds: np.ndarray, field: str, n: int) -> np.ndarray:
    return np.minimum((_uniform(seeds, field) * n).astype(np.int64), n - 1)


@dataclass
class Scenes:
    """Attributes of a batch of scenes (numpy arrays of length N). Geometry in image widths, y downwards."""

    seeds: np.ndarray
    colour: np.ndarray
    shape: np.ndarray
    size: np.ndarray
    region: np.ndarray
    say_size: np.ndarray
    say_pos: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    rgb: np.ndarray  # (N, 3)
    distractor: np.ndarray
    d_shape: np.ndarray
    d_cx: np.ndarray
    d_cy: np.ndarray
    d_angle: np.ndarray
    d_grey: np.ndarray
    bg1: np.ndarray  # (N, 3)
    bg2: np.ndarray  # (N, 3)
    bg_dir: np.ndarray  # (N, 2) unit vector; bg2 == bg1 when flat

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, sl: slice) -> Scenes:
        """The scenes of a slice (every attribute array sliced the same way)."""
        return Scenes(**{f.name: getattr(self, f.name)[sl] for f in fields(self)})

    def captions(self) -> list[str]:
        return [
            caption(int(c), int(s), int(z) if zs else None, int(p) if ps else None)
            for c, s, z, p, zs, ps in zip(self.colour, self.shape, self.size, self.region,
                                          self.say_size, self.say_pos, strict=True)
        ]


def caption(colour: int, shape: int, size: int | None = None, position: int | None = None) -> str:
    """'a [small|large] <colour> <shape>[ <position phrase>]'."""
    words = ["a"]
    if size is not None:
        words.append(SIZES[size])
    words += [COLOURS[colour], SHAPES[shape]]
    if position is not None:
        words.append(POSITION_PHRASES[position])
    return " ".join(words)


def all_captions() -> list[str]:
    """Every caption the grammar can produce (6 x 4 x 3 x 10 = 720)."""
    sizes: list[int | None] = [None, 0, 1]
    positions: list[int | None] = [None, *range(9)]
    return [caption(c, s, z, p) for c in range(len(COLOURS)) for s in range(len(SHAPES))
            for z in sizes for p in positions]


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    k = (np.stack([np.full_like(h, 5.0), np.full_like(h, 3.0), np.full_like(h, 1.0)], -1) + h[:, None] * 6) % 6
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def scenes(seeds: Sequence[int] | np.ndarray, keep_caption_of: Scenes | None = None) -> Scenes:
    """The scene attributes of each seed (vectorised; independent of batch composition and resolution).

    With `keep_caption_of`, scene i keeps what the caption of `keep_caption_of[i]` fixes (colour, shape, whether
    size and position are named, and the named size word / 3x3 region) and draws everything else from its own
    seed: the unnamed size or region, the jitter within the region, the radius within the size word, rotation,
    colour jitter, the distractor and the background. Attributes are independent, so that is a draw from the
    scenes given the caption.
    """
    sd = np.asarray(seeds, dtype=np.int64)
    if (sd < 0).any():
        raise ValueError("shapes seeds must be non-negative")
    u = {f: _uniform(sd, f) for f in _F}
    colour = _choice(sd, "colour", len(COLOURS))
    shape = _choice(sd, "shape", len(SHAPES))
    size = _choice(sd, "size", 2)
    region = _choice(sd, "region", 9)
    say_size, say_pos = u["say_size"] < 0.5, u["say_pos"] < 0.5
    if keep_caption_of is not None:
        k = keep_caption_of
        if len(k) != len(sd):
            raise ValueError(f"keep_caption_of has {len(k)} scenes for {len(sd)} seeds")
        colour, shape, say_size, say_pos = k.colour, k.shape, k.say_size, k.say_pos
        size = np.where(say_size, k.size, size)
        region = np.where(say_pos, k.region, region)
    centres = np.array(REGION_CENTRES)
    cx = centres[region % 3] + (2 * u["jx"] - 1) * JITTER
    cy = centres[region // 3] + (2 * u["jy"] - 1) * JITTER
    radius = np.array(SIZE_RADIUS)[size] * (0.92 + 0.16 * u["radius"])
    angle = (2 * u["angle"] - 1) * 0.35
    rgb = np.clip(COLOUR_RGB[colour] + 0.08 * (np.stack([u["cr"], u["cg"], u["cb"]], -1) - 0.5), 0, 1)
    distractor = u["distractor"] < 0.5
    d_region = (region + 1 + _choice(sd, "d_region", 8)) % 9
    d_cx = centres[d_region % 3] + (2 * u["d_jx"] - 1) * JITTER
    d_cy = centres[d_region // 3] + (2 * u["d_jy"] - 1) * JITTER
    bg1 = _hsv_to_rgb(u["bg_h1"], 0.35 * u["bg_s1"], 0.12 + 0.38 * u["bg_v1"])
    bg2 = _hsv_to_rgb(u["bg_h2"], 0.35 * u["bg_s2"], 0.12 + 0.38 * u["bg_v2"])
    flat = u["bg_grad"] < 0.5
    bg2 = np.where(flat[:, None], bg1, bg2)
    theta = 2 * math.pi * u["bg_dir"]
    return Scenes(
        seeds=sd, colour=colour, shape=shape, size=size, region=region,
        say_size=say_size, say_pos=say_pos,
        cx=cx, cy=cy, radius=radius, angle=angle, rgb=rgb,
        distractor=distractor, d_shape=_choice(sd, "d_shape", len(SHAPES)), d_cx=d_cx, d_cy=d_cy,
        d_angle=(2 * u["d_angle"] - 1) * 0.35, d_grey=0.72 + 0.16 * u["d_grey"],
        bg1=bg1, bg2=bg2, bg_dir=np.stack([np.cos(theta), np.sin(theta)], -1),
    )


def _box(px: torch.Tensor, py: torch.Tensor, bx: torch.Tensor | float, by: torch.Tensor | float) -> torch.Tensor:
    qx, qy = px.abs() - bx, py.abs() - by
    outside = torch.sqrt(qx.clamp_min(0) ** 2 + qy.clamp_min(0) ** 2)
    return outside + torch.maximum(qx, qy).clamp_max(0)


def _triangle(px: torch.Tensor, py: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distance to an equilateral triangle of side 2r pointing up (py is upwards here)."""
    k = math.sqrt(3.0)
    px = px.abs() - r
    py = py + r / k
    flip = px + k * py > 0
    px, py = torch.where(flip, (px - k * py) / 2, px), torch.where(flip, (-k * px - py) / 2, py)
    px = px - torch.minimum(torch.maximum(px, -2 * r), torch.zeros_like(px))
    return -torch.sqrt(px**2 + py**2) * torch.sign(py)


def _sdf(kind: torch.Tensor, x: torch.Tensor, y: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor,
         r: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Signed distance (image widths) of N shapes on an (R, R) grid -> (N, R, R). y is downwards."""
    dx, dy = x - cx, y - cy
    ca, sa = torch.cos(angle), torch.sin(angle)
    px, py = ca * dx + sa * dy, -sa * dx + ca * dy
    d = torch.stack([
        torch.sqrt(dx**2 + dy**2) - r,
        _box(px, py, 0.85 * r, 0.85 * r),
        _triangle(px, -py, 1.05 * r),
        torch.minimum(_box(px, py, r, r / 3), _box(px, py, r / 3, r)),
    ])
    return torch.gather(d, 0, kind.view(1, -1, 1, 1).expand(1, *d.shape[1:]))[0]


def render(sc: Scenes, resolution: int, device: torch.device | str = "cpu",
           dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Rasterise scenes to float images in [0, 1], (N, 3, R, R). float64 on the CPU is the reference."""
    def t(a: np.ndarray) -> torch.Tensor:
        v = torch.as_tensor(np.asarray(a, dtype=np.float64), device=device).to(dtype)
        return v.view(-1, *([1] * 2)) if v.ndim == 1 else v.view(v.shape[0], v.shape[1], 1, 1)

    coords = (torch.arange(resolution, device=device, dtype=dtype) + 0.5) / resolution
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    x, y = x.unsqueeze(0), y.unsqueeze(0)
    bg_dir = torch.as_tensor(sc.bg_dir, device=device).to(dtype)
    ramp = ((x - 0.5) * bg_dir[:, 0].view(-1, 1, 1) + (y - 0.5) * bg_dir[:, 1].view(-1, 1, 1)) * 1.2 + 0.5
    ramp = ramp.clamp(0, 1).unsqueeze(1)
    img = t(sc.bg1) * (1 - ramp) + t(sc.bg2) * ramp

    def paint(img: torch.Tensor, kind: np.ndarray, cx: np.ndarray, cy: np.ndarray, r: np.ndarray,
              ang: np.ndarray, rgb: torch.Tensor, on: np.ndarray) -> torch.Tensor:
        kind_t = torch.as_tensor(kind, device=device, dtype=torch.long)
        d = _sdf(kind_t, x, y, t(cx), t(cy), t(r), t(ang))
        alpha = (0.5 - d * resolution).clamp(0, 1) * t(on.astype(np.float64))
        alpha = alpha.unsqueeze(1)
        return img * (1 - alpha) + rgb * alpha

    grey = t(np.repeat(sc.d_grey[:, None], 3, 1))
    r_small = np.full(len(sc), SIZE_RADIUS[0]) * 0.95
    img = paint(img, sc.d_shape, sc.d_cx, sc.d_cy, r_small, sc.d_angle, grey, sc.distractor)
    img = paint(img, sc.shape, sc.cx, sc.cy, sc.radius, sc.angle, t(sc.rgb), np.ones(len(sc), bool))
    return img.clamp(0, 1)


def split_seeds(split: str, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64)
    if split == "train":
        if (idx >= EVAL_SEED_OFFSET).any() or (idx < 0).any():
            raise IndexError(f"train indices must lie in [0, {EVAL_SEED_OFFSET})")
        return idx
    if split == "eval":
        if (idx < 0).any():
            raise IndexError("eval indices must be non-negative")
        return idx + EVAL_SEED_OFFSET
    raise ValueError(f"split must be 'train' or 'eval', not {split!r}")


class ShapesDataset:
    """Suite dataset `shapes`: prompts and reference images; item i of a split is a pure function of its seed."""

    name = "shapes"
    conditioning = "text"

    def __init__(self, split: str = "eval") -> None:
        split_seeds(split, [0])  # validates the split name
        self.split = split

    def key(self) -> str:
        return f"shapes(split={self.split},{VERSION})"

    def seeds(self, indices: Sequence[int]) -> np.ndarray:
        return split_seeds(self.split, indices)

    def scenes(self, indices: Sequence[int]) -> Scenes:
        return scenes(self.seeds(indices))

    def conditions(self, indices: Sequence[int]) -> Conditions:
        return Conditions(prompts=self.scenes(indices).captions(), labels=None)

    def images(self, indices: Sequence[int], resolution: int) -> torch.Tensor:
        return _rasterise(self.scenes(indices), resolution)

    def matched_scenes(self, indices: Sequence[int], draw: int = 1) -> Scenes:
        """Scenes with the same captions as `indices`, everything the caption leaves open drawn afresh."""
        return scenes(matched_seeds(self.seeds(indices), draw), keep_caption_of=self.scenes(indices))

    def matched_images(self, indices: Sequence[int], resolution: int, draw: int = 1) -> torch.Tensor:
        """uint8 images with the same captions as `indices`, independent of them: the noise floor's set."""
        return _rasterise(self.matched_scenes(indices, draw), resolution)


def matched_seeds(seeds: np.ndarray, draw: int) -> np.ndarray:
    """Seeds of matched draw `draw` (>= 1): MATCHED_SEED_BASE + draw * 2^40 + seed, disjoint from every item seed
    and from every other draw."""
    if isinstance(draw, bool) or not isinstance(draw, int | np.integer) or not 1 <= int(draw) < 2**20:
        raise ValueError(f"shapes: draw must be an integer in [1, 2^20), not {draw!r}")
    sd = np.asarray(seeds, dtype=np.int64)
    if (sd >= 2**40).any():
        raise IndexError("shapes: seeds must be below 2^40 for matched draws")
    return MATCHED_SEED_BASE + np.int64(draw) * np.int64(2**40) + sd


def _rasterise(sc: Scenes, resolution: int) -> torch.Tensor:
    if int(resolution) < 4:
        raise ValueError(f"resolution must be at least 4, not {resolution}")
    out = [to_uint8(render(sc[i:i + 512], int(resolution)), lo=0.0) for i in range(0, len(sc), 512)]
    return torch.cat(out) if out else torch.zeros(0, 3, resolution, resolution, dtype=torch.uint8)
