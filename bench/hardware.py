"""Hardware specs (`cpu`, `cpu:threads=1`, `cuda:0:dtype=float16,compile=true`) and machine fingerprints."""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field
from typing import Any

from bench.errors import BenchError
from bench.runtime import DTYPES


@dataclass(frozen=True)
class HardwareSpec:
    """Where and how a cell runs. `label` is the stable string stored in results."""

    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = None
    compile: bool = False
    accelerator: str | None = None  # e.g. "H100": a cluster resource label
    extra: tuple[tuple[str, str], ...] = field(default=())

    @property
    def kind(self) -> str:
        return self.device.split(":")[0]

    @property
    def label(self) -> str:
        opts = []
        if self.threads is not None:
            opts.append(f"threads={self.threads}")
        if self.dtype != "float32":
            opts.append(f"dtype={self.dtype}")
        if self.compile:
            opts.append("compile=true")
        if self.accelerator:
            opts.append(f"accelerator={self.accelerator}")
        opts += [f"{k}={v}" for k, v in self.extra]
        return self.device + (":" + ",".join(opts) if opts else "")

    @classmethod
    def parse(cls, text: str) -> HardwareSpec:
        """Parse `DEVICE[:INDEX][:key=value,...]`; raises BenchError with the allowed forms on bad input."""
        text = str(text).strip()
        m = re.match(r"^(cpu|mps|cuda(?::\d+)?)(?::(.*))?$", text)
        if not m:
            raise BenchError(
                f"hardware {text!r}: expected cpu, cuda, cuda:N or mps, optionally followed by "
                ":key=value,... (threads, dtype, compile, accelerator, attention)"
            )
        device, rest = m.group(1), m.group(2)
        kwargs: dict[str, Any] = {}
        if rest:
            for part in rest.split(","):
                if "=" not in part:
                    raise BenchError(f"hardware {text!r}: option {part!r} is not key=value")
                key, value = (s.strip() for s in part.split("=", 1))
                if key == "threads":
                    if not value.isdigit() or int(value) < 1:
                        raise BenchError(f"hardware {text!r}: threads must be a positive integer")
                    kwargs["threads"] = int(value)
                elif key == "dtype":
                    if value not in DTYPES:
                        raise BenchError(f"hardware {text!r}: dtype must be one of {', '.join(DTYPES)}")
                    kwargs["dtype"] = value
                elif key == "compile":
                    if value.lower() not in ("true", "false", "1", "0", "eager", "compile"):
                        raise BenchError(f"hardware {text!r}: compile must be true or false")
                    kwargs["compile"] = value.lower() in ("true", "1", "compile")
                elif key == "accelerator":
                    kwargs["accelerator"] = value
                elif key == "attention":  # attention backend for adapters that have one (e.g. diffusers)
                    kwargs["extra"] = (*kwargs.get("extra", ()), ("attention", value))
                else:
                    raise BenchError(
                        f"hardware {text!r}: unknown option {key!r} (threads, dtype, compile, accelerator, attention)"
                    )
        return cls(device=device, **kwargs)

    def availability(self) -> str | None:
        """None when this machine can run the spec, else the reason it cannot (used as a skip reason)."""
        import torch

        if self.kind == "cuda":
            if not torch.cuda.is_available():
                return "no CUDA device"
            index = int(self.device.split(":")[1]) if ":" in self.device else 0
            if index >= torch.cuda.device_count():
                return f"no CUDA device {index} (found {torch.cuda.device_count()})"
            if self.accelerator and self.accelerator.lower() not in torch.cuda.get_device_name(index).lower():
                return f"accelerator {self.accelerator} not present (found {torch.cuda.get_device_name(index)})"
        elif self.kind == "mps":
            if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
                return "no MPS device"
        elif self.accelerator:
            return f"accelerator {self.accelerator} not present on a cpu spec"
        if self.dtype == "bfloat16" and self.kind == "cuda" and not torch.cuda.is_bf16_supported():
            return "bfloat16 not supported by this GPU"
        return None

    def torch_device(self) -> Any:
        import torch

        return torch.device(self.device)

    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, named as CUDA_VISIBLE_DEVICES names them (ids or UUIDs)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()][:count]
    return [str(i) for i in range(count)]


def worker_devices(option: str, jobs: int) -> list[str]:
    """`bench run --devices`: the GPUs local workers are spread over, one each. `auto`: every visible GPU when
    there are several and several workers; `none`: no pinning (every worker sees every GPU); else a comma list."""
    option = option.strip()
    if option == "none":
        return []
    if option == "auto":
        if jobs < 2 or not (os.environ.get("CUDA_VISIBLE_DEVICES") or os.path.isdir("/proc/driver/nvidia/gpus")):
            return []  # one worker, or no NVIDIA driver: no need to import torch here (workers start sooner)
        gpus = visible_gpus()
        return gpus if len(gpus) > 1 else []
    devices = [d.strip() for d in option.split(",")]
    if not all(re.fullmatch(r"[A-Za-z0-9_-]+", d) for d in devices):
        raise BenchError(f"--devices {option!r}: expected auto, none or a comma list of CUDA device ids (0,1,2)")
    return devices


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint() -> dict[str, Any]:
    """Describe this machine and its software so every number can be traced to where it came from."""
    import psutil
    import torch

    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "gpus": [],
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["gpus"].append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 2**30, 1)})
        try:
            import subprocess

            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=False,
            )
            info["driver"] = out.stdout.strip().splitlines()[0] if out.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    return info


# The libraries that influence numbers: recorded with every run and in every metric's provenance.
VERSION_PACKAGES = ("flowmap-bench", "torch", "torchvision", "numpy", "scipy", "torch-fidelity", "clean-fid",
                    "open_clip_torch", "diffusers", "pandas", "pydantic")


def library_versions() -> dict[str, str | None]:
    """Installed version of each of `VERSION_PACKAGES` (None: not installed); run and metric provenance."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for n in VERSION_PACKAGES:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = None
    return out
