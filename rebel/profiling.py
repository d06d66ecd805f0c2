"""Wall time and peak memory, measured the same way for every algorithm.

Per phase of an iteration (generation, judging, scoring, update) :func:`phase` records the
wall seconds (CUDA-synchronized on a GPU) and the phase's peak memory:

- on CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` at the
  phase's start (tensors only: weights, optimizer state, activations; not the allocator's cache);
- on CPU, the peak resident set size of the process during the phase, sampled every 5 ms
  from a background thread (``psutil``). ``ru_maxrss`` cannot be used per phase: it is
  the process's peak since it started.

:func:`profile_summary` averages the per-iteration records after a warm-up
(``runtime.profile_warmup_iterations``, ``runtime.profile_iterations``).
"""

from __future__ import annotations

import resource
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import torch

PHASES = ("generation", "judging", "scoring", "update")
"""generation: sampling; judging: self-play preference queries; scoring: log π_t, log π_0, reward
model and critic values of the samples; update: the algorithm's update passes."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RssSampler:
    """Peak resident memory (bytes) of this process while running, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.005) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0

    def _sample(self) -> None:
        self.peak = max(self.peak, self._process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


@contextmanager
def phase(timings: dict[str, float], name: str, device: torch.device) -> Iterator[None]:
    """Record the phase's wall seconds (CUDA-synchronized) and peak memory in ``timings``:
    ``{name}_seconds`` and ``{name}_peak_gpu_mib`` on CUDA; on CPU ``{name}_peak_rss_mib`` and the
    process's CPU seconds ``{name}_cpu_seconds`` (user + system, all threads: less sensitive than
    wall time to other processes sharing the cores)."""
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        yield
        _sync(device)
        timings[f"{name}_seconds"] = time.perf_counter() - start
        timings[f"{name}_peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        with RssSampler() as rss:
            start, cpu_start = time.perf_counter(), time.process_time()
            yield
            timings[f"{name}_seconds"] = time.perf_counter() - start
            timings[f"{name}_cpu_seconds"] = time.process_time() - cpu_start
        timings[f"{name}_peak_rss_mib"] = rss.peak / 2**20


def peak_rss_mib() -> float:
    """Peak resident memory of this process since it started (MiB; ``ru_maxrss``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def profile_summary(records: list[dict[str, Any]], warmup: int, iterations: int | None) -> dict[str, Any]:
    """Mean seconds per phase and peak memory over the iterations ``warmup ≤ t < warmup + iterations``
    (all after the warm-up when ``iterations`` is None), by each record's ``iteration``.

    A phase an algorithm does not have (DPO generates nothing) counts 0 s. ``total`` is the
    sum of the phases: the paper's runtime "generation and policy update" (§5.1), with the
    scoring of the samples shown separately. Peak memory is the maximum over the averaged
    iterations, per phase and over all (GiB): GPU memory allocated on CUDA, resident set size on CPU.
    """
    end = None if iterations is None else warmup + iterations
    measured = [r for r in records if r["iteration"] >= warmup and (end is None or r["iteration"] < end)]
    summary: dict[str, Any] = {"warmup_iterations": warmup, "iterations_averaged": len(measured)}
    if not measured:
        return summary
    for kind in ("", "cpu_"):
        if kind and f"update_{kind}seconds" not in measured[0]:
            continue
        seconds = {p: sum(r.get(f"{p}_{kind}seconds", 0.0) for r in measured) / len(measured) for p in PHASES}
        summary[f"{kind}seconds"] = seconds | {"total": sum(seconds.values())}
    for kind in ("gpu", "rss"):
        peaks = {
            p: max(r[f"{p}_peak_{kind}_mib"] for r in measured) / 1024
            for p in PHASES
            if f"{p}_peak_{kind}_mib" in measured[0]
        }
        if peaks:
            summary[f"peak_{kind}_gib"] = peaks | {"all": max(peaks.values())}
    return summary
