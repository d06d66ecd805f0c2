"""Algorithms by name: :mod:`rebel.registry` maps a name (built-in, named variant, or ``module:Class``) to its
import target and the variant's parameters; this module imports the class and builds the algorithm."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from rebel.algorithms.base import Algorithm
from rebel.registry import BUILTIN, BUILTIN_VARIANTS, AlgorithmNotFound, algorithm_spec


def _import(name: str, target: str) -> type[Algorithm]:
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise AlgorithmNotFound(f"algorithm '{name}' could not be imported ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise AlgorithmNotFound(f"algorithm '{name}' is not a subclass of rebel.algorithms.base.Algorithm")
    return cls


def resolve_algorithm(name: str, variants: Mapping[str, Any] | None = None) -> type[Algorithm]:
    """The algorithm class of a registered name, a named variant (the config's ``variants``, then the
    built-in ones) or an import path ``package.module:Class``. A variant's class is its base's: build
    the algorithm with :func:`build_algorithm` to apply the variant's parameters."""
    return _import(name, algorithm_spec(name, variants)[0])


def build_algorithm(name: str, config: Mapping[str, Any]) -> Algorithm:
    """The algorithm a config runs under ``name``: its class built (``Algorithm.from_config``) from the
    variant's parameters updated by ``config["algorithm_params"][name]``, with the config's ``variants``.

    ``config`` needs only those two keys; without ``variants`` (the bandit testbed's config) only the
    built-in variants are known. Errors as :func:`resolve_algorithm` and ``Algorithm.from_config``.
    """
    target, params = algorithm_spec(name, config.get("variants"))
    return _import(name, target).from_config(params | config.get("algorithm_params", {}).get(name, {}))


__all__ = ["Algorithm", "AlgorithmNotFound", "BUILTIN", "BUILTIN_VARIANTS", "build_algorithm", "resolve_algorithm"]
