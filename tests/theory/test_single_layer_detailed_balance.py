"""Detailed balance of the single-layer OU process (SPEC §6; §10 claim 2)."""

from __future__ import annotations

import numpy as np

from sgdfluct.analysis.single_layer import current_from_lag1, relative_frobenius_error
from sgdfluct.theory.detailed_balance import detailed_balance, entropy_production
from sgdfluct.theory.lyapunov import continuum_covariance
from sgdfluct.theory.noise import (
    least_squares_residuals,
    single_layer_hessian,
    single_layer_noise_covariance,
)

# round-off of d <= 20 dense linear algebra
ROUND_OFF = 1e-10


def test_commuting_case_is_in_detailed_balance(rng: np.random.Generator) -> None:
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    h = (q * rng.uniform(0.5, 2, 6)) @ q.T
    c = (q * rng.uniform(0.5, 2, 6)) @ q.T
    db = detailed_balance(h, c, learning_rate=0.05, batch_factor=0.25)
    assert db.commutator < ROUND_OFF
    assert np.linalg.norm(db.current) < ROUND_OFF * np.linalg.norm(c)
    assert abs(db.entropy_production) < ROUND_OFF * np.trace(h)


def test_single_layer_breaks_detailed_balance(rng: np.random.Generator) -> None:
    x = rng.standard_normal((30, 8))
    y = x @ rng.standard_normal(8) / np.sqrt(8) + rng.standard_normal(30)
    r = least_squares_residuals(x, y)
    h, c = single_layer_hessian(x), single_layer_noise_covariance(x, r)
    db = detailed_balance(h, c, learning_rate=0.05, batch_factor=0.25)
    s = continuum_covariance(h, c, learning_rate=0.05, batch_factor=0.25)
    np.testing.assert_allclose(db.current, -db.current.T, atol=ROUND_OFF * np.abs(s).max())
    np.testing.assert_allclose(db.current, 0.5 * (h @ s - s @ h), atol=ROUND_OFF * np.abs(s).max())
    assert db.commutator > 0.05
    assert db.entropy_production > 0
    assert not db.diffusion_singular


def test_entropy_production_singular_diffusion(rng: np.random.Generator) -> None:
    a = rng.standard_normal((5, 5))
    h = a @ a.T + np.eye(5)
    b = rng.standard_normal((5, 3))
    d = b @ b.T  # rank 3
    _, singular = entropy_production(h, np.eye(5), d)
    assert singular


def test_current_estimator_stderr_paths() -> None:
    lag = np.array([[1.0, 0.3], [0.1, 2.0]])
    q, se = current_from_lag1(lag, 0.1, np.full((2, 2), 0.01))
    np.testing.assert_allclose(q, [[0, 1.0], [-1.0, 0]])
    assert se is not None
    np.testing.assert_allclose(se[0, 1], np.sqrt(2) * 0.01 / 0.2)
    err = relative_frobenius_error(q, q + 0.1, se)
    assert err.noise_floor > 0 and err.stderr > 0
