"""The algorithm registry by name, without importing any algorithm (a leaf module: the standard library
and :mod:`rebel.errors` only, so the Snakefile can read it at parse time without loading torch).

A name in a config's ``algorithms`` (and a run directory's name) is one of

- a built-in algorithm (:data:`BUILTIN`), e.g. ``rebel``;
- a named variant: a built-in algorithm, or a ``module:Class``, with some of its hyperparameters
  fixed, from the config's ``variants`` first, then :data:`BUILTIN_VARIANTS` (``rloo_k2``, ``rloo_k4``);
- an import path ``package.module:Class`` of an :class:`rebel.algorithms.base.Algorithm` subclass.

:func:`algorithm_spec` turns a name into its import target and the variant's parameters;
:func:`rebel.algorithms.resolve_algorithm` and :func:`rebel.algorithms.build_algorithm` import and build it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rebel.errors import HarnessError

BUILTIN: dict[str, str] = {
    "rebel": "rebel.algorithms.rebel:REBEL",
    "dpo": "baselines.dpo:DPO",
    "iterative_dpo": "baselines.iterative_dpo:IterativeDPO",
    "ppo": "baselines.ppo:PPO",
    "reinforce": "baselines.reinforce:REINFORCE",
    "rloo": "baselines.rloo:RLOO",
    "clipped_pg": "baselines.clipped_pg:ClippedPG",
}
"""Built-in algorithm name → ``module:Class``."""

BUILTIN_VARIANTS: dict[str, dict[str, Any]] = {
    "rloo_k2": {"algorithm": "rloo", "k": 2},
    "rloo_k4": {"algorithm": "rloo", "k": 4},
}
"""Built-in variant name → ``{"algorithm": base, **parameters}``: RLOO with k = 2 and 4 samples per
prompt, the two RLOO rows of paper Table 1 (appendix H.1.5, K: 2 or 4)."""


class AlgorithmNotFound(HarnessError, LookupError):
    """An algorithm name that is neither registered nor an importable ``module:Class``."""


def registered_names(variants: Mapping[str, Any] | None = None) -> list[str]:
    """Every name :func:`algorithm_spec` knows without an import path, sorted."""
    return sorted({*BUILTIN, *BUILTIN_VARIANTS, *(variants or {})})


def _unknown(what: str, names: list[str]) -> str:
    return f"{what}; registered: {', '.join(names)} (or name one by import path 'module:Class')"


def algorithm_spec(name: str, variants: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The import target ``module:Class`` of an algorithm name and the parameters its variant fixes
    (``{}`` for a built-in algorithm or an import path), imported by nothing here.

    ``variants`` are the config's (name → ``{"algorithm": base, **parameters}``); they take precedence
    over :data:`BUILTIN_VARIANTS`. A variant's base is a built-in algorithm or a ``module:Class``, never
    another variant (so there are no chains and no cycles). Unknown names, and variants with an unknown
    base, raise :class:`AlgorithmNotFound` with a one-line message.
    """
    variants = variants or {}
    variant = variants[name] if name in variants else BUILTIN_VARIANTS.get(name)
    if variant is None:
        target = BUILTIN.get(name, name)
        if ":" not in target:
            raise AlgorithmNotFound(_unknown(f"unknown algorithm '{name}'", registered_names(variants)))
        return target, {}
    base = variant.get("algorithm") if isinstance(variant, Mapping) else None
    if not isinstance(base, str):
        raise AlgorithmNotFound(
            f"variant '{name}' needs 'algorithm': a built-in algorithm ({', '.join(sorted(BUILTIN))}) or 'module:Class'"
        )
    target = BUILTIN.get(base, base)
    if ":" not in target:
        if base in variants or base in BUILTIN_VARIANTS:
            raise AlgorithmNotFound(
                f"variant '{name}' is based on the variant '{base}'; a variant's algorithm must "
                f"be a built-in algorithm ({', '.join(sorted(BUILTIN))}) or 'module:Class'"
            )
        raise AlgorithmNotFound(_unknown(f"variant '{name}' is based on unknown algorithm '{base}'", sorted(BUILTIN)))
    return target, {key: value for key, value in variant.items() if key != "algorithm"}
