"""REINFORCE with a moving-average baseline, as in Ahmadian et al. 2024 ("Back to basics").

One sample per prompt (appendix H.1.5: one update pass per batch, kl coefficient 0.05 in
the shared loop). The advantage is ``A = r − b`` with the shared loop's KL-shaped sequence
reward r (Eq. 22), and the loss is the sequence-level importance-weighted, ratio-clipped
score-function loss of :func:`rebel.rl_math.clipped_sequence_loss`. The baseline b is an
exponential moving average of the mean batch reward, ``b ← α b + (1 − α) mean(r)``,
updated after each iteration from the mean over all processes, and starts at 0: the
reward model is normalized so that reference summaries score 0 on average.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rebel.algorithms.base import Algorithm
from rebel.rl_math import clipped_sequence_loss
from rebel.rollout import Rollout


@dataclass(frozen=True)
class REINFORCEParams:
    baseline_decay: float = 0.9
    """α of the moving-average baseline (Ahmadian et al. 2024 do not state theirs)."""
    clip_range: float = 0.2
    """ε of the sequence-ratio clip of :func:`rebel.rl_math.clipped_sequence_loss` (TRL's RLOO ``cliprange``
    default)."""
    epochs_per_iteration: int = 1
    """Update passes per batch (appendix H.1.5 lists none for REINFORCE: one pass)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {self.baseline_decay}")
        if not self.clip_range > 0:
            raise ValueError(f"clip_range must be > 0, got {self.clip_range}")


class REINFORCE(Algorithm):
    samples_per_prompt = 1
    Params = REINFORCEParams
    label = "REINFORCE"

    def __init__(self, params: REINFORCEParams) -> None:
        super().__init__(params)
        self.baseline = 0.0

    def loss(
        self, logprobs: torch.Tensor, batch: Rollout, values: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, clipped = clipped_sequence_loss(
            logprobs, batch.logprobs, batch.rewards - self.baseline, self.params.clip_range
        )
        return loss, {"baseline": torch.tensor(self.baseline), "clip_fraction": clipped}

    def observe(self, metrics: dict[str, float]) -> None:
        decay = self.params.baseline_decay
        self.baseline = decay * self.baseline + (1.0 - decay) * metrics["reward"]

    def state_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.baseline = float(state["baseline"])
