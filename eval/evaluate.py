"""Table 1 evaluation of one policy and seed: judge winrate, reward-model score and KL (paper §5.1).

- Responses to a seeded subset of the test prompts (the same subset for every policy),
  sampled at ``eval.temperature`` (0.01, near greedy).
- RM score: the reward model's score, Γ for a response without EOS (as in training).
- KL(π_T‖π_ref,T) (``kl``): the divergence of the distribution the policy was trained as
  (logits / T, T = ``policy.temperature``) from the reference's at the same T, estimated on a
  separate draw y ~ π_T, one per test prompt, by the k1 estimator, the mean of the sequence
  log-ratio log π_T(y|x) − log π_ref,T(y|x) (unbiased; ``kl_se`` its standard error over
  prompts). These samples and their RM scores are ``kl_samples.jsonl`` (Figure 5's KL bins).
- ``greedy_logratio``: the same log-ratio averaged over the near-greedy evaluation samples,
  the reference code's "KL" (implementation notes), kept to compare with the paper's KL
  column. It is no divergence: those samples are not drawn from π_T.
- Winrate against the human reference summaries, A/B order randomized per example from
  the recorded seed; unparseable judgments are counted and excluded; ties counted as half
  when the judge can tell them (the gold judge), with a 95% interval that does not count
  the judge's tie-breaking coin flips as evidence (:func:`winrate`); for an API judge, its
  calls, tokens and estimated cost.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eval.judges import GoldJudge, Judge
from rebel import data as D
from rebel import kernels
from rebel import models as M
from rebel import reward_models as RM
from rebel import synthetic_tldr as task
from rebel.errors import HarnessError
from rebel.generation import make_backend, sample_responses
from rebel.rl_math import kl_k1, sequence_logratio
from rebel.sources import micro_batches, score_batches


def test_subset(
    rows: list[dict[str, Any]], n: int, seed: int, key: str | None = None, split: str = ""
) -> list[dict[str, Any]]:
    """A seeded subset of an evaluation split, independent of the policy being evaluated.

    With ``key`` (the config key that asks for ``n``), a split of fewer than ``n`` rows is an error
    naming it; without, the whole split is taken (the search's validation prompts)."""
    if key is not None and n > len(rows):
        raise HarnessError(
            f"{key}: {n} is more than the {len(rows)} prompts of the {split or 'evaluation'} split; "
            f"allowed: 1 to {len(rows)}"
        )
    index = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    return [rows[i] for i in index]


def wilson_interval(wins: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
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


def tie_aware_winrate(wins: int, ties: int, judged: int) -> tuple[float, float, float]:
    """Winrate with ties counted as half, ``p = (wins + ties / 2) / judged``, and its 95% interval, as fractions.

    A judge without a tie answer (H.1.6) breaks a tie by the A/B order: a coin flip, which says
    nothing about the policy. Counted as judgments, the flips would enter the interval's n as
    evidence. Here only the decided comparisons do: the interval is the Wilson score interval of
    ``p`` with ``n = judged − ties`` (:func:`wilson_interval`), so ties never narrow it (it is
    conservative: the ties' share is treated as carrying no information). With no ties it is the
    plain Wilson interval of the wins; with only ties it is undefined (NaN).
    """
    if judged == 0:
        return float("nan"), float("nan"), float("nan")
    rate, decided = (wins + 0.5 * ties) / judged, judged - ties
    low, high = wilson_interval(rate * decided, decided)
    return rate, low, high


def winrate(judge: Judge, prompts: list[str], policy: list[str], reference: list[str], seed: int) -> dict[str, Any]:
    """Winrate of ``policy`` over ``reference`` (percent) with per-example A/B order from ``seed``,
    and its 95% interval (:func:`tie_aware_winrate`). ``outcomes`` are the judge's decisions (1 win,
    0 loss, None unparseable); ``tie`` marks the examples the judge calls ties (None: it cannot tell),
    which count ½ whatever it decided."""
    rng = random.Random(seed)
    policy_is_a = [rng.random() < 0.5 for _ in prompts]
    a = [p if first else r for p, r, first in zip(policy, reference, policy_is_a)]
    b = [r if first else p for p, r, first in zip(policy, reference, policy_is_a)]
    outcomes = []
    for pref, first in zip(judge.judge(prompts, a, b), policy_is_a, strict=True):
        outcomes.append(None if pref is None else 1.0 if (pref == "A") == first else 0.0)
    known = judge.ties(prompts, a, b)
    tie = known if known is not None else [False] * len(outcomes)
    valid = [(o, t) for o, t in zip(outcomes, tie, strict=True) if o is not None]
    ties = sum(t for _, t in valid)
    rate, low, high = tie_aware_winrate(int(sum(o for o, t in valid if not t)), ties, len(valid))
    return {
        "winrate": 100.0 * rate,
        "winrate_ci_low": 100.0 * low,
        "winrate_ci_high": 100.0 * high,
        "judged": len(valid),
        "ties": ties if known is not None else None,
        "parse_failures": len(outcomes) - len(valid),
        "outcomes": outcomes,
        "tie": known,
        "policy_is_a": policy_is_a,
    }


@torch.no_grad()
def sample_eval_responses(
    cfg: dict[str, Any],
    policy: torch.nn.Module,
    tokenizer,
    rows: list[dict[str, Any]],
    *,
    seed: int,
    max_new_tokens: int,
    device: torch.device,
    temperature: float | None = None,
    prompt_length: int | None = None,
) -> tuple[torch.Tensor, ...]:
    """One response per prompt row at ``temperature`` (default ``eval.temperature``), drawn from ``seed``
    (the same draws for every policy): ``(prompt ids, prompt mask, response ids, response mask, has_eos)``.
    Prompts are padded to ``prompt_length`` tokens (default ``data.prompt_length``)."""
    length = prompt_length or cfg["data"]["prompt_length"]
    prompt_ids, prompt_mask = (t.to(device) for t in D.encode_prompts(tokenizer, rows, length))
    torch.manual_seed(seed)
    backend = make_backend(cfg, tokenizer.eos_token_id, tokenizer.pad_token_id)
    return sample_responses(
        backend,
        policy,
        prompt_ids,
        prompt_mask,
        samples_per_prompt=1,
        temperature=cfg["eval"]["temperature"] if temperature is None else temperature,
        max_new_tokens=max_new_tokens,
        batch_size=cfg["eval"]["batch_size"],
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@torch.no_grad()
def penalized_rm_scores(
    cfg: dict[str, Any], reward_model: torch.nn.Module, chunks: list[tuple[torch.Tensor, ...]], has_eos: torch.Tensor
) -> torch.Tensor:
    """The reward model's score of each response, Γ (``policy.missing_eos_penalty``) where it has no EOS."""
    rm = score_batches(lambda *c: RM.reward_scores(reward_model, *c), chunks)
    return torch.where(has_eos, rm, torch.full_like(rm, cfg["policy"]["missing_eos_penalty"]))


@torch.no_grad()
def score_responses(
    cfg: dict[str, Any],
    reward_model: torch.nn.Module,
    rows: list[dict[str, Any]],
    chunks: list[tuple[torch.Tensor, ...]],
    texts: list[str],
    has_eos: torch.Tensor,
    *,
    judge: Judge | None,
    seed: int,
) -> tuple[torch.Tensor, dict[str, Any] | None, dict[str, Any]]:
    """RM scores (Γ without EOS), the judge's winrate over the references (when a judge is given) and,
    on the synthetic task, gold quality of responses to ``rows``: ``(scores, judged, summary)``."""
    scores = penalized_rm_scores(cfg, reward_model, chunks, has_eos)
    prompts = [D.prompt_text(r) for r in rows]
    summary: dict[str, Any] = {"n_prompts": len(rows)}
    judged = None
    if judge is not None:
        judged = winrate(judge, prompts, texts, [r["reference"] for r in rows], seed)
        summary |= {
            "judge": judge.name,
            "winrate": judged["winrate"],
            "winrate_ci_low": judged["winrate_ci_low"],
            "winrate_ci_high": judged["winrate_ci_high"],
            "judged": judged["judged"],
            "ties": judged["ties"],
            "judge_parse_failures": judged["parse_failures"],
        }
        if judge.usage() is not None:
            summary["judge_usage"] = judge.usage()
    summary |= {"rm_score": scores.mean().item(), "eos_rate": has_eos.float().mean().item()}
    if cfg["data"]["source"] == "synthetic":
        summary["gold_quality"] = float(
            np.mean([task.gold_quality(p, t, bool(e)) for p, t, e in zip(prompts, texts, has_eos.tolist())])
        )
    return scores, judged, summary


class CurveEvaluator:
    """Learning-curve points during training (``eval.curve``): the current policy's responses to a
    fixed seeded subset of the *validation* prompts at ``eval.temperature``, with their RM score,
    gold quality (synthetic task) and winrate when the judge costs nothing (the local gold judge).

    The same prompts and sampling seed at every point and for every algorithm; the global RNG is
    left as it was, so evaluating does not change the training run.
    """

    def __init__(self, cfg: dict[str, Any], data_dir: Path, rm_ref: Path, device: torch.device, seed: int) -> None:
        self.cfg, self.seed, self.device = cfg, seed, device
        self.tokenizer = M.load_tokenizer({"path": str(data_dir / "tokenizer")})
        self.rows = test_subset(
            D.read_jsonl(data_dir / "val.jsonl"),
            cfg["eval"]["curve"]["n_prompts"],
            cfg["data"]["seed"],
            key="eval.curve.n_prompts",
            split="validation",
        )
        self.reward_model = RM.load_reward_model(M.read_model_ref(rm_ref), cfg["model"]["dtype"]).to(device).eval()
        judge = cfg["eval"]["judge"]
        self.judge = GoldJudge() if judge["type"] == "gold" else None

    @torch.no_grad()
    def __call__(self, policy: torch.nn.Module) -> dict[str, Any]:
        was_training = policy.training
        policy.eval()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            p_ids, p_mask, r_ids, r_mask, has_eos = sample_eval_responses(
                self.cfg,
                policy,
                self.tokenizer,
                self.rows,
                seed=self.seed,
                max_new_tokens=self.cfg["data"]["response_length"],
                device=self.device,
            )
        chunks = micro_batches(self.cfg["eval"]["batch_size"], p_ids, p_mask, r_ids, r_mask)
        texts = D.decode_responses(self.tokenizer, r_ids, r_mask)
        _, _, summary = score_responses(
            self.cfg, self.reward_model, self.rows, chunks, texts, has_eos, judge=self.judge, seed=self.seed
        )
        policy.train(was_training)
        return {key: value for key, value in summary.items() if not key.startswith("winrate_ci")}


def kl_sample_seed(seed: int) -> int:
    """The seed of the KL draw at the training temperature: another stream than the evaluation draw's."""
    return (seed * 1_000_003 + 1) % 2**63


@torch.no_grad()
def evaluate_policy(
    cfg: dict[str, Any],
    policy_ref: Path,
    *,
    seed: int,
    data_dir: Path,
    sft_ref: Path,
    rm_ref: Path,
    judge: Judge,
    out: Path,
    split: str = "test",
) -> dict[str, Any]:
    """Evaluate a policy on the ``split`` prompts (``val`` for the hyperparameter search);
    writes ``out/generations.jsonl``, ``out/kl_samples.jsonl`` and ``out/eval.json``."""
    # Table 1 needs all of eval.n_prompts; the search (val) takes at most that many validation prompts.
    rows = test_subset(
        D.read_jsonl(data_dir / f"{split}.jsonl"),
        cfg["eval"]["n_prompts"],
        cfg["data"]["seed"],
        key="eval.n_prompts" if split == "test" else None,
        split=split,
    )
    device = M.resolve_device(cfg["runtime"]["device"])
    dtype, batch = cfg["model"]["dtype"], cfg["eval"]["batch_size"]
    tokenizer = M.load_tokenizer({"path": str(data_dir / "tokenizer")})
    policy = M.load_policy(M.read_model_ref(policy_ref), dtype).to(device).eval()
    is_adapter = hasattr(policy, "disable_adapter")
    reference = M.Reference(policy, None if is_adapter else M.load_policy(M.read_model_ref(sft_ref), dtype).to(device))
    reward_model = RM.load_reward_model(M.read_model_ref(rm_ref), dtype).to(device).eval()

    temperature = cfg["policy"]["temperature"]

    def logratio(chunks: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
        """Sequence log π_T(y|x) − log π_ref,T(y|x) at the training temperature."""
        logp = score_batches(lambda *c: M.response_logprobs(policy, *c, temperature=temperature), chunks)
        with reference.model() as ref_model:
            return sequence_logratio(
                logp, score_batches(lambda *c: M.response_logprobs(ref_model, *c, temperature=temperature), chunks)
            )

    p_ids, p_mask, r_ids, r_mask, has_eos = sample_eval_responses(
        cfg, policy, tokenizer, rows, seed=seed, max_new_tokens=cfg["data"]["response_length"], device=device
    )
    chunks = micro_batches(batch, p_ids, p_mask, r_ids, r_mask)
    greedy = logratio(chunks)
    texts = D.decode_responses(tokenizer, r_ids, r_mask)
    scores, judged, result = score_responses(cfg, reward_model, rows, chunks, texts, has_eos, judge=judge, seed=seed)
    kl_draw = sample_eval_responses(
        cfg,
        policy,
        tokenizer,
        rows,
        seed=kl_sample_seed(seed),
        device=device,
        max_new_tokens=cfg["data"]["response_length"],
        temperature=temperature,
    )
    kl_chunks = micro_batches(batch, *kl_draw[:4])
    kl = logratio(kl_chunks)
    kl_scores = penalized_rm_scores(cfg, reward_model, kl_chunks, kl_draw[4])
    kl_mean, kl_se = kl_k1(kl)
    result = {
        "seed": seed,
        "split": split,
        **result,
        "kl": kl_mean,
        "kl_se": kl_se,
        "kl_estimator": f"k1 on y ~ pi_T, T = {temperature} (policy.temperature), one per prompt",
        "greedy_logratio": greedy.mean().item(),
        "response_tokens": r_mask.sum(-1).float().mean().item(),
        "kernels": kernels.active(cfg["runtime"]["cpu_kernels"]),
    }
    out.mkdir(parents=True, exist_ok=True)
    D.write_jsonl(
        out / "generations.jsonl",
        (
            {
                "id": r["id"],
                "response": t,
                "has_eos": bool(e),
                "rm_score": s,
                "logratio": lr,
                "reference": r["reference"],
                "policy_was_a": a,
                "outcome": o,
                "tie": None if judged["tie"] is None else judged["tie"][i],
            }
            for i, (r, t, e, s, lr, a, o) in enumerate(
                zip(
                    rows,
                    texts,
                    has_eos.tolist(),
                    scores.tolist(),
                    greedy.tolist(),
                    judged["policy_is_a"],
                    judged["outcomes"],
                )
            )
        ),
    )
    D.write_jsonl(
        out / "kl_samples.jsonl",
        (
            {"id": r["id"], "kl": k, "rm_score": s, "has_eos": bool(e)}
            for r, k, s, e in zip(rows, kl.tolist(), kl_scores.tolist(), kl_draw[4].tolist())
        ),
    )
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    return result


@torch.no_grad()
def evaluate_ceiling(
    cfg: dict[str, Any], *, seed: int, data_dir: Path, rm_ref: Path, judge: Judge, out: Path
) -> dict[str, Any]:
    """The task's ceiling, measured as a policy is (synthetic task only): the oracle summaries
    (:func:`rebel.synthetic_tldr.oracle_summary`, gold quality 1) of the same prompts, judged against
    the same references in the same per-seed A/B order, and scored by the reward model. Writes
    ``out/eval.json`` (Table 1's test prompts) and ``out/curve.json`` (the learning curves' validation
    prompts, when ``eval.curve`` is on)."""
    if cfg["data"]["source"] != "synthetic":
        raise HarnessError("the ceiling needs data.source 'synthetic' (only there is the best summary known)")
    device = M.resolve_device(cfg["runtime"]["device"])
    tokenizer = M.load_tokenizer({"path": str(data_dir / "tokenizer")})
    reward_model = RM.load_reward_model(M.read_model_ref(rm_ref), cfg["model"]["dtype"]).to(device).eval()

    def oracle(rows: list[dict[str, Any]], oracle_judge: Judge | None) -> dict[str, Any]:
        texts = [task.oracle_summary(D.prompt_text(r)) for r in rows]
        p_ids, p_mask = D.encode_prompts(tokenizer, rows, cfg["data"]["prompt_length"])
        r_ids, r_mask = D.encode_responses(tokenizer, texts, cfg["data"]["response_length"])
        has_eos = r_ids.gather(1, r_mask.sum(-1, keepdim=True) - 1).squeeze(1) == tokenizer.eos_token_id
        chunks = micro_batches(cfg["eval"]["batch_size"], *(t.to(device) for t in (p_ids, p_mask, r_ids, r_mask)))
        _, _, summary = score_responses(
            cfg, reward_model, rows, chunks, texts, has_eos.to(device), judge=oracle_judge, seed=seed
        )
        return {
            "seed": seed,
            "policy": "oracle summaries",
            **summary,
            "response_tokens": r_mask.sum(-1).float().mean().item(),
        }

    out.mkdir(parents=True, exist_ok=True)
    result = {
        "split": "test",
        **oracle(
            test_subset(
                D.read_jsonl(data_dir / "test.jsonl"),
                cfg["eval"]["n_prompts"],
                cfg["data"]["seed"],
                key="eval.n_prompts",
                split="test",
            ),
            judge,
        ),
    }
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    if cfg["eval"]["curve"]["every"] is not None:  # the CurveEvaluator's prompts, seed and judge
        rows = test_subset(
            D.read_jsonl(data_dir / "val.jsonl"),
            cfg["eval"]["curve"]["n_prompts"],
            cfg["data"]["seed"],
            key="eval.curve.n_prompts",
            split="validation",
        )
        curve_judge = GoldJudge() if cfg["eval"]["judge"]["type"] == "gold" else None
        (out / "curve.json").write_text(json.dumps({"split": "val", **oracle(rows, curve_judge)}, indent=2))
    return result
