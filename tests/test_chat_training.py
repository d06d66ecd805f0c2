"""The general-chat setting's training pieces (paper §5.2, Tables 2 and 3): top-layer training with its frozen-top
reference, REBEL's best/worst-of-N pairs and η schedule, the recorded pairs DPO trains on, and the chat data."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from rebel import data as D
from rebel import models as M
from rebel.algorithms import build_algorithm
from rebel.algorithms.rebel import best_worst_rows, rebel_residuals
from rebel.config import load_config
from rebel.errors import ConfigError, HarnessError
from rebel.loop import pair_rows
from rebel.paths import CONFIG_DIR
from rebel.rollout import Rollout


def _llama(layers: int = 4) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def _batch(n: int = 3, length: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randint(0, 50, (n, length)), torch.ones(n, length, dtype=torch.long)


def _logits(model, ids, mask) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def test_only_the_top_layers_norm_and_head_receive_gradients():
    policy = M.train_top_layers(_llama(), 2)
    ids, mask = _batch()
    policy(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
    trained = {name for name, p in policy.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    frozen = {name for name, p in policy.named_parameters() if not p.requires_grad}
    assert trained == {name for name, p in policy.named_parameters() if p.requires_grad}
    assert all(name.startswith(("model.layers.2.", "model.layers.3.", "model.norm.", "lm_head.")) for name in trained)
    assert any(name.startswith("model.layers.3.") for name in trained) and "lm_head.weight" in trained
    assert {"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"} <= frozen
    with pytest.raises(HarnessError, match="train_top_layers.*between 1 and the model's 4 layers"):
        M.train_top_layers(_llama(), 5)


def test_top_layers_reference_is_the_starting_policy_and_holds_only_the_top():
    policy = M.train_top_layers(_llama(), 2)
    ids, mask = _batch()
    start = _logits(policy, ids, mask)
    reference = M.Reference.top_layers(policy, 2)
    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=1.0)
    policy(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
    optimizer.step()
    assert not torch.allclose(_logits(policy, ids, mask), start)  # the policy moved
    trained_now = _logits(policy, ids, mask)
    with reference.model() as ref:
        assert ref is policy  # the shared bottom: no second full model
        torch.testing.assert_close(_logits(ref, ids, mask), start, rtol=0, atol=0)
    torch.testing.assert_close(_logits(policy, ids, mask), trained_now, rtol=0, atol=0)  # restored
    top = [*reference._top["layers"].values(), reference._top["norm"], reference._top["head"]]
    copied = sum(p.numel() for module in top for p in module.parameters())
    assert copied < 0.75 * sum(p.numel() for p in policy.parameters())  # the embeddings and bottom are shared
    assert sorted(reference._top["layers"]) == [2, 3] and not any(p.requires_grad for m in top for p in m.parameters())


def _rollout(scores: list[float], k: int) -> Rollout:
    n = len(scores)
    zeros = torch.zeros(n, 2)
    return Rollout(
        prompt_ids=torch.arange(n)[:, None].repeat(1, 2),
        prompt_mask=torch.ones(n, 2, dtype=torch.long),
        response_ids=torch.arange(n)[:, None].repeat(1, 2),
        response_mask=torch.ones(n, 2, dtype=torch.long),
        has_eos=torch.ones(n, dtype=torch.bool),
        logprobs=zeros,
        ref_logprobs=zeros,
        scores=torch.tensor(scores),
        rewards=torch.tensor(scores),
        token_rewards=zeros,
        samples_per_prompt=k,
        prompt_rows=torch.arange(n) // k,
    )


def test_best_worst_pairs_take_argmax_and_argmin_and_drop_ties():
    scores = torch.tensor([[0.1, 0.9, -0.3, 0.2, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0], [2.0, -1.0, 0.5, 3.0, 0.0]])
    assert best_worst_rows(scores).tolist() == [1, 2, 13, 11]
    algorithm = build_algorithm("rebel", {"algorithm_params": {"rebel": {"samples": 5, "pairing": "best_worst"}}})
    assert algorithm.samples_per_prompt == 5
    pairs = algorithm.prepare(_rollout(scores.reshape(-1).tolist(), 5))
    assert pairs.samples_per_prompt == 2 and pairs.scores.tolist() == pytest.approx([0.9, -0.3, 3.0, -1.0])
    assert pairs.prompt_rows.tolist() == [0, 0, 2, 2]


def test_eta_schedule_steps_per_iteration_and_resumes():
    params = {"samples": 5, "pairing": "best_worst", "eta_schedule": [1e6, 1e4, 1e2]}
    algorithm = build_algorithm("rebel", {"algorithm_params": {"rebel": params}})
    batch = _rollout([1.0, 0.0], 2)
    logprobs = torch.tensor([[0.5, 0.0], [0.0, 0.0]])
    etas = []
    for _ in range(4):
        loss, stats = algorithm.loss(logprobs, batch)
        expected = rebel_residuals(torch.tensor([[0.5, 0.0]]), torch.tensor([[1.0, 0.0]]), algorithm.eta).pow(2)
        torch.testing.assert_close(loss, expected.mean())
        etas.append(float(stats["eta"]))
        algorithm.observe({})
    assert etas == [1e6, 1e4, 1e2, 1e2]
    resumed = build_algorithm("rebel", {"algorithm_params": {"rebel": params}})
    resumed.load_state_dict({"iteration": 1})
    assert resumed.eta == 1e4
    with pytest.raises(ValueError, match="samples must be 2"):
        build_algorithm("rebel", {"algorithm_params": {"rebel": {"samples": 5}}})


class _Words:
    """A tokenizer stand-in for decode_responses: token t is the word "w<t>"; 99 is EOS."""

    eos_token_id = 99

    def decode(self, tokens):
        return " ".join(f"w{t}" for t in tokens)


def test_recorded_pairs_put_the_higher_score_first_with_their_prompt_rows():
    batch = _rollout([0.2, 0.7, 1.0, -1.0], 2)
    rows = [{"id": "a", "prompt": "P0", "reference": "r0"}, {"id": "b", "prompt": "P1", "reference": "r1"}]
    pairs = pair_rows(batch, rows, _Words())
    assert [(p["id"], p["chosen"], p["rejected"]) for p in pairs] == [("a", "w1 w1", "w0 w0"), ("b", "w2 w2", "w3 w3")]
    assert pairs[0]["chosen_score"] == pytest.approx(0.7) and "reference" not in pairs[0]
    with pytest.raises(HarnessError, match="save_pairs"):
        pair_rows(_rollout([0.0, 1.0, 2.0], 3), rows, _Words())


def test_the_embedded_chat_configs_share_data_and_models_and_check_pairs(tmp_path):
    small = load_config(CONFIG_DIR / "chat" / "embedded.yaml")
    large = load_config(CONFIG_DIR / "chat" / "embedded-large-batch.yaml")
    assert all(small[k] == large[k] for k in ("data", "model", "sft", "reward_model"))
    assert large["offline_pairs"] == {"algorithm": "rebel_large_batch", "iteration": 1}
    bad = dict(large, policy=large["policy"] | {"save_pairs": False})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="offline_pairs.*save_pairs"):
        load_config(path)
    both = dict(
        small, policy=small["policy"] | {"lora": {"r": 2, "alpha": 2, "dropout": 0.0, "target_modules": ["q_proj"]}}
    )
    path.write_text(yaml.safe_dump(both))
    with pytest.raises(ConfigError, match="train_top_layers.*lora"):
        load_config(path)


def test_chat_prompts_are_rendered_by_the_template_and_encoded_uncut(tmp_path):
    cfg = load_config(CONFIG_DIR / "chat" / "embedded.yaml")
    cfg["data"]["synthetic"] |= {"n_train": 20, "n_val": 5, "n_test": 5, "n_pref_train": 20, "n_pref_val": 5}
    D.prepare_data(cfg, tmp_path)
    tokenizer = M.load_tokenizer({"path": str(tmp_path / "tokenizer")})
    row = D.read_jsonl(tmp_path / "train.jsonl")[0]
    assert row["prompt"] == f"<|user|>\n{row['messages'][0]['content']}<|endoftext|>\n<|assistant|>\n"
    assert row["messages"][0]["content"].endswith(f"POST: {row['post']}")
    ids, mask = D.encode_prompts(tokenizer, [row], 112)
    tokens = ids[0][mask[0].bool()].tolist()
    assert tokenizer.decode(tokens) == row["prompt"] and tokenizer.convert_tokens_to_ids("<|assistant|>") in tokens
    with pytest.raises(ConfigError, match="data.prompt_length.*chat prompt"):
        D.encode_prompts(tokenizer, [row], 10)


def test_hub_chat_data_parses_hh_transcripts_and_filters_long_prompts():
    messages = D.chat_messages(
        {"prompt": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant:"}, "prompt", "hh"
    )
    assert messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how are you?"},
    ]
    assert D.chat_messages({"instruction": "Say hi."}, "instruction", "text") == [
        {"role": "user", "content": "Say hi."}
    ]
    with pytest.raises(HarnessError, match="does not end with a Human turn"):
        D.chat_messages({"prompt": "\n\nHuman: hi\n\nAssistant: hello"}, "prompt", "hh")


def test_best_worst_pairs_carry_every_per_sample_tensor_so_any_setting_can_use_them():
    """μ/ν are REBEL options, not a text feature: a diffusion rollout's trajectories and text contexts follow
    the selected samples (rebel.trajectories)."""
    scores = [0.3, -0.2, 0.8, 0.1, 0.5, 0.4]
    rollout = dataclasses.replace(
        _rollout(scores, 3),
        trajectory=torch.arange(6.0).reshape(6, 1, 1, 1, 1),
        context=torch.arange(6.0)[:, None, None],
    )
    algorithm = build_algorithm("rebel", {"algorithm_params": {"rebel": {"samples": 3, "pairing": "best_worst"}}})
    pairs = algorithm.prepare(rollout)
    assert pairs.trajectory.flatten().tolist() == [2.0, 1.0, 4.0, 3.0]
    assert pairs.context.flatten().tolist() == [2.0, 1.0, 4.0, 3.0] and pairs.num_prompts == 2


@pytest.mark.slow
def test_rebel_learns_the_embedded_chat_task_with_only_its_top_layers(tmp_path):
    """The embedded chat setting end to end through the CLI (data, the pinned SFT policy and reward model, REBEL on
    the top 2 of 4 blocks): the reward model's score of π_t's samples rises over the iterations, the KL to the
    reference grows from 0, and the frozen bottom blocks are bit for bit the SFT policy's."""
    from safetensors.torch import load_file

    from rebel.cli import main

    config = tmp_path / "chat.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "extends": str(CONFIG_DIR / "chat" / "embedded.yaml"),
                "policy": {"iterations": 8, "checkpoint_every": 8},
                "runtime": {"cpu_kernels": "native"},  # in-process: torch is already imported (rebel/kernels.py)
            }
        )
    )
    common = ["--config", str(config)]
    assert main(["data", *common, "--out", str(tmp_path / "data")]) == 0
    assert main(["sft", *common, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "sft")]) == 0
    refs = ["--data", str(tmp_path / "data"), "--sft", str(tmp_path / "sft/model.json")]
    assert main(["reward-model", *common, *refs, "--out", str(tmp_path / "rm")]) == 0
    refs += ["--rm", str(tmp_path / "rm/model.json")]
    assert main(["train", *common, *refs, "--algorithm", "rebel", "--seed", "0", "--out", str(tmp_path / "rebel")]) == 0
    metrics = [json.loads(line) for line in (tmp_path / "rebel/metrics.jsonl").read_text().splitlines()]
    first, last = metrics[:3], metrics[-3:]
    assert sum(m["rm_score"] for m in last) / 3 > sum(m["rm_score"] for m in first) / 3 + 0.1
    assert metrics[0]["kl"] == 0.0 and last[-1]["kl"] > 0.0
    trained = load_file(tmp_path / "rebel/policy/model.safetensors")
    start = load_file(CONFIG_DIR.parent / "resources/chat-embedded/sft/model.safetensors")
    assert all(
        torch.equal(trained[k], start[k])
        for k in start
        if k.startswith(("model.embed_tokens", "model.layers.0.", "model.layers.1."))
    )
    assert not torch.equal(trained["model.layers.3.mlp.up_proj.weight"], start["model.layers.3.mlp.up_proj.weight"])


def test_table3_rows_are_base_dpo_and_each_rebel_iteration_of_every_seed():
    from eval.chat_tables import policies

    large = load_config(CONFIG_DIR / "chat" / "embedded-large-batch.yaml")
    rows = dict(policies(large))
    assert list(rows) == ["Base", "DPO", "REBEL (iter 1)", "REBEL (iter 2)", "REBEL (iter 3)"]
    assert rows["DPO"] == ["dpo/seed1", "dpo/seed2", "dpo/seed3"]  # offline: no iterations of its own to snapshot
    assert rows["REBEL (iter 2)"] == [f"rebel_large_batch/seed{s}/iter2" for s in (1, 2, 3)]
    small = load_config(CONFIG_DIR / "chat" / "embedded.yaml")
    small["chat_eval"]["external_policies"] = {"APA": {"id": "berkeley-nest/Starling-LM-7B-alpha", "revision": "main"}}
    assert policies(small) == [
        ("Base", ["sft"]),
        ("REBEL", ["rebel/seed1", "rebel/seed2", "rebel/seed3"]),
        ("APA", ["external/APA"]),
    ]
