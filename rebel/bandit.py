"""Exact-optimum testbed: a tabular contextual bandit whose KL-regularized optimum is known.

For contexts x (uniform), responses y, a reward table r(x, y) and a reference policy π_ref,
the objective every algorithm of the harness optimizes (paper Eq. 2 with the penalty of
Eq. 22) is

    J(π) = E_x [ E_{y∼π(·|x)} r(x, y) − β KL(π(·|x) ‖ π_ref(·|x)) ],

maximized by π*(y|x) ∝ π_ref(y|x) exp(r(x, y)/β), with J(π*) = E_x β log Σ_y π_ref(y|x) e^{r(x,y)/β}
and, for any π, J(π*) − J(π) = β E_x KL(π(·|x) ‖ π*(·|x)) (tested).

The registered algorithms run unchanged through the shared loop's code: their losses,
``prepare`` and ``observe``, :func:`rebel.loop.update` (minibatches, passes, optimizer),
:func:`rebel.rl_math.shaped_token_rewards` and :func:`rebel.models.response_logprobs`. Only
the policy and the sampler differ: the policy is a logit table called like a causal
language model (the prompt is one context token, the response one response token), the
critic a value table called like the reward-model backbone, and responses are drawn from
the table directly. Offline DPO needs a preference data set and is not run here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from transformers import get_scheduler

from rebel import models as M
from rebel.algorithms import build_algorithm, resolve_algorithm
from rebel.errors import ConfigError
from rebel.loop import prompt_schedule, update
from rebel.rl_math import shaped_token_rewards
from rebel.rollout import Rollout


@dataclasses.dataclass(frozen=True)
class BanditConfig:
    """The testbed's settings (``workflow/configs/testbed/bandit.yaml``)."""

    algorithms: tuple[str, ...]
    seeds: tuple[int, ...]
    problem_seed: int = 0
    """Seed of the reward table and the reference policy (the same problem for every run)."""
    contexts: int = 8
    responses: int = 16
    reward_std: float = 1.0
    """Rewards r(x, y) ~ N(0, reward_std²)."""
    reference_std: float = 1.0
    """Reference logits ~ N(0, reference_std²)."""
    reward_noise: float = 0.0
    """Std of Gaussian noise added to each observed reward (0: exact rewards)."""
    beta: float = 0.1
    """β, the KL coefficient γ of Eq. 22."""
    iterations: int = 200
    contexts_per_iteration: int = 64
    minibatch_contexts: int = 16
    epochs_per_iteration: int = 4
    """Update passes for algorithms without their own count (as ``policy.epochs_per_iteration``)."""
    preference_strength: float | None = None
    """When set, Appendix D's general-preference setting: no reward table but a rock–paper–scissors
    preference l(y, y') = 2 P(y ≻ y') − 1 ∈ {0, ±strength} over 3 responses (intransitive, so no
    reward model can represent it), and each sample's reward is its preference l(x, y, y'') against
    one more sample y'' ∼ π_t of the same context (SPO self-play; Swamy et al. 2024)."""
    lr: dict[str, float] = dataclasses.field(default_factory=dict)
    """Plain-SGD learning rate per algorithm (from the same grid for every algorithm: docs/testbed.md)."""
    algorithm_params: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.algorithms:
            if name not in self.lr:
                raise ConfigError(f"key 'lr.{name}': missing; every algorithm of the testbed needs a learning rate")
            algorithm = resolve_algorithm(name)
            if algorithm.offline:
                raise ConfigError(f"key 'algorithms': '{name}' is offline and needs a preference data set")
            try:
                build_algorithm(name, {"algorithm_params": self.algorithm_params})
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"key 'algorithm_params.{name}': {exc}") from None
        if self.preference_strength is not None and (self.responses != 3 or not 0 < self.preference_strength <= 1):
            raise ConfigError("key 'preference_strength': needs responses: 3 and a strength in (0, 1]")

    @classmethod
    def load(cls, path: Path) -> BanditConfig:
        if not path.is_file():
            raise ConfigError(f"bandit config '{path}' not found")
        values = yaml.safe_load(path.read_text())
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of keys at the top level")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown key '{unknown[0]}'; allowed keys: {', '.join(sorted(known))}")
        missing = [key for key in ("algorithms", "seeds") if key not in values]
        if missing:
            raise ConfigError(f"{path}: key '{missing[0]}' is missing")
        values["algorithms"], values["seeds"] = tuple(values["algorithms"]), tuple(values["seeds"])
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class Problem:
    rewards: torch.Tensor  # [X, Y]
    ref_logits: torch.Tensor  # [X, Y]
    beta: float
    preference: torch.Tensor | None = None  # [Y, Y] skew-symmetric l(y, y'), the same in every context

    @classmethod
    def make(cls, cfg: BanditConfig) -> Problem:
        g = torch.Generator().manual_seed(cfg.problem_seed)
        rewards = cfg.reward_std * torch.randn(cfg.contexts, cfg.responses, generator=g, dtype=torch.float64)
        ref_logits = cfg.reference_std * torch.randn(cfg.contexts, cfg.responses, generator=g, dtype=torch.float64)
        preference = None
        if cfg.preference_strength is not None:  # y beats y − 1 (mod 3): rock < paper < scissors < rock
            beats = torch.roll(torch.eye(3, dtype=torch.float64), -1, dims=1)
            preference = cfg.preference_strength * (beats - beats.T)
        return cls(rewards, ref_logits, cfg.beta, preference)

    @property
    def ref_logprobs(self) -> torch.Tensor:
        return torch.log_softmax(self.ref_logits, -1)

    @property
    def optimal_logprobs(self) -> torch.Tensor:
        """log π*(y|x) = log π_ref(y|x) + r(x, y)/β − log Z(x)."""
        return torch.log_softmax(self.ref_logprobs + self.rewards / self.beta, -1)

    def objective(self, logprobs: torch.Tensor) -> float:
        """J(π) of a policy given by its ``[X, Y]`` log-probabilities."""
        probs = logprobs.exp()
        per_context = (probs * self.rewards).sum(-1) - self.beta * (probs * (logprobs - self.ref_logprobs)).sum(-1)
        return per_context.mean().item()

    def duality_gap(self, probs: torch.Tensor) -> float:
        """Appendix D.1: max_π l(π, π̂) − min_π l(π̂, π) = 2 max_y l(y, π̂) by skew-symmetry; 0 only at the
        minimax winner (uniform for rock–paper–scissors). Mean over contexts of ``[X, Y]`` probabilities."""
        return (2 * (probs @ self.preference.T).max(-1).values).mean().item()

    def kl_to_optimum(self, logprobs: torch.Tensor) -> float:
        """E_x KL(π(·|x) ‖ π*(·|x))."""
        return (logprobs.exp() * (logprobs - self.optimal_logprobs)).sum(-1).mean().item()


class TabularPolicy(torch.nn.Module):
    """A logit table ``[X, Y]`` with the call interface of a causal LM over ``[context, response]`` ids."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(logits.float().clone())

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> SimpleNamespace:
        # The logits at every position are those of the context (the first token): the next
        # token after the context is the response.
        logits = self.logits[input_ids[:, 0]][:, None, :].expand(-1, input_ids.shape[1], -1)
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)

    def log_probs(self) -> torch.Tensor:
        return torch.log_softmax(self.logits.detach().double(), -1)


class TabularCritic(torch.nn.Module):
    """A value table ``V(x)`` with the interface of the reward-model backbone (``gpt_neox``, ``score``)."""

    base_model_prefix = "gpt_neox"

    def __init__(self, contexts: int) -> None:
        super().__init__()
        self.values = torch.nn.Parameter(torch.zeros(contexts))
        self.score = torch.nn.Identity()
        self.config = SimpleNamespace()

    def gpt_neox(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> SimpleNamespace:
        hidden = self.values[input_ids[:, :1]].expand(-1, input_ids.shape[1])
        return SimpleNamespace(last_hidden_state=hidden[..., None])


def run(cfg: BanditConfig, algorithm_name: str, seed: int) -> list[dict[str, float]]:
    """Train one algorithm for one seed; one record per iteration (and one before training)."""
    problem = Problem.make(cfg)
    algorithm = build_algorithm(algorithm_name, {"algorithm_params": cfg.algorithm_params})
    loop_cfg = {
        "policy": {
            "minibatch_prompts": cfg.minibatch_contexts,
            "temperature": 1.0,
            "epochs_per_iteration": cfg.epochs_per_iteration,
        },
        "runtime": {"update_micro_batch_prompts": None},
    }
    torch.manual_seed(seed)
    policy, reference = TabularPolicy(problem.ref_logits), TabularPolicy(problem.ref_logits).requires_grad_(False)
    critic = M.TokenValueModel(TabularCritic(cfg.contexts)) if algorithm.needs_value_model else None
    params = list(policy.parameters()) + (list(critic.parameters()) if critic is not None else [])
    optimizer = torch.optim.SGD(params, lr=cfg.lr[algorithm_name])
    scheduler = get_scheduler("constant", optimizer)
    accelerator = Accelerator(cpu=True)
    k = algorithm.samples_per_prompt
    schedule = prompt_schedule(cfg.contexts, cfg.contexts_per_iteration, cfg.iterations, seed)
    sampler = torch.Generator().manual_seed(seed)
    best, start_gap = problem.objective(problem.optimal_logprobs), None
    average = torch.zeros_like(problem.ref_logits)  # the average of π_0 … π_t (the iterate MD guarantees cover)
    records = []
    for iteration in range(cfg.iterations + 1):
        logprobs_table = policy.log_probs()
        record: dict[str, float] = {
            "iteration": iteration,
            "reward_queries": iteration * cfg.contexts_per_iteration * k,
        }
        if problem.preference is None:
            gap = best - problem.objective(logprobs_table)
            start_gap = gap if start_gap is None else start_gap
            record |= {
                "gap": gap,
                "relative_gap": gap / start_gap,
                "kl_to_optimum": problem.kl_to_optimum(logprobs_table),
            }
        else:
            average += (logprobs_table.exp() - average) / (iteration + 1)
            record |= {
                "duality_gap": problem.duality_gap(logprobs_table.exp()),
                "average_duality_gap": problem.duality_gap(average),
            }
        records.append(record)
        if iteration == cfg.iterations:
            break
        contexts = torch.as_tensor(schedule[iteration]).repeat_interleave(k)
        responses = torch.multinomial(logprobs_table[contexts].exp(), 1, generator=sampler).squeeze(-1)
        ids, mask = contexts[:, None], torch.ones(len(contexts), 1, dtype=torch.long)
        r_ids = responses[:, None]
        with torch.no_grad():
            logprobs = M.response_logprobs(policy, ids, mask, r_ids, mask, temperature=1.0)
            ref_logprobs = M.response_logprobs(reference, ids, mask, r_ids, mask, temperature=1.0)
            values = None if critic is None else critic(ids, mask, r_ids, mask)
        if problem.preference is None:
            scores = problem.rewards[contexts, responses].float()
        else:  # the win rate against one more sample of π_t per context (Appendix D.2)
            opponents = torch.multinomial(logprobs_table[contexts[::k]].exp(), 1, generator=sampler).squeeze(-1)
            scores = problem.preference[responses, opponents.repeat_interleave(k)].float()
        if cfg.reward_noise:
            scores = scores + cfg.reward_noise * torch.randn(len(scores), generator=sampler)
        token_rewards = shaped_token_rewards(scores, logprobs, ref_logprobs, mask, cfg.beta)
        rollout = Rollout(
            prompt_ids=ids,
            prompt_mask=mask,
            response_ids=r_ids,
            response_mask=mask,
            has_eos=torch.ones(len(ids), dtype=torch.bool),
            logprobs=logprobs,
            ref_logprobs=ref_logprobs,
            scores=scores,
            rewards=token_rewards.sum(-1),
            token_rewards=token_rewards,
            samples_per_prompt=k,
            values=values,
        )
        generator = torch.Generator().manual_seed(seed * 1_000_003 + iteration)
        stats = update(
            policy,
            algorithm.prepare(rollout),
            algorithm,
            optimizer,
            scheduler,
            accelerator,
            loop_cfg,
            generator,
            critic,
        )
        algorithm.observe({"reward": rollout.rewards.mean().item(), **stats})
        records[-1] |= {"loss": stats["loss"], "reward": rollout.rewards.mean().item()}
    return records


def bradley_terry_policy(cfg: BanditConfig, steps: int = 2000) -> torch.Tensor:
    """The reward-model route on a preference problem: fit a Bradley–Terry reward r̂ by maximum
    likelihood on infinitely many pairs y, y' ∼ π_ref (exact expected log-likelihood), then take its
    KL-regularized optimum π_ref exp(r̂/β)/Z. Returns the ``[X, Y]`` probabilities."""
    problem = Problem.make(cfg)
    ref = problem.ref_logprobs.exp()
    wins = (1 + problem.preference) / 2  # P(y ≻ y')
    pairs = ref[:, :, None] * ref[:, None, :]  # [X, Y, Y]
    reward = torch.zeros_like(problem.ref_logits, requires_grad=True)
    optimizer = torch.optim.LBFGS([reward], max_iter=steps, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        margin = reward[:, :, None] - reward[:, None, :]
        loss = -(pairs * wins * torch.nn.functional.logsigmoid(margin)).sum()
        loss.backward()
        return loss

    optimizer.step(nll)
    return torch.softmax(problem.ref_logprobs + reward.detach() / cfg.beta, -1)


def headline_metric(cfg: BanditConfig) -> str:
    """The number a run is judged by: the gap J(π*) − J(π_t) to the exact optimum, or in the
    preference setting (no reward, no J) the duality gap of the average policy (Appendix D.1)."""
    return "gap" if cfg.preference_strength is None else "average_duality_gap"


def write_runs(cfg: BanditConfig, algorithm_name: str, out: Path) -> None:
    """Every seed of one algorithm: ``out/seed{S}.jsonl``; prints each seed's final headline metric."""
    out.mkdir(parents=True, exist_ok=True)
    metric = headline_metric(cfg)
    for seed in cfg.seeds:
        records = run(cfg, algorithm_name, seed)
        if not all(math.isfinite(r[metric]) for r in records):
            raise ConfigError(
                f"bandit: '{algorithm_name}' seed {seed} diverged (non-finite {metric}); lower lr.{algorithm_name}"
            )
        tmp = out / f"seed{seed}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        tmp.replace(out / f"seed{seed}.jsonl")
        first, last = records[0], records[-1]
        print(
            f"bandit: {algorithm_name} seed {seed}: {metric} {first[metric]:.4g} -> {last[metric]:.4g} "
            f"after {last['iteration']} iterations",
            flush=True,
        )
