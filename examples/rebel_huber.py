"""A worked example of an algorithm outside the package: REBEL with a Huber regression loss.

Named in a config by import path, ``algorithms: [..., rebel, examples.rebel_huber:REBELHuber]``
(run from the repository root, or with this folder's parent on ``PYTHONPATH``); see
docs/adding-an-algorithm.md ("Compare my algorithm against REBEL").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rebel.algorithms.base import Algorithm
from rebel.algorithms.rebel import rebel_residuals
from rebel.rollout import Rollout


@dataclass(frozen=True)
class REBELHuberParams:
    eta: float = 1.0
    """η of Eq. 1, as REBEL's (appendix H.1.5: 1.0)."""
    delta: float = 1.0
    """Huber threshold δ on the η-scaled residual [nats]: squared below it, linear above."""

    def __post_init__(self) -> None:
        if not (self.eta > 0 and self.delta > 0):
            raise ValueError(f"eta and delta must be > 0, got eta={self.eta}, delta={self.delta}")


class REBELHuber(Algorithm):
    """REBEL (paper Eq. 1, μ = π_t) with the squared loss replaced by Huber's (Huber 1964, *Robust
    Estimation of a Location Parameter*): per pair ``ρ_δ(e) = e²/2`` for ``|e| ≤ δ`` and
    ``δ(|e| − δ/2)`` beyond, of the residual ``e = (ln πθ(y)/πt(y) − ln πθ(y')/πt(y')) − η (r(y) − r(y'))``.
    Pairs with a large reward gap then pull with bounded force (a robust regression). For
    ``δ → ∞`` it is REBEL's loss halved. It logs ``regression_mse`` (the mean squared residual)
    as REBEL does, so it appears in Figure 6.
    """

    samples_per_prompt = 2
    Params = REBELHuberParams
    label = "REBEL (Huber)"

    def loss(
        self, logprobs: torch.Tensor, batch: Rollout, values: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        residuals = rebel_residuals(batch.grouped_logratio(logprobs), batch.grouped(batch.rewards), self.params.eta)
        loss = F.huber_loss(residuals, torch.zeros_like(residuals), delta=self.params.delta)
        return loss, {"regression_mse": residuals.detach().pow(2).mean()}
