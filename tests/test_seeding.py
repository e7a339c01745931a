"""The fairness rule's noise (README, "Fairness rules"): image i starts from the noise of its own seed, one
generator per image, and extra noise streams of an image (re-noising in multistep consistency sampling) are
independent of the initial noise and of every other image's streams."""

from __future__ import annotations

import itertools

import torch

from bench.adapters import per_image_noise

SHAPE = (3, 4, 4)


def test_stream_0_of_image_i_is_the_noise_of_its_seed_whatever_the_batch():
    for seed in (0, 1, 7, 123456):
        own = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(per_image_noise([seed], SHAPE)[0], own)
        assert torch.equal(per_image_noise([seed + 1, seed, 99], SHAPE)[1], own)  # position and neighbours
        assert torch.equal(per_image_noise([seed], SHAPE, offset=0)[0], own)


def _all_distinct(seeds: range, offsets: range) -> None:
    noise = {(s, k): per_image_noise([s], SHAPE, offset=k)[0] for s in seeds for k in offsets}
    for (a, xa), (b, xb) in itertools.combinations(noise.items(), 2):
        assert not torch.equal(xa, xb), f"seed/stream {a} and {b} draw the same noise"


def test_every_stream_of_every_image_is_distinct():
    # Neighbouring seeds are what a run uses (base_seed + i): stream k of image i must not be stream 0 of image
    # i + k, nor stream 0 of itself.
    _all_distinct(range(1, 17), range(4))


def test_streams_of_seed_0_are_not_other_images_initial_noise():
    _all_distinct(range(0, 8), range(4))


def test_a_stream_does_not_depend_on_the_batch():
    alone = [per_image_noise([s], SHAPE, offset=3)[0] for s in (4, 5, 6)]
    together = per_image_noise([4, 5, 6], SHAPE, offset=3)
    assert all(torch.equal(a, b) for a, b in zip(alone, together, strict=True))
    assert together.dtype == torch.float32 and tuple(together.shape) == (3, *SHAPE)
