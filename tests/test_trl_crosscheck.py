"""DPO against an independent implementation: TRL's DPOTrainer (pinned test dependency).

For the same model, reference and preference batch, TRL's sigmoid DPO loss and its
gradient equal ours: our log-probs of left-padded prompts and right-padded responses
(:func:`rebel.models.response_logprobs`) and our loss (:class:`baselines.dpo.DPO`).
"""

import copy
import random

import pytest
import torch
from accelerate import Accelerator
from datasets import Dataset
from transformers import GPTNeoXForCausalLM
from trl import DPOConfig, DPOTrainer

from baselines.dpo import DPO
from rebel import loop
from rebel import models as M
from rebel import synthetic_tldr as task
from rebel.rollout import Rollout
from rebel.sources import PreferencePairs


def _pad(rows: list[torch.Tensor], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, span], mask[i, span] = r, 1
    return ids, mask


def _trl_batch(tokenizer, tiny_config, tmp_path):
    """A policy, its reference, a TRL DPOTrainer on 4 preference pairs, and TRL's loss and gradient;
    then the same token ids in our layout (pair i's chosen then rejected, prompts left-padded)."""
    torch.manual_seed(0)
    reference = GPTNeoXForCausalLM(tiny_config).eval()
    policy = copy.deepcopy(reference)
    with torch.no_grad():  # a policy that differs from the reference, so the loss is not log 2
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rng = random.Random(1)
    rows = []
    for _ in range(4):
        post = task.make_post(rng)
        rows.append(
            {
                "prompt": task.format_prompt(post.subreddit, post.title, post.body),
                "chosen": task.human_summary(post, rng),
                "rejected": task.candidate_summary(post, rng),
            }
        )
    args = DPOConfig(
        output_dir=str(tmp_path),
        beta=0.05,
        loss_type=["sigmoid"],
        report_to=[],
        per_device_train_batch_size=4,
        max_length=None,
        use_cpu=True,
    )
    trainer = DPOTrainer(
        model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    batch = next(iter(trainer.get_train_dataloader()))  # rows: 4 chosen, then 4 rejected
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()
    trl_grad = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    trainer.model.zero_grad()

    # The same token ids in our layout: pair i's chosen then rejected, prompts left-padded.
    order = [j for i in range(4) for j in (i, i + 4)]
    real = batch["attention_mask"].bool()
    completion = batch["completion_mask"].bool()
    prompts = [batch["input_ids"][j][real[j] & ~completion[j]] for j in order]
    responses = [batch["input_ids"][j][completion[j]] for j in order]
    assert all(r[-1] == tokenizer.eos_token_id for r in responses)  # the same EOS convention as ours
    p_ids, p_mask = _pad(prompts, tokenizer.pad_token_id, left=True)
    r_ids, r_mask = _pad(responses, tokenizer.pad_token_id, left=False)
    return reference, trainer.model, trl_loss, trl_grad, (p_ids, p_mask, r_ids, r_mask)


def test_dpo_loss_and_gradient_equal_trl(tokenizer, tiny_config, tmp_path):
    reference, model, trl_loss, trl_grad, (p_ids, p_mask, r_ids, r_mask) = _trl_batch(tokenizer, tiny_config, tmp_path)
    with torch.no_grad():
        ref_logprobs = M.response_logprobs(reference, p_ids, p_mask, r_ids, r_mask, temperature=1.0)
    logprobs = M.response_logprobs(model, p_ids, p_mask, r_ids, r_mask, temperature=1.0)
    labels = torch.tensor([1.0, 0.0]).repeat(4)
    rollout = Rollout(
        prompt_ids=p_ids,
        prompt_mask=p_mask,
        response_ids=r_ids,
        response_mask=r_mask,
        has_eos=torch.ones(8, dtype=torch.bool),
        logprobs=logprobs.detach(),
        ref_logprobs=ref_logprobs,
        scores=labels,
        rewards=labels,
        token_rewards=torch.zeros_like(logprobs),
        samples_per_prompt=2,
    )
    ours, _ = DPO.from_config({"beta": 0.05}).loss(logprobs, rollout)
    ours.backward()

    assert abs(trl_loss.item() - torch.log(torch.tensor(2.0)).item()) > 1e-4
    assert ours.item() == pytest.approx(trl_loss.item(), abs=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, trl_grad[name], atol=1e-6, rtol=1e-4, msg=name)


def test_dpo_through_the_loop_equals_trl_at_a_sampling_temperature_other_than_1(tokenizer, tiny_config, tmp_path):
    """The loop's offline path (:class:`rebel.sources.PreferencePairs`, then :func:`rebel.loop.update`) in a
    config whose ``policy.temperature`` is 0.7 takes TRL's step: DPO's log-probs are at temperature 1."""
    reference, model, trl_loss, trl_grad, batch = _trl_batch(tokenizer, tiny_config, tmp_path)
    cfg = {
        "policy": {"temperature": 0.7, "minibatch_prompts": 4, "epochs_per_iteration": 4},
        "runtime": {"rollout_batch_size": 8, "update_micro_batch_prompts": None},
    }
    algorithm = DPO.from_config({"beta": 0.05})
    rollout = PreferencePairs(cfg, M.Reference(model, reference), torch.device("cpu")).collect(
        model, batch, tokenizer=tokenizer, timings={}
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # one step: the parameters move by −gradient
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    stats = loop.update(
        model, rollout, algorithm, optimizer, scheduler, Accelerator(cpu=True), cfg, torch.Generator().manual_seed(0)
    )
    assert stats["loss"] == pytest.approx(trl_loss.item(), abs=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(before[name] - param.detach(), trl_grad[name], atol=1e-6, rtol=1e-4, msg=name)
