"""The shared RL maths of :mod:`rebel.rl_math` against hand-computed values, once for every caller
(the algorithms' own losses are tested in ``test_baseline_losses.py`` and ``test_rebel_loss.py``)."""

import math

import pytest
import torch

from rebel.rl_math import (
    clipped_sequence_loss,
    gae,
    kl_k1,
    leave_one_out_advantages,
    masked_mean,
    masked_whiten,
    preference_loss,
    sequence_logratio,
    shaped_token_rewards,
)


def test_masked_mean_by_hand():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])  # an integer mask, as response masks are
    # masked entries 1, 2, 4: sum 7 over 3 entries; with a normalizer the sum is divided by it instead
    assert masked_mean(values, mask).item() == pytest.approx(7 / 3)
    assert masked_mean(values, mask, normalizer=2.0).item() == pytest.approx(3.5)


def test_leave_one_out_advantages_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 0.0, 4.0]])
    # prompt 0: sum 12; others' means 11/3, 10/3, 9/3, 6/3.  prompt 1: 4/3, 4/3, 4/3, 0.
    expected = torch.tensor([[1 - 11 / 3, 2 - 10 / 3, 0.0, 4.0], [-4 / 3, -4 / 3, -4 / 3, 4.0]])
    torch.testing.assert_close(leave_one_out_advantages(rewards), expected)
    # k = 2: each sample's baseline is the other sample's reward.
    torch.testing.assert_close(leave_one_out_advantages(torch.tensor([[1.0, 0.25]])), torch.tensor([[0.75, -0.75]]))


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.5, 0.5], [1.0, 1.0, 7.0]])  # 7.0 sits on padding and must be ignored
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 0: δ = (0, 0, 0.5) -> A_2 = 0.5, A_1 = 0 + 0.5 * 0.5 = 0.25, A_0 = 0.125
    # row 1: the value after the last token is 0: δ_1 = 2 - 1 = 1, δ_0 = 0 + 1 - 1 = 0 -> A = (0.5, 1, 0)
    torch.testing.assert_close(advantages, torch.tensor([[0.125, 0.25, 0.5], [0.5, 1.0, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[0.625, 0.75, 1.0], [1.5, 2.0, 0.0]]))
    # gamma = 0.5, lam = 1 on row 0: δ_2 = 1 - 0.5 = 0.5, δ_1 = 0.5 * 0.5 - 0.5 = -0.25, δ_0 = -0.25;
    # A_2 = 0.5, A_1 = δ_1 + 0.5 * A_2 = 0, A_0 = δ_0 + 0.5 * A_1 = -0.25
    discounted, _ = gae(rewards[:1], values[:1], mask[:1], gamma=0.5, lam=1.0)
    torch.testing.assert_close(discounted, torch.tensor([[-0.25, 0.0, 0.5]]))


def test_masked_whiten_ignores_padding():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    # mean 2, Bessel variance ((1 + 0 + 1) / 2) = 1
    torch.testing.assert_close(masked_whiten(values, mask), torch.tensor([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-6, rtol=0)


def test_clipped_sequence_loss_by_hand():
    logprobs = torch.tensor([[-1.0, -1.0], [0.0, 0.0], [0.0, 0.0]])
    old = torch.tensor([[-1.0, -1.1], [0.0, -1.0], [-0.5, -0.5]])
    advantages = torch.tensor([1.0, 2.0, -1.0])
    # sequence ratios e^0.1 (inside the clip), e, e (outside): max(−A ρ, −A clip(ρ, 0.8, 1.2)) per sample is
    # −e^0.1; max(−2e, −2.4) = −2.4; max(e, 1.2) = e (a negative advantage is not clipped upwards)
    loss, clipped = clipped_sequence_loss(logprobs, old, advantages, clip_range=0.2)
    assert loss.item() == pytest.approx((-math.exp(0.1) - 2.4 + math.e) / 3, abs=1e-6)
    assert clipped.item() == pytest.approx(2 / 3)


def test_preference_loss_by_hand():
    logratio = torch.tensor([[1.0, -1.0], [0.5, -0.5], [3.0, 3.0]])
    rewards = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    # signs +1, −1, 0; beta 0.5: margins 1, −0.5, 0 -> −log σ(1), −log σ(−0.5), log 2 (no preference)
    loss, accuracy = preference_loss(logratio, rewards, beta=0.5)
    assert loss.item() == pytest.approx(
        (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5)) + math.log(2)) / 3, abs=1e-6
    )
    assert accuracy.item() == pytest.approx(1 / 3)


def test_token_rewards_sum_to_the_sequence_reward():
    logprobs = torch.tensor([[-1.0, -2.0, 0.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0], [-2.0, -1.0, -0.5]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])  # EOS at token 1; no EOS (Γ already in the score)
    scores = torch.tensor([2.0, -1.0])
    tokens = shaped_token_rewards(scores, logprobs * mask, ref * mask, mask, kl_coef=0.1)
    # row 0: -0.1 * (0.5, -1) + score at token 1; row 1: -0.1 * (1, 0, -0.5) + score at token 2
    torch.testing.assert_close(tokens, torch.tensor([[-0.05, 2.1, 0.0], [-0.1, 0.0, -0.95]]))
    torch.testing.assert_close(tokens.sum(-1), scores - 0.1 * ((logprobs - ref) * mask).sum(-1))


def test_k1_kl_estimate_and_its_standard_error_by_hand():
    logprobs = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.5, -0.5]])
    ref = torch.tensor([[-1.5, -1.0, 0.0], [-1.0, -1.0, -1.0]])
    # sums −3 vs −2.5 and −1.5 vs −3
    torch.testing.assert_close(sequence_logratio(logprobs, ref), torch.tensor([-0.5, 1.5]))
    # mean 3; deviations −2, −1, 0, 3: sample variance 14 / 3, standard error sqrt(14 / 3) / 2
    mean, se = kl_k1(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert mean == pytest.approx(3.0) and se == pytest.approx(math.sqrt(14 / 3) / 2)
    mean, se = kl_k1(torch.tensor([0.25]))
    assert mean == 0.25 and math.isnan(se)
