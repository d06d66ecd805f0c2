"""The command line that starts a training stage: one process, or ``runtime.processes`` data-parallel processes.

Several processes split each iteration's prompts evenly (the global prompt order is unchanged) and average their
gradients (:mod:`rebel.loop`). They are started by ``torchrun`` (DDP: NCCL on GPUs, gloo on CPUs) or, with
``runtime.accelerate_config`` (sharded training: FSDP, DeepSpeed ZeRO-3; ``workflow/accelerate/``), by
``accelerate launch`` with that file. Torch-free: the workflow builds its commands from it at parse time.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from rebel.paths import REPO_ROOT


def launcher(runtime: dict[str, Any]) -> str:
    """The command that runs ``python -m rebel`` under the config's ``runtime.processes`` and launcher."""
    processes, accelerate_config = runtime["processes"], runtime["accelerate_config"]
    if processes == 1:
        return "python -m rebel"
    if accelerate_config is None:
        return f"python -m torch.distributed.run --standalone --nproc_per_node {processes} -m rebel"
    path = Path(accelerate_config)
    path = path if path.is_absolute() else REPO_ROOT / path
    return f"accelerate launch --config_file {shlex.quote(str(path))} --num_processes {processes} -m rebel"


def job_gpus(runtime: dict[str, Any], processes: int = 1) -> int:
    """GPUs a job of ``processes`` processes asks of the scheduler: ``runtime.gpus`` per process."""
    return runtime["gpus"] * processes
