"""A latent consistency model (LCM; Luo et al. 2023) as a policy: its multi-step sampler cast as an MDP
(paper §5.3; Black et al. 2023, DDPO; Oertell et al. 2024, "RL for consistency models"), on diffusers'
``UNet2DConditionModel``, ``AutoencoderKL``, a CLIP text encoder and ``LCMScheduler``.

**The MDP.** With S inference steps at the scheduler's timesteps t_0 > … > t_{S−1}, state i is the latent
x_i (x_0 ~ N(0, I)), the prompt's text embedding c and the guidance embedding of w = guidance − 1 (fed
through the UNet's ``timestep_cond``: the LCM's guidance condition, no classifier-free doubling). Step i
predicts ε̂ = UNet(x_i, t_i, c, w), then, as ``LCMScheduler.step`` does,

    x̂0 = (x_i − √(1 − ᾱ_i) ε̂) / √ᾱ_i,    d_i = c_out(t_i) x̂0 + c_skip(t_i) x_i,

and for i < S − 1 the action is the next latent x_{i+1} ~ N(√ᾱ_{i+1} d_i, (1 − ᾱ_{i+1}) I). Its log-prob
(:meth:`LCMSampler.step_logprobs`) is the Gaussian log-density *averaged* over the latent's C·H·W entries,
as in the public RL-for-consistency-models code, so that η and learning rates carry over from it.

**The last step.** ``LCMScheduler.step`` adds no noise at the last step: the image is decoded from d_{S−1}, a
deterministic function of x_{S−1}. Here the MDP therefore has S − 1 stochastic actions and the last step is
part of the environment's output; the trajectory log-prob is the sum over the S − 1 actions. The public code
instead samples a noisy last action x_S ~ N(√ᾱ d_{S−1}, (1 − ᾱ) I) whose log-prob it trains on, while still
decoding d_{S−1}: the reward does not depend on that noise, so the term adds zero to the expected gradient and
only variance. Either way the last UNet evaluation gets no policy-gradient signal of its own beyond what it
shares (the same weights) with the earlier steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rebel.models import pretrained_args

SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
"""The UNet's attention projections: where the LoRA adapters go (paper H.3.3: r = 8, α = 8)."""


@dataclass
class LCMComponents:
    """The pipeline's parts; only the UNet is trained (through LoRA), the rest is frozen. ``unet`` is None when
    loaded without it (:func:`load_lcm`: the policy is loaded separately)."""

    unet: nn.Module | None
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    scheduler: Any


def load_lcm(ref: dict[str, Any], dtype: str = "float32", *, unet: bool = True) -> LCMComponents:
    """An LCM pipeline's components from a local folder (``{"path": ...}``) or a Hub id at a pinned revision
    (``{"id": ..., "revision": ...}``), in the diffusers layout (one subfolder per component); without the
    UNet when ``unet`` is false (a second copy beside the policy's would only take memory)."""
    from diffusers import AutoencoderKL, LCMScheduler
    from transformers import CLIPTextModel

    where, kwargs = pretrained_args(ref)
    torch_dtype = getattr(torch, dtype)
    return LCMComponents(
        unet=load_unet(ref, dtype) if unet else None,
        vae=AutoencoderKL.from_pretrained(where, subfolder="vae", torch_dtype=torch_dtype, **kwargs),
        text_encoder=CLIPTextModel.from_pretrained(where, subfolder="text_encoder", dtype=torch_dtype, **kwargs),
        tokenizer=load_tokenizer(ref),
        scheduler=LCMScheduler.from_pretrained(where, subfolder="scheduler", **kwargs),
    )


def load_unet(ref: dict[str, Any], dtype: str = "float32") -> nn.Module:
    """The pipeline's UNet (the policy)."""
    from diffusers import UNet2DConditionModel

    where, kwargs = pretrained_args(ref)
    return UNet2DConditionModel.from_pretrained(where, subfolder="unet", torch_dtype=getattr(torch, dtype), **kwargs)


def load_tokenizer(ref: dict[str, Any]):
    """The pipeline's text tokenizer."""
    from transformers import AutoTokenizer

    where, kwargs = pretrained_args(ref)
    return AutoTokenizer.from_pretrained(where, subfolder="tokenizer", **kwargs)


def unet_config(ref: dict[str, Any]) -> dict[str, Any]:
    """The UNet's config (latent channels and size, ``time_cond_proj_dim``) without loading its weights."""
    from diffusers import UNet2DConditionModel

    where, kwargs = pretrained_args(ref)
    return UNet2DConditionModel.load_config(where, subfolder="unet", **kwargs)


def save_lcm(parts: LCMComponents, out: Path) -> None:
    """The components in the diffusers layout :func:`load_lcm` reads (safetensors)."""
    for name in SUBFOLDERS:
        getattr(parts, name).save_pretrained(out / name)


def add_lora(unet: nn.Module, lora: dict[str, Any]) -> nn.Module:
    """The UNet wrapped with peft LoRA adapters on its attention projections (``lora.target_modules``,
    default :data:`LORA_TARGETS`); the base weights are frozen and π_0 is the UNet with adapters disabled."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora.get("target_modules") or LORA_TARGETS,
        bias="none",
    )
    return get_peft_model(unet, config)


def guidance_embedding(guidance_scale: float, dim: int, batch: int) -> torch.Tensor:
    """``[batch, dim]`` sinusoidal embedding of w = guidance_scale − 1 (×1000), the LCM's guidance
    condition, computed by diffusers' own ``LatentConsistencyModelPipeline.get_guidance_scale_embedding``."""
    from diffusers import LatentConsistencyModelPipeline

    w = torch.full((batch,), guidance_scale - 1.0)
    return LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=dim)


@torch.no_grad()
def encode_prompts(parts: LCMComponents, prompts: list[str], device: torch.device) -> torch.Tensor:
    """``[N, L, D]`` text-encoder hidden states of ``prompts`` (the UNet's cross-attention context)."""
    tok = parts.tokenizer(
        prompts, padding="max_length", max_length=parts.tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    return parts.text_encoder(tok.input_ids.to(device))[0]


@torch.no_grad()
def decode(vae: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` images in [0, 1] of the final latents."""
    images = vae.decode(latents / vae.config.scaling_factor).sample
    return (images / 2 + 0.5).clamp(0, 1)


class LCMSampler:
    """The MDP of the module docstring for one scheduler and step count: sampling and per-step log-probs.

    Both call :meth:`denoise`, so that a trajectory's recorded log-probs and their recomputation in the update
    are the same computation (the log-ratio is exactly 0 at θ = θ_t on the same batch).
    """

    def __init__(self, scheduler: Any, steps: int, original_steps: int, device: torch.device) -> None:
        scheduler.set_timesteps(steps, original_inference_steps=original_steps, device=device)
        t = scheduler.timesteps.long()
        alphas = scheduler.alphas_cumprod.to(device)
        self.timesteps = t
        self.alpha = alphas[t]  # ᾱ_i at step i
        self.alpha_next = torch.cat([alphas[t[1:]], alphas[t[-1:]]])  # ᾱ_{i+1} (the last is unused)
        scalings = [scheduler.get_scalings_for_boundary_condition_discrete(int(s)) for s in t.tolist()]
        self.c_skip = torch.tensor([c[0] for c in scalings], device=device, dtype=torch.float32)
        self.c_out = torch.tensor([c[1] for c in scalings], device=device, dtype=torch.float32)
        self.steps = steps

    @property
    def actions(self) -> int:
        """Stochastic actions per trajectory: S − 1 (the last step is deterministic)."""
        return self.steps - 1

    def denoise(
        self, unet: nn.Module, x: torch.Tensor, i: int, context: torch.Tensor, guidance: torch.Tensor
    ) -> torch.Tensor:
        """d_i: the consistency function's estimate of the clean latent from x at step i."""
        t = self.timesteps[i].expand(len(x))
        eps = unet(x, t, encoder_hidden_states=context, timestep_cond=guidance).sample
        x0 = (x - (1 - self.alpha[i]).sqrt() * eps) / self.alpha[i].sqrt()
        return self.c_out[i] * x0 + self.c_skip[i] * x

    @torch.no_grad()
    def sample(
        self, unet: nn.Module, context: torch.Tensor, guidance: torch.Tensor, noise: torch.Tensor, generator
    ) -> torch.Tensor:
        """``[N, S + 1, C, H, W]``: x_0 = ``noise``, the S − 1 sampled latents, and the final d_{S−1}."""
        x, out = noise, [noise]
        for i in range(self.steps):
            d = self.denoise(unet, x, i, context, guidance)
            if i == self.steps - 1:
                out.append(d)
                break
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = self.alpha_next[i].sqrt() * d + (1 - self.alpha_next[i]).sqrt() * z
            out.append(x)
        return torch.stack(out, 1)

    def step_logprobs(
        self, unet: nn.Module, trajectory: torch.Tensor, context: torch.Tensor, guidance: torch.Tensor
    ) -> torch.Tensor:
        """``[N, S − 1]`` log π(x_{i+1} | x_i, c), each averaged over the latent's entries (module docstring);
        with gradient when called with it."""
        out = []
        for i in range(self.actions):
            mean = self.alpha_next[i].sqrt() * self.denoise(unet, trajectory[:, i], i, context, guidance)
            out.append(gaussian_logprob(trajectory[:, i + 1], mean, (1 - self.alpha_next[i]).sqrt()))
        return torch.stack(out, 1)


def gaussian_logprob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``[N]`` log N(x; mean, std² I) / D over each row's D entries."""
    z = (x.double() - mean.double()) / std.double()
    logp = -0.5 * z**2 - torch.log(std.double()) - 0.5 * math.log(2 * math.pi)
    return logp.flatten(1).mean(1).to(x.dtype)
