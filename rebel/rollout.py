"""The batch of samples one iteration of the shared loop collects (its rollout source, :mod:`rebel.sources`),
and the algorithms consume."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from rebel.rl_math import masked_mean


@dataclass(frozen=True)
class Rollout:
    """``N = prompts × samples_per_prompt`` rows; the k samples of a prompt are consecutive.

    Token-level tensors are ``[N, R]`` over the R generated tokens; ``response_mask`` is 1
    up to and including the first EOS (everything after it is padding).
    """

    prompt_ids: torch.Tensor  # [N, P] left-padded
    prompt_mask: torch.Tensor  # [N, P]
    response_ids: torch.Tensor  # [N, R]
    response_mask: torch.Tensor  # [N, R]
    has_eos: torch.Tensor  # [N] bool
    logprobs: torch.Tensor  # [N, R] log π_t at rollout time (at the source's log-prob temperature)
    ref_logprobs: torch.Tensor  # [N, R] log π_0 (the SFT policy)
    scores: torch.Tensor  # [N] reward-model score (self-play: 2 P(y ≻ y'') − 1), Γ where no EOS (H.1.4);
    #     for preference pairs, the label (1 chosen, 0 rejected)
    rewards: torch.Tensor  # [N] scores − γ (log π_t − log π_0), Eq. 22
    token_rewards: torch.Tensor  # [N, R] the same reward per token: −γ (log π_t − log π_0) per token,
    #        the score added at the last response token; sums to ``rewards``
    samples_per_prompt: int
    values: torch.Tensor | None = None  # [N, R] the critic's values at rollout (algorithms with a value model)
    advantages: torch.Tensor | None = None  # [N, R] set by an algorithm's ``prepare``
    returns: torch.Tensor | None = None  # [N, R] set by an algorithm's ``prepare``
    engine_logprobs: torch.Tensor | None = None  # [N, R] the generation engine's log π_t of the sampled tokens
    #         (vLLM), a consistency check of ``logprobs``; never trained on
    trajectory: torch.Tensor | None = None  # [N, S + 1, C, H, W] a diffusion source's latents (rebel.trajectories)
    context: torch.Tensor | None = None  # [N, L, D] its prompts' text embeddings
    prompt_rows: torch.Tensor | None = None  # [N] which of the iteration's rows each sample answers
    token_normalizer: float | None = None  # set by the loop's ``update`` on each micro-batch: the divisor that
    # makes a per-token sum the token mean over the global minibatch
    # (all processes), ``share · T / processes`` (see :meth:`token_mean`)

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    @property
    def num_prompts(self) -> int:
        return len(self) // self.samples_per_prompt

    def select_prompts(self, prompt_index: torch.Tensor) -> Rollout:
        """The rows of the given prompts, each prompt's k samples kept together and in order."""
        k = self.samples_per_prompt
        rows = (prompt_index[:, None] * k + torch.arange(k, device=prompt_index.device)).reshape(-1)
        return replace(
            self,
            **{
                f.name: getattr(self, f.name)[rows]
                for f in fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)
            },
        )

    def select_samples(self, rows: torch.Tensor, samples_per_prompt: int) -> Rollout:
        """The given rows (``samples_per_prompt`` consecutive rows per prompt): a sampling distribution
        other than π_t's, e.g. REBEL's best and worst of N (Remark 1)."""
        tensors = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(
            self,
            samples_per_prompt=samples_per_prompt,
            **{name: value[rows] for name, value in tensors.items() if isinstance(value, torch.Tensor)},
        )

    def with_targets(self, *, advantages: torch.Tensor, returns: torch.Tensor) -> Rollout:
        """A copy carrying per-token advantages and returns (set once per iteration by ``prepare``)."""
        return replace(self, advantages=advantages, returns=returns)

    def with_token_normalizer(self, token_normalizer: float) -> Rollout:
        """A copy whose :meth:`token_mean` divides by ``token_normalizer``."""
        return replace(self, token_normalizer=token_normalizer)

    def token_mean(self, values: torch.Tensor) -> torch.Tensor:
        """``[n, R]`` per-token ``values`` summed over the response tokens, divided by ``token_normalizer``.

        The loop's ``update`` sets ``token_normalizer = share · T / processes`` on each micro-batch, with T
        the response tokens of the global minibatch (summed over processes) and ``share`` the micro-batch's
        share of this process's minibatch prompts. The loop back-propagates ``loss · share`` and DDP averages
        the processes, so the gradient is exactly that of the mean over the global minibatch's T tokens,
        whatever the shards' response lengths and micro-batches. Unset (a batch used outside ``update``),
        it is the mean over this batch's own response tokens.
        """
        return masked_mean(values, self.response_mask, self.token_normalizer)

    def grouped_logratio(self, logprobs: torch.Tensor, against_reference: bool = False) -> torch.Tensor:
        """``[prompts, k]`` sequence log-ratios ``log πθ(y|x) − log π_t(y|x)`` of per-token ``logprobs``
        (``− log π_0(y|x)``, the SFT reference, with ``against_reference``)."""
        anchor = self.ref_logprobs if against_reference else self.logprobs
        return self.grouped((logprobs - anchor).sum(-1))

    def grouped(self, values: torch.Tensor) -> torch.Tensor:
        """View a per-row ``[N, ...]`` tensor as ``[prompts, k, ...]``."""
        return values.reshape(self.num_prompts, self.samples_per_prompt, *values.shape[1:])
