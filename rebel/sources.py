"""Rollout sources: where each iteration's batch of the shared loop (:mod:`rebel.loop`) comes from, and
the extra models an algorithm declares.

An algorithm declares its source (``Algorithm.source``): samples of π_t scored by the reward model
(:class:`ScoredSamples`, the default), the data set's preference pairs (:class:`PreferencePairs`:
DPO), or samples of π_t judged against one more sample (:class:`SelfPlay`, appendix D: an
algorithm's ``self_play`` hyperparameter). The source owns everything that differs between these
settings, so that the loop has no branch on them and a new setting is a new source (the image setting's
diffusion trajectories: :mod:`rebel.trajectories`, chosen by :meth:`RolloutSource.for_setting`):

- before any model is loaded (class attributes and methods): the model classes the loop loads (policy,
  tokenizer, reward model, LoRA, generation backend), the data file the seeded order draws its
  rows from, the number of iterations, the temperature of every log-prob, the γ of ``run.json``;
- per run (:meth:`RolloutSource.load`): the models it draws with (the reward model, the judge);
- per iteration: the rows as tensors (:meth:`~RolloutSource.encode`), the rollout (steps 2–3 of
  Algorithm 1: :meth:`~RolloutSource.collect`), and what is logged of it and what it cost
  (:meth:`~RolloutSource.metrics`).

An extra model is declared alike: ``value_model = ValueModel`` (PPO's critic).

:mod:`rebel.models`, :mod:`rebel.data` and :mod:`rebel.generation` (transformers, peft) are imported
where they are used, so that importing an algorithm, which imports this module, costs no more than torch.
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

from rebel.errors import ConfigError, HarnessError
from rebel.profiling import phase
from rebel.rl_math import kl_k1, sequence_logratio, shaped_token_rewards
from rebel.rollout import Rollout

if TYPE_CHECKING:
    from rebel.generation import GenerationBackend
    from rebel.models import Reference

SampleMonitor = Callable[[list[dict[str, Any]], list[str], torch.Tensor], dict[str, float]]
"""Extra means of an iteration's samples (prompt rows, response texts, has-EOS flags)."""
PreferenceOracle = Callable[[list[dict[str, Any]], list[str], list[str]], torch.Tensor]
"""P(a ≻ b | x) for each (prompt row, response a, response b): the judge, for self-play algorithms."""
Samples = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""``(prompt ids, prompt mask, response ids, response mask, has EOS)`` of sampled responses."""
Chunks = list[tuple[torch.Tensor, ...]]


SETTING_FORMS: dict[tuple[str, str], str] = {("ScoredSamples", "image"): "rebel.trajectories:DiffusionTrajectories"}
"""(source, setting) → ``module:Class`` of the source's form in a setting other than text (a plug-in look-up,
as the algorithm registry's: the image source subclasses :class:`ScoredSamples`)."""


class AlgorithmLike(Protocol):
    """What a source reads of the algorithm it feeds (a :class:`rebel.algorithms.base.Algorithm`, whose
    module imports this one)."""

    samples_per_prompt: int
    params: Any


def micro_batches(batch_size: int, *tensors: torch.Tensor) -> Chunks:
    n = tensors[0].shape[0]
    return [tuple(t[i : i + batch_size] for t in tensors) for i in range(0, n, batch_size)]


@torch.no_grad()
def score_batches(model_fn: Callable[..., torch.Tensor], chunks: Chunks) -> torch.Tensor:
    return torch.cat([model_fn(*chunk) for chunk in chunks])


def token_logprobs(policy: torch.nn.Module, batch: Rollout, temperature: float) -> torch.Tensor:
    """``[n, R]`` per-token log π of a text rollout's responses at ``temperature``
    (:func:`rebel.models.response_logprobs`)."""
    from rebel.models import response_logprobs

    return response_logprobs(
        policy, batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask, temperature
    )


def policy_logprobs(
    policy: torch.nn.Module, reference: Reference, chunks: Chunks, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log π_t and log π_0 of the responses in ``chunks``, at ``temperature``
    (:meth:`RolloutSource.logprob_temperature`)."""
    from rebel.models import response_logprobs

    def logprobs_of(model: torch.nn.Module) -> Callable[..., torch.Tensor]:
        return lambda *c: response_logprobs(model, *c, temperature=temperature)

    logprobs = score_batches(logprobs_of(policy), chunks)
    with reference.model() as ref_model:
        return logprobs, score_batches(logprobs_of(ref_model), chunks)


class RolloutSource(ABC):
    """Steps 2–3 of the shared loop in one setting (the module docstring lists what a source owns).

    The class attributes and class methods are what a run needs before any model is loaded; an
    instance, made by :meth:`load` in :func:`rebel.loop.build_run`, holds the run's config, π_0 and the
    models it draws with, and makes each iteration's :class:`~rebel.rollout.Rollout`.
    """

    data_file: ClassVar[str] = "train.jsonl"
    """The data set file (in the data directory) whose rows the loop's seeded order draws."""
    data_label: ClassVar[str] = "prompts"
    """What those rows are, as ``run.json`` records them (``data``)."""
    needs_preference_oracle: ClassVar[bool] = False
    """Whether the source scores with the preference oracle (the judge), checked before any model loads."""

    def __init__(self, cfg: dict[str, Any], reference: Reference, device: torch.device) -> None:
        self.cfg, self.reference, self.device = cfg, reference, device

    @classmethod
    @abstractmethod
    def load(
        cls,
        cfg: dict[str, Any],
        algorithm: AlgorithmLike,
        reference: Reference,
        device: torch.device,
        *,
        backend: GenerationBackend,
        load_reward_model: Callable[[], torch.nn.Module],
        preference: PreferenceOracle | None,
        policy_ref: dict[str, Any] | None = None,
    ) -> RolloutSource:
        """The source of one run of ``algorithm``, with the models it needs loaded (after the policy and
        π_0, before the critic: the order of random draws of :func:`rebel.loop.build_run`); ``policy_ref`` is
        the policy's model reference, for a source that loads more of its pipeline (the image setting)."""

    @classmethod
    def for_setting(cls, setting: str) -> type[RolloutSource]:
        """This source's form in a config's ``setting``: itself for text (summarization, chat); the image
        setting's :class:`rebel.trajectories.DiffusionTrajectories` for :class:`ScoredSamples`."""
        if setting == "text":
            return cls
        target = SETTING_FORMS.get((cls.__name__, setting))
        if target is None:
            raise ConfigError(f"key 'setting': the {cls.__name__} source has no '{setting}' form (only text)")
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)

    # What the loop loads through the source, so that a setting brings its own model classes.

    @classmethod
    def load_tokenizer(cls, data_dir: Path, policy_ref: dict[str, Any]):
        from rebel.models import load_tokenizer

        return load_tokenizer({"path": str(data_dir / "tokenizer")})

    @classmethod
    def load_policy(cls, policy_ref: dict[str, Any], dtype: str) -> torch.nn.Module:
        from rebel.models import load_policy

        return load_policy(policy_ref, dtype)

    @classmethod
    def load_reward_model(cls, cfg: dict[str, Any], rm_ref: Path | None, dtype: str) -> torch.nn.Module:
        from rebel.models import read_model_ref
        from rebel.reward_models import load_reward_model

        return load_reward_model(read_model_ref(rm_ref), dtype)

    @classmethod
    def add_lora(cls, policy: torch.nn.Module, lora: dict[str, Any]) -> torch.nn.Module:
        from rebel.models import add_lora

        return add_lora(policy, lora)

    @classmethod
    def make_backend(cls, cfg: dict[str, Any], tokenizer) -> GenerationBackend | None:
        from rebel.generation import make_backend

        return make_backend(cfg, tokenizer.eos_token_id, tokenizer.pad_token_id)

    def logprobs(self, policy: torch.nn.Module, batch: Rollout, temperature: float) -> torch.Tensor:
        """Per-token (per-action) log π of ``batch``'s responses under ``policy``, with gradient: the update's call."""
        return token_logprobs(policy, batch, temperature)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state carried across iterations (saved with the checkpoint; none by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    @classmethod
    @abstractmethod
    def iterations(cls, algorithm: AlgorithmLike, pol: dict[str, Any], num_rows: int) -> int:
        """Policy iterations of one run, over ``num_rows`` rows of :attr:`data_file` (``pol``: ``cfg["policy"]``)."""

    @classmethod
    def logprob_temperature(cls, cfg: dict[str, Any]) -> float:
        """The temperature of every log-prob of the policy and π_0 (rollout and update): an algorithm
        optimizes the distribution it samples from, π_T with logits / T (``policy.temperature``;
        implementation notes)."""
        return cfg["policy"]["temperature"]

    @classmethod
    def kl_coef(cls, pol: dict[str, Any]) -> float | None:
        """γ of the KL-shaped reward (Eq. 22), as ``run.json`` records it."""
        return pol["kl_coef"]

    @abstractmethod
    def encode(self, tokenizer, rows: list[dict[str, Any]]) -> tuple[torch.Tensor, ...]:
        """An iteration's rows as the tensors :meth:`collect` takes, on the run's device."""

    @abstractmethod
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
        """Steps 2–3 on :meth:`encode`'s ``batch`` (``rows``: its rows): the rollout with log π_t and log π_0
        and, given a ``critic``, its values. Phases are timed into ``timings`` (:func:`rebel.profiling.phase`)."""

    @abstractmethod
    def metrics(
        self, rollout: Rollout, rows: list[dict[str, Any]], *, tokenizer, monitor: SampleMonitor | None = None
    ) -> tuple[dict[str, float], dict[str, int]]:
        """What the loop logs of ``rollout`` (means, after the update's statistics) and what making it cost
        beyond its ``prompts``: the budget counters of :data:`rebel.loop.COUNTERS` it adds to."""


class PolicySamples(RolloutSource):
    """k samples per prompt from π_t (Algorithm 1; appendix H.1.4: fixed length, padding after the first
    EOS), each with log π_t and log π_0, scored (Γ for a response without EOS) and given the KL-shaped
    reward ``r = score − γ (log π_t − log π_0)`` (Eq. 22). Subclasses say how a sample is scored."""

    score_name: ClassVar[str]
    """The logged name of the mean score (and of its variance and covariance with the KL)."""
    score_counter: ClassVar[str]
    """The budget counter one score adds to."""
    opponents: ClassVar[int] = 0
    """Samples per prompt generated beside the k, to score them against, and not trained on."""

    def __init__(
        self,
        cfg: dict[str, Any],
        reference: Reference,
        device: torch.device,
        *,
        samples_per_prompt: int,
        backend: GenerationBackend,
        grader: Any,
    ) -> None:
        super().__init__(cfg, reference, device)
        self.samples_per_prompt, self.backend, self.grader = samples_per_prompt, backend, grader

    @classmethod
    def load(
        cls,
        cfg: dict[str, Any],
        algorithm: AlgorithmLike,
        reference: Reference,
        device: torch.device,
        *,
        backend: GenerationBackend,
        load_reward_model: Callable[[], torch.nn.Module],
        preference: PreferenceOracle | None,
        policy_ref: dict[str, Any] | None = None,
    ) -> PolicySamples:
        grader = cls._load_grader(device, load_reward_model=load_reward_model, preference=preference)
        return cls(
            cfg, reference, device, samples_per_prompt=algorithm.samples_per_prompt, backend=backend, grader=grader
        )

    @classmethod
    @abstractmethod
    def _load_grader(
        cls,
        device: torch.device,
        *,
        load_reward_model: Callable[[], torch.nn.Module],
        preference: PreferenceOracle | None,
    ) -> Any:
        """What scores the samples (``self.grader``): the reward model, or the preference oracle."""

    @classmethod
    def iterations(cls, algorithm: AlgorithmLike, pol: dict[str, Any], num_rows: int) -> int:
        """``policy.iterations``; with ``policy.reward_model_calls`` set, matched by reward-model calls
        instead: ``⌊calls / (prompts_per_iteration · k)⌋``, so an algorithm with one sample per prompt
        runs twice as many iterations as REBEL."""
        per_iteration = pol["prompts_per_iteration"]
        if pol["reward_model_calls"] is None:
            return pol["iterations"]
        iterations = pol["reward_model_calls"] // (per_iteration * algorithm.samples_per_prompt)
        if iterations < 1:
            raise ConfigError(
                f"key 'policy.reward_model_calls': {pol['reward_model_calls']} calls do not cover one "
                f"iteration of {per_iteration} prompts × {algorithm.samples_per_prompt} samples"
            )
        return iterations

    def encode(self, tokenizer, rows: list[dict[str, Any]]) -> tuple[torch.Tensor, ...]:
        """``(prompt ids, prompt mask)``."""
        from rebel.data import encode_prompts

        prompt_ids, prompt_mask = encode_prompts(tokenizer, rows, self.cfg["data"]["prompt_length"])
        return prompt_ids.to(self.device), prompt_mask.to(self.device)

    @abstractmethod
    def _scorer(
        self, samples: Samples, *, tokenizer, timings: dict[str, float], rows: list[dict[str, Any]] | None
    ) -> tuple[torch.Tensor | None, Callable[[Chunks], torch.Tensor]]:
        """The rows of ``samples`` (which has ``k + opponents`` per prompt) trained on, None for all of them,
        and the function that scores their micro-batches (called in the scoring phase)."""

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
        from rebel.generation import sample_responses

        pol, batch_size = self.cfg["policy"], self.cfg["runtime"]["rollout_batch_size"]
        policy.eval()
        with phase(timings, "generation", self.device):
            samples = sample_responses(
                self.backend,
                policy,
                *batch,
                samples_per_prompt=self.samples_per_prompt + self.opponents,
                temperature=pol["temperature"],
                max_new_tokens=self.cfg["data"]["response_length"],
                batch_size=batch_size,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                top_p=pol.get("top_p", 1.0),
            )
        engine_logprobs = getattr(self.backend, "sampled_logprobs", None)
        kept, score = self._scorer(samples, tokenizer=tokenizer, timings=timings, rows=rows)
        prompt_rows = torch.arange(len(samples[0]), device=self.device) // (self.samples_per_prompt + self.opponents)
        if kept is not None:
            samples = tuple(t[kept] for t in samples)
            engine_logprobs = None if engine_logprobs is None else engine_logprobs[kept]
            prompt_rows = prompt_rows[kept]
        p_ids, p_mask, r_ids, r_mask, has_eos = samples
        with phase(timings, "scoring", self.device):
            chunks = micro_batches(batch_size, p_ids, p_mask, r_ids, r_mask)
            logprobs, ref_logprobs = policy_logprobs(policy, self.reference, chunks, self.logprob_temperature(self.cfg))
            raw = score(chunks)
            values = None if critic is None else score_batches(critic, chunks)
        scores = torch.where(has_eos, raw, torch.full_like(raw, pol["missing_eos_penalty"]))
        token_rewards = shaped_token_rewards(scores, logprobs, ref_logprobs, r_mask, self.kl_coef(pol))
        return Rollout(
            prompt_ids=p_ids,
            prompt_mask=p_mask,
            response_ids=r_ids,
            response_mask=r_mask,
            has_eos=has_eos,
            logprobs=logprobs,
            ref_logprobs=ref_logprobs,
            scores=scores,
            rewards=token_rewards.sum(-1),
            token_rewards=token_rewards,
            samples_per_prompt=self.samples_per_prompt,
            values=values,
            engine_logprobs=engine_logprobs,
            prompt_rows=prompt_rows,
        )

    def metrics(
        self, rollout: Rollout, rows: list[dict[str, Any]], *, tokenizer, monitor: SampleMonitor | None = None
    ) -> tuple[dict[str, float], dict[str, int]]:
        """On π_t's own samples: the k1 estimate of KL(π_t‖π_0), the shaped reward, the score, the EOS
        rate, and Figure 5's per-sample covariance of (KL, score), ddof 0 (per process, then averaged);
        with a ``monitor``, its means of the samples; with a backend that reports its own log-probs (vLLM),
        their largest difference from the trainer's log π_t over the response tokens. Cost: the generations and
        one score per sample."""
        logratio = sequence_logratio(rollout.logprobs, rollout.ref_logprobs)  # log π_t(y|x) − log π_0(y|x)
        name = self.score_name
        means = {
            "kl": kl_k1(logratio)[0],
            "reward": rollout.rewards.mean().item(),
            name: rollout.scores.mean().item(),
            "eos_rate": rollout.has_eos.float().mean().item(),
        }
        cov = torch.cov(torch.stack([logratio, rollout.scores]).double(), correction=0)
        means |= {"kl_var": cov[0, 0].item(), f"{name}_var": cov[1, 1].item(), f"kl_{name}_cov": cov[0, 1].item()}
        if rollout.engine_logprobs is not None:  # the generation engine's log π_t against the trainer's
            gap = (rollout.engine_logprobs - rollout.logprobs).abs() * rollout.response_mask
            means["engine_logprob_max_abs_diff"] = gap.max().item()
        if monitor is not None:
            from rebel.data import decode_responses

            texts = decode_responses(tokenizer, rollout.response_ids, rollout.response_mask)
            means |= monitor([r for r in rows for _ in range(self.samples_per_prompt)], texts, rollout.has_eos.cpu())
        generations = len(rows) * (self.samples_per_prompt + self.opponents)
        return means, {
            "generations": generations,
            "generated_tokens": generations * rollout.response_ids.shape[1],
            self.score_counter: len(rollout),
        }


class ScoredSamples(PolicySamples):
    """Samples of π_t scored by the reward model: the source of REBEL, PPO, REINFORCE, RLOO and iterative DPO."""

    score_name = "rm_score"
    score_counter = "reward_model_calls"

    @classmethod
    def _load_grader(
        cls,
        device: torch.device,
        *,
        load_reward_model: Callable[[], torch.nn.Module],
        preference: PreferenceOracle | None,
    ) -> torch.nn.Module:
        return load_reward_model().to(device).eval().requires_grad_(False)

    def _scorer(
        self, samples: Samples, *, tokenizer, timings: dict[str, float], rows: list[dict[str, Any]] | None
    ) -> tuple[Samples, Callable[[Chunks], torch.Tensor]]:
        from rebel.reward_models import reward_scores

        text_input = self.cfg.get("reward_model", {}).get("text_input")
        if text_input is None:  # the reward model reads the policy's tokens
            return None, lambda chunks: score_batches(lambda *c: reward_scores(self.grader, *c), chunks)
        return None, lambda chunks: self._score_texts(samples, tokenizer, rows, text_input)

    def _score_texts(
        self, samples: Samples, tokenizer, rows: list[dict[str, Any]], text_input: dict[str, Any]
    ) -> torch.Tensor:
        """Scores by a reward model with its own tokenizer and format (:func:`rebel.reward_models.score_texts`):
        each sample's text, decoded, after its prompt row's conversation."""
        from rebel.data import decode_responses
        from rebel.models import load_tokenizer
        from rebel.reward_models import score_texts

        if getattr(self, "_rm_tokenizer", None) is None:
            self._rm_tokenizer = load_tokenizer(text_input["tokenizer"])
        k = self.samples_per_prompt
        return score_texts(
            self.grader,
            self._rm_tokenizer,
            [rows[i // k]["messages"] for i in range(len(samples[2]))],
            decode_responses(tokenizer, samples[2], samples[3]),
            chat_template=text_input["chat_template"],
            max_length=text_input["max_length"],
            batch_size=self.cfg["runtime"]["rollout_batch_size"],
        ).to(self.device)


class SelfPlay(PolicySamples):
    """Appendix D (SPO self-play): one more sample y'' of π_t per prompt, the opponent; each of the k
    samples is scored by the preference oracle (the judge) as ``2 P(y ≻ y'') − 1`` (Appendix D.2)
    instead of by the reward model, and the opponent is then dropped. An algorithm offers it with a
    ``self_play`` hyperparameter."""

    score_name = "preference_score"
    score_counter = "preference_queries"
    opponents = 1
    needs_preference_oracle = True

    @classmethod
    def _load_grader(
        cls,
        device: torch.device,
        *,
        load_reward_model: Callable[[], torch.nn.Module],
        preference: PreferenceOracle | None,
    ) -> PreferenceOracle:
        if preference is None:
            raise HarnessError(
                "self-play needs a preference oracle (the judge); none is available for this config's eval.judge"
            )
        return preference

    def _scorer(
        self, samples: Samples, *, tokenizer, timings: dict[str, float], rows: list[dict[str, Any]] | None
    ) -> tuple[Samples, Callable[[Chunks], torch.Tensor]]:
        from rebel.data import decode_responses

        k, (_, _, r_ids, r_mask, _) = self.samples_per_prompt, samples
        groups = torch.arange(len(r_ids), device=r_ids.device).reshape(-1, k + 1)
        own, opponent = groups[:, :k].reshape(-1), groups[:, k].repeat_interleave(k)
        texts = decode_responses(tokenizer, r_ids, r_mask)
        with phase(timings, "judging", self.device):
            wins = self.grader(
                [r for r in rows for _ in range(k)],
                [texts[i] for i in own.tolist()],
                [texts[i] for i in opponent.tolist()],
            ).to(self.device)
        return own, lambda chunks: 2 * wins - 1


class PreferencePairs(RolloutSource):
    """The data set's preference pairs, offline (DPO: Rafailov et al. 2023; appendix H.1.5): each
    iteration's batch is the next pairs of the seeded order, each pair's chosen then rejected response
    (k = 2), with log π_t and log π_0. The preference label takes the reward's place: ``scores = rewards``
    is 1 for the chosen and 0 for the rejected response (no reward model, no KL shaping), and nothing is
    generated."""

    data_file = "prefs_train.jsonl"
    data_label = "preference pairs"

    @classmethod
    def load(
        cls,
        cfg: dict[str, Any],
        algorithm: AlgorithmLike,
        reference: Reference,
        device: torch.device,
        *,
        backend: GenerationBackend,
        load_reward_model: Callable[[], torch.nn.Module],
        preference: PreferenceOracle | None,
        policy_ref: dict[str, Any] | None = None,
    ) -> PreferencePairs:
        return cls(cfg, reference, device)

    @classmethod
    def iterations(cls, algorithm: AlgorithmLike, pol: dict[str, Any], num_rows: int) -> int:
        """``⌈epochs · pairs / prompts_per_iteration⌉``: the algorithm's ``epochs`` passes over the pairs."""
        return math.ceil(algorithm.params.epochs * num_rows / pol["prompts_per_iteration"])

    @classmethod
    def logprob_temperature(cls, cfg: dict[str, Any]) -> float:
        """1: an algorithm that never samples has its loss on π itself, as in the DPO reference
        implementation (Rafailov et al. 2023). Dividing DPO's logits by T would move its optimum to
        π_ref·exp(T·r/β), i.e. an effective β of β/T."""
        return 1.0

    @classmethod
    def kl_coef(cls, pol: dict[str, Any]) -> float | None:
        return None

    def encode(self, tokenizer, rows: list[dict[str, Any]]) -> tuple[torch.Tensor, ...]:
        """``(prompt ids, prompt mask, response ids, response mask)``, each prompt twice: its pair's chosen,
        then rejected response."""
        from rebel.data import encode_prompts, encode_responses

        data = self.cfg["data"]
        prompt_ids, prompt_mask = encode_prompts(tokenizer, rows, data["prompt_length"])
        r_ids, r_mask = encode_responses(
            tokenizer, [t for r in rows for t in (r["chosen"], r["rejected"])], data["response_length"]
        )
        return tuple(
            t.to(self.device)
            for t in (prompt_ids.repeat_interleave(2, dim=0), prompt_mask.repeat_interleave(2, dim=0), r_ids, r_mask)
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
        p_ids, p_mask, r_ids, r_mask = batch
        last = r_mask.sum(-1).long() - 1
        has_eos = r_ids[torch.arange(len(r_ids), device=self.device), last] == tokenizer.eos_token_id
        policy.eval()
        with phase(timings, "scoring", self.device):
            chunks = micro_batches(self.cfg["runtime"]["rollout_batch_size"], p_ids, p_mask, r_ids, r_mask)
            logprobs, ref_logprobs = policy_logprobs(policy, self.reference, chunks, self.logprob_temperature(self.cfg))
        labels = torch.tensor([1.0, 0.0], device=self.device).repeat(len(r_ids) // 2)
        return Rollout(
            prompt_ids=p_ids,
            prompt_mask=p_mask,
            response_ids=r_ids,
            response_mask=r_mask,
            has_eos=has_eos,
            logprobs=logprobs,
            ref_logprobs=ref_logprobs,
            scores=labels,
            rewards=labels,
            token_rewards=shaped_token_rewards(labels, logprobs, ref_logprobs, r_mask, 0.0),
            samples_per_prompt=2,
        )

    def metrics(
        self, rollout: Rollout, rows: list[dict[str, Any]], *, tokenizer, monitor: SampleMonitor | None = None
    ) -> tuple[dict[str, float], dict[str, int]]:
        """On the data set's responses, DPO's implicit rewards (over β): the mean log π_t/π_0 of the chosen
        and of the rejected responses. Cost: the pairs alone."""
        logratio = sequence_logratio(rollout.logprobs, rollout.ref_logprobs)
        return {"chosen_logratio": logratio[0::2].mean().item(), "rejected_logratio": logratio[1::2].mean().item()}, {}


class ValueModel:
    """An extra model an algorithm declares (``value_model = ValueModel``): PPO's critic, initialized from
    the reward model (Huang et al. 2024; appendix H.1.2) and LoRA-adapted as the policy under
    ``policy.lora``. The loop trains it with the policy's optimizer, checkpoints it as ``critic``, records
    its values at rollout and passes its current values to the loss."""

    @staticmethod
    def load(load_reward_model: Callable[[], torch.nn.Module], lora: dict[str, Any] | None) -> torch.nn.Module:
        critic = load_reward_model()
        if lora is None:
            return critic
        from rebel.models import add_lora

        return add_lora(critic, lora, task_type="SEQ_CLS")
