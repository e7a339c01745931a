"""Tiny stand-in teachers for smoke tests (tests, and `scripts/train_students_gpu.sh` with STUDENT_TINY=1).

    python -m bench.zoo.students.tiny OUT.safetensors [--random-output]

writes a randomly initialised teacher with a ~20k-parameter U-Net in the shipped teacher's format (fp16
safetensors, metadata {"model": "teacher", "config": ...}), so the student recipes run end to end in seconds
without the real teacher. Its samples are meaningless.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bench.zoo import checkpoints
from bench.zoo.nets import ShapesTeacher, TextConfig, UNetConfig

TINY_UNET = UNetConfig(channels=(8, 16), blocks=(1, 1), attention=(False, True), emb_dim=16, cond_dim=16, groups=4)


def tiny_teacher(seed: int = 0, random_output: bool = False) -> ShapesTeacher:
    """A tiny ShapesTeacher. With `random_output`, every weight (zero-initialised output layers and the
    second-time embedding included) is drawn at random, so outputs depend on all inputs."""
    torch.manual_seed(seed)
    model = ShapesTeacher(TINY_UNET, TextConfig(dim=16))
    if random_output:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() > 1 else 0.1))
    return model.eval()


def save_teacher(model: ShapesTeacher, path: Path) -> Path:
    checkpoints.save_fp16(model.state_dict(), path, {"model": "teacher", "config": model.config()})
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.zoo.students.tiny", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--random-output", action="store_true")
    a = p.parse_args(argv)
    save_teacher(tiny_teacher(random_output=a.random_output), a.out)
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
