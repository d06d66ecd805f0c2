"""REBEL: REgression to RElative REward Based RL (Gao et al., NeurIPS 2024, Algorithm 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rebel.algorithms.base import Algorithm
from rebel.rollout import Rollout


@dataclass(frozen=True)
class REBELParams:
    eta: float = 1.0
    """η of Eq. 1 (appendix H.1.5: 1.0; the ablation of Table 6 tries 0.3, 0.7, 1.0, 2.0)."""
    self_play: bool = False
    """Appendix D.2 (REBEL as the base learner of SPO, Swamy et al. 2024): the reward of each sample
    is its preference l(x, y, y'') = 2 P(y ≻ y'' | x) − 1 against one more sample y'' ∼ π_t of the
    same prompt, from the preference oracle (the judge), so the regression target becomes
    l(x, y, y'') − l(x, y', y''). For intransitive preferences no reward model can represent."""

    def __post_init__(self) -> None:
        if not self.eta > 0:
            raise ValueError(f"eta must be > 0, got {self.eta}")


def rebel_residuals(logratio: torch.Tensor, rewards: torch.Tensor, eta: float) -> torch.Tensor:
    """Per-pair residuals of Eq. 1 (scaled by η), for ``[pairs, 2]`` tensors.

    Eq. 1 regresses ``(1/η)(ln πθ(y|x)/πt(y|x) − ln πθ(y'|x)/πt(y'|x))`` onto
    ``r(x, y) − r(x, y')``. Multiplying the residual by η gives the same minimizer and is the
    form of the authors' implementation:
    ``(ln πθ(y)/πt(y) − ln πθ(y')/πt(y')) − η (r(y) − r(y'))``.
    """
    return (logratio[:, 0] - logratio[:, 1]) - eta * (rewards[:, 0] - rewards[:, 1])


class REBEL(Algorithm):
    """Algorithm 1 with μ = π_t: two samples y, y' ~ π_t per prompt (paper §5).

    The loss is the mean over pairs of the squared residual of :func:`rebel_residuals`;
    log π_t is the log-prob recorded at rollout time and r is the KL-shaped reward of
    Eq. 22. There is no value network, no clipping and no advantage normalization.
    The logged ``regression_mse`` is this loss (paper Figure 6).
    """

    samples_per_prompt = 2
    Params = REBELParams
    label = "REBEL"

    def loss(
        self, logprobs: torch.Tensor, batch: Rollout, values: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logratio = batch.grouped_logratio(logprobs)
        residuals = rebel_residuals(logratio, batch.grouped(batch.rewards), self.params.eta)
        loss = residuals.pow(2).mean()
        return loss, {"regression_mse": loss.detach()}
