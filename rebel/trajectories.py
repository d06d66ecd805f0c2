"""Diffusion trajectories: the rollout source of the image setting (paper §5.3), the image form of
:class:`rebel.sources.ScoredSamples`.

An algorithm that declares ``ScoredSamples`` (REBEL, the clipped baseline) gets this source in a config with
``setting: image`` (:meth:`rebel.sources.RolloutSource.for_setting`). Per iteration it

1. embeds the iteration's prompts with the frozen text encoder and draws k trajectories per prompt from the
   LCM sampler (:class:`rebel.diffusion.LCMSampler`; the k of a prompt consecutive);
2. records each action's log π_t and log π_0 (the UNet with its LoRA adapters disabled), recomputed by the
   same function the update calls, so that the log-ratio is exactly 0 at θ = θ_t;
3. decodes the final latents and scores the images with the reward (one query per image);
4. normalizes the scores per prompt with rolling statistics and clips them to ±``reward_normalization.clip``
   (paper H.3.3, both algorithms), and subtracts ``γ (log π_t − log π_0)`` (Eq. 22; γ = 0 in the paper's
   image setting).

In the :class:`~rebel.rollout.Rollout` an action plays a response token's part: ``response_ids`` holds each
action's scheduler timestep, ``response_mask`` is all ones, and ``has_eos`` is true (a trajectory always
ends). ``trajectory`` and ``context`` carry the latents and text embeddings the update recomputes log-probs on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rebel.profiling import phase
from rebel.rl_math import PerPromptStatTracker, kl_k1, sequence_logratio, shaped_token_rewards
from rebel.rollout import Rollout
from rebel.sources import AlgorithmLike, Chunks, PreferenceOracle, ScoredSamples, micro_batches

if TYPE_CHECKING:
    from rebel.models import Reference


class DiffusionTrajectories(ScoredSamples):
    """k trajectories per prompt of the LCM policy, scored by an image reward (module docstring)."""

    data_file = "prompts.jsonl"
    score_name = "image_reward"

    def __init__(
        self,
        cfg: dict[str, Any],
        reference: Reference,
        device: torch.device,
        *,
        samples_per_prompt: int,
        parts: Any,
        unet: dict[str, Any],
        reward: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        from rebel.diffusion import LCMSampler, guidance_embedding

        super().__init__(cfg, reference, device, samples_per_prompt=samples_per_prompt, backend=None, grader=reward)
        sampling = cfg["sampling"]
        self.parts = parts
        self.sampler = LCMSampler(parts.scheduler, sampling["steps"], sampling["original_steps"], device)
        self.guidance = guidance_embedding(sampling["guidance_scale"], unet["time_cond_proj_dim"], 1).to(device)
        self.latent_shape = (unet["in_channels"], unet["sample_size"], unet["sample_size"])
        norm = cfg["reward_normalization"]
        self.tracker = PerPromptStatTracker(norm["buffer_size"], norm["min_count"])

    # ---- before any model is loaded (what the loop asks of the setting)

    @classmethod
    def logprob_temperature(cls, cfg: dict[str, Any]) -> float:
        """1: the sampler's Gaussians are the policy itself (there are no logits to scale)."""
        return 1.0

    @classmethod
    def load_tokenizer(cls, data_dir: Path, policy_ref: dict[str, Any]):
        from rebel.diffusion import load_tokenizer

        return load_tokenizer(policy_ref)

    @classmethod
    def load_policy(cls, policy_ref: dict[str, Any], dtype: str) -> torch.nn.Module:
        from rebel.diffusion import load_unet

        return load_unet(policy_ref, dtype)

    @classmethod
    def load_reward_model(cls, cfg: dict[str, Any], rm_ref: Path | None, dtype: str) -> Callable:
        from rebel.aesthetic import load_image_reward

        return load_image_reward(cfg["reward"])

    @classmethod
    def add_lora(cls, policy: torch.nn.Module, lora: dict[str, Any]) -> torch.nn.Module:
        from rebel.diffusion import add_lora

        return add_lora(policy, lora)

    @classmethod
    def make_backend(cls, cfg: dict[str, Any], tokenizer) -> None:
        """None: the sampler is the source's own (:class:`rebel.diffusion.LCMSampler`)."""
        return None

    @classmethod
    def load(
        cls,
        cfg: dict[str, Any],
        algorithm: AlgorithmLike,
        reference: Reference,
        device: torch.device,
        *,
        backend: Any,
        load_reward_model: Callable[[], Any],
        preference: PreferenceOracle | None,
        policy_ref: dict[str, Any] | None = None,
    ) -> DiffusionTrajectories:
        from rebel.diffusion import load_lcm, unet_config

        parts = load_lcm(policy_ref, cfg["model"]["dtype"], unet=False)
        for model in (parts.vae, parts.text_encoder):
            model.to(device).eval().requires_grad_(False)
        reward = load_reward_model()
        if isinstance(reward, torch.nn.Module):
            reward = reward.to(device)
        return cls(
            cfg,
            reference,
            device,
            samples_per_prompt=algorithm.samples_per_prompt,
            parts=parts,
            unet=unet_config(policy_ref),
            reward=reward,
        )

    # ---- per iteration

    def encode(self, tokenizer, rows: list[dict[str, Any]]) -> tuple[torch.Tensor, ...]:
        """``(prompt ids, prompt mask)`` in the text encoder's fixed length."""
        tok = tokenizer(
            [r["prompt"] for r in rows],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return tok.input_ids.to(self.device), torch.ones_like(tok.input_ids, device=self.device)

    def logprobs(self, policy: torch.nn.Module, batch: Rollout, temperature: float) -> torch.Tensor:
        """``[n, S − 1]`` per-action log π of ``batch``'s trajectories under ``policy`` (the update's call)."""
        return self.sampler.step_logprobs(policy, batch.trajectory, batch.context, self._guidance(len(batch)))

    def _guidance(self, n: int) -> torch.Tensor:
        return self.guidance.expand(n, -1)

    def _step_logprobs(self, unet: torch.nn.Module, chunks: Chunks) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat(
                [self.sampler.step_logprobs(unet, traj, ctx, self._guidance(len(traj))) for traj, ctx in chunks]
            )

    def collect(
        self,
        policy: torch.nn.Module,
        batch: tuple[torch.Tensor, ...],
        *,
        tokenizer,
        timings: dict[str, float],
        critic: torch.nn.Module | None = None,
        rows: list[dict[str, Any]] | None = None,
    ) -> Rollout:
        from rebel.diffusion import decode

        pol, batch_size, k = self.cfg["policy"], self.cfg["runtime"]["rollout_batch_size"], self.samples_per_prompt
        prompt_ids = batch[0].repeat_interleave(k, dim=0)
        prompt_mask = batch[1].repeat_interleave(k, dim=0)
        policy.eval()
        with phase(timings, "generation", self.device):
            with torch.no_grad():
                context = self.parts.text_encoder(prompt_ids)[0]
            noise = torch.randn(len(prompt_ids), *self.latent_shape, device=self.device)
            trajectory = torch.cat(
                [
                    self.sampler.sample(policy, ctx, self._guidance(len(ctx)), x0, None)
                    for ctx, x0 in micro_batches(batch_size, context, noise)
                ]
            )
        with phase(timings, "scoring", self.device):
            chunks = micro_batches(batch_size, trajectory, context)
            logprobs = self._step_logprobs(policy, chunks)
            with self.reference.model() as ref_model:
                ref_logprobs = self._step_logprobs(ref_model, chunks)
            images = torch.cat([decode(self.parts.vae, traj[:, -1]) for traj, _ in chunks])
            scores = torch.cat([self.grader(chunk).to(self.device) for (chunk,) in micro_batches(batch_size, images)])
        prompts = [r["prompt"] for r in rows for _ in range(k)]
        clip = self.cfg["reward_normalization"]["clip"]
        normalized = self.tracker.normalize(prompts, scores).clamp(-clip, clip)
        mask = torch.ones_like(logprobs)
        token_rewards = shaped_token_rewards(normalized, logprobs, ref_logprobs, mask, self.kl_coef(pol))
        return Rollout(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            response_ids=self.sampler.timesteps[: self.sampler.actions].expand(len(prompt_ids), -1),
            response_mask=mask,
            has_eos=torch.ones(len(prompt_ids), dtype=torch.bool, device=self.device),
            logprobs=logprobs,
            ref_logprobs=ref_logprobs,
            scores=scores,
            rewards=token_rewards.sum(-1),
            token_rewards=token_rewards,
            samples_per_prompt=k,
            trajectory=trajectory,
            context=context,
        )

    def metrics(
        self, rollout: Rollout, rows: list[dict[str, Any]], *, tokenizer, monitor=None
    ) -> tuple[dict[str, float], dict[str, int]]:
        """The mean image reward (before normalization), the k1 estimate of KL(π_t‖π_0) over the trajectory
        and the normalized reward. Cost: the images and one reward query each."""
        logratio = sequence_logratio(rollout.logprobs, rollout.ref_logprobs)
        means = {
            "kl": kl_k1(logratio)[0],
            "reward": rollout.rewards.mean().item(),
            self.score_name: rollout.scores.mean().item(),
            f"{self.score_name}_std": rollout.scores.std(correction=0).item(),
        }
        images = len(rows) * self.samples_per_prompt
        return means, {"generations": images, "reward_model_calls": images}

    def state_dict(self) -> dict[str, Any]:
        """The reward normalization's buffers (a resumed run restores them)."""
        return {"reward_buffers": self.tracker.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state.get("reward_buffers", {}))
