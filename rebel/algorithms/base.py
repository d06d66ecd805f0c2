"""What an algorithm owns in the shared loop: its hyperparameters, samples per prompt, and its loss,
and what it declares it needs: its rollout source and any extra model (:mod:`rebel.sources`).

Everything else (prompt order, sampling, reward-model scoring, the KL-shaped reward of
Eq. 22, log-probs, minibatching, optimization, logging, checkpointing, profiling) is the
shared loop's (:mod:`rebel.loop`) or the source's, so two algorithms differ exactly where their
papers do.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from rebel.rollout import Rollout
from rebel.sources import PreferencePairs, RolloutSource, ScoredSamples, SelfPlay, ValueModel


@dataclasses.dataclass(frozen=True)
class NoParams:
    """An algorithm without hyperparameters of its own."""


class ParamTypeError(TypeError):
    """A hyperparameter of the wrong type: ``field`` names it, ``message`` says what is allowed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def _type_problem(value: Any, annotation: Any) -> str | None:
    """What is wrong with ``value`` for a field annotated ``annotation`` (None: nothing, or a type not
    checked here). ``float`` takes an int; a bool is not a number; numbers must be finite."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        problems = [_type_problem(value, arg) for arg in args]
        if any(p is None for p in problems):
            return None
        return "expected " + " or ".join(p.removeprefix("expected ") for p in problems if p)
    if origin is typing.Literal:
        return None if value in args else f"expected one of {', '.join(map(repr, args))}"
    if annotation is type(None):
        return None if value is None else "expected null"
    if annotation is bool:
        return None if isinstance(value, bool) else "expected true or false"
    if annotation is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "expected an integer"
    if annotation is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return "expected a number"
        return None if math.isfinite(value) else "expected a finite number"
    if annotation is str:
        return None if isinstance(value, str) else "expected a string"
    return None


class _Derived:
    """A read-only attribute of an algorithm class and of its instances, computed from the class's
    declarations (for the modules that read it: :mod:`eval.search`, :mod:`rebel.bandit`, :mod:`rebel.benchmark`)."""

    def __init__(self, compute: Callable[[type], Any]) -> None:
        self.compute, self.__doc__ = compute, compute.__doc__

    def __get__(self, instance: object, owner: type) -> Any:
        return self.compute(owner)


class Algorithm(ABC):
    """Base class of every algorithm run by the shared loop.

    Subclasses set ``samples_per_prompt`` and ``Params`` (a frozen dataclass whose fields
    are the algorithm's hyperparameters, read from ``algorithm_params.<name>`` in the
    config, over a named variant's own: :mod:`rebel.registry`), and implement :meth:`loss`.
    :meth:`prepare` may add per-iteration quantities (advantages, baselines) computed once
    from the whole rollout before the update epochs. ``samples_per_prompt`` and ``label`` are
    class attributes, or set per instance from the Params (RLOO's ``k``): read them from the
    built algorithm (:func:`rebel.algorithms.build_algorithm`), not from the class. An algorithm
    declares what else it needs: its rollout ``source`` and an extra ``value_model``.
    """

    samples_per_prompt: int = 1
    source: type[RolloutSource] = ScoredSamples
    """Where each iteration's batch comes from (:mod:`rebel.sources`): samples of π_t scored by the
    reward model (the default); the data set's preference pairs (``source = PreferencePairs``, which
    needs a Params field ``epochs``: the passes over the pairs); :class:`~rebel.sources.SelfPlay`
    for an instance whose Params set ``self_play``. A new setting is a new source."""
    value_model: ClassVar[type[ValueModel] | None] = None
    """An extra model the loop trains with the policy: ``ValueModel``, a critic whose values are
    recorded at rollout and whose current values the loss gets (PPO)."""
    Params: ClassVar[type] = NoParams
    label: str = ""
    """Display name in tables and figures (defaults to the registry name)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for derived, declaration in (
            ("offline", "source = PreferencePairs"),
            ("needs_value_model", "value_model = ValueModel"),
        ):
            if derived in vars(cls):
                raise TypeError(
                    f"{cls.__name__}: '{derived}' follows from the declarations; set '{declaration}' "
                    "(rebel.sources) instead"
                )

    def __init__(self, params: Any) -> None:
        self.params = params
        if self.self_play:
            self.source = SelfPlay
        if self.epochs_per_iteration is not None and self.epochs_per_iteration < 1:
            raise ValueError(f"epochs_per_iteration must be >= 1, got {self.epochs_per_iteration}")
        if self.offline and not getattr(params, "epochs", 0) > 0:
            raise ValueError("an offline algorithm needs a Params field 'epochs' > 0 (passes over the pairs)")

    @classmethod
    def from_config(cls, values: dict[str, Any]) -> Algorithm:
        """Build from a config mapping; unknown or missing keys raise ``TypeError`` naming them, and a
        value of the wrong type for its field's annotation :class:`ParamTypeError`."""
        known = {f.name for f in dataclasses.fields(cls.Params)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"unknown hyperparameter '{unknown[0]}'; allowed: {', '.join(sorted(known)) or 'none'}")
        try:
            hints = typing.get_type_hints(cls.Params)
        except Exception:  # noqa: BLE001 - an annotation this Python cannot resolve: leave it to the Params
            hints = {}
        for name, value in values.items():
            problem = _type_problem(value, hints.get(name))
            if problem is not None:
                raise ParamTypeError(name, f"{problem}, got {value!r}")
        return cls(cls.Params(**values))

    @property
    def epochs_per_iteration(self) -> int | None:
        """Update passes over each rollout; ``None`` (the default) uses ``policy.epochs_per_iteration``.

        An algorithm whose source prescribes its own count (appendix H.1.5 gives REBEL, PPO
        and iterative DPO 4 passes, REINFORCE and RLOO one) declares an
        ``epochs_per_iteration`` field in its ``Params``.
        """
        return getattr(self.params, "epochs_per_iteration", None)

    @property
    def self_play(self) -> bool:
        """Appendix D (SPO): rewards are preferences against one more sample of π_t instead of
        reward-model scores (the :class:`~rebel.sources.SelfPlay` source); an algorithm offers this mode
        with a ``self_play`` field in its ``Params``."""
        return bool(getattr(self.params, "self_play", False))

    @_Derived
    def offline(cls) -> bool:
        """Trained on the data set's preference pairs (``source = PreferencePairs``) instead of samples of π_t."""
        return issubclass(cls.source, PreferencePairs)

    @_Derived
    def needs_value_model(cls) -> bool:
        """Declares a critic (``value_model``)."""
        return cls.value_model is not None

    def prepare(self, rollout: Rollout) -> Rollout:
        """Per-iteration preprocessing of the whole rollout (default: none)."""
        return rollout

    def observe(self, metrics: dict[str, float]) -> None:
        """See the iteration's logged metrics (averaged over processes) after the update.

        For state carried across iterations, such as a moving-average baseline; such state
        must be returned by :meth:`state_dict` so that a resumed run replays exactly.
        """

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state carried across iterations (saved with the checkpoint)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    @abstractmethod
    def loss(
        self, logprobs: torch.Tensor, batch: Rollout, values: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss on a minibatch, and scalar statistics to log.

        ``logprobs`` are the current policy's per-token log-probs ``[n, R]`` of
        ``batch.response_ids`` (with gradient, zero outside ``batch.response_mask``); the
        minibatch holds whole prompts, so the k samples of a prompt are consecutive.
        ``values`` are the current critic's per-token values ``[n, R]`` (with gradient) when
        the algorithm declares a ``value_model``, else None.
        """
