"""Samplers of the embedded world's teacher (family `ode`): Euler, Heun and DPM-Solver++(2M).

The requested NFE is the number of solver steps, as for the analytic samplers: counted NFE per image is
steps (Euler, DPM-Solver++) or 2 * steps - 1 (Heun, last step Euler), doubled when classifier-free
guidance is on (guidance != 1 runs the conditional and unconditional branch as one doubled batch).

Options (suite `options:`): `guidance` (default 1.0; the request's guidance wins when set),
`shift` (time-grid warp, see bench.zoo.solvers; defaults are the best measured per solver),
`weights` (a teacher .safetensors file instead of the shipped one).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.adapters.protocol import NFESupport, SampleRequest, SamplerInfo, per_image_noise
from bench.hardware import HardwareSpec


def _weights_tag(weights: str | None) -> str:
    """Short hash of the weights for the sampler version (read from the manifest: no weights are loaded)."""
    if weights:
        return Path(weights).name
    from bench.zoo import checkpoints

    entry = checkpoints.read_manifest().get("models", {}).get("teacher")
    return entry["sha256"][:12] if entry else "missing"


class _TeacherBase:
    solver = "euler"
    default_shift = 1.0

    def __init__(self, guidance: float = 1.0, shift: float | None = None, weights: str | None = None) -> None:
        self.guidance = float(guidance)
        self.shift = float(shift if shift is not None else self.default_shift)
        self.weights = weights
        self.info = SamplerInfo(
            family="ode", nfe=NFESupport(min=1), resolutions=(16, 32), conditioning="text", guidance="cfg",
            description=(self.__doc__ or "").splitlines()[0],
            version=f"zoo-teacher-{self.solver}-shift{self.shift:g}-{_weights_tag(weights)}",
            compile=False, compile_note="the zoo teacher's U-Net runs eagerly (the adapter does not compile it)",
        )
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.model: Any = None

    def load(self, hw: HardwareSpec) -> None:
        from bench.zoo.teacher import load_teacher

        self.device, self.dtype = hw.torch_device(), hw.torch_dtype()
        self.model = load_teacher(self.device, Path(self.weights) if self.weights else None, self.dtype)

    def networks(self) -> Sequence[torch.nn.Module]:
        return [self.model.unet] if self.model is not None else []

    @torch.no_grad()
    def sample(self, req: SampleRequest) -> torch.Tensor:
        from bench.zoo import solvers
        from bench.zoo.teacher import guided_velocity, to_uint8

        if self.model is None:
            raise RuntimeError("call load() before sample()")
        n = len(req)
        if req.prompts is not None:
            cond = self.model.text(list(req.prompts)).to(self.dtype)
        else:
            cond = self.model.text.null_cond(n).to(self.dtype)
        w = float(req.guidance) if req.guidance is not None else self.guidance
        x = per_image_noise(req.seeds, (3, req.height, req.width), self.device, self.dtype)
        x = solvers.SOLVERS[self.solver](guided_velocity(self.model, cond, w), x, req.nfe, self.shift)
        return to_uint8(x)


class TeacherEuler(_TeacherBase):
    """Zoo teacher (flow matching on shapes) with Euler steps on a uniform time grid (NFE = steps)."""

    solver = "euler"
    default_shift = 1.0


class TeacherHeun(_TeacherBase):
    """Zoo teacher with Heun's 2nd-order method, final step Euler (NFE = 2 * steps - 1)."""

    solver = "heun"
    default_shift = 0.5


class TeacherDPMSolver(_TeacherBase):
    """Zoo teacher with DPM-Solver++(2M), multistep on the data prediction (NFE = steps)."""

    solver = "dpm++"
    default_shift = 1.0
