"""Statistics over all training processes.

Under ``accelerate launch`` / ``torchrun`` each process holds one shard of an iteration's
rollout. A statistic that the paper's single-process algorithm takes over the whole batch
(PPO's advantage whitening, the number of response tokens of a minibatch) must be summed
over every process's shard, not taken per shard: :func:`global_sum` does that.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Processes in the default process group; 1 when torch.distributed is not initialized."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def global_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed element-wise over all processes (all-reduce), as a statistic without
    gradient; the tensor itself, detached, with one process. Every process must call it (a collective).
    """
    tensor = tensor.detach()
    if world_size() == 1:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total
