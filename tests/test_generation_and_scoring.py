"""Sampling conventions, log-probs under left padding, and reward scores read at EOS."""

import torch

from rebel import models as M
from rebel import reward_models as RM
from rebel.generation import HFGenerationBackend, sample_responses, truncate_after_eos

EOS, PAD = 0, 1


def test_truncate_after_eos_pads_and_masks():
    tokens = torch.tensor([[5, 0, 7, 0], [5, 6, 7, 8], [0, 9, 9, 9]])
    out, mask, has_eos = truncate_after_eos(tokens, EOS, PAD)
    assert out.tolist() == [[5, 0, 1, 1], [5, 6, 7, 8], [0, 1, 1, 1]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert has_eos.tolist() == [True, False, True]


def _prompts(tokenizer, texts, length=24):
    ids = torch.full((len(texts), length), tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, text in enumerate(texts):
        tokens = tokenizer(text)["input_ids"]
        ids[i, length - len(tokens) :] = torch.tensor(tokens)
        mask[i, length - len(tokens) :] = 1
    return ids, mask


def test_generation_is_fixed_length_when_every_sample_ends_early(policy, tokenizer):
    with torch.no_grad():  # make EOS the most likely token everywhere
        policy.get_output_embeddings().weight[tokenizer.eos_token_id] = 0.0
        policy.gpt_neox.final_layer_norm.bias.fill_(1.0)
        policy.gpt_neox.final_layer_norm.weight.fill_(0.0)
        policy.get_output_embeddings().weight[tokenizer.eos_token_id] = 50.0
    ids, mask = _prompts(tokenizer, ["TITLE: my dog", "POST: my sister lost my car ."])
    backend = HFGenerationBackend(tokenizer.eos_token_id, tokenizer.pad_token_id)
    out = backend.generate(policy, ids, mask, temperature=1.0, max_new_tokens=7)
    assert out.shape == (2, 7)  # EOS was not suppressed, and the length stays fixed
    assert (out[:, 0] == tokenizer.eos_token_id).all() and (out[:, 1:] == tokenizer.pad_token_id).all()


def test_recorded_logprobs_equal_generation_distribution_under_left_padding(policy, tokenizer):
    """Re-scoring samples with explicit position ids reproduces the sampler's own log-probs."""
    ids, mask = _prompts(tokenizer, ["TITLE: my dog", "POST: my sister lost my car . what should i do ?"])
    torch.manual_seed(1)
    out = policy.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=0.7,
        max_new_tokens=6,
        eos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
        output_scores=True,
        return_dict_in_generate=True,
    )
    response = out.sequences[:, ids.shape[1] :]
    sampler = torch.log_softmax(torch.stack(out.scores, 1), -1).gather(-1, response[..., None]).squeeze(-1)
    with torch.no_grad():
        ours = M.response_logprobs(policy, ids, mask, response, torch.ones_like(response), temperature=0.7)
    torch.testing.assert_close(ours, sampler, atol=1e-4, rtol=0)


def test_logprobs_do_not_depend_on_padding_amount(policy, tokenizer):
    short_ids, short_mask = _prompts(tokenizer, ["TITLE: my dog"], length=8)
    long_ids, long_mask = _prompts(tokenizer, ["TITLE: my dog"], length=30)
    response = torch.tensor([[20, 21, 22, tokenizer.eos_token_id, tokenizer.pad_token_id]])
    response_mask = torch.tensor([[1, 1, 1, 1, 0]])
    with torch.no_grad():
        a = M.response_logprobs(policy, short_ids, short_mask, response, response_mask, 1.0)
        b = M.response_logprobs(policy, long_ids, long_mask, response, response_mask, 1.0)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert a[0, 4] == 0.0  # nothing counted after EOS


def test_reward_is_read_at_eos_and_offset_applied(policy, tokenizer):
    rm = M.reward_model_from_policy(policy).eval()
    ids, mask = _prompts(tokenizer, ["TITLE: my dog", "TITLE: my dog"], length=10)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    response = torch.tensor([[20, 21, eos, pad, pad], [20, 21, eos, pad, pad]])
    response_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        scores = RM.reward_scores(rm, ids, mask, response, response_mask)
        # Same tokens up to EOS but a longer prompt padding: the same score.
        long_ids, long_mask = _prompts(tokenizer, ["TITLE: my dog"], length=20)
        longer = RM.reward_scores(rm, long_ids, long_mask, response[:1], response_mask[:1])
        # The score is the head applied to the EOS hidden state.
        full = torch.cat([ids[:1], response[:1, :3]], 1)
        full_mask = torch.cat([mask[:1], response_mask[:1, :3]], 1)
        hidden = rm.gpt_neox(
            input_ids=full, attention_mask=full_mask, position_ids=M.position_ids(full_mask)
        ).last_hidden_state[:, -1]
        manual = rm.score(hidden).squeeze(-1)
        rm.config.reward_offset = 0.25
        shifted = RM.reward_scores(rm, ids, mask, response, response_mask)
    torch.testing.assert_close(scores[0], scores[1])
    torch.testing.assert_close(longer, scores[:1], atol=1e-5, rtol=0)
    torch.testing.assert_close(manual, scores[:1], atol=1e-5, rtol=0)
    torch.testing.assert_close(shifted, scores + 0.25)


def test_sample_responses_keeps_a_prompts_samples_consecutive(policy, tokenizer):
    ids, mask = _prompts(tokenizer, ["TITLE: my dog", "POST: my sister lost my car ."])
    torch.manual_seed(0)
    p_ids, p_mask, r_ids, r_mask, has_eos = sample_responses(
        HFGenerationBackend(tokenizer.eos_token_id, tokenizer.pad_token_id),
        policy,
        ids,
        mask,
        samples_per_prompt=3,
        temperature=1.0,
        max_new_tokens=5,
        batch_size=4,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert r_ids.shape == (6, 5)
    assert (p_ids[:3] == ids[0]).all() and (p_ids[3:] == ids[1]).all()
