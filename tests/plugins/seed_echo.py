"""A sampler that writes the seed it was given into its image, to check which seed image i gets."""

from __future__ import annotations

from typing import Any

import torch

from bench.adapters.analytic import AnalyticEuler
from bench.adapters.protocol import SampleRequest


class SeedEcho(AnalyticEuler):
    """Runs the analytic Euler sampler (so NFE is counted), then encodes each image's seed in its pixels:
    channel 0 = seed // 256, channel 1 = seed % 256 (seeds below 65536)."""

    def sample(self, req: SampleRequest) -> Any:
        out = super().sample(req).clone()
        seeds = torch.as_tensor([int(s) for s in req.seeds])
        out[:, 0] = (seeds // 256).to(out.dtype).view(-1, 1, 1)
        out[:, 1] = (seeds % 256).to(out.dtype).view(-1, 1, 1)
        return out


def decode(png: Any) -> int:
    """The seed a SeedEcho image was sampled from, read back from its saved PNG."""
    import numpy as np
    from PIL import Image

    px = np.asarray(Image.open(png).convert("RGB"))
    return int(px[0, 0, 0]) * 256 + int(px[0, 0, 1])
