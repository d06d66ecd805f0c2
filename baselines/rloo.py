"""RLOO: REINFORCE with a leave-one-out baseline over k samples per prompt.

Kool et al. 2019 ("Buy 4 REINFORCE samples, get a baseline for free!"); Ahmadian et al.
2024 ("Back to basics"), the RLOO of paper Table 1. Hyperparameters: appendix H.1.5
(k = 2 or 4, one update pass per batch, kl coefficient 0.05 in the shared loop).

The advantage of sample i of a prompt is its reward minus the mean reward of the prompt's
other k − 1 samples, ``A_i = r_i − (Σ_j r_j − r_i) / (k − 1)``, and the loss is
``−mean_i A_i · log πθ(y_i|x)`` with the sequence log-prob, importance-weighted by the sequence
ratio πθ/π_t and clipped as in TRL's RLOOTrainer (:func:`rebel.rl_math.clipped_sequence_loss`:
exact on the first minibatch of a rollout, corrected on the later, off-policy ones).

The KL penalty is folded into the reward *before* the baseline: ``r`` is the shared
loop's sequence-level ``RM − γ (log π_t − log π_0)`` (Eq. 22), as in Ahmadian et al. 2024.
The baseline then also centres the KL term, and every algorithm of the harness optimizes
the same shaped reward, so RLOO differs from REINFORCE only in its baseline. (Libraries
that add the KL as a separate loss term instead optimize a different objective.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rebel.algorithms.base import Algorithm
from rebel.rl_math import clipped_sequence_loss, leave_one_out_advantages
from rebel.rollout import Rollout


@dataclass(frozen=True)
class RLOOParams:
    k: int = 2
    """Samples per prompt, k ≥ 2 (appendix H.1.5: K = 2 or 4, the registry's variants ``rloo_k2`` and
    ``rloo_k4``)."""
    epochs_per_iteration: int = 1
    """Update passes per batch (appendix H.1.5 lists none for RLOO: one pass)."""
    clip_range: float = 0.2
    """ε of the sequence-ratio clip (TRL's RLOO ``cliprange`` default)."""

    def __post_init__(self) -> None:
        if not self.k >= 2:
            raise ValueError(f"k must be >= 2 (the leave-one-out baseline needs another sample), got {self.k}")
        if not self.clip_range > 0:
            raise ValueError(f"clip_range must be > 0, got {self.clip_range}")


class RLOO(Algorithm):
    """RLOO with ``k`` samples per prompt (a Params field); labelled "RLOO (k=…)" in tables and figures."""

    Params = RLOOParams

    def __init__(self, params: RLOOParams) -> None:
        super().__init__(params)
        self.samples_per_prompt = params.k
        self.label = f"RLOO (k={params.k})"

    def loss(
        self, logprobs: torch.Tensor, batch: Rollout, values: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        advantages = leave_one_out_advantages(batch.grouped(batch.rewards)).reshape(-1)
        loss, clipped = clipped_sequence_loss(logprobs, batch.logprobs, advantages, self.params.clip_range)
        return loss, {"advantage_abs": advantages.abs().mean(), "clip_fraction": clipped}
