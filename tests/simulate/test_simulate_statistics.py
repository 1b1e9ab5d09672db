"""Simulated stationary covariance vs the exact discrete-time equation (SPEC §5), and calibration
of the batch-means standard errors.

The exact covariance is computed here with a small dense solve (no import of sgdfluct.theory: the
engine and the theory must stay independent).
"""

from __future__ import annotations

import numpy as np
import pytest

from sgdfluct import networks
from sgdfluct.simulate import simulate

N_IN, N_OUT, N_SAMPLES, BATCH, ETA = 4, 2, 24, 4, 0.1
# |z| < 1.96 for a standard normal; the batch-means z is a t with K - 1 >= 63 degrees of freedom,
# whose two-sided 1.96 coverage is 0.946 (vs 0.950): within the binomial bands used below.
Z95 = 1.96
COVERAGE = 0.95
# single-run check: 36 correlated |z| values; P(max |z| > 4) <= 36 * 6.3e-5 = 0.2 %
Z_MAX_SINGLE = 4.0


def _single_layer(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_SAMPLES, N_IN))
    teacher = rng.standard_normal((N_OUT, N_IN)) / np.sqrt(N_IN)
    y = x @ teacher.T + rng.standard_normal((N_SAMPLES, N_OUT))
    return x, y, networks.least_squares(x, y).ravel()


def exact_discrete_covariance(
    x: np.ndarray, y: np.ndarray, theta_star: np.ndarray, eta: float, f_s: float
) -> np.ndarray:
    """Solve ``H M + M H - eta H M H = f_S eta [C_0 + K(M) - H M H]`` densely for M (d, d)."""
    shapes = [(y.shape[1], x.shape[1])]
    d = theta_star.size
    h = networks.hessian(theta_star, shapes, x, y)
    c0 = networks.noise_covariance(theta_star, shapes, x, y)
    jac = networks.per_sample_jacobians(theta_star, shapes, x)  # (P, N_o, d)
    a_mu = np.einsum("poi,poj->pij", jac, jac)  # A_mu = J_mu^T J_mu = I (x) x x^T
    eye = np.eye(d)
    # row-major vec: vec(A M B) = kron(A, B^T) vec(M)
    op = np.kron(h, eye) + np.kron(eye, h) - eta * np.kron(h, h)
    op -= f_s * eta * (sum(np.kron(a, a) for a in a_mu) / x.shape[0] - np.kron(h, h))
    m = np.linalg.solve(op, f_s * eta * c0.ravel()).reshape(d, d)
    return 0.5 * (m + m.T)


def test_exact_solution_solves_its_equation() -> None:
    x, y, theta_star = _single_layer(0)
    m = exact_discrete_covariance(x, y, theta_star, ETA, 1.0 / BATCH)
    shapes = [(N_OUT, N_IN)]
    h = networks.hessian(theta_star, shapes, x, y)
    c0 = networks.noise_covariance(theta_star, shapes, x, y)
    k = sum(np.kron(np.eye(N_OUT), np.outer(v, v)) @ m @ np.kron(np.eye(N_OUT), np.outer(v, v))
            for v in x) / N_SAMPLES  # fmt: skip
    lhs = h @ m + m @ h - ETA * h @ m @ h
    rhs = ETA / BATCH * (c0 + k - h @ m @ h)
    np.testing.assert_allclose(lhs, rhs, atol=1e-13)
    assert np.linalg.eigvalsh(m)[0] > 0


def _z_scores(seed: int, steps: int, replicas: int) -> np.ndarray:
    x, y, theta_star = _single_layer(0)
    exact = exact_discrete_covariance(x, y, theta_star, ETA, 1.0 / BATCH)
    res = simulate(
        x, y, [(N_OUT, N_IN)], theta_star, learning_rate=ETA, batch_size=BATCH, steps=steps,
        burn_in=500, record_every=1, replicas=replicas, seed=seed, n_batches=16,
    )  # fmt: skip
    iu = np.triu_indices(exact.shape[0])
    return ((res.cov - exact) / res.cov_stderr)[iu]


def test_covariance_within_standard_errors_of_exact_solution(global_random_seed: int) -> None:
    z = _z_scores(global_random_seed, steps=40_000, replicas=4)
    assert np.all(np.isfinite(z))
    assert np.max(np.abs(z)) < Z_MAX_SINGLE, z


def _calibration(n_seeds: int, steps: int, replicas: int, base_seed: int) -> None:
    per_seed_cov, per_seed_z2 = [], []
    for i in range(n_seeds):
        z = _z_scores(base_seed * 1000 + i, steps=steps, replicas=replicas)
        per_seed_cov.append(np.mean(np.abs(z) < Z95))
        per_seed_z2.append(np.mean(z**2))
    cov_frac = np.array(per_seed_cov)
    z2 = np.array(per_seed_z2)
    # entries of one run are correlated: the band uses the scatter between independent seeds,
    # 3 standard errors wide, but never narrower than the binomial band for independent entries.
    n_entries = N_IN * N_OUT * (N_IN * N_OUT + 1) // 2
    se_cov = max(cov_frac.std(ddof=1), np.sqrt(COVERAGE * (1 - COVERAGE) / n_entries)) / np.sqrt(
        n_seeds
    )
    assert abs(cov_frac.mean() - COVERAGE) < 3 * se_cov, (cov_frac.mean(), se_cov)
    se_z2 = z2.std(ddof=1) / np.sqrt(n_seeds)
    assert abs(z2.mean() - 1.0) < 3 * se_z2 + 0.05, (z2.mean(), se_z2)  # +0.05: t_63 has var 1.03


def test_standard_errors_are_calibrated(global_random_seed: int) -> None:
    _calibration(n_seeds=24, steps=20_000, replicas=4, base_seed=global_random_seed)


@pytest.mark.slow
def test_standard_errors_are_calibrated_long(global_random_seed: int) -> None:
    _calibration(n_seeds=100, steps=100_000, replicas=8, base_seed=global_random_seed + 1)
