"""The paper's Gauss–Newton view of REBEL (§3.2), checked on a small softmax-linear policy.

π_θ(y|x) ∝ exp(θᵀφ(x, y)) over a few contexts and responses, so ∇θ log π_θ(y|x) =
φ(x, y) − E_{π_θ(·|x)} φ(x, ·) and every expectation is an exact finite sum. The
features are rank-deficient, so the Fisher matrix is singular and the pseudo-inverse and
the minimum-norm solution matter. All comparisons are in float64 to 1e-9 or tighter.
(§3.2's exact-step check, REBEL as mirror descent, is in ``test_rebel_loss.py``.)
"""

import numpy as np
import pytest
import torch

from rebel.algorithms.rebel import rebel_residuals

X, Y, D, ETA = 3, 5, 6, 0.7


@pytest.fixture
def setting():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(X, Y, D - 2))
    phi = np.concatenate([base, base[..., :2] + base[..., 1:3]], axis=-1)  # rank D - 2: F is singular
    theta = rng.normal(size=D)
    logits = phi @ theta
    pi = np.exp(logits - logits.max(-1, keepdims=True))
    pi /= pi.sum(-1, keepdims=True)
    mu = rng.dirichlet(np.ones(Y), size=X)
    rho = np.full(X, 1 / X)
    grad = phi - (pi[..., None] * phi).sum(1, keepdims=True)  # ∇θ log π_θt(y|x), [X, Y, D]
    reward = rng.normal(size=(X, Y))
    return pi, mu, rho, grad, reward


def _pairs(pi, mu, rho, grad, reward):
    """Every (x, y, y') with its probability ρ(x) π_t(y|x) μ(y'|x), Eq. 9's regressor and target."""
    weight = (rho[:, None, None] * pi[:, :, None] * mu[:, None, :]).reshape(-1)
    design = ((grad[:, :, None, :] - grad[:, None, :, :]) / ETA).reshape(-1, D)
    target = (reward[:, :, None] - reward[:, None, :]).reshape(-1)
    return weight, design, target


def test_claim_1_min_norm_solution_of_eq_9_is_the_npg_update(setting):
    pi, mu, rho, grad, reward = setting
    weight, design, target = _pairs(pi, mu, rho, grad, reward)
    sqrt_w = np.sqrt(weight)[:, None]
    delta, *_ = np.linalg.lstsq(sqrt_w * design, sqrt_w[:, 0] * target, rcond=None)  # minimum-norm minimizer

    mix = rho[:, None] * (pi + mu) / 2  # ρ(x) π_mix(y|x)
    fisher = np.einsum("xy,xyd,xye->de", mix, grad, grad)
    advantage = reward - (pi * reward).sum(-1, keepdims=True)  # A^{π_t}(x, y)
    npg = ETA * np.linalg.pinv(fisher) @ np.einsum("xy,xyd,xy->d", mix, grad, advantage)
    assert np.linalg.matrix_rank(fisher) == D - 2
    np.testing.assert_allclose(delta, npg, atol=1e-10, rtol=0)

    # Eq. 9 is Eq. 1 with the log-ratio linearized: the residuals of our REBEL loss, over η.
    linearized = torch.tensor(grad.reshape(-1, D) @ delta).reshape(X, Y)  # ∇ log π_t(y|x)ᵀ δ
    logratio = torch.stack([linearized[:, :, None].expand(X, Y, Y), linearized[:, None, :].expand(X, Y, Y)], -1)
    rewards = torch.stack(
        [torch.tensor(reward)[:, :, None].expand(X, Y, Y), torch.tensor(reward)[:, None, :].expand(X, Y, Y)], -1
    )
    residual = rebel_residuals(logratio.reshape(-1, 2), rewards.reshape(-1, 2), ETA).numpy() / ETA
    np.testing.assert_allclose(residual, design @ delta - target, atol=1e-12)


def test_claim_2_finite_data_solution_is_a_preconditioned_leave_one_out_gradient(setting):
    """Exact for N sampled pairs with the empirical Gauss–Newton matrix Ĝ = (1/2N) Σ (g − g')(g − g')ᵀ,
    whose expectation is the mixture Fisher matrix F_t (its cross terms vanish in expectation,
    which the claim's F̂ assumes; the sample cross terms are not zero)."""
    pi, mu, rho, grad, reward = setting
    rng = np.random.default_rng(1)
    n = 40
    x = rng.choice(X, size=n, p=rho)
    y = np.array([rng.choice(Y, p=pi[c]) for c in x])
    y2 = np.array([rng.choice(Y, p=mu[c]) for c in x])
    g, g2, r, r2 = grad[x, y], grad[x, y2], reward[x, y], reward[x, y2]
    delta, *_ = np.linalg.lstsq((g - g2) / ETA, r - r2, rcond=None)  # Eq. 11, minimum norm

    gauss_newton = (g - g2).T @ (g - g2) / (2 * n)
    baseline_gradient = (g * (r - r2)[:, None] + g2 * (r2 - r)[:, None]).sum(0) / (2 * n)  # Claim 2's vector
    np.testing.assert_allclose(delta, ETA * np.linalg.pinv(gauss_newton) @ baseline_gradient, atol=1e-9, rtol=0)

    weight, design, _ = _pairs(pi, mu, rho, grad, reward)
    expected_gauss_newton = ETA**2 * np.einsum("p,pd,pe->de", weight, design, design) / 2
    mix = rho[:, None] * (pi + mu) / 2
    np.testing.assert_allclose(expected_gauss_newton, np.einsum("xy,xyd,xye->de", mix, grad, grad), atol=1e-12)
