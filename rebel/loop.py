"""The shared online loop: one implementation of everything but an algorithm's loss.

Per iteration t (paper Algorithm 1 and appendix H.1.4):
  1. take the next ``prompts_per_iteration`` prompts of a seeded order shared by all algorithms;
  2. sample k responses per prompt from π_t (fixed length, padding after the first EOS);
  3. record log π_t and log π_0 (the SFT reference) of the samples, score them with the
     reward model (Γ for a response without EOS) and shape the reward
     ``r = RM − γ (log π_t − log π_0)`` (Eq. 22);
  4. run the algorithm's loss for ``epochs_per_iteration`` passes (the algorithm's own
     count, else the config's) over minibatches of whole prompts, with AdamW and a
     linearly decaying learning rate;
  5. log one line to ``metrics.jsonl`` and checkpoint.

An offline algorithm (DPO) goes through the same loop with steps 2–3 replaced by reading
the next preference pairs of a seeded order (:func:`preference_rollout`).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from accelerate import Accelerator
from tqdm import tqdm
from transformers import get_scheduler

from rebel import checkpoint
from rebel import data as D
from rebel import kernels
from rebel import models as M
from rebel.algorithms import Algorithm, resolve_algorithm
from rebel.config import policy_settings
from rebel.errors import ConfigError, HarnessError
from rebel.distributed import global_sum
from rebel.generation import BACKENDS, sample_responses
from rebel.profiling import peak_rss_mib, phase, profile_summary
from rebel.rollout import Rollout

SampleMonitor = Callable[[list[dict[str, Any]], list[str], torch.Tensor], dict[str, float]]
CurveEvaluator = Callable[[torch.nn.Module], dict[str, Any]]
"""Evaluates the current policy for a learning-curve point (eval.evaluate.CurveEvaluator)."""
PreferenceOracle = Callable[[list[dict[str, Any]], list[str], list[str]], torch.Tensor]
"""P(a ≻ b | x) for each (prompt row, response a, response b): the judge, for self-play algorithms."""
COUNTERS = ("prompts", "generations", "generated_tokens", "reward_model_calls", "preference_queries",
            "optimizer_steps")


def prompt_schedule(num_prompts: int, per_iteration: int, iterations: int, seed: int) -> np.ndarray:
    """Prompt indices ``[iterations, per_iteration]``: seeded passes over the prompt set.

    It depends only on the data size, the batch size, the iteration count and the seed,
    so every algorithm of a seed sees the same prompts in the same order.
    """
    rng = np.random.default_rng(seed)
    needed = iterations * per_iteration
    order = np.concatenate([rng.permutation(num_prompts) for _ in range(math.ceil(needed / num_prompts))])
    return order[:needed].reshape(iterations, per_iteration)


def schedule_sha256(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _iteration_seed(seed: int, iteration: int) -> int:
    """Sampling and shuffling are seeded per iteration, so a resumed run replays exactly."""
    return (seed * 1_000_003 + iteration) % 2**63


@torch.no_grad()
def score_batches(model_fn, chunks: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
    return torch.cat([model_fn(*chunk) for chunk in chunks])


def micro_batches(batch_size: int, *tensors: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    n = tensors[0].shape[0]
    return [tuple(t[i:i + batch_size] for t in tensors) for i in range(0, n, batch_size)]


def logprob_temperature(algorithm: Algorithm, cfg: dict[str, Any]) -> float:
    """The temperature at which an algorithm's log-probs are taken (rollout and update, policy and reference).

    An online algorithm optimizes the distribution it samples from, π_T with logits / T
    (``policy.temperature``; implementation notes). An offline algorithm never samples: its loss
    is on π itself, so its log-probs are at T = 1, as in the DPO reference implementation
    (Rafailov et al. 2023). Dividing DPO's logits by T would move its optimum to
    π_ref·exp(T·r/β), i.e. an effective β of β/T.
    """
    return 1.0 if algorithm.offline else cfg["policy"]["temperature"]


def _logprobs(policy: torch.nn.Module, reference: M.Reference, chunks: list[tuple[torch.Tensor, ...]],
              temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log π_t and log π_0 of the responses in ``chunks``, at ``temperature`` (:func:`logprob_temperature`)."""
    def logprobs_of(model):
        return lambda *c: M.response_logprobs(model, *c, temperature=temperature)

    logprobs = score_batches(logprobs_of(policy), chunks)
    with reference.model() as ref_model:
        return logprobs, score_batches(logprobs_of(ref_model), chunks)


def collect_rollout(policy: torch.nn.Module, reference: M.Reference, reward_model: torch.nn.Module,
                    prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, algorithm: Algorithm,
                    cfg: dict[str, Any], tokenizer, backend, timings: dict[str, float],
                    device: torch.device, critic: torch.nn.Module | None = None,
                    rows: list[dict[str, Any]] | None = None, preference: PreferenceOracle | None = None) -> Rollout:
    """Steps 2–3: sample, record log π_t and log π_0 (and the critic's values), score, and shape the reward.

    A self-play algorithm gets one more sample per prompt, the opponent y''; each of its k samples
    is scored by the preference oracle as ``2 P(y ≻ y'') − 1`` (Appendix D.2) instead of by the
    reward model, and the opponent is then dropped.
    """
    pol = cfg["policy"]
    batch_size = cfg["runtime"]["rollout_batch_size"]
    k = algorithm.samples_per_prompt
    policy.eval()
    with phase(timings, "generation", device):
        p_ids, p_mask, r_ids, r_mask, has_eos = sample_responses(
            backend, policy, prompt_ids, prompt_mask, samples_per_prompt=k + algorithm.self_play,
            temperature=pol["temperature"], max_new_tokens=cfg["data"]["response_length"],
            batch_size=batch_size, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if algorithm.self_play:
        groups = torch.arange(len(p_ids), device=p_ids.device).reshape(-1, k + 1)
        own, opponent = groups[:, :k].reshape(-1), groups[:, k].repeat_interleave(k)
        texts = D.decode_responses(tokenizer, r_ids, r_mask)
        with phase(timings, "judging", device):
            wins = preference([r for r in rows for _ in range(k)], [texts[i] for i in own.tolist()],
                              [texts[i] for i in opponent.tolist()]).to(device)
        p_ids, p_mask, r_ids, r_mask, has_eos = (t[own] for t in (p_ids, p_mask, r_ids, r_mask, has_eos))
    with phase(timings, "scoring", device):
        chunks = micro_batches(batch_size, p_ids, p_mask, r_ids, r_mask)
        logprobs, ref_logprobs = _logprobs(policy, reference, chunks, pol["temperature"])
        raw = 2 * wins - 1 if algorithm.self_play else score_batches(lambda *c: M.reward_scores(reward_model, *c), chunks)
        values = None if critic is None else score_batches(critic, chunks)
    scores = torch.where(has_eos, raw, torch.full_like(raw, pol["missing_eos_penalty"]))
    token_rewards = shaped_token_rewards(scores, logprobs, ref_logprobs, r_mask, pol["kl_coef"])
    return Rollout(prompt_ids=p_ids, prompt_mask=p_mask, response_ids=r_ids, response_mask=r_mask,
                   has_eos=has_eos, logprobs=logprobs, ref_logprobs=ref_logprobs, scores=scores,
                   rewards=token_rewards.sum(-1), token_rewards=token_rewards,
                   samples_per_prompt=algorithm.samples_per_prompt, values=values)


def encode_batch(tokenizer, rows: list[dict[str, Any]], cfg: dict[str, Any], offline: bool,
                 device: torch.device) -> tuple[torch.Tensor, ...]:
    """An iteration's rows as tensors: ``(prompt ids, prompt mask)``, or for preference pairs
    ``(prompt ids, prompt mask, response ids, response mask)`` with each pair's chosen then rejected response."""
    data = cfg["data"]
    prompt_ids, prompt_mask = D.encode_prompts(tokenizer, rows, data["prompt_length"])
    if not offline:
        return prompt_ids.to(device), prompt_mask.to(device)
    r_ids, r_mask = D.encode_responses(tokenizer, [t for r in rows for t in (r["chosen"], r["rejected"])],
                                       data["response_length"])
    return tuple(t.to(device) for t in (prompt_ids.repeat_interleave(2, dim=0),
                                        prompt_mask.repeat_interleave(2, dim=0), r_ids, r_mask))


def preference_rollout(policy: torch.nn.Module, reference: M.Reference, p_ids: torch.Tensor, p_mask: torch.Tensor,
                       r_ids: torch.Tensor, r_mask: torch.Tensor, *, cfg: dict[str, Any], eos_token_id: int,
                       timings: dict[str, float], device: torch.device) -> Rollout:
    """An offline algorithm's batch: each pair's chosen then rejected response, with log π_t and log π_0
    at temperature 1 (:func:`logprob_temperature`).

    The preference label takes the reward's place: ``scores = rewards`` is 1 for the chosen
    and 0 for the rejected response (no reward model, no KL shaping).
    """
    last = r_mask.sum(-1).long() - 1
    has_eos = r_ids[torch.arange(len(r_ids), device=device), last] == eos_token_id
    policy.eval()
    with phase(timings, "scoring", device):
        chunks = micro_batches(cfg["runtime"]["rollout_batch_size"], p_ids, p_mask, r_ids, r_mask)
        logprobs, ref_logprobs = _logprobs(policy, reference, chunks, temperature=1.0)
    labels = torch.tensor([1.0, 0.0], device=device).repeat(len(r_ids) // 2)
    return Rollout(prompt_ids=p_ids, prompt_mask=p_mask, response_ids=r_ids, response_mask=r_mask,
                   has_eos=has_eos, logprobs=logprobs, ref_logprobs=ref_logprobs, scores=labels,
                   rewards=labels, token_rewards=shaped_token_rewards(labels, logprobs, ref_logprobs, r_mask, 0.0),
                   samples_per_prompt=2)


def shaped_token_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                         response_mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Eq. 22 per token: ``−γ (log π_t − log π_0)`` at every response token, the score added at
    the last one (EOS, or the final position when there is none). Summed over tokens it is the
    sequence reward ``RM − γ (log π_t − log π_0)`` every algorithm sees.
    """
    token_rewards = -kl_coef * (logprobs - ref_logprobs) * response_mask
    last = response_mask.sum(-1).long() - 1
    return token_rewards.index_put((torch.arange(len(scores), device=scores.device), last),
                                   scores, accumulate=True)


def update(policy: torch.nn.Module, rollout: Rollout, algorithm: Algorithm, optimizer, scheduler,
           accelerator: Accelerator, cfg: dict[str, Any], generator: torch.Generator,
           critic: torch.nn.Module | None = None) -> dict[str, float]:
    """Step 4: the algorithm's loss over ``epochs_per_iteration`` passes of prompt minibatches.

    With several processes each holds its shard of the rollout and its share of every
    minibatch; gradients are averaged across processes by ``accelerator.backward``. With
    ``runtime.update_micro_batch_prompts`` set, a minibatch's gradient is accumulated over
    micro-batches of that many prompts, each loss weighted by its share of the minibatch's
    prompts: the same gradient for a loss that is a mean over prompts or samples (REBEL, DPO,
    RLOO, REINFORCE). For a mean over tokens (PPO), each micro-batch carries
    ``token_normalizer = share · T / processes`` with T the global minibatch's response tokens
    (summed over processes), so that ``Rollout.token_mean`` gives exactly the single-process
    token mean over the global minibatch, whatever the shards' response lengths.
    ``critic`` (a :class:`rebel.models.TokenValueModel`, as prepared) is called through its
    forward, so that DDP all-reduces its gradients.
    """
    pol = cfg["policy"]
    temperature = logprob_temperature(algorithm, cfg)
    minibatch = pol["minibatch_prompts"] // accelerator.num_processes
    micro = cfg["runtime"]["update_micro_batch_prompts"] or minibatch
    policy.train()
    if critic is not None:
        critic.train()
    stats: dict[str, list[float]] = {}
    for _ in range(epochs_of(algorithm, cfg)):
        order = torch.randperm(rollout.num_prompts, generator=generator).to(rollout.prompt_ids.device)
        for start in range(0, rollout.num_prompts, minibatch):
            index = order[start:start + minibatch]
            tokens = global_sum(rollout.grouped(rollout.response_mask)[index].sum().double()).item()
            optimizer.zero_grad(set_to_none=True)
            step_stats: dict[str, float] = {}
            for part in index.split(micro):
                share = len(part) / len(index)
                batch = rollout.select_prompts(part).with_token_normalizer(share * tokens / accelerator.num_processes)
                logprobs = M.response_logprobs(policy, batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                                               batch.response_mask, temperature)
                values = None if critic is None else critic(
                    batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
                loss, extra = algorithm.loss(logprobs, batch, values)
                accelerator.backward(loss * share)
                for key, value in {"loss": loss.detach(), **extra}.items():
                    step_stats[key] = step_stats.get(key, 0.0) + float(value) * share
            for key, value in step_stats.items():
                stats.setdefault(key, []).append(value)
            optimizer.step()
            scheduler.step()
    return {key: float(np.mean(values)) for key, values in stats.items()}


def epochs_of(algorithm: Algorithm, cfg: dict[str, Any]) -> int:
    """Update passes per rollout: the algorithm's own count, else ``policy.epochs_per_iteration``."""
    return algorithm.epochs_per_iteration or cfg["policy"]["epochs_per_iteration"]


def iterations_of(algorithm: Algorithm, pol: dict[str, Any], num_rows: int) -> int:
    """Policy iterations of one run.

    Online algorithms run ``policy.iterations``; with ``policy.reward_model_calls`` set they
    are matched by reward-model calls instead: ``⌊calls / (prompts_per_iteration · k)⌋``, so an
    algorithm with one sample per prompt runs twice as many iterations as REBEL. An offline
    algorithm runs ``⌈epochs · pairs / prompts_per_iteration⌉``.
    """
    per_iteration = pol["prompts_per_iteration"]
    if algorithm.offline:
        return math.ceil(algorithm.params.epochs * num_rows / per_iteration)
    if pol["reward_model_calls"] is None:
        return pol["iterations"]
    iterations = pol["reward_model_calls"] // (per_iteration * algorithm.samples_per_prompt)
    if iterations < 1:
        raise ConfigError(f"key 'policy.reward_model_calls': {pol['reward_model_calls']} calls do not cover one "
                          f"iteration of {per_iteration} prompts × {algorithm.samples_per_prompt} samples")
    return iterations


def _check_sharding(pol: dict[str, Any], processes: int) -> None:
    for key in ("prompts_per_iteration", "minibatch_prompts"):
        if pol[key] % processes:
            raise ConfigError(f"key 'policy.{key}': {pol[key]} must be divisible by the {processes} training processes")


@dataclass
class Run:
    """What one algorithm's iterations share: its models, optimizer and learning-rate schedule."""

    cfg: dict[str, Any]
    algorithm: Algorithm
    accelerator: Accelerator
    policy: torch.nn.Module                 # as prepared by accelerate
    reference: M.Reference
    reward_model: torch.nn.Module | None
    critic: torch.nn.Module | None          # M.TokenValueModel of trainable["critic"], as prepared by accelerate
    trainable: torch.nn.ModuleDict
    optimizer: torch.optim.Optimizer
    scheduler: Any
    backend: Any
    steps_per_iteration: int

    @property
    def device(self) -> torch.device:
        return self.accelerator.device


def build_run(cfg: dict[str, Any], algorithm: Algorithm, iterations: int, accelerator: Accelerator, *,
              load_policy: Callable[[], torch.nn.Module], load_reward_model: Callable[[], torch.nn.Module],
              backend) -> Run:
    """The policy (LoRA-adapted under ``policy.lora``), π_0, the reward model and PPO's critic
    from the given constructors, with AdamW and the schedule over ``iterations`` iterations."""
    pol, device = cfg["policy"], accelerator.device
    policy = load_policy()
    if pol["lora"] is not None:
        policy = M.add_lora(policy, pol["lora"])
        reference = M.Reference(policy, None)
    else:
        reference = M.Reference(policy, load_policy().to(device))
    reward_model = None if algorithm.offline or algorithm.self_play else (
        load_reward_model().to(device).eval().requires_grad_(False))
    critic = None
    if algorithm.needs_value_model:  # initialized from the reward model (Huang et al. 2024; appendix H.1.2)
        critic = load_reward_model()
        if pol["lora"] is not None:
            critic = M.add_lora(critic, pol["lora"], task_type="SEQ_CLS")
    if not cfg["model"]["dropout"]:
        for model in (policy, critic):
            if model is not None:
                M.disable_dropout(model)
    trainable = torch.nn.ModuleDict({"policy": policy} | ({"critic": critic} if critic is not None else {}))
    # The critic is trained through a forward that returns per-token values, so that DDP wraps (and
    # all-reduces the gradients of) the computation the loss uses; the checkpoint keeps the critic's names.
    critic = None if critic is None else M.TokenValueModel(critic)

    steps_per_iteration = epochs_of(algorithm, cfg) * math.ceil(pol["prompts_per_iteration"] / pol["minibatch_prompts"])
    optimizer = torch.optim.AdamW([p for p in trainable.parameters() if p.requires_grad], lr=pol["lr"],
                                  eps=pol["adam_eps"], weight_decay=pol["weight_decay"])
    scheduler = get_scheduler(pol["schedule"], optimizer, 0, iterations * steps_per_iteration)
    # The scheduler stays unprepared: accelerate would step it once per process, but the global
    # minibatch is split across processes, so one optimizer step is one scheduler step.
    policy, optimizer = accelerator.prepare(policy, optimizer)
    if critic is not None:
        critic = accelerator.prepare(critic)
    return Run(cfg=cfg, algorithm=algorithm, accelerator=accelerator, policy=policy, reference=reference,
               reward_model=reward_model, critic=critic, trainable=trainable, optimizer=optimizer,
               scheduler=scheduler, backend=backend, steps_per_iteration=steps_per_iteration)


def run_iteration(run: Run, batch: tuple[torch.Tensor, ...], generator: torch.Generator, *, tokenizer,
                  rows: list[dict[str, Any]] | None = None, preference: PreferenceOracle | None = None,
                  ) -> tuple[Rollout, dict[str, float], dict[str, float]]:
    """Steps 2–4 of one iteration on ``batch`` (:func:`encode_batch`'s tensors): the rollout, the
    update's statistics, and each phase's seconds and peak memory (:func:`rebel.profiling.phase`)."""
    timings: dict[str, float] = {}
    accelerator, policy = run.accelerator, run.accelerator.unwrap_model(run.policy)
    if run.algorithm.offline:
        rollout = preference_rollout(policy, run.reference, *batch, cfg=run.cfg, eos_token_id=tokenizer.eos_token_id,
                                     timings=timings, device=run.device)
    else:
        critic = None if run.critic is None else accelerator.unwrap_model(run.critic).eval()
        rollout = collect_rollout(policy, run.reference, run.reward_model, *batch, algorithm=run.algorithm,
                                  cfg=run.cfg, tokenizer=tokenizer, backend=run.backend, timings=timings,
                                  device=run.device, critic=critic, rows=rows, preference=preference)
    with phase(timings, "update", run.device):
        stats = update(run.policy, run.algorithm.prepare(rollout), run.algorithm, run.optimizer, run.scheduler,
                       accelerator, run.cfg, generator, run.critic)
    return rollout, stats, timings


def train_online(cfg: dict[str, Any], algorithm_name: str, seed: int, *, data_dir: Path, sft_ref: Path,
                 rm_ref: Path, out: Path, monitor: SampleMonitor | None = None,
                 preference: PreferenceOracle | None = None, curve: CurveEvaluator | None = None) -> None:
    """Run (or resume) one algorithm for one seed; writes ``out/{metrics.jsonl,run.json,policy/}``,
    and ``out/curve.jsonl`` when a ``curve`` evaluator is given: its numbers for the policy before
    training and after every ``eval.curve.every`` iterations (and the last), each line with the
    budget spent so far (the learning curves of Figure ``curves``).

    Live state (checkpoint and the growing metrics log) is kept in ``out/checkpoint/`` so
    that a killed run resumes from its last completed iteration with identical results;
    it is removed once the final outputs are written. Under ``accelerate launch`` with
    several processes, each iteration's prompts are split evenly across processes (the
    global prompt order is unchanged), statistics are averaged and counters summed, and
    only the main process writes.
    """
    cfg = policy_settings(cfg, algorithm_name)
    pol, dtype = cfg["policy"], cfg["model"]["dtype"]
    device = M.resolve_device(cfg["runtime"]["device"])
    accelerator = Accelerator(cpu=device.type == "cpu")
    device, world, rank = accelerator.device, accelerator.num_processes, accelerator.process_index
    _check_sharding(pol, world)
    algorithm = resolve_algorithm(algorithm_name).from_config(cfg["algorithm_params"].get(algorithm_name, {}))
    if algorithm.self_play and preference is None:
        raise HarnessError(f"algorithm '{algorithm_name}' in self-play mode needs a preference oracle (the judge); "
                           "none is available for this config's eval.judge")
    tokenizer = M.load_tokenizer({"path": str(data_dir / "tokenizer")})
    prompts = D.read_jsonl(data_dir / ("prefs_train.jsonl" if algorithm.offline else "train.jsonl"))
    iterations = iterations_of(algorithm, pol, len(prompts))

    torch.manual_seed(seed)
    sft = M.read_model_ref(sft_ref)
    run = build_run(cfg, algorithm, iterations, accelerator, load_policy=lambda: M.load_policy(sft, dtype),
                    load_reward_model=lambda: M.load_reward_model(M.read_model_ref(rm_ref), dtype),
                    backend=BACKENDS[cfg["runtime"]["generation_backend"]](tokenizer.eos_token_id,
                                                                          tokenizer.pad_token_id))
    policy, optimizer, scheduler, trainable = run.policy, run.optimizer, run.scheduler, run.trainable

    schedule = prompt_schedule(len(prompts), pol["prompts_per_iteration"], iterations, seed)
    run_info = {
        "algorithm": algorithm_name, "seed": seed, "samples_per_prompt": algorithm.samples_per_prompt,
        "data": "preference pairs" if algorithm.offline else "prompts",
        "iterations": iterations, "prompts_per_iteration": pol["prompts_per_iteration"], "lr": pol["lr"],
        "kl_coef": None if algorithm.offline else pol["kl_coef"],
        "prompt_order_sha256": schedule_sha256([prompts[i]["id"] for i in schedule.reshape(-1)]),
        # The seeded stream every run of this seed draws its prefix from (its first pass over the data).
        "prompt_stream_sha256": schedule_sha256([prompts[i]["id"] for i in prompt_schedule(len(prompts), len(prompts), 1, seed)[0]]),
        "trainable_parameters": sum(p.numel() for p in trainable.parameters() if p.requires_grad),
        "device": str(device), "processes": world, "torch": torch.__version__,
        "kernels": kernels.active(cfg["runtime"]["cpu_kernels"]),
    }

    work = out / "checkpoint"
    log_path, curve_path = work / "metrics.jsonl", work / "curve.jsonl"
    curve_every = cfg["eval"]["curve"]["every"] if curve is not None else None
    counters = dict.fromkeys(COUNTERS, 0)
    start = 0
    found = checkpoint.latest(work / "state")
    if found is not None:
        meta = checkpoint.load(found, trainable, optimizer, scheduler)
        if meta["prompt_order_sha256"] != run_info["prompt_order_sha256"]:
            raise HarnessError(f"checkpoint in '{work}' was made with another prompt order (data or "
                               "policy.iterations/prompts_per_iteration changed); delete it to restart")
        start, counters = meta["iteration"] + 1, counters | meta["counters"]  # counters added since stay 0
        algorithm.load_state_dict(meta["algorithm_state"])
    if accelerator.is_main_process:
        work.mkdir(parents=True, exist_ok=True)
        # Keep the log lines of the iterations the checkpoint holds, drop any after it.
        lines = log_path.read_text().splitlines() if found is not None and log_path.is_file() else []
        log_path.write_text("".join(line + "\n" for line in lines if json.loads(line)["iteration"] < start))
        points = curve_path.read_text().splitlines() if found is not None and curve_path.is_file() else []
        curve_path.write_text("".join(p + "\n" for p in points if json.loads(p)["iterations"] <= start))
        if curve_every is not None and start == 0:
            _curve_point(curve, accelerator.unwrap_model(policy), curve_path, 0, counters)

    k = algorithm.samples_per_prompt
    shard = pol["prompts_per_iteration"] // world
    for iteration in tqdm(range(start, iterations), initial=start, total=iterations,
                          desc=f"{algorithm_name} seed {seed}", mininterval=5,
                          disable=not accelerator.is_main_process):
        torch.manual_seed(_iteration_seed(seed, iteration) + rank)
        generator = torch.Generator().manual_seed(_iteration_seed(seed, iteration) + rank)
        rows = [prompts[i] for i in schedule[iteration][rank * shard:(rank + 1) * shard]]
        rollout, stats, timings = run_iteration(run, encode_batch(tokenizer, rows, cfg, algorithm.offline, device),
                                                generator, tokenizer=tokenizer, rows=rows, preference=preference)
        logratio = rollout.logprobs.sum(-1) - rollout.ref_logprobs.sum(-1)  # log π_t(y|x) − log π_0(y|x)
        means = {"response_tokens": rollout.response_mask.sum(-1).float().mean().item(), **stats}
        counts = {"prompts": len(rows), "generations": 0, "generated_tokens": 0, "reward_model_calls": 0,
                  "preference_queries": 0}
        if algorithm.offline:  # on the data set's responses: DPO's implicit rewards (over β)
            means |= {"chosen_logratio": logratio[0::2].mean().item(), "rejected_logratio": logratio[1::2].mean().item()}
        else:  # on π_t's own samples: an estimate of KL(π_t‖π_0)
            score_name = "preference_score" if algorithm.self_play else "rm_score"
            means |= {"kl": logratio.mean().item(), "reward": rollout.rewards.mean().item(),
                      score_name: rollout.scores.mean().item(), "eos_rate": rollout.has_eos.float().mean().item()}
            # Figure 5's 2-std ellipses: per-sample covariance of (KL, score), ddof 0 (per process, then averaged).
            cov = torch.cov(torch.stack([logratio, rollout.scores]).double(), correction=0)
            means |= {"kl_var": cov[0, 0].item(), f"{score_name}_var": cov[1, 1].item(),
                      f"kl_{score_name}_cov": cov[0, 1].item()}
            generations = len(rows) * (k + algorithm.self_play)
            counts |= {"generations": generations, "generated_tokens": generations * rollout.response_ids.shape[1],
                       ("preference_queries" if algorithm.self_play else "reward_model_calls"): len(rollout)}
            if monitor is not None:
                texts = D.decode_responses(tokenizer, rollout.response_ids, rollout.response_mask)
                means |= monitor([r for r in rows for _ in range(k)], texts, rollout.has_eos.cpu())
        means, counts = _reduce(accelerator, means, "mean"), _reduce(accelerator, counts, "sum")
        for key, value in counts.items():
            counters[key] += int(value)
        counters["optimizer_steps"] += run.steps_per_iteration
        algorithm.observe(means)
        record = {"iteration": iteration, **means, "lr": scheduler.get_last_lr()[0], **timings,
                  "peak_rss_mib": peak_rss_mib(), **counters}
        if accelerator.is_main_process:
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            if curve_every is not None and ((iteration + 1) % curve_every == 0 or iteration + 1 == iterations):
                _curve_point(curve, accelerator.unwrap_model(policy), curve_path, iteration + 1, counters)
            if (iteration + 1) % pol["checkpoint_every"] == 0 or iteration + 1 == iterations:
                checkpoint.save(work / "state", trainable, optimizer, scheduler,
                                {"iteration": iteration, "counters": counters,
                                 "prompt_order_sha256": run_info["prompt_order_sha256"],
                                 "algorithm_state": algorithm.state_dict()})
        accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        M.save_model(accelerator.unwrap_model(policy), out / "policy", base_ref=sft if pol["lora"] is not None else None)
        M.write_model_ref(out / "policy" / "model.json", {"path": "."})
        shutil.copyfile(log_path, out / "metrics.jsonl")
        if curve_every is not None:
            shutil.copyfile(curve_path, out / "curve.jsonl")
        records = [json.loads(line) for line in log_path.read_text().splitlines()]
        profile = profile_summary(records, cfg["runtime"]["profile_warmup_iterations"], cfg["runtime"]["profile_iterations"])
        (out / "run.json").write_text(json.dumps(run_info | {"counters": counters, "profile": profile}, indent=2))
        shutil.rmtree(work)


def _curve_point(curve: CurveEvaluator, policy: torch.nn.Module, path: Path, iterations: int,
                 counters: dict[str, int]) -> None:
    """Append one learning-curve point: the evaluator's numbers after ``iterations`` iterations,
    with the budget spent by then (prompts, reward-model calls, preference queries)."""
    spent = {key: counters[key] for key in ("prompts", "reward_model_calls", "preference_queries")}
    with path.open("a") as f:
        f.write(json.dumps({"iterations": iterations, **spent, **curve(policy)}) + "\n")


def _reduce(accelerator: Accelerator, values: dict[str, float], how: str) -> dict[str, float]:
    """Mean or sum of per-process scalars across processes (identity with one process)."""
    if accelerator.num_processes == 1:
        return values
    reduced = accelerator.reduce(torch.tensor(list(values.values()), dtype=torch.float64,
                                              device=accelerator.device), how)
    return dict(zip(values, reduced.tolist()))
