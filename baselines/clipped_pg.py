"""The clipped policy-gradient baseline of the image setting, which the paper names PPO (§5.3; Black et al.
2023, DDPO_IS; Fan et al. 2024; Oertell et al. 2024): PPO's clipped surrogate on every denoising action, with
no critic and no GAE.

One trajectory per prompt. The advantage A of a trajectory is its reward normalized per prompt with rolling
statistics and clipped to ±10 (the source does this for every algorithm: :mod:`rebel.trajectories`); every
action of the trajectory shares it. The loss on a minibatch is the mean over its trajectories and actions of

    max(−A ρ_i, −A clip(ρ_i, 1 ± ε)),    ρ_i = πθ(x_{i+1} | x_i, c) / π_t(x_{i+1} | x_i, c),

with ε = 1e-4 and 2 passes over each batch (paper H.3.3: clip range 1e-4, 2 sample inner epochs). In the
language settings the same surrogate per token is PPO's policy loss (:mod:`baselines.ppo`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rebel.algorithms.base import Algorithm
from rebel.rollout import Rollout


@dataclass(frozen=True)
class ClippedPGParams:
    clip_range: float = 1e-4
    """ε of the per-action ratio clip (paper H.3.3)."""
    epochs_per_iteration: int = 2
    """Passes over each batch of trajectories (paper H.3.3: "number of sample inner epochs: 2")."""

    def __post_init__(self) -> None:
        if not self.clip_range > 0:
            raise ValueError(f"clip_range must be > 0, got {self.clip_range}")


class ClippedPG(Algorithm):
    samples_per_prompt = 1
    Params = ClippedPGParams
    label = "PPO (clipped PG)"

    def loss(
        self, logprobs: torch.Tensor, batch: Rollout, values: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        eps = self.params.clip_range
        ratio = torch.exp(logprobs - batch.logprobs)
        advantages = batch.rewards[:, None]
        losses = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1 - eps, 1 + eps))
        loss = batch.token_mean(losses)
        return loss, {"clip_fraction": batch.token_mean(((ratio - 1).abs() > eps).float()).detach()}
