"""Table 1 evaluation of one policy and seed: judge winrate, reward-model score and KL (paper §5.1).

- Responses to a seeded subset of the test prompts (the same subset for every policy),
  sampled at ``eval.temperature`` (0.01, near greedy).
- RM score: the reward model's score, Γ for a response without EOS (as in training).
- KL(π‖π_ref): mean over prompts of the sequence log-ratio log π(y|x) − log π_ref(y|x) of
  the policy's own samples, with log-probs at the training temperature (the distribution
  the policy was optimized as).
- Winrate against the human reference summaries, A/B order randomized per example from
  the recorded seed; unparseable judgments are counted and excluded; a 95% Wilson score
  interval on the wins; for an API judge, its calls, tokens and estimated cost.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eval.judges import Judge
from rebel import data as D
from rebel import models as M
from rebel import synthetic_tldr as task
from rebel.generation import BACKENDS, sample_responses
from rebel.loop import micro_batches, score_batches


def test_subset(rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """A seeded subset of an evaluation split, independent of the policy being evaluated."""
    index = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    return [rows[i] for i in index]


def wilson_interval(wins: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (Wilson 1927), in [0, 1]; NaN for n = 0.

    Chosen over the normal approximation because it stays inside [0, 1] and keeps its coverage
    for winrates near 0 or 1 and for small n. It covers the judging of a fixed set of
    generations (prompt sampling), not the spread over training seeds.
    """
    if n == 0:
        return float("nan"), float("nan")
    p, z2 = wins / n, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, center - half), min(1.0, center + half)


def winrate(judge: Judge, prompts: list[str], policy: list[str], reference: list[str],
            seed: int) -> dict[str, Any]:
    """Winrate of ``policy`` over ``reference`` (percent) with per-example A/B order from ``seed``,
    and its 95% Wilson interval (:func:`wilson_interval`)."""
    rng = random.Random(seed)
    policy_is_a = [rng.random() < 0.5 for _ in prompts]
    a = [p if first else r for p, r, first in zip(policy, reference, policy_is_a)]
    b = [r if first else p for p, r, first in zip(policy, reference, policy_is_a)]
    outcomes = []
    for pref, first in zip(judge.judge(prompts, a, b), policy_is_a, strict=True):
        outcomes.append(None if pref is None else 1.0 if (pref == "A") == first else 0.0)
    valid = [o for o in outcomes if o is not None]
    low, high = wilson_interval(int(sum(valid)), len(valid))
    return {"winrate": 100.0 * float(np.mean(valid)) if valid else float("nan"),
            "winrate_ci_low": 100.0 * low, "winrate_ci_high": 100.0 * high,
            "judged": len(valid), "parse_failures": len(outcomes) - len(valid),
            "outcomes": outcomes, "policy_is_a": policy_is_a}


@torch.no_grad()
def sample_eval_responses(cfg: dict[str, Any], policy: torch.nn.Module, tokenizer, rows: list[dict[str, Any]], *,
                          seed: int, max_new_tokens: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """One response per prompt row at ``eval.temperature``, drawn from ``seed`` (the same draws for every
    policy): ``(prompt ids, prompt mask, response ids, response mask, has_eos)``."""
    prompt_ids, prompt_mask = (t.to(device) for t in D.encode_prompts(tokenizer, rows, cfg["data"]["prompt_length"]))
    torch.manual_seed(seed)
    backend = BACKENDS[cfg["runtime"]["generation_backend"]](tokenizer.eos_token_id, tokenizer.pad_token_id)
    return sample_responses(
        backend, policy, prompt_ids, prompt_mask, samples_per_prompt=1, temperature=cfg["eval"]["temperature"],
        max_new_tokens=max_new_tokens, batch_size=cfg["eval"]["batch_size"],
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


@torch.no_grad()
def evaluate_policy(cfg: dict[str, Any], policy_ref: Path, *, seed: int, data_dir: Path, sft_ref: Path,
                    rm_ref: Path, judge: Judge, out: Path, split: str = "test") -> dict[str, Any]:
    """Evaluate a policy on the ``split`` prompts (``val`` for the hyperparameter search);
    writes ``out/generations.jsonl`` and ``out/eval.json``."""
    device = M.resolve_device(cfg["runtime"]["device"])
    dtype, batch = cfg["model"]["dtype"], cfg["eval"]["batch_size"]
    tokenizer = M.load_tokenizer({"path": str(data_dir / "tokenizer")})
    policy = M.load_policy(M.read_model_ref(policy_ref), dtype).to(device).eval()
    is_adapter = hasattr(policy, "disable_adapter")
    reference = M.Reference(policy, None if is_adapter else M.load_policy(M.read_model_ref(sft_ref), dtype).to(device))
    reward_model = M.load_reward_model(M.read_model_ref(rm_ref), dtype).to(device).eval()

    rows = test_subset(D.read_jsonl(data_dir / f"{split}.jsonl"), cfg["eval"]["n_prompts"], cfg["data"]["seed"])
    p_ids, p_mask, r_ids, r_mask, has_eos = sample_eval_responses(
        cfg, policy, tokenizer, rows, seed=seed, max_new_tokens=cfg["data"]["response_length"], device=device)
    chunks = micro_batches(batch, p_ids, p_mask, r_ids, r_mask)
    temperature = cfg["policy"]["temperature"]
    logp = score_batches(lambda *c: M.response_logprobs(policy, *c, temperature=temperature), chunks).sum(-1)
    with reference.model() as ref_model:
        ref_logp = score_batches(lambda *c: M.response_logprobs(ref_model, *c, temperature=temperature), chunks).sum(-1)
    rm = score_batches(lambda *c: M.reward_scores(reward_model, *c), chunks)
    scores = torch.where(has_eos, rm, torch.full_like(rm, cfg["policy"]["missing_eos_penalty"]))
    texts = D.decode_responses(tokenizer, r_ids, r_mask)
    prompts = [D.prompt_text(r) for r in rows]
    judged = winrate(judge, prompts, texts, [r["reference"] for r in rows], seed)

    result: dict[str, Any] = {
        "seed": seed, "split": split, "n_prompts": len(rows), "judge": judge.name,
        "winrate": judged["winrate"], "winrate_ci_low": judged["winrate_ci_low"],
        "winrate_ci_high": judged["winrate_ci_high"], "judged": judged["judged"],
        "judge_parse_failures": judged["parse_failures"],
        "rm_score": scores.mean().item(), "kl": (logp - ref_logp).mean().item(),
        "eos_rate": has_eos.float().mean().item(),
        "response_tokens": r_mask.sum(-1).float().mean().item(),
    }
    if judge.usage() is not None:
        result["judge_usage"] = judge.usage()
    if cfg["data"]["source"] == "synthetic":
        result["gold_quality"] = float(np.mean([task.gold_quality(p, t, bool(e))
                                                for p, t, e in zip(prompts, texts, has_eos.tolist())]))
    out.mkdir(parents=True, exist_ok=True)
    D.write_jsonl(out / "generations.jsonl", (
        {"id": r["id"], "response": t, "has_eos": bool(e), "rm_score": s, "kl": kl, "reference": r["reference"],
         "policy_was_a": a, "outcome": o}
        for r, t, e, s, kl, a, o in zip(rows, texts, has_eos.tolist(), scores.tolist(),
                                           (logp - ref_logp).tolist(), judged["policy_is_a"], judged["outcomes"])))
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    return result
