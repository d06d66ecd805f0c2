"""Pythia-architecture (GPT-NeoX) policies and reward models, built from a config or loaded by id/path.

The embedded default and the paper configurations use the same classes:
``GPTNeoXForCausalLM`` for policies and ``GPTNeoXForSequenceClassification`` (one label)
for reward models, whose score is read at the last non-padding token, i.e. at EOS
(implementation notes). A reward model's normalizing offset (reference summaries score
0 on average) lives in its config as ``reward_offset``. Weights are saved as safetensors.

A stage that produces a model writes a small ``model.json`` naming where the weights
are (``{"path": ...}`` for ones we trained, ``{"id": ..., "revision": ...}`` for the Hub).
"""

from __future__ import annotations

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
    AutoTokenizer,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    GPTNeoXForSequenceClassification,
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
    return {"path": str(path.resolve())}


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
        ref = {"path": str((path.parent / ref["path"]).resolve())}
    return ref


def pretrained_args(ref: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``from_pretrained``'s name and keyword arguments for a model reference: a local path, or a Hub id at its
    pinned revision."""
    if "path" in ref:
        return ref["path"], {}
    return ref["id"], {"revision": ref["revision"]}


def load_tokenizer(ref: dict[str, Any]):
    """The tokenizer of a model reference, left-padding, with a pad token distinct from EOS."""
    name, kwargs = pretrained_args(ref)
    tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": "[PAD]"})  # as the reference TL;DR code does
    return tokenizer


# ---------------------------------------------------------------- building and loading


def disable_dropout(model: nn.Module) -> None:
    """Dropout off everywhere (appendix H.1.5 trains with dropout disabled)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def scratch_config(arch: dict[str, Any], tokenizer, max_positions: int) -> GPTNeoXConfig:
    return GPTNeoXConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        use_parallel_residual=True,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        **arch,
    )


def build_base_policy(cfg: dict[str, Any], tokenizer) -> GPTNeoXForCausalLM:
    """The model SFT starts from: a fresh GPT-NeoX, or Pythia weights by id/path."""
    base = cfg["model"]["base"]
    if "scratch" in base:
        max_positions = cfg["data"]["prompt_length"] + cfg["data"]["response_length"]
        model = GPTNeoXForCausalLM(scratch_config(base["scratch"], tokenizer, max_positions))
    else:
        model = load_policy(base, cfg["model"]["dtype"])
    model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def load_policy(ref: dict[str, Any], dtype: str = "float32") -> PreTrainedModel:
    """A causal LM from a reference; a saved LoRA adapter is applied to its base model."""
    name, kwargs = pretrained_args(ref)
    adapter = Path(name) / "adapter_config.json"
    if adapter.is_file():
        from peft import PeftModel

        base = load_policy(read_model_ref(Path(name) / "base_model.json"), dtype)
        return PeftModel.from_pretrained(base, name)
    model = GPTNeoXForCausalLM.from_pretrained(name, dtype=DTYPES[dtype], **kwargs)
    return model


def load_reward_model(ref: dict[str, Any], dtype: str = "float32") -> GPTNeoXForSequenceClassification:
    name, kwargs = pretrained_args(ref)
    return GPTNeoXForSequenceClassification.from_pretrained(name, dtype=DTYPES[dtype], num_labels=1, **kwargs)


def reward_model_from_policy(policy: GPTNeoXForCausalLM) -> GPTNeoXForSequenceClassification:
    """A reward model whose backbone starts from the SFT policy (as in Stiennon et al. 2020)."""
    config = GPTNeoXConfig.from_dict(policy.config.to_dict())
    config.num_labels = 1
    model = GPTNeoXForSequenceClassification(config)
    model.gpt_neox.load_state_dict(policy.gpt_neox.state_dict())
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


class Reference:
    """π_0 = the SFT policy: the policy with adapters disabled under LoRA, else a frozen copy."""

    def __init__(self, policy: nn.Module, frozen_copy: nn.Module | None) -> None:
        self._policy = policy
        self._copy = frozen_copy
        if frozen_copy is not None:
            frozen_copy.requires_grad_(False).eval()

    @contextmanager
    def model(self) -> Iterator[nn.Module]:
        if self._copy is not None:
            yield self._copy
        else:
            with self._policy.disable_adapter():
                yield self._policy


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
    critic: GPTNeoXForSequenceClassification,
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
    hidden = critic.gpt_neox(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).last_hidden_state
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


def reward_scores(
    reward_model: GPTNeoXForSequenceClassification,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
) -> torch.Tensor:
    """Scalar score at the EOS token (the last unmasked token), plus the normalizing offset."""
    ids = torch.cat([prompt_ids, response_ids], dim=1)
    mask = torch.cat([prompt_mask, response_mask], dim=1)
    hidden = reward_model.gpt_neox(
        input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)
    ).last_hidden_state
    last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)
    scores = reward_model.score(hidden[torch.arange(ids.shape[0]), last]).squeeze(-1).float()
    return scores + getattr(reward_model.config, "reward_offset", 0.0)
