"""REINFORCE with a moving-average baseline, as in Ahmadian et al. 2024 ("Back to basics").

One sample per prompt (appendix H.1.5: one update pass per batch, kl coefficient 0.05 in
the shared loop). The loss is ``−mean (r − b) · log πθ(y|x)`` with the sequence log-prob
and the shared loop's KL-shaped sequence reward r (Eq. 22). The baseline b is an
exponential moving average of the mean batch reward, ``b ← α b + (1 − α) mean(r)``,
updated after each iteration from the mean over all processes, and starts at 0: the
reward model is normalized so that reference summaries score 0 on average.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rebel.algorithms.base import Algorithm
from rebel.rollout import Rollout


@dataclass(frozen=True)
class REINFORCEParams:
    baseline_decay: float = 0.9
    """α of the moving-average baseline (Ahmadian et al. 2024 do not state theirs)."""
    epochs_per_iteration: int = 1
    """Update passes per batch (appendix H.1.5 lists none for REINFORCE: one on-policy pass)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {self.baseline_decay}")


class REINFORCE(Algorithm):
    samples_per_prompt = 1
    Params = REINFORCEParams
    label = "REINFORCE"

    def __init__(self, params: REINFORCEParams) -> None:
        super().__init__(params)
        self.baseline = 0.0

    def loss(self, logprobs: torch.Tensor, batch: Rollout,
             values: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        advantages = batch.rewards - self.baseline
        loss = -(advantages * logprobs.sum(-1)).mean()
        return loss, {"baseline": torch.tensor(self.baseline)}

    def observe(self, metrics: dict[str, float]) -> None:
        decay = self.params.baseline_decay
        self.baseline = decay * self.baseline + (1.0 - decay) * metrics["reward"]

    def state_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.baseline = float(state["baseline"])
