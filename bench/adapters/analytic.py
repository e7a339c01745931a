"""Samplers of the analytic Gaussian-mixture world: teacher ODE (Euler, Heun) and an oracle flow map.

They need no weights, so the smoke suite and the tests have a ground truth: Euler's error shrinks as NFE
grows, and the oracle flow map (one call integrates the exact velocity to high precision) matches a
fine-step reference at NFE 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bench.adapters.protocol import NFESupport, SampleRequest, SamplerInfo, per_image_noise
from bench.hardware import HardwareSpec
from bench.runtime import DTYPES
from bench.zoo.gmm import GaussianMixtureVelocity, MixtureModule, to_uint8, velocity


class _AnalyticBase:
    """Shared set-up: the closed-form velocity network for a mixture matching the `gmm` dataset options."""

    family = "ode"
    kind = "base"
    dtypes: tuple[str, ...] = DTYPES  # the velocity computes in the noise's dtype
    dtype_note = ""

    def __init__(self, components: int = 8, data_std: float = 0.15, seed: int = 0,
                 guidance: float | None = None, conditional: bool = True) -> None:
        self.components, self.data_std, self.seed = components, data_std, seed
        self.guidance = guidance
        self.conditional = conditional
        self.info = SamplerInfo(
            family=self.family, nfe=NFESupport(min=1), conditioning="class", guidance="cfg",
            description=self.__doc__.splitlines()[0] if self.__doc__ else "",
            version=f"analytic-{self.kind}-v2",  # v2: bench.runtime.to_uint8 (v1 rounded half to even)
            dtypes=self.dtypes, dtype_note=self.dtype_note,
            compile=False, compile_note="the closed-form velocity runs eagerly (the adapter does not compile it)",
        )
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.net: torch.nn.Module = self._make_net()

    def load(self, hw: HardwareSpec) -> None:
        self.device, self.dtype = hw.torch_device(), hw.torch_dtype()
        self.net = self._make_net()

    def _make_net(self) -> torch.nn.Module:
        return GaussianMixtureVelocity(self.components, self.data_std, self.seed)

    def networks(self) -> Sequence[torch.nn.Module]:
        return [self.net]

    def _labels(self, req: SampleRequest) -> torch.Tensor:
        if self.conditional and req.labels is not None:
            return torch.as_tensor(list(req.labels), device=self.device)
        return torch.full((len(req),), -1, device=self.device)

    def _noise(self, req: SampleRequest) -> torch.Tensor:
        return per_image_noise(req.seeds, (3, req.height, req.width), self.device, self.dtype)

    def _start(self, req: SampleRequest) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
        """Initial noise, labels, guidance scale and the uniform time grid of an ODE solve."""
        w = req.guidance if req.guidance is not None else (self.guidance or 1.0)
        ts = torch.linspace(0, 1, req.nfe + 1, device=self.device, dtype=self.dtype)
        return self._noise(req), self._labels(req), w, ts

    def _guided(self, net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                w: float) -> torch.Tensor:
        """Classifier-free guidance as one doubled batch (counted as 2 evaluations per image)."""
        if w == 1.0 or bool((labels < 0).all()):
            return net(x, t, labels)
        both = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, torch.full_like(labels, -1)]))
        cond, uncond = both.chunk(2)
        return uncond + w * (cond - uncond)


class AnalyticEuler(_AnalyticBase):
    """Teacher ODE of the Gaussian-mixture world, explicit Euler on a uniform grid (NFE = steps)."""

    kind = "euler"

    @torch.no_grad()
    def sample(self, req: SampleRequest) -> torch.Tensor:
        net = self.net
        x, labels, w, ts = self._start(req)
        for i in range(req.nfe):
            t = ts[i].expand(len(req))
            x = x + (ts[i + 1] - ts[i]) * self._guided(net, x, t, labels, w)
        return to_uint8(x)


class AnalyticHeun(_AnalyticBase):
    """Teacher ODE of the Gaussian-mixture world, Heun's 2nd order with a final Euler step (NFE = 2·steps − 1)."""

    kind = "heun"

    @torch.no_grad()
    def sample(self, req: SampleRequest) -> torch.Tensor:
        net = self.net
        x, labels, w, ts = self._start(req)
        for i in range(req.nfe):
            t0, t1 = ts[i].expand(len(req)), ts[i + 1].expand(len(req))
            h = ts[i + 1] - ts[i]
            d0 = self._guided(net, x, t0, labels, w)
            x_pred = x + h * d0
            if i == req.nfe - 1:
                x = x_pred
            else:
                d1 = self._guided(net, x_pred, t1, labels, w)
                x = x + h * 0.5 * (d0 + d1)
        return to_uint8(x)


class _OracleNet(MixtureModule):
    """X_{s,t}(x): integrates the exact velocity from s to t with RK4 substeps, as a single network call."""

    def __init__(self, components: int, data_std: float, seed: int, substeps: int) -> None:
        super().__init__(components, data_std, seed)
        self.substeps = substeps

    def forward(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return integrate(x, s, t, labels, self.mu(x, torch.float64), self.s2, self.substeps)


def integrate(x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, mu: torch.Tensor,
              s2: float, substeps: int) -> torch.Tensor:
    """Classical RK4 from time s to time t (per-sample s, t) in float64 for a precise ground truth."""
    dtype = x.dtype
    x = x.double()
    s, t = s.double().reshape(-1), t.double().reshape(-1)
    h = ((t - s) / substeps).view(-1, 1, 1, 1)
    tau = s.clone()
    for _ in range(substeps):
        hv = h.view(-1)
        k1 = velocity(x, tau, labels, mu, s2)
        k2 = velocity(x + 0.5 * h * k1, tau + 0.5 * hv, labels, mu, s2)
        k3 = velocity(x + 0.5 * h * k2, tau + 0.5 * hv, labels, mu, s2)
        k4 = velocity(x + h * k3, tau + hv, labels, mu, s2)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        tau = tau + hv
    return x.to(dtype)


class OracleFlowMap(_AnalyticBase):
    """Oracle flow map of the Gaussian-mixture world: exact X_{s,t} jumps on a uniform grid (NFE = steps)."""

    family = "flow_map"
    kind = "oracle"
    dtypes = ("float32",)
    dtype_note = "the oracle integrates the exact velocity in float64 whatever the dtype (it is the ground truth)"

    def __init__(self, substeps: int = 64, **kwargs: Any) -> None:
        self.substeps = substeps
        super().__init__(**kwargs)

    def _make_net(self) -> torch.nn.Module:
        return _OracleNet(self.components, self.data_std, self.seed, self.substeps)

    @torch.no_grad()
    def sample(self, req: SampleRequest) -> torch.Tensor:
        net = self.net
        x, labels = self._noise(req), self._labels(req)
        ts = torch.linspace(0, 1, req.nfe + 1, device=self.device, dtype=torch.float64)
        for i in range(req.nfe):
            x = net(x, ts[i].expand(len(req)), ts[i + 1].expand(len(req)), labels)
        return to_uint8(x)
