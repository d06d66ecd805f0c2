"""Policies and reward models, built from a config or loaded by id/path.

The embedded configs and the paper configurations use the same classes, through transformers'
Auto classes: Pythia-architecture ``GPTNeoXForCausalLM`` policies for TL;DR, Llama-family causal
LMs for chat (``LlamaForCausalLM``; OpenChat-3.5 is a ``MistralForCausalLM``), and
``...ForSequenceClassification`` (one label) reward models, whose score is read at the last
non-padding token, i.e. at EOS (implementation notes; the chat reward models' own layouts:
:mod:`rebel.reward_models`). A reward model's normalizing offset (reference summaries score
0 on average) lives in its config as ``reward_offset``. Weights are saved as safetensors.

A stage that produces a model writes a small ``model.json`` naming where the weights
are (``{"path": ...}`` for ones we trained, ``{"id": ..., "revision": ...}`` for the Hub).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPTNeoXConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
)

from rebel.errors import HarnessError
from rebel.paths import REPO_ROOT

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


# ---------------------------------------------------------------- model references


def write_model_ref(path: Path, ref: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ref, indent=2))


def absolute_ref(ref: dict[str, Any]) -> dict[str, Any]:
    """A config's model reference with a local path made absolute (``model.json`` files
    resolve relative paths against their own folder). A relative path is taken from the
    working directory when it exists there, else from the repository root (the pinned
    embedded checkpoints under ``workflow/resources/``)."""
    if "path" not in ref:
        return ref
    path = Path(ref["path"])
    if not path.is_absolute() and not path.exists():
        path = REPO_ROOT / path
    return ref | {"path": str(path.resolve())}


WEIGHTS_FILE = "model.safetensors"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_pinned(ref: dict[str, Any], key: str) -> dict[str, Any]:
    """The absolute reference of a pinned checkpoint (``{path, sha256}``) after checking the
    SHA-256 of its weights; a plain reference passes through :func:`absolute_ref`."""
    resolved = absolute_ref(ref)
    if "sha256" not in ref:
        return resolved
    weights = Path(resolved["path"]) / WEIGHTS_FILE
    if not weights.is_file():
        raise HarnessError(f"key '{key}': pinned checkpoint '{weights}' not found")
    found = file_sha256(weights)
    if found != ref["sha256"]:
        raise HarnessError(
            f"key '{key}.sha256': '{weights}' has SHA-256 {found}, the config pins {ref['sha256']}; "
            f"restore the file or set '{key}: null' to train it"
        )
    return resolved


def read_model_ref(path: str | Path) -> dict[str, Any]:
    """Read a ``model.json``; a relative ``path`` entry is relative to the json file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model reference '{path}' not found; run the stage that trains it first")
    ref = json.loads(path.read_text())
    if "path" in ref:
        ref = ref | {"path": str((path.parent / ref["path"]).resolve())}
    return ref


def pretrained_args(ref: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``from_pretrained``'s name and keyword arguments for a model reference: a local path, or a Hub id at its
    pinned revision."""
    if "path" in ref:
        return ref["path"], {}
    return ref["id"], {"revision": ref["revision"]}


def load_tokenizer(ref: dict[str, Any], pad_token: str | None = None):
    """The tokenizer of a model reference, left-padding, with a pad token distinct from EOS: ``pad_token`` (a
    token of the model's vocabulary that no prompt contains: ``model.pad_token``), else the tokenizer's own, else
    its unknown token (as Starling-RM's card pads Llama-2), else a new ``[PAD]`` (as the reference TL;DR code)."""
    name, kwargs = pretrained_args(ref)
    tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    tokenizer.padding_side = "left"
    if pad_token is not None:
        if tokenizer.convert_tokens_to_ids(pad_token) in (None, tokenizer.unk_token_id):
            raise HarnessError(f"key 'model.pad_token': '{pad_token}' is not a token of '{name}'")
        tokenizer.pad_token = pad_token
    elif tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        if tokenizer.unk_token is not None and tokenizer.unk_token_id != tokenizer.eos_token_id:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    return tokenizer


# ---------------------------------------------------------------- building and loading


def disable_dropout(model: nn.Module) -> None:
    """Dropout off everywhere (appendix H.1.5 trains with dropout disabled)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def scratch_config(arch: dict[str, Any], tokenizer, max_positions: int) -> PretrainedConfig:
    """A from-scratch model's config: ``architecture`` ``gpt_neox`` (Pythia's, the default) or ``llama``
    (the chat setting's policy family), with the tokenizer's vocabulary and special tokens."""
    arch = dict(arch)
    architecture = arch.pop("architecture", "gpt_neox")
    common = {
        "vocab_size": len(tokenizer),
        "max_position_embeddings": max_positions,
        "bos_token_id": tokenizer.eos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
        "attention_dropout": 0.0,
    }
    if architecture == "llama":
        return LlamaConfig(**common, **arch)
    return GPTNeoXConfig(**common, use_parallel_residual=True, hidden_dropout=0.0, **arch)


def build_base_policy(cfg: dict[str, Any], tokenizer) -> PreTrainedModel:
    """The model SFT starts from: a fresh model of ``model.base.scratch``, or weights by id/path."""
    base = cfg["model"]["base"]
    if "scratch" in base:
        max_positions = cfg["data"]["prompt_length"] + cfg["data"]["response_length"]
        model = AutoModelForCausalLM.from_config(scratch_config(base["scratch"], tokenizer, max_positions))
    else:
        model = load_policy(base, cfg["model"]["dtype"])
    model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def load_policy(ref: dict[str, Any], dtype: str = "float32") -> PreTrainedModel:
    """A causal LM from a reference (its class from its config); a saved LoRA adapter is applied to its
    base model."""
    name, kwargs = pretrained_args(ref)
    adapter = Path(name) / "adapter_config.json"
    if adapter.is_file():
        from peft import PeftModel

        base = load_policy(read_model_ref(Path(name) / "base_model.json"), dtype)
        return PeftModel.from_pretrained(base, name)
    return AutoModelForCausalLM.from_pretrained(name, dtype=DTYPES[dtype], **kwargs)


def backbone(model: nn.Module) -> nn.Module:
    """The transformer below a model's head (``gpt_neox``, ``model``, ...), through a peft wrapper."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, inner.base_model_prefix)


def reward_model_from_policy(policy: PreTrainedModel) -> PreTrainedModel:
    """A reward model whose backbone starts from the SFT policy (as in Stiennon et al. 2020)."""
    config = AutoConfig.for_model(**policy.config.to_dict())
    config.num_labels = 1
    model = AutoModelForSequenceClassification.from_config(config)
    backbone(model).load_state_dict(backbone(policy).state_dict())
    nn.init.normal_(model.score.weight, std=1.0 / (config.hidden_size + 1) ** 0.5)
    return model


def save_model(model: PreTrainedModel, out: Path, base_ref: dict[str, Any] | None = None) -> None:
    """Save weights as safetensors; a LoRA model saves its adapter and the base it applies to."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    if base_ref is not None:
        if "path" in base_ref:  # relative, so a results folder can be moved or cached whole
            base_ref = {"path": os.path.relpath(base_ref["path"], out)}
        write_model_ref(out / "base_model.json", base_ref)


# ---------------------------------------------------------------- LoRA and the reference policy


def add_lora(model: PreTrainedModel, lora: dict[str, Any], task_type: str = "CAUSAL_LM") -> PreTrainedModel:
    """Wrap ``model`` with LoRA adapters (appendix H.1.5: r=1024, alpha=2048, dropout 0, no bias).

    ``task_type="SEQ_CLS"`` (a critic) also trains the scalar ``score`` head in full.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        bias="none",
        task_type=task_type,
    )
    return get_peft_model(model, config)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a causal LM, bottom first."""
    return backbone(model).layers


def _final_norm(model: nn.Module) -> tuple[nn.Module, str]:
    """(owner, attribute name) of the norm after the last block (Llama: ``norm``; GPT-NeoX: ``final_layer_norm``)."""
    owner = backbone(model)
    for name in ("norm", "final_layer_norm"):
        if isinstance(getattr(owner, name, None), nn.Module):
            return owner, name
    raise HarnessError(f"{type(model).__name__}: no final norm ('norm' or 'final_layer_norm') found")


def train_top_layers(model: PreTrainedModel, n: int) -> PreTrainedModel:
    """Freeze all of ``model`` but its last ``n`` blocks, final norm and LM head (appendix H.2.2: the last
    four layers of OpenChat-3.5 train, the rest stay frozen)."""
    layers = decoder_layers(model)
    if not 1 <= n <= len(layers):
        raise HarnessError(f"key 'policy.train_top_layers': {n} is not between 1 and the model's {len(layers)} layers")
    owner, norm = _final_norm(model)
    model.requires_grad_(False)
    for module in (*layers[len(layers) - n :], getattr(owner, norm), model.get_output_embeddings()):
        module.requires_grad_(True)
    return model


class Reference:
    """π_0 = the SFT policy, in one of three forms, all behind :meth:`model`: the policy with its adapters
    disabled under LoRA; the policy with its top blocks, final norm and LM head swapped for frozen copies
    when only those train (:meth:`top_layers`: the frozen bottom is shared, so the reference costs the
    memory of the copied top only, as in the authors' Nectar run); else a frozen full copy."""

    def __init__(self, policy: nn.Module, frozen_copy: nn.Module | None) -> None:
        self._policy = policy
        self._copy = frozen_copy
        self._top: dict[str, Any] | None = None
        if frozen_copy is not None:
            frozen_copy.requires_grad_(False).eval()

    @classmethod
    def top_layers(cls, policy: PreTrainedModel, n: int) -> Reference:
        """The reference of a policy whose last ``n`` blocks (and final norm and head) train: frozen copies
        of those taken now, fed with the policy's own (frozen, shared) lower blocks' hidden states."""
        reference = cls(policy, None)
        layers = decoder_layers(policy)
        owner, norm = _final_norm(policy)
        top = {
            "layers": {i: copy.deepcopy(layers[i]) for i in range(len(layers) - n, len(layers))},
            "norm": copy.deepcopy(getattr(owner, norm)),
            "head": copy.deepcopy(policy.get_output_embeddings()),
        }
        for module in (*top["layers"].values(), top["norm"], top["head"]):
            module.requires_grad_(False).eval()
        reference._top = top
        return reference

    @contextmanager
    def model(self) -> Iterator[nn.Module]:
        if self._top is not None:
            yield from self._swapped_top()
        elif self._copy is not None:
            yield self._copy
        else:
            with self._policy.disable_adapter():
                yield self._policy

    def _swapped_top(self) -> Iterator[nn.Module]:
        """The policy with the frozen top in place of its trained one, restored afterwards."""
        policy, top = self._policy, self._top
        layers, (owner, norm) = decoder_layers(policy), _final_norm(policy)
        trained = {i: layers[i] for i in top["layers"]}, getattr(owner, norm), policy.get_output_embeddings()
        for i, layer in top["layers"].items():
            layers[i] = layer
        setattr(owner, norm, top["norm"])
        policy.set_output_embeddings(top["head"])
        try:
            yield policy
        finally:
            for i, layer in trained[0].items():
                layers[i] = layer
            setattr(owner, norm, trained[1])
            policy.set_output_embeddings(trained[2])


# ---------------------------------------------------------------- scoring


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from the first real token, so left padding does not shift rotary phases."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def response_logprobs(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Per-token log π(y_t | x, y_<t) at ``temperature``, zero outside ``response_mask``.

    Log-probs are taken at the sampling temperature (implementation notes), so they are
    those of the distribution the samples came from.
    """
    ids = torch.cat([prompt_ids, response_ids], dim=1)
    mask = torch.cat([prompt_mask, response_mask], dim=1)
    length = response_ids.shape[1]
    logits = (
        model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=length + 1)
        .logits[:, :-1]
        .float()
    )
    logps = torch.log_softmax(logits / temperature, dim=-1)
    token_logps = logps.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
    return token_logps * response_mask


def token_values(
    critic: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
) -> torch.Tensor:
    """A critic's value ``V(x, y_<t)`` of the state before each response token ``[N, R]``, zero
    outside ``response_mask``: the scalar head on the hidden state that predicts token t, on
    the reward model's scale (offset included), as in PPO for RLHF (Huang et al. 2024).
    """
    ids = torch.cat([prompt_ids, response_ids], dim=1)
    mask = torch.cat([prompt_mask, response_mask], dim=1)
    hidden = backbone(critic)(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).last_hidden_state
    states = hidden[:, prompt_ids.shape[1] - 1 : -1]
    values = critic.score(states).squeeze(-1).float() + getattr(critic.config, "reward_offset", 0.0)
    return values * response_mask


class TokenValueModel(nn.Module):
    """PPO's critic as one module whose ``forward`` is :func:`token_values` (Huang et al. 2024;
    appendix H.1.2: a value head on the reward model's backbone, LoRA-adapted as the policy or not).

    ``forward(prompt_ids, prompt_mask, response_ids, response_mask)`` gives the values ``[n, R]``.
    Being a forward, it can be prepared by accelerate: under DDP the critic's gradients are then
    all-reduced like the policy's, which reaching into ``critic.gpt_neox`` of a DDP wrapper (or of
    the unwrapped module) would bypass. The wrapped ``critic`` (any module with the reward model's
    ``gpt_neox``, ``score`` and ``config``) keeps its parameters and their names, so it is the
    critic that goes into the checkpointed ``trainable`` modules.
    """

    def __init__(self, critic: nn.Module) -> None:
        super().__init__()
        self.critic = critic

    def forward(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        response_ids: torch.Tensor,
        response_mask: torch.Tensor,
    ) -> torch.Tensor:
        return token_values(self.critic, prompt_ids, prompt_mask, response_ids, response_mask)
