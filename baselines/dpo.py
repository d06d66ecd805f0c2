"""DPO: direct preference optimization, offline on the data set's preference pairs
(Rafailov et al. 2023, Eq. 7; paper Table 1 and appendix H.1.5).

    −log σ( β (log πθ(y_w|x)/π_ref(y_w|x) − log πθ(y_l|x)/π_ref(y_l|x)) )

with π_ref the SFT policy, the chosen response y_w and the rejected y_l of each human
preference pair (the pairs the reward model is trained on), β = 0.05, one pass over the
pairs (appendix H.1.5). The shared loop feeds the pairs in a seeded order, a batch of
``prompts_per_iteration`` pairs per iteration, with the preference label as the reward
(1 chosen, 0 rejected); no response is generated and no reward model is called.
DPO never samples, so its log-probs (policy and reference) are taken at temperature 1, as in the
reference implementation, whatever ``policy.temperature`` the online algorithms sample at
(:meth:`rebel.sources.PreferencePairs.logprob_temperature`).

The loss (:func:`rebel.rl_math.preference_loss`) is shared with iterative DPO (:mod:`baselines.iterative_dpo`),
which labels pairs by reward and anchors at π_t instead of π_ref.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rebel.algorithms.base import Algorithm
from rebel.rl_math import preference_loss
from rebel.rollout import Rollout
from rebel.sources import PreferencePairs


@dataclass(frozen=True)
class DPOParams:
    beta: float = 0.05
    """β of the DPO loss (appendix H.1.5)."""
    epochs: float = 1.0
    """Passes over the preference pairs (appendix H.1.5: 1 train epoch)."""
    epochs_per_iteration: int = 1
    """Update passes per batch of pairs: one, so each pair is seen ``epochs`` times."""

    def __post_init__(self) -> None:
        for name in ("beta", "epochs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


class DPO(Algorithm):
    samples_per_prompt = 2
    source = PreferencePairs
    Params = DPOParams
    label = "DPO"

    def loss(
        self, logprobs: torch.Tensor, batch: Rollout, values: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, accuracy = preference_loss(
            batch.grouped_logratio(logprobs, against_reference=True), batch.grouped(batch.rewards), self.params.beta
        )
        return loss, {"preference_accuracy": accuracy}
