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


def test_stream_seeds_follow_the_documented_derivation_and_stay_63_bit():
    """docs/zoo.md and bench.runtime.STREAM_DOMAIN: stream k > 0 of seed s is seeded from SHA-256 over the domain,
    s (16 bytes, little-endian, signed) and k (8 bytes): stored numbers depend on it, so it may only change with
    SAMPLING_VERSION. Torch generators take seeds below 2^63."""
    import hashlib
    import struct

    import pytest

    from bench.runtime import STREAM_DOMAIN, noise_seed

    for s, k in ((0, 1), (7, 3), (-5, 2), (2**40 + 3, 9)):
        lo, hi = s & (2**64 - 1), (s >> 64) & (2**64 - 1)
        digest = hashlib.sha256(STREAM_DOMAIN + struct.pack("<QQ", lo, hi) + struct.pack("<Q", k)).digest()
        assert noise_seed(s, k) == struct.unpack("<Q", digest[:8])[0] // 2
        assert 0 <= noise_seed(s, k) < 2**63
    assert noise_seed(123) == noise_seed(123, 0) == 123
    for bad in (-1, 1.0, True, "1"):
        with pytest.raises(ValueError, match=r"noise stream must be a non-negative integer, got"):
            noise_seed(0, bad)  # type: ignore[arg-type]


def test_image_seeds_are_base_seed_plus_index_and_generators_follow_them():
    from bench.runtime import image_generators, image_seeds, noise_seed

    assert image_seeds(100, [0, 1, 5]) == [100, 101, 105]
    assert image_seeds(0, range(3)) == [0, 1, 2]
    gens = image_generators([3, 4], stream=2)
    assert [g.initial_seed() for g in gens] == [noise_seed(3, 2), noise_seed(4, 2)]
    assert [g.initial_seed() for g in image_generators([9])] == [9]
    assert all(g.device.type == "cpu" for g in gens)


def test_noise_is_drawn_in_float32_then_cast_and_an_empty_batch_has_the_shape():
    x = per_image_noise([1, 2], SHAPE, dtype=torch.float64)
    assert x.dtype == torch.float64
    assert torch.equal(x.float(), per_image_noise([1, 2], SHAPE))  # the same numbers, cast
    empty = per_image_noise([], SHAPE)
    assert tuple(empty.shape) == (0, *SHAPE) and empty.dtype == torch.float32
