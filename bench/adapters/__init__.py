"""Samplers: the protocol every model family implements, the registry, and the built-in families."""

from bench.adapters.protocol import NFESupport, Sampler, SampleRequest, SamplerInfo, per_image_noise
from bench.adapters.registry import list_samplers, resolve_sampler

__all__ = [
    "NFESupport",
    "SampleRequest",
    "Sampler",
    "SamplerInfo",
    "list_samplers",
    "per_image_noise",
    "resolve_sampler",
]
