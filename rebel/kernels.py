"""Floating-point kernel paths on the CPU: which vectorized code PyTorch, MKL and oneDNN run.

The same float32 computation gives different bits on CPUs with different instruction sets:
PyTorch dispatches its own kernels by CPU capability (AVX-512, AVX2 or plain C++), MKL picks
its GEMM code by processor, oneDNN by ISA. A few ulps early in training can move a
from-scratch model's quality visibly (docs/reproducibility.md), so ``runtime.cpu_kernels``
names a path for every stage:

- ``native``: what the machine picks (fastest; results depend on the CPU); the environment
  is left as it is, so ``ATEN_CPU_CAPABILITY=...`` set by hand still applies;
- ``portable``: PyTorch's AVX2 kernels on every x86-64 CPU with AVX2, MKL capped at AVX2 in
  strict reproducibility mode (``MKL_CBWR=AUTO,STRICT``), oneDNN capped at AVX2. No slower
  than native on an AVX2 machine; MKL may still pick another AVX2 GEMM on another vendor's CPU;
- ``exact``: as portable, with MKL's ``COMPATIBLE`` branch, the one MKL documents as giving
  the same results on Intel and AMD processors; about twice as slow on the embedded model;
- ``scalar``: PyTorch's non-vectorized kernels (``default``) with MKL's ``COMPATIBLE`` branch:
  a path that differs from ``portable`` in both libraries, for the reproducibility check.

The variables must be set before torch is imported (``python -m rebel`` does it from the
config, :func:`pin_from_argv`); :func:`active` reports what the process really runs.
This module must not import torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
KERNEL_PATHS: dict[str, dict[str, str]] = {
    "native": {},
    "portable": _AVX2 | {"MKL_CBWR": "AUTO,STRICT"},
    "exact": _AVX2 | {"MKL_CBWR": "COMPATIBLE,STRICT"},
    "scalar": _AVX2 | {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE,STRICT"},
}
VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
# The capability PyTorch reports for each ATEN_CPU_CAPABILITY value (torch.backends.cpu.get_cpu_capability).
_REPORTED = {"avx2": "AVX2", "default": "DEFAULT", "avx512": "AVX512"}


def environment(path: str) -> dict[str, str]:
    """The environment variables of a kernel path (none for ``native``)."""
    if path not in KERNEL_PATHS:
        raise ValueError(f"unknown kernel path '{path}'; expected one of {', '.join(KERNEL_PATHS)}")
    return KERNEL_PATHS[path]


def pin(path: str) -> None:
    """Set the path's variables in this process (before torch is imported), clearing the others;
    ``native`` leaves the environment untouched."""
    wanted = environment(path)
    if path == "native":
        return
    for name in VARIABLES:
        if name in wanted:
            os.environ[name] = wanted[name]
        else:
            os.environ.pop(name, None)


def pin_from_argv(argv: list[str]) -> str | None:
    """Pin the kernel path named by ``runtime.cpu_kernels`` of the ``--config`` file in ``argv``
    (the embedded config without one). Returns the path, or None when the config cannot be read
    here (the CLI then reports the config error in one line)."""
    from rebel.config import read_config_file
    from rebel.paths import DEFAULT_CONFIG

    config_path = DEFAULT_CONFIG
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            config_path = Path(argv[i + 1])
        elif arg.startswith("--config="):
            config_path = Path(arg.split("=", 1)[1])
    try:
        config = read_config_file(config_path)  # with its `extends` resolved
        path = config["runtime"].get("cpu_kernels", "native")
        pin(path)
    except Exception:  # noqa: BLE001 - a broken config is reported by the CLI's validation
        return None
    return path


def active(path: str) -> dict[str, Any]:
    """What this process runs: the configured path, PyTorch's reported capability and the variables.

    Raises if torch runs other ATen kernels than the path asks for (torch was imported before
    the variables were set), since every number written would then belong to another path.
    """
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    wanted = environment(path).get("ATEN_CPU_CAPABILITY")
    if wanted is not None and capability != _REPORTED[wanted]:
        from rebel.errors import HarnessError

        raise HarnessError(
            f"runtime.cpu_kernels is '{path}' but PyTorch runs its {capability} kernels: torch was "
            "imported before the kernel variables were set; run stages through 'python -m rebel'"
        )
    return {
        "cpu_kernels": path,
        "cpu_capability": capability,
        **{name: os.environ[name] for name in VARIABLES if name in os.environ},
    }
