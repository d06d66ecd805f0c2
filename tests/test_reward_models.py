"""The chat settings' reward-model loaders (rebel/reward_models.py) on tiny stand-ins saved in the published formats:
Starling-RM-7B-alpha's torch state dict, ArmoRM-Llama3-8B-v0.1's config.json and safetensors shards, and
save_pretrained sequence classifiers; scores against hand computations on unpadded sequences. No network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO
from safetensors.torch import save_file
from transformers import (
    GPTNeoXForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaModel,
)

from rebel import models as M
from rebel import reward_models as RM
from rebel.errors import HarnessError

LLAMA = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)


def padded(samples: list[tuple[list[int], list[int]]], pad: int, extra: int = 0) -> tuple[torch.Tensor, ...]:
    """Left-padded prompts and right-padded responses (``extra`` more pad columns on each side) with their masks."""
    width_p = max(len(p) for p, _ in samples) + extra
    width_r = max(len(r) for _, r in samples) + extra
    prompt_ids = torch.full((len(samples), width_p), pad)
    response_ids = torch.full((len(samples), width_r), pad)
    prompt_mask = torch.zeros_like(prompt_ids)
    response_mask = torch.zeros_like(response_ids)
    for i, (p, r) in enumerate(samples):
        prompt_ids[i, width_p - len(p) :] = torch.tensor(p)
        prompt_mask[i, width_p - len(p) :] = 1
        response_ids[i, : len(r)] = torch.tensor(r)
        response_mask[i, : len(r)] = 1
    return prompt_ids, prompt_mask, response_ids, response_mask


def final_hidden(backbone: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    """The backbone's final hidden states ``[L, H]`` of one unpadded sequence (default positions, no mask)."""
    with torch.no_grad():
        return backbone(input_ids=torch.tensor([ids])).last_hidden_state[0]


def random_samples(vocab: int, lengths: list[tuple[int, int]], low: int = 3) -> list[tuple[list[int], list[int]]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randint(low, vocab, (p,), generator=g).tolist(), torch.randint(low, vocab, (r,), generator=g).tolist())
        for p, r in lengths
    ]


# ---------------------------------------------------------------- Starling-RM-7B-alpha


def write_starling(folder: Path, keys: str = "both") -> dict[str, torch.Tensor]:
    """A Starling folder: the card's GPTRewardModel state dict (``model.model.*``, ``model.lm_head.weight``,
    ``transformer.*``, ``v_head.weight``; bf16, each prefix its own storage) as ``pytorch_model.bin``, and the
    backbone's config.json. ``keys``: "both" (equal copies), "differ" (``transformer.*`` perturbed) or
    "model_only" (no ``transformer.*``)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, pad_token_id=0, **LLAMA)
    causal = LlamaForCausalLM(config)
    state = {"model." + k: v.to(torch.bfloat16).clone() for k, v in causal.state_dict().items()}
    if keys != "model_only":
        for k, v in causal.model.state_dict().items():
            state["transformer." + k] = (v + (0.01 if keys == "differ" else 0.0)).to(torch.bfloat16)
    state["v_head.weight"] = torch.randn(1, config.hidden_size).to(torch.bfloat16)
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    config.to_json_file(folder / "config.json")
    return state


def test_starling_loads_the_published_state_dict_and_scores_at_the_last_real_token(tmp_path):
    folder = tmp_path / "starling"
    published = write_starling(folder)
    model = RM.load_reward_model({"path": str(folder)}, layout="starling").eval()
    assert isinstance(model, RM.StarlingRewardModel) and model.dtype == torch.float32
    for k, v in model.transformer.state_dict().items():
        assert torch.equal(v, published["transformer." + k].float()), k
    assert torch.equal(model.v_head.weight, published["v_head.weight"].float())

    backbone = LlamaModel(model.config).eval()
    backbone.load_state_dict({k[len("transformer.") :]: v.float() for k, v in published.items() if "transformer." in k})
    samples = random_samples(64, [(5, 4), (2, 7), (6, 1)])
    expected = torch.stack(
        [final_hidden(backbone, p + r)[-1] @ published["v_head.weight"].float()[0] for p, r in samples]
    )
    with torch.no_grad():
        scores = RM.reward_scores(model, *padded(samples, pad=0))
        more_padding = RM.reward_scores(model, *padded(samples, pad=0, extra=3))
        alone = torch.cat([RM.reward_scores(model, *padded([s], pad=0)) for s in samples])
    assert scores.dtype == torch.float32 and scores.shape == (3,)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(more_padding, scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone, scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("keys, source", [("differ", "transformer."), ("model_only", "model.model.")])
def test_starling_backbone_is_read_as_the_cards_load_state_dict_leaves_it(tmp_path, keys, source):
    """``transformer`` and ``model.model`` are one module in the card's class; ``transformer.*`` is loaded last."""
    published = write_starling(tmp_path / "starling", keys)
    model = RM.load_reward_model({"path": str(tmp_path / "starling")}, dtype="bfloat16", layout="starling")
    assert model.dtype == torch.bfloat16
    for k, v in model.transformer.state_dict().items():
        assert torch.equal(v, published[source + k]), k


def test_starling_folder_errors_name_the_missing_file(tmp_path):
    folder = tmp_path / "starling"
    write_starling(folder)
    (folder / "config.json").unlink()
    with pytest.raises(HarnessError, match=r"has no config\.json.*Llama-2-7b-chat"):
        RM.load_reward_model({"path": str(folder)}, layout="starling")
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(HarnessError, match=r"'starling'.*has no pytorch_model\.bin"):
        RM.load_reward_model({"path": str(folder)}, layout="starling")
    with pytest.raises(HarnessError, match="takes a local folder"):
        RM.load_reward_model({"id": "berkeley-nest/Starling-RM-7B-alpha", "revision": "main"}, layout="starling")

    other = tmp_path / "no_head"
    state = write_starling(other)
    torch.save({k: v for k, v in state.items() if k != "v_head.weight"}, other / "pytorch_model.bin")
    with pytest.raises(HarnessError, match=r"no v_head\.weight|or no v_head"):
        RM.load_reward_model({"path": str(other)}, layout="starling")


# ---------------------------------------------------------------- ArmoRM-Llama3-8B-v0.1

ARMO_CONFIG = {  # the published config.json with tiny sizes (5 objectives, 2 hidden gating layers of 6)
    "_name_or_path": "RLHFlow/ArmoRM-Llama3-8B-v0.1 ",
    "auto_map": {"AutoModelForSequenceClassification": "modeling_custom.LlamaForRewardModelWithGating"},
    "architectures": ["LlamaForRewardModelWithGating"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "hidden_act": "silu",
    "hidden_size": 8,
    "id2label": {"0": "LABEL_0"},
    "initializer_range": 0.02,
    "intermediate_size": 16,
    "label2id": {"LABEL_0": 0},
    "max_position_embeddings": 64,
    "model_type": "llama",
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "num_key_value_heads": 1,
    "pad_token_id": 128256,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "transformers_version": "4.40.0",
    "use_cache": False,
    "vocab_size": 128257,
    "num_objectives": 5,
    "gating_temperature": 10,
    "gating_hidden_dim": 6,
    "gating_n_hidden": 2,
}
USER, ASSISTANT = [128000, 128006, 882, 128007, 271], list(RM.ARMO_GATING_PATTERN)  # ...user<|end_header_id|>\n\n


def write_armo(folder: Path) -> dict[str, torch.Tensor]:
    """An ArmoRM folder: config.json and two safetensors shards with their index, under the published names."""
    torch.manual_seed(0)
    c = ARMO_CONFIG
    hidden, gate, objectives = c["hidden_size"], c["gating_hidden_dim"], c["num_objectives"]
    backbone = LlamaModel(LlamaConfig.from_dict(c))
    heads = {
        "regression_layer.weight": torch.randn(objectives, hidden),
        "reward_transform_matrix": torch.eye(objectives) + 0.1 * torch.randn(objectives, objectives),
        "gating.logit_scale": torch.tensor([1.3]),
    }
    widths = [hidden] + [gate] * c["gating_n_hidden"] + [objectives]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        heads[f"gating.layers.{i}.weight"] = torch.randn(b, a)
        heads[f"gating.layers.{i}.bias"] = torch.randn(b)
    shards = {
        "model-00001-of-00002.safetensors": {"model." + k: v.contiguous() for k, v in backbone.state_dict().items()},
        "model-00002-of-00002.safetensors": heads,
    }
    folder.mkdir()
    for name, tensors in shards.items():
        save_file(tensors, folder / name, metadata={"format": "pt"})
    weight_map = {k: name for name, tensors in shards.items() for k in tensors}
    total = sum(v.numel() * v.element_size() for tensors in shards.values() for v in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps(c))
    return {k: v for tensors in shards.values() for k, v in tensors.items()}


def armo_by_hand(published: dict[str, torch.Tensor], backbone: LlamaModel, ids: list[int]) -> torch.Tensor:
    """``modeling_custom.py``'s forward on one unpadded sequence, written out."""
    hidden = final_hidden(backbone, ids)
    width = len(ASSISTANT)
    start = max(j for j in range(len(ids) - width + 1) if ids[j : j + width] == ASSISTANT)
    x = hidden[start]
    for i in range(ARMO_CONFIG["gating_n_hidden"] + 1):
        x = x @ published[f"gating.layers.{i}.weight"].T + published[f"gating.layers.{i}.bias"]
        x = torch.relu(x) if i < ARMO_CONFIG["gating_n_hidden"] else x
    gate = F.softmax(x / ARMO_CONFIG["gating_temperature"], dim=0) * published["gating.logit_scale"][0]
    rewards = published["regression_layer.weight"] @ hidden[-1] @ published["reward_transform_matrix"]
    return (gate * rewards).sum()


def test_armo_loads_the_published_layout_and_scores_with_the_gate(tmp_path):
    published = write_armo(tmp_path / "armo")
    model = RM.load_reward_model({"path": str(tmp_path / "armo")}, layout="armo").eval()
    assert isinstance(model, RM.ArmoRewardModel)
    assert set(model.state_dict()) == set(published)
    for k, v in model.state_dict().items():
        assert torch.equal(v, published[k]), k
    assert model.config.rope_parameters["rope_theta"] == 500000.0  # the legacy top-level rope_theta is read

    backbone = LlamaModel(model.config).eval()
    backbone.load_state_dict({k[len("model.") :]: v for k, v in published.items() if k.startswith("model.")})
    samples = [  # a single turn; two turns (the last assistant header gates); a short answer
        (USER + [400, 401, 402] + ASSISTANT, [500, 501, 128009]),
        (USER + [410] + ASSISTANT + [600, 128009] + [128006, 882, 128007, 271, 411, 412] + ASSISTANT, [502, 128009]),
        (USER + [420, 421] + ASSISTANT, [128009]),
    ]
    expected = torch.stack([armo_by_hand(published, backbone, p + r) for p, r in samples])
    with torch.no_grad():
        scores = RM.reward_scores(model, *padded(samples, pad=128256))
        more_padding = RM.reward_scores(model, *padded(samples, pad=128256, extra=2))
    assert scores.dtype == torch.float32 and scores.shape == (3,)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(more_padding, scores, rtol=1e-5, atol=1e-5)


def test_armo_gating_pattern_must_be_present_and_real(tmp_path):
    write_armo(tmp_path / "armo")
    model = RM.load_reward_model({"path": str(tmp_path / "armo")}, layout="armo").eval()
    with pytest.raises(HarnessError, match=r"gating token pattern \[128009, 128006, 78191, 128007, 271\]"):
        RM.reward_scores(model, *padded([(USER + [400, 401], [500, 128009])], pad=128256))
    ids = torch.tensor([USER + ASSISTANT + [7]])
    mask = torch.ones_like(ids)
    assert RM.gating_positions(ids, mask).tolist() == [len(USER)]
    mask[0, len(USER) + 1] = 0  # a masked token inside the pattern does not count
    with pytest.raises(HarnessError, match="gating token pattern"):
        RM.gating_positions(ids, mask)


# ---------------------------------------------------------------- sequence classification


def test_embedded_gpt_neox_reward_model_scores_as_before():
    """The pinned embedded reward model: the same class and weights as a direct GPT-NeoX load, and the same numbers
    as rebel.models.reward_scores (the GPT-NeoX-only scoring this module generalizes)."""
    path = REPO / "workflow" / "resources" / "embedded" / "rm"
    model = RM.load_reward_model({"path": str(path)}).eval()
    old = GPTNeoXForSequenceClassification.from_pretrained(path, num_labels=1).eval()
    assert type(model) is GPTNeoXForSequenceClassification and model.config.reward_offset != 0.0
    for (k, v), (k_old, v_old) in zip(model.state_dict().items(), old.state_dict().items(), strict=True):
        assert k == k_old and torch.equal(v, v_old), k
    pad = model.config.pad_token_id
    batch = padded(random_samples(model.config.vocab_size, [(7, 5), (3, 9), (10, 2), (1, 1)]), pad=pad, extra=1)
    with torch.no_grad():
        ids, mask = torch.cat([batch[0], batch[2]], 1), torch.cat([batch[1], batch[3]], 1)
        hidden = old.gpt_neox(input_ids=ids, attention_mask=mask, position_ids=M.position_ids(mask)).last_hidden_state
        last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)
        expected = old.score(hidden[torch.arange(len(ids)), last]).squeeze(-1) + old.config.reward_offset
        assert torch.equal(RM.reward_scores(model, *batch), expected)


def test_llama_sequence_classifier_scores_at_the_last_real_token(tmp_path):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, pad_token_id=0, num_labels=1, **LLAMA)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    model = RM.load_reward_model({"path": str(tmp_path / "rm")}).eval()
    assert isinstance(model, LlamaForSequenceClassification)
    samples = random_samples(64, [(4, 6), (8, 1), (2, 3)])
    with torch.no_grad():
        expected = torch.stack([model.score(final_hidden(model.model, p + r)[-1])[0] for p, r in samples])
        own_forward = torch.cat([model(input_ids=torch.tensor([p + r])).logits[:, 0] for p, r in samples])
        scores = RM.reward_scores(model, *padded(samples, pad=0, extra=2))
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scores, own_forward, rtol=1e-5, atol=1e-5)

    # the same folder is no ArmoRM: its heads would be left at their initial values
    with pytest.raises(HarnessError, match=r"lacks or misshapes .*parameters"):
        RM.load_reward_model({"path": str(tmp_path / "rm")}, layout="armo")


# ---------------------------------------------------------------- bad inputs


def test_unknown_layout_and_missing_weights_are_harness_errors(tmp_path):
    with pytest.raises(HarnessError, match=r"layout 'value_head' is unknown; expected one of sequence_classification"):
        RM.load_reward_model({"path": str(tmp_path)}, layout="value_head")
    folder = tmp_path / "rm"
    folder.mkdir()
    LlamaConfig(vocab_size=64, **LLAMA).to_json_file(folder / "config.json")
    with pytest.raises(HarnessError, match=r"'sequence_classification'.*has no model\.safetensors or"):
        RM.load_reward_model({"path": str(folder)})
    with pytest.raises(HarnessError, match=r"'armo'.*ArmoRM-Llama3-8B-v0\.1"):
        RM.load_reward_model({"path": str(folder)}, layout="armo")
