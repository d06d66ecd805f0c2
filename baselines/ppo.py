"""PPO for RLHF as in the TL;DR reproduction the paper follows (appendix H.1.3; Huang et al.
2024, "The N+ implementation details of RLHF with PPO"; Schulman et al. 2017).

One sample per prompt. A critic initialized from the reward model (``value_model = ValueModel``;
the shared loop builds and optimizes it) gives per-token values V(x, y_<t). Rewards are per
token, from the shared loop: ``−γ (log π_t − log π_0)`` at every token, the reward-model
score (Γ without EOS) added at the last one (Eq. 22 per token). Per iteration, generalized
advantage estimation (Schulman et al. 2016)

    δ_t = r_t + γ_d V_{t+1} − V_t,    A_t = δ_t + γ_d λ A_{t+1},    R_t = A_t + V_t

with γ_d = 1, λ = 0.95 and V = 0 after the last token; advantages are whitened over the
rollout's tokens, of all processes. The loss on a minibatch, averaged over its response tokens, is

    max(−A ρ, −A clip(ρ, 1 ± ε)) + c_v · ½ max((V − R)², (clip(V, V_old ± ε_v) − R)²)

with ρ = πθ/π_t per token, ε = ε_v = 0.2, c_v = 0.1 (appendix H.1.5), 4 passes per batch.

What is global under several processes (each holding a shard of the rollout): the whitening's
mean and variance are over every process's tokens (:func:`rebel.rl_math.masked_whiten`), and
the token mean of the loss is over the global minibatch's tokens (``Rollout.token_mean`` with the
loop's ``token_normalizer``), so the update is the single-process one on the same global batch,
whatever the shards' response lengths or ``runtime.update_micro_batch_prompts``. The critic is
trained through its forward (``rebel.models.TokenValueModel``), so DDP all-reduces its gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rebel.algorithms.base import Algorithm
from rebel.rl_math import gae, masked_whiten
from rebel.rollout import Rollout
from rebel.sources import ValueModel


@dataclass(frozen=True)
class PPOParams:
    clip_range: float = 0.2
    """ε of the clipped policy objective (appendix H.1.5)."""
    value_clip_range: float = 0.2
    """ε_v of the clipped value loss (implementation notes)."""
    vf_coef: float = 0.1
    """c_v, weight of the value loss (appendix H.1.5)."""
    gamma: float = 1.0
    """Discount γ_d (appendix H.1.5)."""
    lam: float = 0.95
    """GAE λ (appendix H.1.5)."""
    whiten_advantages: bool = True
    """Normalize advantages to zero mean and unit variance over the rollout's tokens."""

    def __post_init__(self) -> None:
        for name in ("clip_range", "value_clip_range", "vf_coef"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("gamma", "lam"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


class PPO(Algorithm):
    samples_per_prompt = 1
    value_model = ValueModel
    Params = PPOParams
    label = "PPO"

    def prepare(self, rollout: Rollout) -> Rollout:
        mask = rollout.response_mask.float()
        advantages, returns = gae(rollout.token_rewards, rollout.values, mask, self.params.gamma, self.params.lam)
        if self.params.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        return rollout.with_targets(advantages=advantages, returns=returns)

    def loss(
        self, logprobs: torch.Tensor, batch: Rollout, values: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p, mask = self.params, batch.response_mask.float()
        ratio = torch.exp((logprobs - batch.logprobs) * mask)
        # Token means over the global minibatch (batch.token_normalizer; this batch's tokens when unset).
        policy_loss = batch.token_mean(
            torch.maximum(
                -batch.advantages * ratio, -batch.advantages * ratio.clamp(1 - p.clip_range, 1 + p.clip_range)
            )
        )
        clipped = batch.values + (values - batch.values).clamp(-p.value_clip_range, p.value_clip_range)
        value_loss = 0.5 * batch.token_mean(
            torch.maximum((values - batch.returns) ** 2, (clipped - batch.returns) ** 2)
        )
        stats = {
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "clip_fraction": batch.token_mean(((ratio - 1).abs() > p.clip_range).float()),
        }
        return policy_loss + p.vf_coef * value_loss, stats
