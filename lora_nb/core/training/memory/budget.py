"""What training a set of parameters costs in memory and on disk: exact byte counts and a measured peak.

- ``trainable_state_bytes``: the bytes AdamW training holds for the trained parameters — the
  parameters, their gradients, AdamW's two moments and its per-parameter ``step`` tensor —
  computed from the parameters' dtypes exactly as ``torch.optim.AdamW`` allocates its state.
- ``PeakMemory``: the peak memory of a block of code. On a CUDA device: ``max_memory_allocated``
  (exact, reset at the start). Elsewhere: the process's resident set size sampled by a thread
  every few milliseconds, as the peak above its value at the start — a coarse measure that also
  sees allocator caching, data loading and anything else the process does; small changes fall
  below its resolution and read as 0. Memory freed before the block is first handed back to the
  system (glibc's ``malloc_trim``) so the block's own allocations show up as growth.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
import time
from collections.abc import Iterable

import torch


def process_rss_mb() -> float:
    """Resident memory of this process in MiB (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource  # Unix only; /proc covers Linux

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if os.uname().sysname == "Darwin" else peak / 1024


class MemoryGauge:
    """What a run's records show as ``memory_mb``: CUDA memory allocated on the run's device, else the process RSS
    sampled at most every 0.5 s (reading it costs more than a step of a tiny model)."""

    def __init__(self) -> None:
        self.at, self.rss = -1.0, 0.0  # when the process RSS was last sampled, and its value

    def __call__(self, device: torch.device) -> float:
        if device.type == "cuda":
            return torch.cuda.memory_allocated(device) / 2**20
        now = time.perf_counter()
        if now - self.at >= 0.5:
            self.at, self.rss = now, process_rss_mb()
        return self.rss


def adamw_state_bytes(param: torch.Tensor) -> int:
    """Bytes of AdamW's state for one parameter: ``exp_avg`` and ``exp_avg_sq`` (the parameter's dtype), ``step``."""
    step = torch.empty((), dtype=torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32)
    return 2 * param.numel() * param.element_size() + step.element_size()


def trainable_state_bytes(params: Iterable[torch.Tensor]) -> int:
    """Parameters + gradients (same dtype) + AdamW moments and step tensors, in bytes."""
    return sum(2 * p.numel() * p.element_size() + adamw_state_bytes(p) for p in params)


class PeakMemory:
    """``with PeakMemory(device) as m: …`` then ``m.start``, ``m.peak`` (bytes) and ``m.kind`` (what was measured)."""

    def __init__(self, device: torch.device, interval: float = 0.003) -> None:
        self.device, self.interval = device, interval
        self.cuda = device.type == "cuda"
        self.start = self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def kind(self) -> str:
        if self.cuda:
            return "CUDA peak allocated"
        return f"process RSS, sampled every {self.interval * 1000:g} ms"

    @property
    def added(self) -> int:
        """Peak above the value at the start of the block, in bytes."""
        return max(0, self.peak - self.start)

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = self.peak = torch.cuda.memory_allocated(self.device)
            return self
        trim_free_memory()
        self.start = self.peak = _rss_bytes()
        self._thread = threading.Thread(target=self._sample, name="lora_nb-rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes())
            self.samples += 1

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _rss_bytes() -> int:
    return int(process_rss_mb() * 2**20)


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def trim_free_memory() -> None:
    """Return the C heap's free memory to the system (glibc ``malloc_trim``; a no-op elsewhere)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
