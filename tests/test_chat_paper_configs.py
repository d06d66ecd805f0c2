"""The paper's chat configs (workflow/configs/chat-nectar.yaml, chat-ultrafeedback.yaml) on tiny local stand-ins saved
in the published formats: OpenChat-3.5's class (a MistralForCausalLM), Llama-3-8B-Instruct's (a LlamaForCausalLM),
Starling-RM-7B-alpha's checkpoint layout (a torch state dict of ``transformer.*`` and ``v_head``, scored through its
own tokenizer and format) and ArmoRM's (``from_pretrained`` files of its parameter names), with Nectar- and
UltraFeedback-shaped data files. Nothing is downloaded; everything else is the configs' own code path."""

from __future__ import annotations

import json
import random

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel, MistralConfig, MistralForCausalLM

from rebel import data as D
from rebel import synthetic_chat as chat
from rebel import synthetic_tldr as task
from rebel.cli import main
from rebel.config import read_config_file, validate
from rebel.paths import CONFIG_DIR
from rebel.reward_models import ArmoRewardModel


def _posts(rng: random.Random, n: int) -> list[str]:
    return [
        chat.user_turn(vars(p) | {"post": p.body}, rng.choice(chat.INSTRUCTIONS))
        for p in (task.make_post(rng) for _ in range(n))
    ]


def _tokenizer(rng: random.Random):
    texts = [p + task.human_summary(task.make_post(rng), rng) for p in _posts(rng, 150)]
    tokenizer = D.train_tokenizer(texts, 500, chat.ROLE_TOKENS)
    tokenizer.chat_template = chat.CHAT_TEMPLATE
    return tokenizer


def _llama_config(tokenizer, layers: int, **extra) -> dict:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
        **extra,
    }


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """Folders in the published formats, and Nectar/UltraFeedback-shaped data files."""
    root, rng = tmp_path_factory.mktemp("chat-paper"), random.Random(0)
    tokenizer = _tokenizer(rng)
    torch.manual_seed(0)
    for name, model in (
        ("openchat", MistralForCausalLM(MistralConfig(**_llama_config(tokenizer, 6)))),
        ("llama3", LlamaForCausalLM(LlamaConfig(**_llama_config(tokenizer, 2)))),
    ):
        with torch.no_grad():  # EOS at about a third of the steps, so that samples differ in length and score
            model.lm_head.weight.mul_(0.1)
            model.lm_head.weight[tokenizer.eos_token_id] = 2 * torch.randn(32)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    # Starling-RM: the trainer's state dict (backbone as ``transformer.*``, ``v_head``) + the backbone's config.json.
    backbone_config = LlamaConfig(**_llama_config(tokenizer, 2))
    state = {f"transformer.{k}": v for k, v in LlamaModel(backbone_config).state_dict().items()}
    state["v_head.weight"] = torch.randn(1, 32)
    (root / "starling").mkdir()
    torch.save(state, root / "starling" / "pytorch_model.bin")
    backbone_config.save_pretrained(root / "starling")
    tokenizer.save_pretrained(root / "starling")
    # ArmoRM: from_pretrained files; the stand-in's tokenizer names its own gating pattern (the assistant header).
    header = tokenizer("<|endoftext|>\n<|assistant|>\n", add_special_tokens=False)["input_ids"]
    armo = ArmoRewardModel(
        LlamaConfig(
            **_llama_config(
                tokenizer, 2, num_objectives=3, gating_hidden_dim=8, gating_n_hidden=1, gating_token_pattern=header
            )
        )
    )
    armo.save_pretrained(root / "armo")
    tokenizer.save_pretrained(root / "armo")
    posts = _posts(rng, 30)
    long_post = "Summarize this post.\n\nPOST: " + " ".join(["my sister borrowed my car ."] * 60)
    nectar = [{"prompt": f"\n\nHuman: {p}\n\nAssistant:"} for p in [*posts[:20], long_post]]
    nectar[1]["prompt"] = f"\n\nHuman: hello\n\nAssistant: hi, what can I do?\n\nHuman: {posts[1]}\n\nAssistant:"
    D.write_jsonl(root / "nectar" / "train.jsonl", nectar)
    D.write_jsonl(root / "ultrafeedback" / "train.jsonl", [{"instruction": p} for p in posts[20:]])
    return root


def _config(name: str, root, tmp_path, **policy) -> str:
    cfg = read_config_file(CONFIG_DIR / f"{name}.yaml")
    base = {"path": str(root / ("openchat" if name == "chat-nectar" else "llama3"))}
    cfg["model"]["base"] = cfg["sft"]["pretrained"] = base
    cfg["model"].pop("pad_token", None)  # Llama-3's reserved token is not in the stand-in's vocabulary
    cfg["model"]["dtype"] = "float32"  # compared bit for bit with the stand-in below
    cfg["data"].update(prompt_length=160, response_length=6)
    cfg["data"]["chat"].update(dataset={"path": str(root / name.removeprefix("chat-"))}, n_eval=2)
    rm = cfg["reward_model"]
    rm["pretrained"] = {"path": str(root / ("starling" if rm["layout"] == "starling" else "armo"))}
    if rm.get("text_input"):
        rm["text_input"]["tokenizer"] = rm["pretrained"]
    cfg["policy"].update({"checkpoint_every": 1, "lr": 1e-3} | policy)
    cfg["runtime"].update(device="cpu", threads=1, generation_backend="hf", processes=1, rollout_batch_size=16)
    cfg["runtime"].update(update_micro_batch_prompts=None)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(validate(cfg)))
    return str(path)


def _stages(config: str, run) -> list[str]:
    common = ["--config", config]
    assert main(["data", *common, "--out", str(run / "data")]) == 0
    assert main(["sft", *common, "--data", str(run / "data"), "--out", str(run / "sft")]) == 0
    sft = ["--sft", str(run / "sft/model.json")]
    assert main(["reward-model", *common, "--data", str(run / "data"), *sft, "--out", str(run / "rm")]) == 0
    return [*common, "--data", str(run / "data"), *sft, "--rm", str(run / "rm/model.json")]


def test_nectar_config_trains_the_top_four_layers_of_a_mistral_policy_scored_by_starling(stand_ins, tmp_path):
    config = _config("chat-nectar", stand_ins, tmp_path, iterations=2, prompts_per_iteration=4, minibatch_prompts=4)
    run = tmp_path / "run"
    args = _stages(config, run)
    stats = json.loads((run / "data/stats.json").read_text())
    assert stats["filtered_too_long"] == 1 and stats["n"] == {"val": 2, "test": 2, "train": 16}
    rows = (
        D.read_jsonl(run / "data/train.jsonl")
        + D.read_jsonl(run / "data/val.jsonl")
        + D.read_jsonl(run / "data/test.jsonl")
    )
    two_turn = next(r for r in rows if len(r["messages"]) == 3)
    assert two_turn["prompt"].startswith("<|user|>\nhello<|endoftext|>\n<|assistant|>\nhi, what can I do?")
    assert json.loads((run / "rm/model.json").read_text())["layout"] == "starling"
    assert main(["train", *args, "--algorithm", "rebel", "--seed", "1", "--out", str(run / "rebel")]) == 0

    trained, start = (
        load_file(run / "rebel/policy/model.safetensors"),
        load_file(stand_ins / "openchat/model.safetensors"),
    )
    changed = {k for k in start if not torch.equal(trained[k], start[k])}
    assert changed and all(
        k.startswith(
            ("model.layers.2.", "model.layers.3.", "model.layers.4.", "model.layers.5.", "model.norm.", "lm_head.")
        )
        for k in changed
    )
    assert any(k.startswith("model.layers.2.") for k in changed)
    info = json.loads((run / "rebel/run.json").read_text())
    top = sum(
        v.numel()
        for k, v in start.items()
        if k.startswith(
            ("model.layers.2.", "model.layers.3.", "model.layers.4.", "model.layers.5.", "model.norm.", "lm_head.")
        )
    )
    assert info["trainable_parameters"] == top
    metrics = [json.loads(line) for line in (run / "rebel/metrics.jsonl").read_text().splitlines()]
    assert all(m["rm_score"] == m["rm_score"] for m in metrics) and metrics[-1]["kl"] != 0.0


def test_ultrafeedback_config_runs_best_worst_iterations_and_dpo_on_their_pairs(stand_ins, tmp_path):
    config = _config("chat-ultrafeedback", stand_ins, tmp_path, prompts_per_iteration=6, minibatch_prompts=3, lr=1e-5)
    run = tmp_path / "run"
    args = _stages(config, run)
    assert len(D.read_jsonl(run / "data/train.jsonl")) == 6
    lb = run / "rebel_large_batch"
    assert main(["train", *args, "--algorithm", "rebel_large_batch", "--seed", "1", "--out", str(lb)]) == 0
    metrics = [json.loads(line) for line in (lb / "metrics.jsonl").read_text().splitlines()]
    assert [m["eta"] for m in metrics] == [1e6, 1e4, 1e2] and metrics[0]["generations"] == 30
    assert (lb / "iter1/policy/model.json").is_file() and (lb / "iter2/policy/model.json").is_file()
    pairs = D.read_jsonl(lb / "pairs/iter1.jsonl")
    assert pairs and all(p["chosen_score"] > p["rejected_score"] for p in pairs)
    dpo = run / "dpo"
    prefs = ["--prefs", str(lb / "pairs/iter1.jsonl")]
    assert main(["train", *args, "--algorithm", "dpo", "--seed", "1", *prefs, "--out", str(dpo)]) == 0
    info = json.loads((dpo / "run.json").read_text())
    assert info["data_file"] == str(lb / "pairs/iter1.jsonl") and info["counters"]["prompts"] == len(pairs)
