"""Baseline losses on the shared loop against hand-computed values (Iterative DPO, REINFORCE, RLOO)."""

import math

import pytest
import torch

from baselines.iterative_dpo import IterativeDPO, IterativeDPOParams
from baselines.reinforce import REINFORCE, REINFORCEParams
from baselines.rloo import RLOO, RLOOk4, RLOOParams, leave_one_out_advantages
from test_rebel_loss import make_rollout


def test_leave_one_out_advantages_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 0.0, 4.0]])
    # prompt 0: sum 12; others' means 11/3, 10/3, 9/3, 6/3.  prompt 1: 4/3, 4/3, 4/3, 0.
    expected = torch.tensor([[1 - 11 / 3, 2 - 10 / 3, 0.0, 4.0], [-4 / 3, -4 / 3, -4 / 3, 4.0]])
    torch.testing.assert_close(leave_one_out_advantages(rewards), expected)
    # k = 2: each sample's baseline is the other sample's reward.
    torch.testing.assert_close(leave_one_out_advantages(torch.tensor([[1.0, 0.25]])), torch.tensor([[0.75, -0.75]]))


def test_rloo_loss_and_gradient_by_hand():
    new = torch.tensor([[-1.0, -1.0], [-0.5, -0.5], [-2.0, 0.0], [-1.0, -3.0]], requires_grad=True)
    rewards = torch.tensor([1.0, 0.0, 0.5, 1.5])
    # advantages 1, -1 (prompt 0) and -1, 1 (prompt 1); sequence log-probs -2, -1, -2, -4
    # loss = -mean(A * logp) = -(1*-2 + -1*-1 + -1*-2 + 1*-4) / 4 = -(-2 + 1 + 2 - 4) / 4 = 0.75
    loss, stats = RLOO(RLOOParams()).loss(new, make_rollout(torch.zeros(4, 2), rewards))
    assert loss.item() == pytest.approx(0.75)
    assert stats["advantage_abs"].item() == pytest.approx(1.0)
    loss.backward()
    # d loss / d logp_token = -A / N for every token of the sample
    torch.testing.assert_close(new.grad, torch.tensor([[-0.25] * 2, [0.25] * 2, [0.25] * 2, [-0.25] * 2]))


def test_rloo_k_and_passes():
    assert RLOO.from_config({}).samples_per_prompt == 2
    assert RLOOk4.from_config({}).samples_per_prompt == 4
    assert RLOO.from_config({}).epochs_per_iteration == 1  # appendix H.1.5: one pass
    with pytest.raises(ValueError, match="epochs_per_iteration must be >= 1"):
        RLOO.from_config({"epochs_per_iteration": 0})


def test_iterative_dpo_loss_by_hand():
    new = torch.tensor([[-1.0], [-2.0], [-1.0], [-1.0], [-3.0], [-3.0]])
    old = torch.tensor([[-2.0], [-1.0], [-1.0], [-1.0], [-1.0], [-1.0]])
    rewards = torch.tensor([1.0, 0.0, 0.0, 2.0, 1.0, 1.0])
    # logratios: (1, -1), (0, 0), (-2, -2); signs +1, -1, 0; beta 0.5
    # margins: 0.5 * 2 = 1, 0, 0 -> losses -log σ(1), -log σ(0), -log σ(0)
    loss, stats = IterativeDPO(IterativeDPOParams(beta=0.5)).loss(new, make_rollout(old, rewards))
    expected = (math.log1p(math.exp(-1.0)) + 2 * math.log(2.0)) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["preference_accuracy"].item() == pytest.approx(1 / 3)
    # Swapping which sample has the higher reward flips the preferred direction.
    swapped, _ = IterativeDPO(IterativeDPOParams(beta=0.5)).loss(new, make_rollout(old, rewards[[1, 0, 2, 3, 4, 5]]))
    assert swapped.item() == pytest.approx((math.log1p(math.exp(1.0)) + 2 * math.log(2.0)) / 3, abs=1e-6)


def test_reinforce_moving_average_baseline_by_hand():
    algorithm = REINFORCE(REINFORCEParams(baseline_decay=0.5))
    new = torch.tensor([[-1.0, -1.0], [-0.5, 0.0]])
    rewards = torch.tensor([1.0, 3.0])
    # baseline starts at 0: loss = -mean(r * logp) = -(1 * -2 + 3 * -0.5) / 2 = 1.75
    loss, stats = algorithm.loss(new, make_rollout(torch.zeros(2, 2), rewards, k=1))
    assert loss.item() == pytest.approx(1.75) and stats["baseline"].item() == 0.0
    algorithm.observe({"reward": 2.0})   # b = 0.5 * 0 + 0.5 * 2 = 1
    algorithm.observe({"reward": 3.0})   # b = 0.5 * 1 + 0.5 * 3 = 2
    assert algorithm.baseline == pytest.approx(2.0)
    # advantages -1, 1: loss = -(-1 * -2 + 1 * -0.5) / 2 = -0.75
    loss, _ = algorithm.loss(new, make_rollout(torch.zeros(2, 2), rewards, k=1))
    assert loss.item() == pytest.approx(-0.75)
    restored = REINFORCE(REINFORCEParams(baseline_decay=0.5))
    restored.load_state_dict(algorithm.state_dict())
    assert restored.baseline == algorithm.baseline
