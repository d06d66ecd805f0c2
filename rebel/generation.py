"""Sampling responses through a backend (``runtime.generation_backend``): Hugging Face ``generate`` (``hf``)
or a vLLM engine (``vllm``, :mod:`rebel.vllm_generation`), with the same sampling semantics.

Responses are always exactly ``max_new_tokens`` long with everything after the first EOS
replaced by padding (implementation notes; the paper's 53-token generation). The
reference code keeps sampling after EOS and then overwrites those tokens; stopping a
sequence at its EOS and padding it gives the same responses for less compute.
Sampling is plain (``top_k=0``), with nucleus sampling only where a config sets ``policy.top_p`` (the
large-batch chat setting: 0.9); log-probs are those of the tempered distribution either way.
"""

from __future__ import annotations

from functools import cache
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from transformers import GenerationConfig


class GenerationBackend(Protocol):
    schedules_batches: ClassVar[bool]
    """True: :func:`sample_responses` hands over every row at once (the backend batches them itself);
    False: micro-batches of ``batch_size`` rows."""
    sampled_logprobs: torch.Tensor | None
    """The log-probs of the tokens the last call sampled, ``[N, max_new_tokens]`` (0 after the end), from the
    backend's own forward (a consistency check of the trainer's); None when it does not report them."""

    def generate(
        self,
        model: torch.nn.Module,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        *,
        temperature: float,
        max_new_tokens: int,
        top_p: float = 1.0,
    ) -> torch.Tensor:
        """Sampled continuation tokens ``[N, max_new_tokens]`` (EOS not yet post-processed)."""


class HFGenerationBackend:
    """``model.generate`` with plain sampling, right-padded to exactly ``max_new_tokens``.

    ``full_length`` suppresses EOS, so that every sequence runs all ``max_new_tokens`` steps
    (the runtime benchmark's fixed workload on random weights).
    """

    schedules_batches = False
    sampled_logprobs = None

    def __init__(self, eos_token_id: int, pad_token_id: int, full_length: bool = False) -> None:
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.full_length = full_length

    @torch.no_grad()
    def generate(
        self,
        model: torch.nn.Module,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        *,
        temperature: float,
        max_new_tokens: int,
        top_p: float = 1.0,
    ) -> torch.Tensor:
        config = GenerationConfig(
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens if self.full_length else 0,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )
        out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config)
        response = out[:, prompt_ids.shape[1] :]
        return F.pad(response, (0, max_new_tokens - response.shape[1]), value=self.pad_token_id)


def make_backend(cfg: dict[str, Any], eos_token_id: int, pad_token_id: int, full_length: bool = False):
    """The backend ``runtime.generation_backend`` names. A vLLM backend is made once per process and these
    arguments, so that one engine serves a run and every evaluation of the process."""
    name = cfg["runtime"]["generation_backend"]
    if name == "hf":
        return HFGenerationBackend(eos_token_id, pad_token_id, full_length)
    return _vllm_backend(eos_token_id, pad_token_id, tuple(sorted(cfg["runtime"]["vllm"].items())), full_length)


@cache
def _vllm_backend(eos_token_id: int, pad_token_id: int, settings: tuple, full_length: bool):
    from rebel.vllm_generation import VLLMGenerationBackend

    return VLLMGenerationBackend(eos_token_id, pad_token_id, dict(settings), full_length)


def truncate_after_eos(
    tokens: torch.Tensor, eos_token_id: int, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad everything after the first EOS; return ``(tokens, mask, has_eos)``.

    ``mask`` is 1 up to and including the first EOS (all ones when there is none).
    """
    is_eos = tokens == eos_token_id
    has_eos = is_eos.any(-1)
    first = torch.where(
        has_eos, is_eos.int().argmax(-1), torch.full_like(has_eos, tokens.shape[1] - 1, dtype=torch.long)
    )
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    mask = (positions[None, :] <= first[:, None]).long()
    return tokens.masked_fill(mask == 0, pad_token_id), mask, has_eos


def sample_responses(
    backend: GenerationBackend,
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    samples_per_prompt: int,
    temperature: float,
    max_new_tokens: int,
    batch_size: int,
    eos_token_id: int,
    pad_token_id: int,
    top_p: float = 1.0,
) -> tuple[torch.Tensor, ...]:
    """k samples per prompt, consecutive per prompt, generated in micro-batches of ``batch_size`` rows
    (one batch of every row for a backend that schedules its own).

    Returns ``(prompt_ids, prompt_mask, response_ids, response_mask, has_eos)`` with
    prompts repeated k times.
    """
    prompt_ids = prompt_ids.repeat_interleave(samples_per_prompt, 0)
    prompt_mask = prompt_mask.repeat_interleave(samples_per_prompt, 0)
    if getattr(backend, "schedules_batches", False):
        batch_size = prompt_ids.shape[0]
    chunks = [
        backend.generate(
            model,
            prompt_ids[i : i + batch_size],
            prompt_mask[i : i + batch_size],
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            **({"top_p": top_p} if top_p < 1.0 else {}),
        )
        for i in range(0, prompt_ids.shape[0], batch_size)
    ]
    response_ids, response_mask, has_eos = truncate_after_eos(torch.cat(chunks), eos_token_id, pad_token_id)
    return prompt_ids, prompt_mask, response_ids, response_mask, has_eos
