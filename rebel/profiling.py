"""Wall time and peak memory, measured the same way for every algorithm."""

from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def phase(timings: dict[str, float], name: str, device: torch.device) -> Iterator[None]:
    """Record the phase's wall seconds (CUDA-synchronized) and peak GPU memory in ``timings``."""
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    yield
    _sync(device)
    timings[f"{name}_seconds"] = time.perf_counter() - start
    if device.type == "cuda":
        timings[f"{name}_peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
