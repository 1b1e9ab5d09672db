"""Noise/Hessian, Lyapunov and exact discrete-time solvers of the single layer (SPEC §4, §5)."""

from __future__ import annotations

import numpy as np
import pytest

from sgdfluct import networks
from sgdfluct.theory.discrete import (
    DENSE_MAX_PARAMS,
    UnstableError,
    discrete_residual,
    stationary_covariance,
)
from sgdfluct.theory.lyapunov import (
    continuum_covariance,
    discrete_additive_covariance,
    lyapunov_residual,
)
from sgdfluct.theory.noise import (
    batch_factor,
    least_squares_residuals,
    single_layer_hessian,
    single_layer_noise_covariance,
)

# Round-off: d <= 30 solves in double precision reach ~1e-13 relative; 1e-10 leaves margin.
RESIDUAL_TOL = 1e-10
# Required agreement of the dense and the structured solvers (task acceptance).
AGREE_TOL = 1e-8


def data(rng: np.random.Generator, p: int = 20, n: int = 6, n_out: int = 1):
    x = rng.standard_normal((p, n))
    y = x @ rng.standard_normal((n, n_out)) / np.sqrt(n) + rng.standard_normal((p, n_out))
    return x, y, least_squares_residuals(x, y)


@pytest.mark.parametrize("n_out", [1, 3])
def test_hessian_and_noise_match_networks(rng: np.random.Generator, n_out: int) -> None:
    x, y, r = data(rng, n_out=n_out)
    theta = networks.least_squares(x, y).ravel()
    shapes = [(n_out, x.shape[1])]
    h = networks.hessian(theta, shapes, x, y)
    c = networks.noise_covariance(theta, shapes, x, y)
    np.testing.assert_allclose(single_layer_hessian(x, n_out), h, atol=1e-12)
    np.testing.assert_allclose(single_layer_noise_covariance(x, r), c, atol=1e-12)


def test_batch_factor_values() -> None:
    assert batch_factor(4, 20, "with_replacement") == 0.25
    assert batch_factor(4, 20, "without_replacement") == pytest.approx(16 / (4 * 19))
    assert batch_factor(4, 20, "epoch_shuffle") == batch_factor(4, 20, "without_replacement")
    assert batch_factor(20, 20, "without_replacement") == 0.0
    with pytest.raises(ValueError, match="sampling"):
        batch_factor(4, 20, "bogus")
    with pytest.raises(ValueError, match="batch_size"):
        batch_factor(21, 20, "without_replacement")


@pytest.mark.parametrize("method", ["bartels-stewart", "eigen"])
def test_continuum_residual(rng: np.random.Generator, method: str) -> None:
    x, _, r = data(rng, n_out=2)
    h, c = single_layer_hessian(x, 2), single_layer_noise_covariance(x, r)
    s = continuum_covariance(h, c, learning_rate=0.05, batch_factor=0.25, method=method)
    assert lyapunov_residual(h, s, 0.25 * 0.05 * c) < RESIDUAL_TOL
    np.testing.assert_allclose(s, s.T)


def test_special_case_commuting_additive(rng: np.random.Generator) -> None:
    """[H, C] = 0, multiplicative terms dropped: M = f_S eta C [H (2 - eta H)]^{-1}."""
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    hv, cv = rng.uniform(0.2, 3.0, 8), rng.uniform(0.1, 2.0, 8)
    h, c = (q * hv) @ q.T, (q * cv) @ q.T
    eta, fs = 0.3, 0.2
    m = discrete_additive_covariance(h, c, learning_rate=eta, batch_factor=fs)
    expected = fs * eta * c @ np.linalg.inv(h @ (2 * np.eye(8) - eta * h))
    np.testing.assert_allclose(m, expected, rtol=1e-10, atol=1e-13)
    assert lyapunov_residual(h, m, fs * eta * c, learning_rate=eta) < RESIDUAL_TOL


def test_special_case_c_proportional_to_h(rng: np.random.Generator) -> None:
    """C = c H: continuum Sigma = (f_S eta c / 2) I."""
    a = rng.standard_normal((9, 9))
    h = a @ a.T / 9 + 0.1 * np.eye(9)
    s = continuum_covariance(h, 1.7 * h, learning_rate=0.05, batch_factor=0.1)
    np.testing.assert_allclose(s, 0.1 * 0.05 * 1.7 / 2 * np.eye(9), atol=1e-14)


@pytest.mark.parametrize("n_out", [1, 2])
@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement"])
def test_exact_solvers_agree(rng: np.random.Generator, n_out: int, sampling: str) -> None:
    x, _, r = data(rng, p=24, n=7, n_out=n_out)
    kw = {"learning_rate": 0.12, "batch_size": 3, "sampling": sampling}
    results = {
        m: stationary_covariance(x, r, method=m, **kw) for m in ("dense", "krylov", "fixed_point")
    }
    ref = results["dense"].cov
    for method, res in results.items():
        assert res.converged and res.residual < RESIDUAL_TOL, (method, res.residual)
        assert res.note == ""
        np.testing.assert_allclose(res.cov, ref, rtol=0, atol=AGREE_TOL * np.abs(ref).max())
        assert np.linalg.eigvalsh(res.cov)[0] > 0  # a covariance: positive definite here
    assert stationary_covariance(x, r, **kw).method == "krylov"  # auto


def test_exact_reduces_to_additive_without_noise_of_batches(rng: np.random.Generator) -> None:
    """Full batch without replacement: f_S = 0, no noise, M = 0."""
    x, _, r = data(rng)
    res = stationary_covariance(
        x, r, learning_rate=0.1, batch_size=x.shape[0], sampling="without_replacement"
    )
    assert res.batch_factor == 0.0
    np.testing.assert_array_equal(res.cov, 0.0)


def test_epoch_shuffle_note(rng: np.random.Generator) -> None:
    x, _, r = data(rng)
    res = stationary_covariance(x, r, learning_rate=0.1, batch_size=4, sampling="epoch_shuffle")
    assert "approximation" in res.note


def test_unstable_learning_rate(rng: np.random.Generator) -> None:
    x, _, r = data(rng)
    lam = np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1]
    with pytest.raises(UnstableError, match="2/lambda_max"):
        stationary_covariance(
            x, r, learning_rate=2.01 / lam, batch_size=4, sampling="with_replacement"
        )
    # below 2/lambda_max but multiplicative noise of batch size 1 makes the second moment diverge
    with pytest.raises(UnstableError, match="diverges"):
        stationary_covariance(
            x, r, learning_rate=1.9 / lam, batch_size=1, sampling="with_replacement"
        )


def test_dense_refuses_large_problems(rng: np.random.Generator) -> None:
    x, _, r = data(rng, p=2 * DENSE_MAX_PARAMS, n=DENSE_MAX_PARAMS + 1)
    with pytest.raises(ValueError, match="dense"):
        stationary_covariance(
            x, r, learning_rate=0.01, batch_size=4, sampling="with_replacement", method="dense"
        )


def test_residual_detects_wrong_solution(rng: np.random.Generator) -> None:
    x, _, r = data(rng)
    res = stationary_covariance(x, r, learning_rate=0.1, batch_size=4, sampling="with_replacement")
    wrong = continuum_covariance(
        single_layer_hessian(x),
        single_layer_noise_covariance(x, r),
        learning_rate=0.1,
        batch_factor=0.25,
    )
    assert discrete_residual(x, r, wrong, learning_rate=0.1, batch_factor=0.25) > 100 * res.residual


# Slope of log ||Sigma_cont - M|| / ||M|| vs log eta: O(eta) means 1. The O(eta^2) correction
# bends the curve at eta = 0.1 by ~ eta * lambda_max ~ 0.3 in relative terms; 0.15 tolerance.
SLOPE_TOL = 0.15


def test_continuum_deviation_is_order_eta(rng: np.random.Generator) -> None:
    x, _, r = data(rng, p=40, n=10)
    h, c = single_layer_hessian(x), single_layer_noise_covariance(x, r)
    etas = np.geomspace(0.005, 0.1, 6)
    dev = []
    for eta in etas:
        m = stationary_covariance(
            x, r, learning_rate=eta, batch_size=4, sampling="with_replacement"
        ).cov
        s = continuum_covariance(h, c, learning_rate=eta, batch_factor=0.25)
        dev.append(np.linalg.norm(s - m) / np.linalg.norm(m))
    slope = np.polyfit(np.log(etas), np.log(dev), 1)[0]
    assert abs(slope - 1) < SLOPE_TOL, (slope, dev)


def test_benchmark_exact_solver_runs() -> None:
    from sgdfluct.theory.discrete import benchmark_exact_solver

    out = benchmark_exact_solver(n_in=8, n_samples=30, seed=1)
    assert out["residual"] < RESIDUAL_TOL
    assert out["exact_seconds"] > 0 and out["lyapunov_seconds"] > 0
