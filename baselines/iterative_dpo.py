"""Iterative DPO: the paper's Algorithm 2 (appendix H.1.3, Eq. 21).

REBEL's data path (two samples y, y' ~ π_t per prompt, log π_t recorded at rollout) with
the DPO loss against π_t, labelled by the sign of the reward difference:

    −log σ( sgn(r(y) − r(y')) · β (log πθ(y)/πt(y) − log πθ(y')/πt(y')) )

with r the shared loop's KL-shaped reward. A pair of equal rewards carries no preference
(its loss is the constant log 2). Hyperparameters: appendix H.1.5 (β = 0.05, 4 passes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rebel.algorithms.base import Algorithm
from rebel.rl_math import preference_loss
from rebel.rollout import Rollout


@dataclass(frozen=True)
class IterativeDPOParams:
    beta: float = 0.05
    """β of Eq. 21 (appendix H.1.5)."""

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")


class IterativeDPO(Algorithm):
    samples_per_prompt = 2
    Params = IterativeDPOParams
    label = "Iterative DPO"

    def loss(
        self, logprobs: torch.Tensor, batch: Rollout, values: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, accuracy = preference_loss(
            batch.grouped_logratio(logprobs), batch.grouped(batch.rewards), self.params.beta
        )
        return loss, {"preference_accuracy": accuracy}
