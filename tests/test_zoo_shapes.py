"""The `shapes` dataset: determinism, disjoint splits, caption grammar, multimodality, suite registration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.datasets import build_dataset
from bench.zoo import shapes

pytestmark = pytest.mark.usefixtures("one_thread")


def test_same_seed_same_bytes_independent_of_batch() -> None:
    ds = shapes.ShapesDataset("eval")
    for res in (16, 32):
        a = ds.images(list(range(12)), res)
        b = ds.images([7, 3], res)
        c = shapes.ShapesDataset("eval").images(list(range(12)), res)
        assert a.dtype == torch.uint8 and a.shape == (12, 3, res, res)
        assert torch.equal(a, c)
        assert torch.equal(a[[7, 3]], b)
    assert ds.conditions([5, 6]).prompts == ds.conditions(range(10)).prompts[5:7]


def test_images_differ_between_seeds_and_splits() -> None:
    ev = shapes.ShapesDataset("eval").images(range(8), 16)
    tr = shapes.ShapesDataset("train").images(range(8), 16)
    assert not torch.equal(ev, tr)
    flat = ev.flatten(1).float()
    assert torch.cdist(flat, flat).fill_diagonal_(1e9).min() > 0


def test_splits_are_disjoint_seed_ranges() -> None:
    train = shapes.split_seeds("train", [0, 1, shapes.EVAL_SEED_OFFSET - 1])
    ev = shapes.split_seeds("eval", [0, 1, 10**6])
    assert train.max() < shapes.EVAL_SEED_OFFSET <= ev.min()
    with pytest.raises(IndexError):
        shapes.split_seeds("train", [shapes.EVAL_SEED_OFFSET])
    with pytest.raises(ValueError):
        shapes.ShapesDataset("test")


def test_scene_is_resolution_independent() -> None:
    ds = shapes.ShapesDataset("eval")
    small = ds.images(range(16), 16).float()
    big = ds.images(range(16), 32).float()
    down = torch.nn.functional.avg_pool2d(big, 2)
    assert (small - down).abs().mean() < 6  # the same scene, rasterised twice (anti-aliased edges differ)


def test_anti_aliased_edges() -> None:
    sc = shapes.scenes(np.array([shapes.EVAL_SEED_OFFSET + 3]))
    img = shapes.render(sc, 32)[0]
    rgb = torch.as_tensor(sc.rgb[0]).view(3, 1, 1)
    dist = (img - rgb).abs().sum(0)
    inside, partial = (dist < 1e-6).sum(), ((dist > 0.05) & (dist < 0.5 * dist.max())).sum()
    assert inside > 4 and partial > 0  # solid interior plus intermediate edge pixels


def test_caption_grammar_and_underspecification() -> None:
    n = 3000
    sc = shapes.scenes(shapes.split_seeds("eval", range(n)))
    caps = sc.captions()
    for c, colour, shape in zip(caps[:200], sc.colour, sc.shape, strict=False):
        assert shapes.COLOURS[colour] in c.split() and shapes.SHAPES[shape] in c.split()
    say_size = np.array([any(w in c.split() for w in shapes.SIZES) for c in caps])
    say_pos = np.array([any(w in c.split() for w in ("top", "bottom", "left", "right", "center")) for c in caps])
    assert np.array_equal(say_size, sc.say_size) and np.array_equal(say_pos, sc.say_pos)
    for frac in (say_size.mean(), say_pos.mean(), sc.distractor.mean()):
        assert 0.4 < frac < 0.6
    assert set(sc.colour) == set(range(6)) and set(sc.shape) == set(range(4))
    assert set(sc.region) == set(range(9)) and set(sc.size) == {0, 1}
    # multimodal: one caption covers several positions and sizes
    short = [i for i, c in enumerate(caps) if c == caps[int(np.argmin([len(x) for x in caps]))]]
    assert len({int(sc.region[i]) for i in short}) > 1
    assert len(shapes.all_captions()) == 720 and set(caps) <= set(shapes.all_captions())


def test_registered_suite_dataset() -> None:
    ds = build_dataset("shapes", {"split": "eval"})
    cond = ds.conditions([0, 1, 2])
    assert ds.name == "shapes" and ds.conditioning == "text"
    assert cond.labels is None and len(cond.prompts or []) == 3
    assert "split=eval" in ds.key() and shapes.VERSION in ds.key()
    assert ds.images([0, 1, 2], 16).shape == (3, 3, 16, 16)
