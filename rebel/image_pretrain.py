"""The embedded image setting's starting policy: a tiny LCM pipeline of diffusers' own classes, built from
configs and pre-trained here on the synthetic pictures of :mod:`rebel.synthetic_images` (the image
counterpart of the SFT stage).

1. A word-level tokenizer over the prompts' words and a frozen, randomly initialized ``CLIPTextModel``
   (the real pipeline's text encoder is frozen too; its embeddings only need to tell the prompts apart).
2. An ``AutoencoderKL`` trained to reconstruct the pictures (MSE plus a small KL term), its
   ``scaling_factor`` set to 1 / the latents' standard deviation, as Stable Diffusion's VAE does.
3. A ``UNet2DConditionModel`` with a guidance condition (``time_cond_proj_dim``) trained by ε-prediction
   (Ho et al. 2020) on the latents under ``LCMScheduler``'s noise schedule, with the prompts' text embeddings
   and the sampler's guidance embedding as conditions. Sampled by the LCM's multi-step consistency sampler,
   its x̂0 estimates give the starting policy's pictures (a real LCM is distilled to make them sharp in one
   step; a few steps suffice here).

Everything is seeded (``pretrain.seed``); the pipeline is saved in the diffusers layout
(:func:`rebel.diffusion.save_lcm`) with a ``model.json`` beside it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from rebel.diffusion import LCMComponents, guidance_embedding, save_lcm
from rebel.synthetic_images import render_set

log = logging.getLogger(__name__)


def build_tokenizer(prompts: list[str], max_length: int):
    """A word-level tokenizer over the prompts' words: ``<bos> words <eos>``, padded with ``[PAD]``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for p in prompts for w in p.split()})
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "<bos>", "<eos>", "[UNK]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 1), ("<eos>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="[UNK]",
        model_max_length=max_length,
    )


def build_components(arch: dict[str, Any], prompts: list[str]) -> LCMComponents:
    """The untrained pipeline of ``model.scratch`` (the current torch seed draws its weights)."""
    from diffusers import AutoencoderKL, LCMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tokenizer(prompts, arch["text"]["max_length"])
    text = arch["text"]
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=text["hidden_size"],
            intermediate_size=2 * text["hidden_size"],
            num_hidden_layers=text["layers"],
            num_attention_heads=text["heads"],
            max_position_embeddings=text["max_length"],
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
    )
    vae_channels = arch["vae"]["block_out_channels"]
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        block_out_channels=tuple(vae_channels),
        latent_channels=arch["vae"]["latent_channels"],
        norm_num_groups=arch["vae"]["norm_num_groups"],
        layers_per_block=1,
        sample_size=arch["image_size"],
    )
    unet_channels = arch["unet"]["block_out_channels"]
    unet = UNet2DConditionModel(
        sample_size=arch["image_size"] // 2 ** (len(vae_channels) - 1),
        in_channels=arch["vae"]["latent_channels"],
        out_channels=arch["vae"]["latent_channels"],
        block_out_channels=tuple(unet_channels),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) + ("DownBlock2D",) * (len(unet_channels) - 1),
        up_block_types=("UpBlock2D",) * (len(unet_channels) - 1) + ("CrossAttnUpBlock2D",),
        cross_attention_dim=text["hidden_size"],
        norm_num_groups=arch["unet"]["norm_num_groups"],
        attention_head_dim=arch["unet"]["attention_head_dim"],
        time_cond_proj_dim=arch["unet"]["time_cond_proj_dim"],
    )
    # LCMScheduler's defaults are the Dreamshaper LCM's: 1000 steps, scaled_linear β 0.00085 → 0.012,
    # 50 original inference steps, timestep scaling 10, ε-prediction.
    return LCMComponents(unet, vae, text_encoder.eval().requires_grad_(False), tokenizer, LCMScheduler())


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator):
    for _ in range(steps):
        yield torch.randint(0, n, (batch_size,), generator=generator)


def train_vae(vae: torch.nn.Module, images: torch.Tensor, pre: dict[str, Any], generator: torch.Generator) -> float:
    """Reconstruction MSE + ``kl_weight`` · KL on pictures scaled to [−1, 1]; returns the last 50 steps' MSE."""
    opt = torch.optim.AdamW(vae.parameters(), lr=pre["vae_lr"])
    x_all, losses = images * 2 - 1, []
    vae.train()
    for index in _batches(len(images), pre["batch_size"], pre["vae_steps"], generator):
        x = x_all[index]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        mse = torch.nn.functional.mse_loss(recon, x)
        loss = mse + pre["kl_weight"] * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(mse.item())
    vae.eval().requires_grad_(False)
    return sum(losses[-50:]) / len(losses[-50:])


def train_unet(
    parts: LCMComponents,
    latents: torch.Tensor,
    context: torch.Tensor,
    pre: dict[str, Any],
    guidance_scale: float,
    generator: torch.Generator,
) -> float:
    """ε-prediction on ``latents`` with per-picture text ``context``; returns the last 50 steps' mean loss."""
    unet, scheduler = parts.unet, parts.scheduler
    opt = torch.optim.AdamW(unet.parameters(), lr=pre["unet_lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 100))
    guidance = guidance_embedding(guidance_scale, unet.config.time_cond_proj_dim, pre["batch_size"])
    losses = []
    unet.train()
    for index in _batches(len(latents), pre["batch_size"], pre["unet_steps"], generator):
        x0 = latents[index]
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=generator)
        pred = unet(scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=context[index], timestep_cond=guidance)
        loss = torch.nn.functional.mse_loss(pred.sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    unet.eval()
    return sum(losses[-50:]) / len(losses[-50:])


def pretrain_lcm(cfg: dict[str, Any], prompts: list[str], out: Path) -> dict[str, float]:
    """Build, pre-train and save the embedded LCM (module docstring); returns and writes ``out/pretrain.json``."""
    pre, arch = cfg["pretrain"], cfg["model"]["scratch"]
    torch.manual_seed(pre["seed"])
    generator = torch.Generator().manual_seed(pre["seed"])
    parts = build_components(arch, prompts)
    images, index = render_set(prompts, pre["images_per_prompt"], arch["image_size"], pre["seed"])
    vae_mse = train_vae(parts.vae, images, pre, generator)
    with torch.no_grad():
        raw = torch.cat([parts.vae.encode(chunk * 2 - 1).latent_dist.mean for chunk in images.split(256)])
    scaling = 1.0 / raw.std().item()
    parts.vae.register_to_config(scaling_factor=scaling)
    tok = parts.tokenizer(
        prompts, padding="max_length", max_length=parts.tokenizer.model_max_length, return_tensors="pt"
    )
    with torch.no_grad():
        prompt_context = parts.text_encoder(tok.input_ids)[0]
    unet_loss = train_unet(
        parts, raw * scaling, prompt_context[index], pre, cfg["sampling"]["guidance_scale"], generator
    )
    save_lcm(parts, out)
    (out / "model.json").write_text(json.dumps({"path": "."}))
    summary = {"vae_mse": vae_mse, "unet_loss": unet_loss, "vae_scaling_factor": scaling, "images": len(images)}
    (out / "pretrain.json").write_text(json.dumps(summary, indent=2))
    log.info("pre-trained LCM: %s", summary)
    return summary
