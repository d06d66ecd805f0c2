"""REBEL's loss (Eq. 1) against hand-computed values, and its exact solution against mirror descent (§3.2)."""

import pytest
import torch

from rebel.algorithms.rebel import REBEL, REBELParams
from rebel.rollout import Rollout


def make_rollout(logprobs_old: torch.Tensor, rewards: torch.Tensor, k: int = 2) -> Rollout:
    n, length = logprobs_old.shape
    ones = torch.ones(n, length, dtype=torch.long)
    zeros = torch.zeros(n)
    return Rollout(
        prompt_ids=ones,
        prompt_mask=ones,
        response_ids=ones,
        response_mask=ones,
        has_eos=torch.ones(n, dtype=torch.bool),
        logprobs=logprobs_old,
        ref_logprobs=torch.zeros_like(logprobs_old),
        scores=zeros,
        rewards=rewards,
        token_rewards=torch.zeros_like(logprobs_old),
        samples_per_prompt=k,
    )


# Two prompts, two samples each, two tokens per response.
NEW = torch.tensor([[-1.0, -2.0], [-0.5, -0.5], [-1.0, -1.0], [-0.5, -0.5]])
OLD = torch.tensor([[-1.5, -2.0], [-1.0, -0.25], [-1.0, -1.0], [-2.0, -1.0]])
REWARDS = torch.tensor([1.0, 0.0, 0.5, 1.5])


@pytest.mark.parametrize(
    "eta, expected",
    [
        # prompt 0: log-ratios 0.5 and 0.25, rewards 1 and 0 -> residual 0.25 - eta * 1
        # prompt 1: log-ratios 0 and 2,     rewards 0.5 and 1.5 -> residual -2 + eta * 1
        (1.0, ((0.25 - 1.0) ** 2 + (-2.0 + 1.0) ** 2) / 2),  # (0.5625 + 1) / 2 = 0.78125
        (2.0, ((0.25 - 2.0) ** 2 + (-2.0 + 2.0) ** 2) / 2),  # (3.0625 + 0) / 2 = 1.53125
    ],
)
def test_rebel_loss_matches_hand_computation(eta, expected):
    loss, stats = REBEL(REBELParams(eta=eta)).loss(NEW, make_rollout(OLD, REWARDS))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["regression_mse"].item() == pytest.approx(expected, abs=1e-6)


def test_rebel_gradient_matches_hand_computation():
    new = NEW.clone().requires_grad_(True)
    loss, _ = REBEL(REBELParams(eta=1.0)).loss(new, make_rollout(OLD, REWARDS))
    loss.backward()
    # d/d logp(y) of mean_pairs residual^2 = 2 * residual / pairs; y' gets the opposite sign.
    expected = torch.tensor([[-0.75, -0.75], [0.75, 0.75], [-1.0, -1.0], [1.0, 1.0]])
    torch.testing.assert_close(new.grad, expected)


def test_rebel_rejects_bad_hyperparameters():
    with pytest.raises(TypeError, match="unknown hyperparameter 'beta'"):
        REBEL.from_config({"beta": 1.0})
    with pytest.raises(ValueError, match="eta must be > 0"):
        REBEL.from_config({"eta": 0.0})


def test_exactly_solved_rebel_step_is_mirror_descent():
    """§3.2: with a tabular softmax policy, the minimizer of Eq. 1 is π_{t+1} ∝ π_t exp(η r)."""
    torch.manual_seed(0)
    contexts, responses, eta = 3, 5, 0.7
    pi_t = torch.log_softmax(torch.randn(contexts, responses, dtype=torch.float64), -1)
    reward = torch.randn(contexts, responses, dtype=torch.float64)
    # Every ordered pair (y, y') of every context: a full-support dataset D_t.
    x, y, y2 = torch.meshgrid(torch.arange(contexts), torch.arange(responses), torch.arange(responses), indexing="ij")
    x, y, y2 = x.reshape(-1), y.reshape(-1), y2.reshape(-1)
    rows_x = torch.stack([x, x], 1).reshape(-1)
    rows_y = torch.stack([y, y2], 1).reshape(-1)
    batch = make_rollout(pi_t[rows_x, rows_y][:, None], reward[rows_x, rows_y])
    algorithm = REBEL(REBELParams(eta=eta))

    theta = pi_t.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [theta], lr=1.0, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        logp = torch.log_softmax(theta, -1)[rows_x, rows_y][:, None]
        loss, _ = algorithm.loss(logp, batch)
        loss.backward()
        return loss

    optimizer.step(closure)
    solved = torch.softmax(theta.detach(), -1)
    mirror_descent = torch.softmax(pi_t + eta * reward, -1)
    assert (solved - mirror_descent).abs().max().item() < 1e-5
    assert closure().item() < 1e-10
