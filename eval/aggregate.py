"""Aggregates over training seeds with rliable (Agarwal et al., NeurIPS 2021): the interquartile
mean (IQM) with a 95% stratified-bootstrap confidence interval, and the probability of
improvement of one algorithm over another with its interval.

The embedded Table 1 is one task, so "stratified" reduces to resampling runs (seeds) with
replacement; with several tasks (model sizes) the same calls stratify by task. Scores are
given as ``{algorithm: array[runs, tasks]}``, rliable's layout.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from rliable import library as rly
from rliable import metrics

CONFIDENCE = 0.95
BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0
"""The bootstrap's resampling is seeded, so a table rebuilt from the same files is the same table."""


def _estimates(scores: dict, func, **kwargs):
    """rliable's interval estimates, reproducibly: its stratified bootstrap draws run indices from
    NumPy's global generator (not only ``random_state``), so that is seeded here and restored after."""
    state = np.random.get_state()
    np.random.seed(BOOTSTRAP_SEED)
    try:
        return rly.get_interval_estimates(
            scores,
            func,
            reps=BOOTSTRAP_REPS,
            confidence_interval_size=CONFIDENCE,
            random_state=np.random.RandomState(BOOTSTRAP_SEED),
            **kwargs,
        )
    finally:
        np.random.set_state(state)


def _scores(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: np.asarray(v, dtype=float).reshape(len(v), -1) for name, v in values.items()}


def iqm_intervals(values: Mapping[str, np.ndarray]) -> dict[str, tuple[float, float, float]]:
    """``{algorithm: (IQM, CI low, CI high)}`` over runs (95% stratified bootstrap, percentile)."""
    scores = _scores(values)
    point, interval = _estimates(scores, lambda x: np.array([metrics.aggregate_iqm(x)]))
    return {name: (float(point[name][0]), float(interval[name][0, 0]), float(interval[name][1, 0])) for name in scores}


def probability_of_improvement(
    values: Mapping[str, np.ndarray],
    baseline: str,
) -> dict[str, tuple[float, float, float]]:
    """``{algorithm: (P(algorithm > baseline), CI low, CI high)}`` for every other algorithm.

    P(X > Y) is the Mann–Whitney probability that a run of X scores above a run of Y (ties count
    half), averaged over tasks, with a 95% stratified-bootstrap interval (rliable's definition).
    """
    scores = _scores(values)
    pairs = {f"{name},{baseline}": (scores[name], scores[baseline]) for name in scores if name != baseline}
    if not pairs:
        return {}
    point, interval = _estimates(pairs, metrics.probability_of_improvement)
    return {
        key.split(",")[0]: (float(point[key]), float(np.ravel(interval[key])[0]), float(np.ravel(interval[key])[1]))
        for key in pairs
    }
