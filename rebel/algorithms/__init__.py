"""Algorithm registry: built-in names resolve lazily; anything else may be named as ``module:Class``."""

from __future__ import annotations

import importlib

from rebel.algorithms.base import Algorithm
from rebel.errors import HarnessError

BUILTIN: dict[str, str] = {
    "rebel": "rebel.algorithms.rebel:REBEL",
    "dpo": "baselines.dpo:DPO",
    "iterative_dpo": "baselines.iterative_dpo:IterativeDPO",
    "ppo": "baselines.ppo:PPO",
    "reinforce": "baselines.reinforce:REINFORCE",
    "rloo_k2": "baselines.rloo:RLOO",
    "rloo_k4": "baselines.rloo:RLOOk4",
}


class AlgorithmNotFound(HarnessError, LookupError):
    """An algorithm name that is neither registered nor an importable ``module:Class``."""


def resolve_algorithm(name: str) -> type[Algorithm]:
    """The algorithm class for a registered name or an import path ``package.module:Class``."""
    target = BUILTIN.get(name, name)
    if ":" not in target:
        raise AlgorithmNotFound(f"unknown algorithm '{name}'; registered: {', '.join(sorted(BUILTIN))} "
                       f"(or name one by import path 'module:Class')")
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise AlgorithmNotFound(f"algorithm '{name}' could not be imported ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise AlgorithmNotFound(f"algorithm '{name}' is not a subclass of rebel.algorithms.base.Algorithm")
    return cls


__all__ = ["Algorithm", "AlgorithmNotFound", "BUILTIN", "resolve_algorithm"]
