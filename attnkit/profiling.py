"""Measuring what a block of code costs: peak extra memory on CPU (Linux) or CUDA.

On CPU the figure is the growth of the process's resident-set high-water mark (VmHWM) over the
block, which counts every allocation torch makes through malloc. glibc keeps freed small blocks in
its heap and moves its mmap threshold up as large blocks are freed, which would hide allocations
in memory already resident; `use_mmap_for_large_allocations()` pins the threshold so every large
tensor is mapped and returned to the system on release.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def use_mmap_for_large_allocations(threshold_bytes: int = 1 << 16) -> bool:
    """Make glibc map allocations above `threshold_bytes` directly; False where that is not possible."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes)
        ok = ok and libc.mallopt(_M_TRIM_THRESHOLD, threshold_bytes)
    except (OSError, AttributeError):
        return False
    return bool(ok)


@dataclass
class PeakMemory:
    """Result of `peak_memory`: extra bytes at the peak of the block (None where not measurable)."""

    extra_bytes: int | None = None

    @property
    def mib(self) -> float | None:
        return None if self.extra_bytes is None else self.extra_bytes / 2**20


@contextmanager
def peak_memory(device: torch.device | str = "cpu") -> Iterator[PeakMemory]:
    """Measure the peak memory a block adds on top of what was in use when it started."""
    result = PeakMemory()
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result.extra_bytes = torch.cuda.max_memory_allocated(device) - start
        return
    status = Path("/proc/self/status")
    clear_refs = Path("/proc/self/clear_refs")
    try:
        clear_refs.write_text("5")  # resets VmHWM to the current VmRSS
        start = _status_kib(status, "VmRSS")
    except OSError:
        yield result
        return
    yield result
    result.extra_bytes = max(0, _status_kib(status, "VmHWM") - start) * 1024


def _status_kib(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(f"{key} not found in {path}")
