"""The reinforcement-learning maths the algorithms and the shared loop have in common, in one place.

Each function is the code path of every caller (the loop, the algorithms, the evaluation), unit-tested
once against hand-computed values (``tests/test_rl_math.py``). Equation numbers are the REBEL paper's
(Gao et al., NeurIPS 2024) unless another source is named. Per-token tensors are ``[N, R]`` over the
response tokens, with a mask that is 1 up to and including the first EOS.

This module imports only torch (and :func:`rebel.distributed.global_sum` for statistics over all
training processes), so that any algorithm, in the harness or outside it, can use it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rebel.distributed import global_sum


def masked_mean(values: torch.Tensor, mask: torch.Tensor, normalizer: float | None = None) -> torch.Tensor:
    """``Σ values · mask`` divided by ``normalizer``, or by ``Σ mask`` (the mean over the masked entries)
    when it is None.

    The loop passes a ``normalizer`` to make a micro-batch's token sum the token mean over the global
    minibatch (``rebel.rollout.Rollout.token_mean``; PPO's per-token losses, Huang et al. 2024).
    """
    mask = mask.to(values.dtype)
    total = (values * mask).sum()
    return total / (mask.sum() if normalizer is None else normalizer)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit (Bessel-corrected) variance over the masked entries; zero elsewhere.

    Mean and variance are global: over the masked entries of all processes (two all-reduces
    under torch.distributed), as one process whitening the whole rollout (PPO's advantage
    whitening; Huang et al. 2024, "The N+ implementation details of RLHF with PPO").
    """
    count = global_sum(mask.sum())
    mean = global_sum((values * mask).sum()) / count
    var = global_sum(((values - mean) ** 2 * mask).sum()) / (count - 1)
    return (values - mean) * torch.rsqrt(var + eps) * mask


def gae(
    token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns ``[N, R]`` by generalized advantage estimation (Schulman et al. 2016,
    "High-dimensional continuous control using generalized advantage estimation"); zero outside ``mask``:

        δ_t = r_t + γ V_{t+1} − V_t,    A_t = δ_t + γ λ A_{t+1},    R_t = A_t + V_t.

    Responses are right-padded, so the value after a response's last token is the padding's 0.
    """
    token_rewards, values = token_rewards * mask, values * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        next_value = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def leave_one_out_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """``[prompts, k]`` rewards → ``r_i − mean_{j≠i} r_j`` per prompt (k ≥ 2): the leave-one-out
    baseline of RLOO (Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for free!";
    Ahmadian et al. 2024, "Back to basics"), ``A_i = r_i − (Σ_j r_j − r_i) / (k − 1)``."""
    k = rewards.shape[1]
    return rewards - (rewards.sum(1, keepdim=True) - rewards) / (k - 1)


def clipped_sequence_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean max(−A ρ, −A clip(ρ, 1 ± ε))`` with the sequence ratio ``ρ = πθ(y|x) / π_t(y|x)``, and the
    fraction of clipped ratios: the score-function loss of REINFORCE and RLOO as TRL's RLOOTrainer
    computes it (one sequence-level action; the clipped surrogate of Schulman et al. 2017).

    One pass over a rollout is several optimizer steps (``minibatch_prompts`` < ``prompts_per_iteration``),
    so from the second minibatch on the samples come from an older policy π_t. The plain REINFORCE loss
    ``−A log πθ(y|x)`` would then be the gradient of no objective of πθ; the importance weight ρ corrects
    for the change, and the clip bounds the step, as TRL's RLOOTrainer does with its one sequence-level
    action ("REINFORCE is PPO with one epoch and one minibatch"). This keeps REINFORCE and RLOO on the
    same optimizer-step budget as the other algorithms instead of one step per rollout. On the first
    minibatch ρ = 1 and the gradient is exactly the on-policy ``−A ∇ log πθ(y|x)``.
    ``logprobs`` are the current per-token log-probs ``[n, R]``, ``old_logprobs`` those at rollout.
    """
    ratio = torch.exp(logprobs.sum(-1) - old_logprobs.sum(-1))
    losses = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1 - clip_range, 1 + clip_range))
    return losses.mean(), ((ratio - 1).abs() > clip_range).float().mean()


def preference_loss(logratio: torch.Tensor, rewards: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean DPO loss and preference accuracy of ``[pairs, 2]`` log-ratios, each pair labelled by
    ``sgn(r(y) − r(y'))``; a pair of equal rewards carries no preference (loss log 2):

        −log σ( sgn(r(y) − r(y')) · β (log πθ(y)/π(y) − log πθ(y')/π(y')) ),

    DPO's loss (Rafailov et al. 2023, Eq. 7) with π = π_ref and labels from the preference data, and
    iterative DPO's (Eq. 21, appendix H.1.3) with π = π_t and labels from the reward.
    """
    sign = torch.sign(rewards[:, 0] - rewards[:, 1])
    margin = sign * beta * (logratio[:, 0] - logratio[:, 1])
    return -F.logsigmoid(margin).mean(), (margin > 0).float().mean()


def shaped_token_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    kl_coef: float,
) -> torch.Tensor:
    """Eq. 22 per token (appendix H.1.4): ``−γ (log π_t − log π_0)`` at every response token (the
    per-token k1 estimate of the KL, :func:`sequence_logratio`, times γ), the score added at the last
    one (EOS, or the final position when there is none). Summed over tokens it is the sequence
    reward ``RM − γ (log π_t − log π_0)`` every algorithm sees.
    """
    token_rewards = -kl_coef * (logprobs - ref_logprobs) * response_mask
    last = response_mask.sum(-1).long() - 1
    return token_rewards.index_put((torch.arange(len(scores), device=scores.device), last), scores, accumulate=True)


def sequence_logratio(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """``[N]`` sequence log-ratios ``log π(y|x) − log π_ref(y|x)`` of per-token log-probs ``[N, R]``
    (zero outside the response). For y ~ π each is the k1 estimate of KL(π(·|x) ‖ π_ref(·|x))
    (Schulman 2020, "Approximating KL divergence"): unbiased, though single samples may be negative.
    """
    return logprobs.sum(-1) - ref_logprobs.sum(-1)


def kl_k1(logratio: torch.Tensor) -> tuple[float, float]:
    """The k1 estimate of KL(π‖π_ref) from the sequence log-ratios of samples y ~ π
    (:func:`sequence_logratio`; Schulman 2020, "Approximating KL divergence"), their mean, with its
    standard error (sample standard deviation / √n; NaN for a single sample)."""
    se = (logratio.std() / math.sqrt(len(logratio))).item() if len(logratio) > 1 else float("nan")
    return logratio.mean().item(), se


class PerPromptStatTracker:
    """Per-prompt reward normalization with rolling statistics (Black et al. 2023, DDPO; paper H.3.3):
    each prompt keeps its last ``buffer_size`` rewards; a reward is normalized by its prompt's buffer mean
    and standard deviation (ddof 0) once the buffer holds ``min_count``, else by the whole batch's, as
    ``(r − mean) / (std + 1e-6)``. The buffers are the state a resumed run must restore (:meth:`state_dict`).
    """

    def __init__(self, buffer_size: int, min_count: int) -> None:
        if not 1 <= min_count <= buffer_size:
            raise ValueError(f"need 1 <= min_count <= buffer_size, got {min_count} and {buffer_size}")
        self.buffer_size, self.min_count = buffer_size, min_count
        self.buffers: dict[str, list[float]] = {}

    def normalize(self, prompts: list[str], rewards: torch.Tensor) -> torch.Tensor:
        """``[N]`` normalized ``rewards`` of samples of ``prompts`` (one per row), after adding them to the buffers."""
        values = rewards.double()
        out = torch.empty_like(values)
        batch_mean, batch_std = values.mean(), values.std(correction=0)
        for prompt in dict.fromkeys(prompts):
            rows = torch.tensor([p == prompt for p in prompts], device=values.device)
            buffer = (self.buffers.get(prompt, []) + values[rows].tolist())[-self.buffer_size :]
            self.buffers[prompt] = buffer
            if len(buffer) < self.min_count:
                mean, std = batch_mean, batch_std
            else:
                held = torch.tensor(buffer, dtype=torch.float64)
                mean, std = held.mean(), held.std(correction=0)
            out[rows] = (values[rows] - mean) / (std + 1e-6)
        return out.to(rewards.dtype)

    def state_dict(self) -> dict[str, list[float]]:
        return {prompt: list(buffer) for prompt, buffer in self.buffers.items()}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        self.buffers = {prompt: list(buffer) for prompt, buffer in state.items()}
