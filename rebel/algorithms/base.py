"""What an algorithm owns in the shared loop: its hyperparameters, samples per prompt, and its loss.

Everything else (prompt order, sampling, reward-model scoring, the KL-shaped reward of
Eq. 22, log-probs, minibatching, optimization, logging, checkpointing, profiling) is the
shared loop's (:mod:`rebel.loop`), so two algorithms differ exactly where their papers do.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from rebel.rollout import Rollout


@dataclasses.dataclass(frozen=True)
class NoParams:
    """An algorithm without hyperparameters of its own."""


class Algorithm(ABC):
    """Base class of every algorithm run by the shared loop.

    Subclasses set ``samples_per_prompt`` and ``Params`` (a frozen dataclass whose fields
    are the algorithm's hyperparameters, read from ``algorithm_params.<name>`` in the
    config), and implement :meth:`loss`. :meth:`prepare` may add per-iteration quantities
    (advantages, baselines) computed once from the whole rollout before the update epochs.
    """

    samples_per_prompt: ClassVar[int] = 1
    Params: ClassVar[type] = NoParams
    label: ClassVar[str] = ""
    """Display name in tables and figures (defaults to the registry name)."""

    def __init__(self, params: Any) -> None:
        self.params = params

    @classmethod
    def from_config(cls, values: dict[str, Any]) -> "Algorithm":
        """Build from a config mapping; unknown or missing keys raise ``TypeError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls.Params)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"unknown hyperparameter '{unknown[0]}'; allowed: {', '.join(sorted(known)) or 'none'}")
        return cls(cls.Params(**values))

    def prepare(self, rollout: Rollout) -> Rollout:
        """Per-iteration preprocessing of the whole rollout (default: none)."""
        return rollout

    @abstractmethod
    def loss(self, logprobs: torch.Tensor, batch: Rollout) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss on a minibatch, and scalar statistics to log.

        ``logprobs`` are the current policy's per-token log-probs ``[n, R]`` of
        ``batch.response_ids`` (with gradient, zero outside ``batch.response_mask``); the
        minibatch holds whole prompts, so the k samples of a prompt are consecutive.
        """
