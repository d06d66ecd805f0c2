"""The shared online loop: one implementation of everything but an algorithm's loss and the
source of its rollouts.

Per iteration t (paper Algorithm 1 and appendix H.1.4):
  1. take the next ``prompts_per_iteration`` rows of a seeded order shared by all algorithms;
  2–3. have the algorithm's rollout source (:mod:`rebel.sources`) make the batch: by default, sample
     k responses per prompt from π_t (fixed length, padding after the first EOS), record log π_t
     and log π_0 (the SFT reference), score the samples with the reward model (Γ for a response
     without EOS) and shape the reward ``r = RM − γ (log π_t − log π_0)`` (Eq. 22); DPO's source
     reads the next preference pairs instead, self-play's judges each sample against one more;
  4. run the algorithm's loss for ``epochs_per_iteration`` passes (the algorithm's own
     count, else the config's) over minibatches of whole prompts, with AdamW and a
     linearly decaying learning rate;
  5. log one line to ``metrics.jsonl`` (with the source's metrics and budget) and checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from tqdm import tqdm
from transformers import get_scheduler

from rebel import checkpoint, kernels
from rebel import data as D
from rebel import models as M
from rebel.algorithms import Algorithm, build_algorithm
from rebel.config import policy_settings
from rebel.distributed import global_sum
from rebel.errors import ConfigError, HarnessError
from rebel.profiling import peak_rss_mib, phase, profile_summary
from rebel.rollout import Rollout
from rebel.sources import PreferenceOracle, RolloutSource, SampleMonitor, token_logprobs

CurveEvaluator = Callable[[torch.nn.Module], dict[str, Any]]
"""Evaluates the current policy for a learning-curve point (eval.evaluate.CurveEvaluator)."""
COUNTERS = ("prompts", "generations", "generated_tokens", "reward_model_calls", "preference_queries", "optimizer_steps")


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


def update(
    policy: torch.nn.Module,
    rollout: Rollout,
    algorithm: Algorithm,
    optimizer,
    scheduler,
    accelerator: Accelerator,
    cfg: dict[str, Any],
    generator: torch.Generator,
    critic: torch.nn.Module | None = None,
    source: RolloutSource | None = None,
) -> dict[str, float]:
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
    forward, so that DDP all-reduces its gradients. ``source`` (the run's) computes the log-probs
    (:meth:`rebel.sources.RolloutSource.logprobs`; default: a text rollout's per-token log-probs). With
    ``policy.max_grad_norm`` set, each step's gradient is clipped to that norm first.
    """
    pol = cfg["policy"]
    temperature = (source or algorithm.source).logprob_temperature(cfg)
    logprobs_of = token_logprobs if source is None else source.logprobs
    params = [p for group in optimizer.param_groups for p in group["params"]]
    minibatch = pol["minibatch_prompts"] // accelerator.num_processes
    micro = cfg["runtime"]["update_micro_batch_prompts"] or minibatch
    policy.train()
    if critic is not None:
        critic.train()
    stats: dict[str, list[float]] = {}
    for _ in range(epochs_of(algorithm, cfg)):
        order = torch.randperm(rollout.num_prompts, generator=generator).to(rollout.prompt_ids.device)
        for start in range(0, rollout.num_prompts, minibatch):
            index = order[start : start + minibatch]
            tokens = global_sum(rollout.grouped(rollout.response_mask)[index].sum().double()).item()
            optimizer.zero_grad(set_to_none=True)
            step_stats: dict[str, float] = {}
            for part in index.split(micro):
                share = len(part) / len(index)
                batch = rollout.select_prompts(part).with_token_normalizer(share * tokens / accelerator.num_processes)
                logprobs = logprobs_of(policy, batch, temperature)
                values = (
                    None
                    if critic is None
                    else critic(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
                )
                loss, extra = algorithm.loss(logprobs, batch, values)
                accelerator.backward(loss * share)
                for key, value in {"loss": loss.detach(), **extra}.items():
                    step_stats[key] = step_stats.get(key, 0.0) + float(value) * share
            if pol.get("max_grad_norm") is not None:
                step_stats["grad_norm"] = float(accelerator.clip_grad_norm_(params, pol["max_grad_norm"]))
            for key, value in step_stats.items():
                stats.setdefault(key, []).append(value)
            optimizer.step()
            scheduler.step()
    return {key: float(np.mean(values)) for key, values in stats.items()}


def epochs_of(algorithm: Algorithm, cfg: dict[str, Any]) -> int:
    """Update passes per rollout: the algorithm's own count, else ``policy.epochs_per_iteration``."""
    return algorithm.epochs_per_iteration or cfg["policy"]["epochs_per_iteration"]


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
    policy: torch.nn.Module  # as prepared by accelerate
    source: RolloutSource  # with π_0 and the models it draws with
    critic: torch.nn.Module | None  # M.TokenValueModel of trainable["critic"], as prepared by accelerate
    trainable: torch.nn.ModuleDict
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps_per_iteration: int

    @property
    def device(self) -> torch.device:
        return self.accelerator.device


def build_run(
    cfg: dict[str, Any],
    algorithm: Algorithm,
    iterations: int,
    accelerator: Accelerator,
    *,
    load_policy: Callable[[], torch.nn.Module],
    load_reward_model: Callable[[], torch.nn.Module],
    backend,
    preference: PreferenceOracle | None = None,
    source: type[RolloutSource] | None = None,
    policy_ref: dict[str, Any] | None = None,
) -> Run:
    """The policy (LoRA-adapted under ``policy.lora``), π_0, the rollout source (``source``, default the
    algorithm's) with the models it needs (the reward model, or the ``preference`` oracle; ``policy_ref``: the
    policy's model reference) and the algorithm's declared critic, from the given constructors, with AdamW
    and the schedule over ``iterations`` iterations."""
    pol, device = cfg["policy"], accelerator.device
    source_cls = source or algorithm.source
    policy = load_policy()
    if pol["lora"] is not None:
        policy = source_cls.add_lora(policy, pol["lora"])
        reference = M.Reference(policy, None)
    elif pol.get("train_top_layers") is not None:
        policy = M.train_top_layers(policy.to(device), pol["train_top_layers"])
        reference = M.Reference.top_layers(policy, pol["train_top_layers"])
    else:
        reference = M.Reference(policy, load_policy().to(device))
    source = source_cls.load(
        cfg,
        algorithm,
        reference,
        device,
        backend=backend,
        load_reward_model=load_reward_model,
        preference=preference,
        policy_ref=policy_ref,
    )
    critic = None if algorithm.value_model is None else algorithm.value_model.load(load_reward_model, pol["lora"])
    if not cfg["model"]["dropout"]:
        for model in (policy, critic):
            if model is not None:
                M.disable_dropout(model)
    trainable = torch.nn.ModuleDict({"policy": policy} | ({"critic": critic} if critic is not None else {}))
    # The critic is trained through a forward that returns per-token values, so that DDP wraps (and
    # all-reduces the gradients of) the computation the loss uses; the checkpoint keeps the critic's names.
    critic = None if critic is None else M.TokenValueModel(critic)

    steps_per_iteration = epochs_of(algorithm, cfg) * math.ceil(pol["prompts_per_iteration"] / pol["minibatch_prompts"])
    optimizer = torch.optim.AdamW(
        [p for p in trainable.parameters() if p.requires_grad],
        lr=pol["lr"],
        betas=tuple(pol.get("adam_betas", (0.9, 0.999))),
        eps=pol["adam_eps"],
        weight_decay=pol["weight_decay"],
    )
    total_steps = iterations * steps_per_iteration
    warmup_steps = round(pol.get("warmup_ratio", 0.0) * total_steps)
    scheduler = get_scheduler(pol["schedule"], optimizer, warmup_steps, total_steps)
    # The scheduler stays unprepared: accelerate would step it once per process, but the global
    # minibatch is split across processes, so one optimizer step is one scheduler step.
    policy, optimizer = accelerator.prepare(policy, optimizer)
    if critic is not None:
        critic = accelerator.prepare(critic)
    return Run(
        cfg=cfg,
        algorithm=algorithm,
        accelerator=accelerator,
        policy=policy,
        source=source,
        critic=critic,
        trainable=trainable,
        optimizer=optimizer,
        scheduler=scheduler,
        steps_per_iteration=steps_per_iteration,
    )


def run_iteration(
    run: Run,
    batch: tuple[torch.Tensor, ...],
    generator: torch.Generator,
    *,
    tokenizer,
    rows: list[dict[str, Any]] | None = None,
    on_prepared: Callable[[Rollout], None] | None = None,
) -> tuple[Rollout, dict[str, float], dict[str, float]]:
    """Steps 2–4 of one iteration on ``batch`` (the source's ``encode`` of ``rows``): the rollout, the
    update's statistics, and each phase's seconds and peak memory (:func:`rebel.profiling.phase`).
    ``on_prepared`` sees the batch the update trains on (after the algorithm's ``prepare``)."""
    timings: dict[str, float] = {}
    accelerator, policy = run.accelerator, run.accelerator.unwrap_model(run.policy)
    critic = None if run.critic is None else accelerator.unwrap_model(run.critic).eval()
    rollout = run.source.collect(policy, batch, tokenizer=tokenizer, timings=timings, critic=critic, rows=rows)
    prepared = run.algorithm.prepare(rollout)
    if on_prepared is not None:
        on_prepared(prepared)
    with phase(timings, "update", run.device):
        stats = update(
            run.policy,
            prepared,
            run.algorithm,
            run.optimizer,
            run.scheduler,
            accelerator,
            run.cfg,
            generator,
            run.critic,
            run.source,
        )
    return rollout, stats, timings


def train_online(
    cfg: dict[str, Any],
    algorithm_name: str,
    seed: int,
    *,
    data_dir: Path,
    sft_ref: Path,
    rm_ref: Path,
    out: Path,
    monitor: SampleMonitor | None = None,
    preference: PreferenceOracle | None = None,
    curve: CurveEvaluator | None = None,
    data_file: Path | None = None,
) -> None:
    """Run (or resume) one algorithm for one seed; writes ``out/{metrics.jsonl,run.json,policy/}``,
    and ``out/curve.jsonl`` when a ``curve`` evaluator is given: its numbers for the policy before
    training and after every ``eval.curve.every`` iterations (and the last), each line with the
    budget spent so far (the learning curves of Figure ``curves``). ``data_file`` replaces the source's
    data set file (DPO on the pairs another run recorded: Table 3).

    With ``policy.save_pairs`` (online algorithms), each iteration's trained pairs are written to
    ``out/pairs/iter<t>.jsonl`` as preference rows (:func:`pair_rows`); with ``policy.snapshot_every`` k, the
    policy after every k-th iteration but the last to ``out/iter<t>/policy/`` (the last is ``out/policy/``).

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
    algorithm = build_algorithm(algorithm_name, cfg)
    # The algorithm's source in the config's setting (text by default; the image setting's trajectories).
    source_cls = algorithm.source.for_setting(cfg.get("setting", "text"))
    if source_cls.needs_preference_oracle and preference is None:
        raise HarnessError(
            f"algorithm '{algorithm_name}' with the {source_cls.__name__} source needs a preference oracle "
            "(the judge); none is available for this config's eval.judge"
        )
    sft = M.read_model_ref(sft_ref)
    tokenizer = source_cls.load_tokenizer(data_dir, sft)
    prompts = D.read_jsonl(data_file or data_dir / source_cls.data_file)[: pol.get("prompt_pool")]
    iterations = source_cls.iterations(algorithm, pol, len(prompts))

    torch.manual_seed(seed)
    run = build_run(
        cfg,
        algorithm,
        iterations,
        accelerator,
        load_policy=lambda: source_cls.load_policy(sft, dtype),
        load_reward_model=lambda: source_cls.load_reward_model(cfg, rm_ref, dtype),
        backend=source_cls.make_backend(cfg, tokenizer),
        preference=preference,
        source=source_cls,
        policy_ref=sft,
    )
    policy, optimizer, scheduler, trainable = run.policy, run.optimizer, run.scheduler, run.trainable
    source = run.source

    schedule = prompt_schedule(len(prompts), pol["prompts_per_iteration"], iterations, seed)
    run_info = {
        "algorithm": algorithm_name,
        "seed": seed,
        "samples_per_prompt": algorithm.samples_per_prompt,
        "data": source.data_label,
        "data_file": str(data_file or source_cls.data_file),
        "iterations": iterations,
        "prompts_per_iteration": pol["prompts_per_iteration"],
        "lr": pol["lr"],
        "kl_coef": source.kl_coef(pol),
        "prompt_order_sha256": schedule_sha256([prompts[i]["id"] for i in schedule.reshape(-1)]),
        # The seeded stream every run of this seed draws its prefix from (its first pass over the data).
        "prompt_stream_sha256": schedule_sha256(
            [prompts[i]["id"] for i in prompt_schedule(len(prompts), len(prompts), 1, seed)[0]]
        ),
        "trainable_parameters": sum(p.numel() for p in trainable.parameters() if p.requires_grad),
        "device": str(device),
        "processes": world,
        "torch": torch.__version__,
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
            raise HarnessError(
                f"checkpoint in '{work}' was made with another prompt order (data or "
                "policy.iterations/prompts_per_iteration changed); delete it to restart"
            )
        start, counters = meta["iteration"] + 1, counters | meta["counters"]  # counters added since stay 0
        algorithm.load_state_dict(meta["algorithm_state"])
        source.load_state_dict(meta.get("source_state", {}))
    if accelerator.is_main_process:
        work.mkdir(parents=True, exist_ok=True)
        # Keep the log lines of the iterations the checkpoint holds, drop any after it.
        lines = log_path.read_text().splitlines() if found is not None and log_path.is_file() else []
        log_path.write_text("".join(line + "\n" for line in lines if json.loads(line)["iteration"] < start))
        points = curve_path.read_text().splitlines() if found is not None and curve_path.is_file() else []
        curve_path.write_text("".join(p + "\n" for p in points if json.loads(p)["iterations"] <= start))
        if curve_every is not None and start == 0:
            _curve_point(curve, accelerator.unwrap_model(policy), curve_path, 0, counters)

    shard = pol["prompts_per_iteration"] // world
    saves_pairs = bool(pol.get("save_pairs")) and not algorithm.offline  # an offline run reads pairs, records none
    for iteration in tqdm(
        range(start, iterations),
        initial=start,
        total=iterations,
        desc=f"{algorithm_name} seed {seed}",
        mininterval=5,
        disable=not accelerator.is_main_process,
    ):
        torch.manual_seed(_iteration_seed(seed, iteration) + rank)
        generator = torch.Generator().manual_seed(_iteration_seed(seed, iteration) + rank)
        rows = [prompts[i] for i in schedule[iteration][rank * shard : (rank + 1) * shard]]
        pairs: list[dict[str, Any]] = []
        record_pairs = partial(_record_pairs, pairs, rows, tokenizer) if saves_pairs else None
        rollout, stats, timings = run_iteration(
            run, source.encode(tokenizer, rows), generator, tokenizer=tokenizer, rows=rows, on_prepared=record_pairs
        )
        if world > 1 and saves_pairs:
            from accelerate.utils import gather_object

            pairs = gather_object(pairs)
        logged, spent = source.metrics(rollout, rows, tokenizer=tokenizer, monitor=monitor)
        means = {"response_tokens": rollout.response_mask.sum(-1).float().mean().item(), **stats, **logged}
        counts = {"prompts": len(rows), **spent}
        means, counts = _reduce(accelerator, means, "mean"), _reduce(accelerator, counts, "sum")
        for key, value in counts.items():
            counters[key] += int(value)
        counters["optimizer_steps"] += run.steps_per_iteration
        algorithm.observe(means)
        record = {
            "iteration": iteration,
            **means,
            "lr": scheduler.get_last_lr()[0],
            **timings,
            "peak_rss_mib": peak_rss_mib(),
            **counters,
        }
        if accelerator.is_main_process:
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            if saves_pairs:
                D.write_jsonl(out / "pairs" / f"iter{iteration + 1}.jsonl", pairs)
            snapshot_every = pol.get("snapshot_every")
            if snapshot_every and (iteration + 1) % snapshot_every == 0 and iteration + 1 < iterations:
                _save_policy(accelerator.unwrap_model(policy), out / f"iter{iteration + 1}" / "policy", sft, pol)
            if curve_every is not None and ((iteration + 1) % curve_every == 0 or iteration + 1 == iterations):
                _curve_point(curve, accelerator.unwrap_model(policy), curve_path, iteration + 1, counters)
            if (iteration + 1) % pol["checkpoint_every"] == 0 or iteration + 1 == iterations:
                checkpoint.save(
                    work / "state",
                    trainable,
                    optimizer,
                    scheduler,
                    {
                        "iteration": iteration,
                        "counters": counters,
                        "prompt_order_sha256": run_info["prompt_order_sha256"],
                        "algorithm_state": algorithm.state_dict(),
                        "source_state": source.state_dict(),
                    },
                )
        accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        _save_policy(accelerator.unwrap_model(policy), out / "policy", sft, pol)
        shutil.copyfile(log_path, out / "metrics.jsonl")
        if curve_every is not None:
            shutil.copyfile(curve_path, out / "curve.jsonl")
        records = [json.loads(line) for line in log_path.read_text().splitlines()]
        profile = profile_summary(
            records, cfg["runtime"]["profile_warmup_iterations"], cfg["runtime"]["profile_iterations"]
        )
        (out / "run.json").write_text(json.dumps(run_info | {"counters": counters, "profile": profile}, indent=2))
        shutil.rmtree(work)


def _save_policy(policy: torch.nn.Module, out: Path, sft: dict[str, Any], pol: dict[str, Any]) -> None:
    """The policy's weights (a LoRA adapter with its base's reference) and its ``model.json``."""
    M.save_model(policy, out, base_ref=sft if pol["lora"] is not None else None)
    M.write_model_ref(out / "model.json", {"path": "."})


def _record_pairs(pairs: list[dict[str, Any]], rows: list[dict[str, Any]], tokenizer, batch: Rollout) -> None:
    pairs.extend(pair_rows(batch, rows, tokenizer))


def pair_rows(batch: Rollout, rows: list[dict[str, Any]], tokenizer) -> list[dict[str, Any]]:
    """The pairs a two-sample batch trains on as preference rows (the data set format DPO reads): each
    pair's prompt row (``rows[batch.prompt_rows]``) with its higher-scored response as ``chosen``, the other as
    ``rejected``, and both scores."""
    if batch.samples_per_prompt != 2 or batch.prompt_rows is None:
        raise HarnessError("policy.save_pairs needs an algorithm that trains on pairs of sampled responses")
    texts = D.decode_responses(tokenizer, batch.response_ids, batch.response_mask)
    scores, prompts = batch.grouped(batch.scores).tolist(), batch.grouped(batch.prompt_rows)[:, 0].tolist()
    out = []
    for p, ((a, b), row) in enumerate(zip(scores, prompts)):
        first_wins = a >= b
        chosen, rejected = (2 * p, 2 * p + 1) if first_wins else (2 * p + 1, 2 * p)
        out.append(
            {k: v for k, v in rows[row].items() if k != "reference"}
            | {
                "chosen": texts[chosen],
                "rejected": texts[rejected],
                "chosen_score": max(a, b),
                "rejected_score": min(a, b),
            }
        )
    return out


def _curve_point(
    curve: CurveEvaluator, policy: torch.nn.Module, path: Path, iterations: int, counters: dict[str, int]
) -> None:
    """Append one learning-curve point: the evaluator's numbers after ``iterations`` iterations,
    with the budget spent by then (prompts, reward-model calls, preference queries)."""
    spent = {key: counters[key] for key in ("prompts", "reward_model_calls", "preference_queries")}
    with path.open("a") as f:
        f.write(json.dumps({"iterations": iterations, **spent, **curve(policy)}) + "\n")


def _reduce(accelerator: Accelerator, values: dict[str, float], how: str) -> dict[str, float]:
    """Mean or sum of per-process scalars across processes (identity with one process)."""
    if accelerator.num_processes == 1:
        return values
    reduced = accelerator.reduce(
        torch.tensor(list(values.values()), dtype=torch.float64, device=accelerator.device), how
    )
    return dict(zip(values, reduced.tolist()))
