"""pytest-benchmark set-up: machine info carries the GPU (name, memory, driver) and the torch build."""

from __future__ import annotations

from typing import Any


def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    """Saved with every benchmark JSON, so a timing is always read next to the hardware that produced it."""
    from bench.hardware import fingerprint

    fp = fingerprint()
    gpus = fp.get("gpus") or []
    machine_info["gpu"] = gpus[0]["name"] if gpus else None
    machine_info["gpus"] = gpus
    machine_info["gpu_driver"] = fp.get("driver")
    machine_info["cuda"] = fp.get("cuda")
    machine_info["torch"] = fp.get("torch")
    machine_info["cpu_model"] = fp.get("cpu_model")
    machine_info["cpu_cores_logical"] = fp.get("cpu_cores_logical")
