"""Reward models of the paper's chat settings (Tables 2 and 3, appendix H.2) beside the embedded ones, loaded from
local copies of their published files, and one scoring function for all of them.

Three layouts (``LAYOUTS``), each read at the last real token of ``prompt + response``:

- ``sequence_classification``: a transformers ``...ForSequenceClassification`` with one label (the embedded GPT-NeoX
  reward models, a Llama with a scalar ``score`` head); its score plus the config's ``reward_offset``.
- ``starling``: ``berkeley-nest/Starling-RM-7B-alpha`` (model card:
  https://huggingface.co/berkeley-nest/Starling-RM-7B-alpha). Llama-2-7b-chat without its LM head, plus
  ``v_head = Linear(4096, 1, bias=False)``; the score is ``v_head`` of the final hidden state at the last real
  token. The card's ``GPTRewardModel`` holds the causal LM as ``model`` and its backbone again as ``transformer``,
  and loads ``torch.load(<the *.pt / *model.bin file>)`` with ``strict=False``. The Hub repository is a trainer
  checkpoint folder (``pytorch_model.bin``, 26.7 GB of ``BFloat16Storage``, ``latest``, ``rng_state_*.pth``,
  ``training_args.bin``) with no ``config.json``; the card builds the backbone from
  ``meta-llama/Llama-2-7b-chat-hf`` and pads with its unk token. Inputs are formatted as
  ``"<s>[INST] {prompt} </s> [/INST] {response}</s>"``.
- ``armo``: ``RLHFlow/ArmoRM-Llama3-8B-v0.1`` (model card and ``modeling_custom.py``:
  https://huggingface.co/RLHFlow/ArmoRM-Llama3-8B-v0.1), remote code ``LlamaForRewardModelWithGating``.
  :class:`ArmoRewardModel` is our own module with the same parameter names, so ``from_pretrained`` on a copy
  of the published ``config.json`` and safetensors shards loads it without ``trust_remote_code``. 19 objective
  rewards ``regression_layer(h_last)`` are mixed by a gating network read at the hidden state of the
  ``<|eot_id|>`` that opens the last ``<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n`` of Llama-3's
  chat template (:data:`ARMO_GATING_PATTERN`): ``score = sum(gate * (rewards @ reward_transform_matrix))``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaModel, LlamaPreTrainedModel

from rebel.errors import HarnessError
from rebel.models import DTYPES, position_ids, pretrained_args

LAYOUTS = ("sequence_classification", "starling", "armo")

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
"""A from_pretrained folder holds one of these (a single file, or the index of its shards)."""
STARLING_CHECKPOINT = "pytorch_model.bin"
"""The Starling repository's weights: a torch state dict (the card loads the folder's ``*.pt``/``*model.bin``)."""
STARLING_BACKBONE_PREFIXES = ("transformer.", "model.model.")
"""Where the card's ``GPTRewardModel`` keeps the backbone, in order of precedence: ``transformer`` and
``model.model`` are one module, and ``load_state_dict`` visits ``model`` first, so ``transformer.*`` wins."""
ARMO_GATING_PATTERN = (128009, 128006, 78191, 128007, 271)
"""``<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n`` in Llama-3's tokenizer (``token_pattern`` of
ArmoRM's ``modeling_custom.py``); the gating reads the hidden state at its first token, last occurrence."""


class StarlingRewardModel(LlamaPreTrainedModel):
    """Starling-RM-7B-alpha: a ``LlamaModel`` (``transformer``) and a bias-free scalar ``v_head``."""

    base_model_prefix = "transformer"

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.transformer = LlamaModel(config)
        self.v_head = nn.Linear(config.hidden_size, 1, bias=False)
        self.post_init()


class GatingNetwork(nn.Module):
    """ArmoRM's gate: ``n_hidden`` Linear+ReLU layers and a last Linear (all with bias), then
    ``softmax(x / temperature) * logit_scale``."""

    def __init__(self, in_features: int, out_features: int, temperature: float, hidden_dim: int, n_hidden: int):
        super().__init__()
        self.temperature = temperature
        self.logit_scale = nn.Parameter(torch.ones(1))
        widths = [in_features] + [hidden_dim] * n_hidden + [out_features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return F.softmax(self.layers[-1](x) / self.temperature, dim=1) * self.logit_scale[0]


class ArmoRewardModel(LlamaPreTrainedModel):
    """ArmoRM-Llama3-8B-v0.1 with the published parameter names: ``model`` (a ``LlamaModel``),
    ``regression_layer``, ``gating`` and ``reward_transform_matrix``; config keys ``num_objectives``,
    ``gating_temperature``, ``gating_hidden_dim``, ``gating_n_hidden`` (defaults as in ``modeling_custom.py``)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        objectives = getattr(config, "num_objectives", 19)
        self.model = LlamaModel(config)
        self.regression_layer = nn.Linear(config.hidden_size, objectives, bias=False)
        self.gating = GatingNetwork(
            config.hidden_size,
            objectives,
            temperature=getattr(config, "gating_temperature", 10),
            hidden_dim=getattr(config, "gating_hidden_dim", 1024),
            n_hidden=getattr(config, "gating_n_hidden", 3),
        )
        self.reward_transform_matrix = nn.Parameter(torch.eye(objectives), requires_grad=False)
        self.post_init()

    def preference_score(self, last_hidden: torch.Tensor, gating_hidden: torch.Tensor) -> torch.Tensor:
        """The gated score ``[n]`` from the hidden states at the last real token and at the gating token."""
        rewards = self.regression_layer(last_hidden) @ self.reward_transform_matrix
        return (self.gating(gating_hidden) * rewards).sum(dim=1)


# ---------------------------------------------------------------- loading


_EXPECTED = {
    "sequence_classification": "a save_pretrained folder (config.json and its weights)",
    "starling": (
        f"{STARLING_CHECKPOINT} of berkeley-nest/Starling-RM-7B-alpha and, beside it, {CONFIG_FILE} of its "
        "backbone meta-llama/Llama-2-7b-chat-hf (the Starling repository has none)"
    ),
    "armo": "the published files of RLHFlow/ArmoRM-Llama3-8B-v0.1 (config.json and its safetensors shards)",
}


def _require_files(folder: Path, layout: str, *groups: tuple[str, ...]) -> None:
    """A HarnessError unless ``folder`` holds one file of each group."""
    for names in groups:
        if not any((folder / name).is_file() for name in names):
            raise HarnessError(
                f"reward model layout '{layout}': '{folder}' has no {' or '.join(names)}; expected {_EXPECTED[layout]}"
            )


def _fail_on_missing(info: dict[str, Any], source: str) -> None:
    """A HarnessError when loading left parameters at their initial values (missing or of another shape)."""
    missing = sorted(info["missing_keys"]) + sorted(str(k) for k in info["mismatched_keys"])
    if missing:
        raise HarnessError(f"{source} lacks or misshapes {len(missing)} parameters, e.g. {', '.join(missing[:3])}")


def _load_starling(folder: Path, dtype: torch.dtype) -> StarlingRewardModel:
    """The backbone (``transformer.*``, else ``model.model.*``) and ``v_head.weight`` of the published checkpoint;
    its other keys (``model.lm_head.weight``, the duplicate backbone) are not needed."""
    config = LlamaConfig.from_pretrained(folder)
    path = folder / STARLING_CHECKPOINT
    published = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    prefix = next((p for p in STARLING_BACKBONE_PREFIXES if any(k.startswith(p) for k in published)), None)
    if prefix is None or "v_head.weight" not in published:
        raise HarnessError(
            f"'{path}' has no {' or '.join(p + '*' for p in STARLING_BACKBONE_PREFIXES)} "
            "backbone or no v_head.weight; expected the state dict of Starling-RM-7B-alpha's GPTRewardModel"
        )
    state = {"transformer." + k[len(prefix) :]: v for k, v in published.items() if k.startswith(prefix)}
    state["v_head.weight"] = published["v_head.weight"]
    model, info = StarlingRewardModel.from_pretrained(
        None, config=config, state_dict=state, dtype=dtype, output_loading_info=True
    )
    _fail_on_missing(info, f"'{folder / STARLING_CHECKPOINT}' (for the backbone of '{folder / CONFIG_FILE}')")
    return model


def load_reward_model(ref: dict[str, Any], dtype: str = "float32", layout: str | None = None) -> nn.Module:
    """A reward model of one of ``LAYOUTS`` from a model reference (``{"path": ...}`` or ``{"id", "revision"}``).

    Local folders hold: ``sequence_classification`` and ``armo``, a ``save_pretrained``/Hub folder (``config.json``
    and ``model.safetensors``, its shards' index or ``pytorch_model.bin``); ``starling``, ``pytorch_model.bin`` of
    the Starling repository and the ``config.json`` of Llama-2-7b-chat (``starling`` takes a local folder only).
    ``layout`` defaults to the reference's own ``layout`` entry (a ``model.json`` written by the reward-model
    stage), else ``sequence_classification``.
    """
    layout = layout or ref.get("layout", "sequence_classification")
    if layout not in LAYOUTS:
        raise HarnessError(f"reward model layout '{layout}' is unknown; expected one of {', '.join(LAYOUTS)}")
    name, kwargs = pretrained_args(ref)
    folder = Path(name) if "path" in ref else None
    if layout == "starling":
        if folder is None:
            raise HarnessError(f"reward model layout 'starling' takes a local folder ({{'path': ...}}), got {ref}")
        _require_files(folder, layout, (STARLING_CHECKPOINT,), (CONFIG_FILE,))
        return _load_starling(folder, DTYPES[dtype])
    if folder is not None:
        _require_files(folder, layout, (CONFIG_FILE,), WEIGHT_FILES)
    if layout == "armo":
        model, info = ArmoRewardModel.from_pretrained(name, dtype=DTYPES[dtype], output_loading_info=True, **kwargs)
        _fail_on_missing(info, f"ArmoRM checkpoint '{name}'")
        return model
    return AutoModelForSequenceClassification.from_pretrained(name, num_labels=1, dtype=DTYPES[dtype], **kwargs)


# ---------------------------------------------------------------- scoring


def gating_positions(
    ids: torch.Tensor, mask: torch.Tensor, token_pattern: tuple[int, ...] = ARMO_GATING_PATTERN
) -> torch.Tensor:
    """Per row, the index of the first token of the last ``token_pattern`` (default :data:`ARMO_GATING_PATTERN`)
    made of real tokens."""
    width = len(token_pattern)
    if ids.shape[1] < width:
        found = torch.zeros(ids.shape[0], 0, dtype=torch.bool, device=ids.device)
    else:
        pattern = torch.tensor(token_pattern, device=ids.device)
        found = (ids.unfold(1, width, 1) == pattern).all(-1) & mask.bool().unfold(1, width, 1).all(-1)
    if not found.any(-1).all():
        raise HarnessError(
            f"ArmoRM's gating token pattern {list(token_pattern)} (Llama-3: <|eot_id|><|start_header_id|>assistant"
            "<|end_header_id|>\\n\\n) is not in every sequence; format prompts with the reward model's chat template"
        )
    return found.shape[1] - 1 - found.flip(-1).int().argmax(-1)


def reward_scores(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
) -> torch.Tensor:
    """Float32 scores ``[n]`` of left-padded prompts followed by right-padded responses, read at the last real token
    (positions counted from the first real one): the head of the model's layout (see the module docstring)."""
    ids = torch.cat([prompt_ids, response_ids], dim=1)
    mask = torch.cat([prompt_mask, response_mask], dim=1)
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).last_hidden_state
    rows = torch.arange(ids.shape[0], device=ids.device)
    last_hidden = hidden[rows, mask.shape[1] - 1 - mask.long().flip(-1).argmax(-1)]
    if isinstance(model, ArmoRewardModel):
        # A stand-in with another tokenizer names its own pattern (config gating_token_pattern; not in ArmoRM's).
        pattern = tuple(getattr(model.config, "gating_token_pattern", ARMO_GATING_PATTERN))
        return model.preference_score(last_hidden, hidden[rows, gating_positions(ids, mask, pattern)]).float()
    if isinstance(model, StarlingRewardModel):
        return model.v_head(last_hidden).squeeze(-1).float()
    return model.score(last_hidden).squeeze(-1).float() + getattr(model.config, "reward_offset", 0.0)


@torch.no_grad()
def score_texts(
    model: nn.Module,
    tokenizer,
    conversations: list[list[dict[str, str]]],
    responses: list[str],
    *,
    chat_template: str,
    max_length: int,
    batch_size: int,
) -> torch.Tensor:
    """Scores ``[n]`` of each conversation answered by its response, for a reward model that reads its own
    tokenization and format (``reward_model.text_input``: Starling-RM reads Llama-2's tokens in the format of its
    card, "<s>[INST] q </s> [/INST] a</s>", not OpenChat's): the texts rendered by ``chat_template``, tokenized
    by ``tokenizer`` (cut to ``max_length`` tokens) and scored as :func:`reward_scores`, in batches."""
    device = next(model.parameters()).device
    texts = [
        tokenizer.apply_chat_template(
            [*conversation, {"role": "assistant", "content": response}], chat_template=chat_template, tokenize=False
        )
        for conversation, response in zip(conversations, responses)
    ]
    scores = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(
            texts[start : start + batch_size],
            add_special_tokens=False,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        ids, mask = encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
        scores.append(reward_scores(model, ids[:, :0], mask[:, :0], ids, mask))
    return torch.cat(scores)
