"""Peak memory of a block of work: CUDA allocator peak on GPU, peak RSS over the idle baseline on CPU."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _rss_kb(field: str) -> int | None:
    try:
        m = re.search(rf"{field}:\s+(\d+)", _STATUS.read_text())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _return_freed_memory() -> None:
    """Give memory freed by earlier cells back to the OS (glibc keeps it), so the idle baseline is idle.

    Without this a reused worker's RSS already includes the previous cell's freed buffers, and a cell that
    needs no more than that shows a peak of 0 MB.
    """
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): baseline is an upper bound
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Context manager measuring the extra peak memory (MB) used inside the block.

    On Linux the kernel's high-water mark is reset (clear_refs 5) so VmHWM is exact; elsewhere a sampling
    thread polls RSS every 2 ms (psutil). `method` says which was used, for provenance.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb: float | None = None
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_peak = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "cuda max_memory_allocated"
            return self
        _return_freed_memory()
        self._base = _rss_kb("VmRSS") or 0
        try:
            _CLEAR_REFS.write_text("5")
            self.method = "VmHWM after clear_refs"
        except OSError:
            import psutil

            proc = psutil.Process()
            self._base = proc.memory_info().rss // 1024
            self.method = "psutil RSS polling (2 ms)"

            def poll() -> None:
                while not self._stop.is_set():
                    self._poll_peak = max(self._poll_peak, proc.memory_info().rss // 1024)
                    time.sleep(0.002)

            self._thread = threading.Thread(target=poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            peak = self._poll_peak
        else:
            peak = _rss_kb("VmHWM") or 0
        self.peak_mb = max(peak - self._base, 0) / 1024

    def provenance(self) -> dict[str, Any]:
        return {"method": self.method, "device": str(self.device)}
