"""Supervised stages: the SFT policy and the reward model (appendix H.1.2, H.1.5; Stiennon et al. 2020)."""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import get_scheduler

from rebel import data as D
from rebel import models as M
from rebel import reward_models as RM
from rebel import synthetic_tldr as task
from rebel.errors import HarnessError


def _batches(n: int, batch_size: int, epochs: float, rng: random.Random) -> Iterator[list[int]]:
    """Shuffled index batches covering ``epochs`` passes (a fractional last pass allowed)."""
    total = math.ceil(n * epochs / batch_size)
    order: list[int] = []
    for _ in range(total):
        while len(order) < batch_size:
            perm = list(range(n))
            rng.shuffle(perm)
            order += perm
        yield order[:batch_size]
        order = order[batch_size:]


def _fit(
    model: torch.nn.Module,
    n: int,
    stage: dict[str, Any],
    device: torch.device,
    loss_fn: Callable[[list[int]], torch.Tensor],
    desc: str,
) -> list[float]:
    """AdamW over shuffled minibatches with the stage's schedule; returns the loss curve."""
    rng = random.Random(stage["seed"])
    torch.manual_seed(stage["seed"])
    steps = math.ceil(n * stage["epochs"] / stage["batch_size"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage["lr"], eps=1e-5)
    scheduler = get_scheduler(stage["schedule"], optimizer, int(stage["warmup_ratio"] * steps), steps)
    model.to(device).train()
    losses = []
    for batch in tqdm(_batches(n, stage["batch_size"], stage["epochs"], rng), total=steps, desc=desc, mininterval=5):
        loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    return losses


def _encode_pairs(tokenizer, rows, texts, cfg):
    prompt_ids, prompt_mask = D.encode_prompts(tokenizer, rows, cfg["data"]["prompt_length"])
    response_ids, response_mask = D.encode_responses(tokenizer, texts, cfg["data"]["response_length"])
    return prompt_ids, prompt_mask, response_ids, response_mask


def train_sft(cfg: dict[str, Any], data_dir: Path, out: Path, device: torch.device) -> None:
    """Maximum likelihood on the human references (+ prompt tokens when ``loss_on_prompt``)."""
    stage = cfg["sft"]
    if stage["pretrained"] is not None:
        ref = M.verify_pinned(stage["pretrained"], "sft.pretrained")
        _check_tokenizer(ref, data_dir, "sft.pretrained")
        M.write_model_ref(out / "model.json", ref)
        return
    tokenizer = M.load_tokenizer({"path": str(data_dir / "tokenizer")})
    torch.manual_seed(stage["seed"])
    model = M.build_base_policy(cfg, tokenizer)
    if not cfg["model"]["dropout"]:
        M.disable_dropout(model)
    rows = D.read_jsonl(data_dir / "train.jsonl")
    tensors = [t.to(device) for t in _encode_pairs(tokenizer, rows, [r["reference"] for r in rows], cfg)]

    def loss_fn(batch: list[int]) -> torch.Tensor:
        p_ids, p_mask, r_ids, r_mask = (t[batch] for t in tensors)
        ids, mask = torch.cat([p_ids, r_ids], 1), torch.cat([p_mask, r_mask], 1)
        target_mask = mask if stage["loss_on_prompt"] else torch.cat([torch.zeros_like(p_mask), r_mask], 1)
        labels = ids.masked_fill(target_mask == 0, -100)
        return model(input_ids=ids, attention_mask=mask, position_ids=M.position_ids(mask), labels=labels).loss

    losses = _fit(model, len(rows), stage, device, loss_fn, "sft")
    M.save_model(model, out / "model")
    tokenizer.save_pretrained(out / "model")
    M.write_model_ref(out / "model.json", {"path": "model"})
    (out / "metrics.json").write_text(
        json.dumps(
            {"steps": len(losses), "first_loss": losses[0], "final_loss": statistics.mean(losses[-20:])}, indent=2
        )
    )


def train_reward_model(cfg: dict[str, Any], data_dir: Path, sft_ref: Path, out: Path, device: torch.device) -> None:
    """Bradley–Terry reward model: loss −log σ(r(x, y_w) − r(x, y_l)), backbone from the SFT model.

    Afterwards the offset is set so that reference summaries score 0 on average
    (implementation notes), and held-out accuracy is written to ``eval.json``.
    """
    stage = cfg["reward_model"]
    tokenizer = M.load_tokenizer({"path": str(data_dir / "tokenizer")})
    if stage["pretrained"] is not None:
        ref = M.verify_pinned(stage["pretrained"], "reward_model.pretrained") | (
            {"layout": stage["layout"]} if stage.get("layout") else {}
        )
        _check_tokenizer(ref, data_dir, "reward_model.pretrained")
        M.write_model_ref(out / "model.json", ref)
        model = RM.load_reward_model(ref, cfg["model"]["dtype"]).to(device)
    else:
        torch.manual_seed(stage["seed"])
        model = M.reward_model_from_policy(M.load_policy(M.read_model_ref(sft_ref), cfg["model"]["dtype"]))
        if not cfg["model"]["dropout"]:
            M.disable_dropout(model)
        rows = D.read_jsonl(data_dir / "prefs_train.jsonl")
        chosen = [t.to(device) for t in _encode_pairs(tokenizer, rows, [r["chosen"] for r in rows], cfg)]
        rejected = [t.to(device) for t in _encode_pairs(tokenizer, rows, [r["rejected"] for r in rows], cfg)]

        def loss_fn(batch: list[int]) -> torch.Tensor:
            both = [torch.cat([c[batch], r[batch]]) for c, r in zip(chosen, rejected)]
            scores = RM.reward_scores(model, *both)
            return -F.logsigmoid(scores[: len(batch)] - scores[len(batch) :]).mean()

        losses = _fit(model, len(rows), stage, device, loss_fn, "reward model")
        refs = D.read_jsonl(data_dir / "train.jsonl")[:2048]
        model.config.reward_offset = -_mean_score(model, tokenizer, refs, [r["reference"] for r in refs], cfg, device)
        M.save_model(model, out / "model")
        M.write_model_ref(out / "model.json", {"path": "model"})
        (out / "metrics.json").write_text(
            json.dumps(
                {"steps": len(losses), "first_loss": losses[0], "final_loss": statistics.mean(losses[-20:])}, indent=2
            )
        )
    (out / "eval.json").write_text(json.dumps(evaluate_reward_model(model, tokenizer, data_dir, cfg, device), indent=2))


def _check_tokenizer(ref: dict[str, Any], data_dir: Path, key: str) -> None:
    """A local checkpoint that ships a tokenizer must have been trained with the data stage's one."""
    if "path" not in ref:
        return
    shipped, ours = Path(ref["path"]) / "tokenizer.json", data_dir / "tokenizer" / "tokenizer.json"
    if shipped.is_file() and M.file_sha256(shipped) != M.file_sha256(ours):
        raise HarnessError(
            f"key '{key}': '{ref['path']}' was trained with another tokenizer than '{ours}' "
            f"(data settings changed?); set '{key}: null' to train it on this data"
        )


@torch.no_grad()
def _scores(model, tokenizer, rows, texts, cfg, device) -> torch.Tensor:
    out = []
    step = cfg["runtime"]["rollout_batch_size"]
    for i in range(0, len(rows), step):
        tensors = _encode_pairs(tokenizer, rows[i : i + step], texts[i : i + step], cfg)
        out.append(RM.reward_scores(model, *(t.to(device) for t in tensors)).cpu())
    return torch.cat(out)


def _mean_score(model, tokenizer, rows, texts, cfg, device) -> float:
    return _scores(model, tokenizer, rows, texts, cfg, device).mean().item()


def evaluate_reward_model(
    model, tokenizer, data_dir: Path, cfg: dict[str, Any], device: torch.device
) -> dict[str, Any]:
    """Held-out preference accuracy (against the annotators' labels, and the gold order when known); a chat
    data set without preference pairs (Nectar, UltraFeedback prompts) has none to measure."""
    rows = D.read_jsonl(data_dir / "prefs_val.jsonl")
    if not rows:
        return {"val_pairs": 0}
    margin = _scores(model, tokenizer, rows, [r["chosen"] for r in rows], cfg, device) - _scores(
        model, tokenizer, rows, [r["rejected"] for r in rows], cfg, device
    )
    refs = D.read_jsonl(data_dir / "val.jsonl")
    result: dict[str, Any] = {
        "val_pairs": len(rows),
        "val_accuracy": (margin > 0).float().mean().item(),
        "reference_mean_score_val": _mean_score(model, tokenizer, refs, [r["reference"] for r in refs], cfg, device),
    }
    if cfg["data"]["source"] == "synthetic":
        gold = torch.tensor(
            [
                task.gold_quality(D.prompt_text(r), r["chosen"]) - task.gold_quality(D.prompt_text(r), r["rejected"])
                for r in rows
            ]
        )
        decided = gold != 0
        result["val_gold_accuracy"] = ((margin[decided] > 0) == (gold[decided] > 0)).float().mean().item()
    return result
