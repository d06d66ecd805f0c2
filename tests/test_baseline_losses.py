"""Baseline losses against hand-computed values (DPO, iterative DPO, REINFORCE, RLOO, PPO), and RLOO's k variants.

The shared maths they use (advantages, GAE, whitening, the clipped sequence loss, the preference loss,
the reward shaping) is tested once, in ``test_rl_math.py``."""

import dataclasses
import math

import pytest
import torch
from test_rebel_loss import make_rollout

from baselines.dpo import DPO
from baselines.iterative_dpo import IterativeDPO, IterativeDPOParams
from baselines.ppo import PPO, PPOParams
from baselines.reinforce import REINFORCE, REINFORCEParams
from baselines.rloo import RLOO, RLOOParams
from rebel.algorithms import build_algorithm, resolve_algorithm
from rebel.registry import AlgorithmNotFound, algorithm_spec
from rebel.rl_math import leave_one_out_advantages


def test_rloo_loss_and_gradient_by_hand():
    new = torch.tensor([[-1.0, -1.0], [-0.5, -0.5], [-2.0, 0.0], [-1.0, -3.0]], requires_grad=True)
    rewards = torch.tensor([1.0, 0.0, 0.5, 1.5])
    # On-policy (π_t = πθ, ratio 1): advantages 1, -1 (prompt 0) and -1, 1 (prompt 1);
    # loss = -mean(A * 1) = 0, and its gradient is the score function's, -A / N per token.
    loss, stats = RLOO(RLOOParams()).loss(new, make_rollout(new.detach().clone(), rewards))
    assert loss.item() == pytest.approx(0.0)
    assert stats["advantage_abs"].item() == pytest.approx(1.0) and stats["clip_fraction"].item() == 0.0
    loss.backward()
    torch.testing.assert_close(new.grad, torch.tensor([[-0.25] * 2, [0.25] * 2, [0.25] * 2, [-0.25] * 2]))


def test_off_policy_samples_are_importance_weighted_and_clipped_by_hand():
    """RLOO and REINFORCE on samples of an older policy: ``max(−A ρ, −A clip(ρ, 0.8, 1.2))`` per sequence."""
    new = torch.tensor([[-1.0, -1.0], [-0.5, -0.5], [-2.0, 0.0], [-1.0, -3.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -1.1], [-0.5, -0.5], [-1.0, -1.0], [-2.0, -3.0]])
    rewards = torch.tensor([1.0, 0.0, 0.5, 1.5])
    # sequence log-ratios 0.1, 0, 0, 1 -> ratios e^0.1 = 1.105, 1, 1, e = 2.718; advantages 1, -1, -1, 1
    # per sample: -1.105 (inside the clip); 1; 1; max(-2.718, -1.2) = -1.2 (clipped: no gradient)
    ratio = math.exp(0.1)
    loss, stats = RLOO(RLOOParams(clip_range=0.2)).loss(new, make_rollout(old, rewards))
    assert loss.item() == pytest.approx((-ratio + 1 + 1 - 1.2) / 4, abs=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(0.25)
    loss.backward()
    # d/d logp_token of -A ρ / N = -A ρ / N; the clipped sample has none.
    torch.testing.assert_close(new.grad, torch.tensor([[-ratio / 4] * 2, [0.25] * 2, [0.25] * 2, [0.0] * 2]))
    # REINFORCE: the same loss with A = r − b (b = 0 here) and one sample per prompt.
    reinforce, _ = REINFORCE(REINFORCEParams()).loss(new, make_rollout(old, rewards, k=1))
    assert reinforce.item() == pytest.approx((-ratio * 1.0 + 0.0 - 0.5 - 1.2 * 1.5) / 4, abs=1e-6)


def test_rloo_k_and_passes():
    assert RLOO.from_config({}).samples_per_prompt == 2 and RLOO.from_config({}).label == "RLOO (k=2)"
    rloo_k4 = RLOO.from_config({"k": 4})
    assert rloo_k4.samples_per_prompt == 4 and rloo_k4.label == "RLOO (k=4)"
    assert RLOO.from_config({}).epochs_per_iteration == 1  # appendix H.1.5: one pass
    with pytest.raises(ValueError, match="epochs_per_iteration must be >= 1"):
        RLOO.from_config({"epochs_per_iteration": 0})
    with pytest.raises(ValueError, match="k must be >= 2"):
        RLOO.from_config({"k": 1})


def test_rloo_variants_of_the_registry():
    """``rloo_k2`` and ``rloo_k4`` are RLOO with k fixed (appendix H.1.5: K = 2 or 4); a config's variants
    come first, ``algorithm_params`` apply over a variant's own, and names resolve without an import."""
    assert algorithm_spec("rloo_k4") == ("baselines.rloo:RLOO", {"k": 4})
    assert algorithm_spec("rebel") == ("rebel.algorithms.rebel:REBEL", {})
    assert algorithm_spec("my.module:Thing") == ("my.module:Thing", {})  # not imported
    assert resolve_algorithm("rloo_k4") is RLOO
    for name, k in (("rloo", 2), ("rloo_k2", 2), ("rloo_k4", 4)):
        algorithm = build_algorithm(name, {"variants": {}, "algorithm_params": {}})
        assert (algorithm.samples_per_prompt, algorithm.label) == (k, f"RLOO (k={k})")
    config = {
        "variants": {"rloo_k8": {"algorithm": "rloo", "k": 8}, "rloo_k2": {"algorithm": "rloo", "k": 3}},
        "algorithm_params": {"rloo_k8": {"clip_range": 0.1}},
    }
    rloo_k8 = build_algorithm("rloo_k8", config)
    assert (rloo_k8.samples_per_prompt, rloo_k8.label, rloo_k8.params.clip_range) == (8, "RLOO (k=8)", 0.1)
    assert build_algorithm("rloo_k2", config).samples_per_prompt == 3  # the config's variant first
    assert build_algorithm("rloo_k4", {"algorithm_params": {"rloo_k4": {"k": 5}}}).samples_per_prompt == 5
    with pytest.raises(AlgorithmNotFound, match=r"^unknown algorithm 'rloo_k8'; registered: .*rloo_k4 \(or name"):
        build_algorithm("rloo_k8", {"algorithm_params": {}})  # no variants (the bandit testbed): built-ins only
    cycle = {"a": {"algorithm": "b"}, "b": {"algorithm": "a"}}
    with pytest.raises(AlgorithmNotFound, match=r"^variant 'a' is based on the variant 'b'; a variant's algorithm"):
        algorithm_spec("a", cycle)
    with pytest.raises(AlgorithmNotFound, match=r"^variant 'a' is based on the variant 'a'"):
        algorithm_spec("a", {"a": {"algorithm": "a"}})
    with pytest.raises(AlgorithmNotFound, match=r"^variant 'a' needs 'algorithm'"):
        algorithm_spec("a", {"a": {"k": 2}})


def test_registry_is_a_leaf_that_imports_no_torch():
    """The Snakefile reads the registry at parse time: it must not import torch or any algorithm."""
    import subprocess
    import sys

    code = (
        "import sys, rebel.registry; heavy = [m for m in ('torch', 'rebel.algorithms', 'baselines') "
        "if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


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


def test_dpo_loss_anchors_at_the_reference_by_hand():
    new = torch.tensor([[-1.0], [-2.0], [-1.0], [-3.0]])
    rollout = make_rollout(torch.full((4, 1), -9.0), torch.tensor([1.0, 0.0, 1.0, 0.0]))  # π_t is not used
    rollout = dataclasses.replace(rollout, ref_logprobs=torch.tensor([[-2.0], [-1.0], [-1.0], [-1.0]]))
    # log-ratios to π_0: (1, -1) and (0, -2); chosen first; beta 0.5 -> margins 1 and 1
    loss, stats = DPO.from_config({"beta": 0.5}).loss(new, rollout)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-6)
    assert stats["preference_accuracy"].item() == 1.0
    assert DPO.offline and DPO.from_config({}).params.epochs == 1.0  # appendix H.1.5: one epoch
    with pytest.raises(ValueError, match="epochs must be > 0"):
        DPO.from_config({"epochs": 0})


def test_reinforce_moving_average_baseline_by_hand():
    algorithm = REINFORCE(REINFORCEParams(baseline_decay=0.5))
    new = torch.tensor([[-1.0, -1.0], [-0.5, 0.0]])
    rewards = torch.tensor([1.0, 3.0])
    # On-policy (ratio 1), baseline 0: loss = -mean(r) = -2, gradient -r / N per token.
    new.requires_grad_(True)
    loss, stats = algorithm.loss(new, make_rollout(new.detach().clone(), rewards, k=1))
    assert loss.item() == pytest.approx(-2.0) and stats["baseline"].item() == 0.0
    loss.backward()
    torch.testing.assert_close(new.grad, torch.tensor([[-0.5] * 2, [-1.5] * 2]))
    algorithm.observe({"reward": 2.0})  # b = 0.5 * 0 + 0.5 * 2 = 1
    algorithm.observe({"reward": 3.0})  # b = 0.5 * 1 + 0.5 * 3 = 2
    assert algorithm.baseline == pytest.approx(2.0)
    # advantages -1, 1: loss = -(-1 + 1) / 2 = 0
    loss, _ = algorithm.loss(new, make_rollout(new.detach().clone(), rewards, k=1))
    assert loss.item() == pytest.approx(0.0)
    restored = REINFORCE(REINFORCEParams(baseline_decay=0.5))
    restored.load_state_dict(algorithm.state_dict())
    assert restored.baseline == algorithm.baseline


def test_ppo_clipped_losses_by_hand():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.5]]))
    batch = make_rollout(old, torch.zeros(1), k=1).with_targets(
        advantages=torch.tensor([[1.0, -1.0]]), returns=torch.tensor([[0.6, 0.2]])
    )
    batch = dataclasses.replace(batch, values=torch.tensor([[0.5, 0.5]]))
    loss, stats = PPO(PPOParams()).loss(new, batch, values=torch.tensor([[1.0, 0.0]]))
    # policy, ratios 1.5 and 0.5 clipped to [0.8, 1.2]: max(-1.5, -1.2) = -1.2 and max(0.5, 0.8) = 0.8 -> -0.2
    # value, clipped values 0.7 and 0.3: max(0.16, 0.01) and max(0.04, 0.01) -> 0.5 * mean = 0.05
    assert stats["policy_loss"].item() == pytest.approx(-0.2, abs=1e-6)
    assert stats["value_loss"].item() == pytest.approx(0.05, abs=1e-6)
    assert loss.item() == pytest.approx(-0.2 + 0.1 * 0.05, abs=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(1.0)


class _RecordingSGD(torch.optim.SGD):
    """SGD that keeps each step's gradients and the parameters they were taken at."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.steps = []

    def step(self, closure=None):
        self.steps.append(
            [(p.detach().clone(), p.grad.detach().clone()) for g in self.param_groups for p in g["params"]]
        )
        return super().step(closure)


@pytest.mark.parametrize("algorithm", [RLOO(RLOOParams()), REINFORCE(REINFORCEParams())], ids=["rloo_k2", "reinforce"])
def test_loop_update_first_minibatch_on_policy_later_ones_importance_weighted(policy, algorithm):
    """Through :func:`rebel.loop.update` (4 prompts, minibatches of 2: two optimizer steps per rollout):
    the first step's gradient is the on-policy score-function gradient −mean A ∇log πθ(y|x); the second,
    on samples of the policy before the first step, is weighted by ρ = πθ(y|x)/π_t(y|x)."""
    from accelerate import Accelerator

    from rebel import models as M
    from rebel.loop import update
    from rebel.rollout import Rollout

    torch.manual_seed(1)
    M.disable_dropout(policy)  # as the loop does (model.dropout: false), so π_t is πθ before the first step
    k, prompts, temperature = algorithm.samples_per_prompt, 4, 0.7
    n = prompts * k
    p_ids, r_ids = torch.randint(5, 500, (n, 6)), torch.randint(5, 500, (n, 5))
    p_mask, r_mask = torch.ones_like(p_ids), torch.ones_like(r_ids)
    with torch.no_grad():
        old = M.response_logprobs(policy, p_ids, p_mask, r_ids, r_mask, temperature)
    rewards = torch.randn(n)
    rollout = Rollout(
        prompt_ids=p_ids,
        prompt_mask=p_mask,
        response_ids=r_ids,
        response_mask=r_mask,
        has_eos=torch.ones(n, dtype=torch.bool),
        logprobs=old,
        ref_logprobs=old,
        scores=rewards,
        rewards=rewards,
        token_rewards=torch.zeros_like(old),
        samples_per_prompt=k,
    )
    advantages = leave_one_out_advantages(rewards.reshape(-1, k)).reshape(-1) if k > 1 else rewards
    cfg = {
        "policy": {"temperature": temperature, "minibatch_prompts": 2, "epochs_per_iteration": 1},
        "runtime": {"update_micro_batch_prompts": None},
    }
    optimizer = _RecordingSGD(policy.parameters(), lr=2e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    update(
        policy, rollout, algorithm, optimizer, scheduler, Accelerator(cpu=True), cfg, torch.Generator().manual_seed(0)
    )
    order = torch.randperm(prompts, generator=torch.Generator().manual_seed(0))
    assert len(optimizer.steps) == 2

    def expected_gradient(step: int, weighted: bool) -> list[torch.Tensor]:
        with torch.no_grad():
            for p, (value, _) in zip(policy.parameters(), optimizer.steps[step]):
                p.copy_(value)
        rows = (order[2 * step : 2 * step + 2, None] * k + torch.arange(k)).reshape(-1)
        logp = M.response_logprobs(policy, p_ids[rows], p_mask[rows], r_ids[rows], r_mask[rows], temperature).sum(-1)
        ratio = torch.exp(logp - old[rows].sum(-1)).detach() if weighted else torch.ones(len(rows))
        if weighted:
            assert ((ratio - 1).abs() < 0.2).all() and ((ratio - 1).abs() > 1e-3).any()  # inside the clip, off-policy
        policy.zero_grad()
        (-(advantages[rows] * ratio * logp).mean()).backward()
        return [p.grad.clone() for p in policy.parameters()]

    def close(grads, step):
        return all(torch.allclose(g, got, atol=1e-6, rtol=1e-4) for g, (_, got) in zip(grads, optimizer.steps[step]))

    assert close(expected_gradient(0, weighted=False), 0)  # first minibatch: on-policy
    assert close(expected_gradient(1, weighted=True), 1)  # second: importance-weighted
    assert not close(expected_gradient(1, weighted=False), 1)  # ... not the plain score function
