"""The theory's front door: one problem object, a method registry, one stability check."""

from __future__ import annotations

import numpy as np
import pytest

from sgdfluct import networks as nw
from sgdfluct.errors import ConfigError, UnstableError
from sgdfluct.theory import (
    METHODS,
    StationaryProblem,
    continuum_covariance,
    discrete_additive_covariance,
    layered_covariance,
    least_squares_residuals,
    stationary_covariance,
)
from sgdfluct.theory.discrete import stationary_covariance as exact_solver

#: closed forms and solvers are computed by different code paths; agreement to round-off
ROUNDOFF = 1e-10


def _single(rng: np.random.Generator, n_out: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((30, 4))
    y = x @ rng.standard_normal((4, n_out)) + rng.standard_normal((30, n_out))
    return x, least_squares_residuals(x, y)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_single_layer_methods_match_their_reference_solvers(rng):
    x, r = _single(rng)
    kw = dict(learning_rate=0.05, batch_size=4, sampling="with_replacement")
    problem = StationaryProblem.single_layer(x, r, **kw)
    fs = problem.batch_factor
    cont = stationary_covariance(problem, method="continuum").cov
    disc = stationary_covariance(problem, method="discrete").cov
    exact = stationary_covariance(problem, method="exact").cov
    mult = stationary_covariance(problem, method="multiplicative").cov
    h, c = problem.hessian, problem.noise_cov
    assert _rel(cont, continuum_covariance(h, c, learning_rate=0.05, batch_factor=fs)) < ROUNDOFF
    ref_disc = discrete_additive_covariance(h, c, learning_rate=0.05, batch_factor=fs)
    assert _rel(disc, ref_disc) < ROUNDOFF
    assert _rel(exact, exact_solver(x, r, **kw).cov) < ROUNDOFF
    # the Gauss-Newton multiplicative term of one layer is the K(M) - H M H of the exact equation
    assert _rel(mult, exact) < 1e-8
    # "auto" is exact for one layer; the legacy signature reaches the same solver
    assert _rel(stationary_covariance(problem).cov, exact) < ROUNDOFF
    assert _rel(stationary_covariance(x, r, method="dense", **kw).cov, exact) < 1e-9


def test_linearized_problem_matches_layered_covariance(rng):
    x = rng.standard_normal((40, 4))
    y = x @ rng.standard_normal((4, 2)) + 0.5 * rng.standard_normal((40, 2))
    shapes = [(3, 4), (2, 3)]
    theta = nw.balanced_minimum(x, y, shapes)
    kw = dict(learning_rate=0.05, batch_size=5, sampling="with_replacement")
    problem = StationaryProblem.linearized(theta, shapes, x, y, **kw)
    for method in ("continuum", "discrete", "multiplicative"):
        front = stationary_covariance(problem, method=method).cov
        legacy = layered_covariance(theta, shapes, x, y, method=method, **kw).cov
        assert _rel(front, legacy) < ROUNDOFF
    with pytest.raises(ConfigError, match="single-layer"):
        stationary_covariance(problem, method="exact")


def test_unknown_method_names_the_choices(rng):
    x, r = _single(rng)
    problem = StationaryProblem.single_layer(
        x, r, learning_rate=0.05, batch_size=4, sampling="with_replacement"
    )
    with pytest.raises(ConfigError, match="'continuum'"):
        stationary_covariance(problem, method="bogus")


def test_toy_method_is_one_function_and_one_registration(rng):
    x, r = _single(rng)
    problem = StationaryProblem.single_layer(
        x, r, learning_rate=0.05, batch_size=4, sampling="with_replacement"
    )

    def isotropic(p: StationaryProblem) -> object:  # a toy theory: Σ = T I
        class Out:
            cov = 0.5 * p.batch_factor * p.learning_rate * np.eye(p.hessian.shape[0])

        return Out()

    METHODS.register("toy_isotropic", isotropic)  # the one registration line
    try:
        out = stationary_covariance(problem, method="toy_isotropic")
        assert np.allclose(out.cov, 0.5 * 0.25 * 0.05 * np.eye(8))
    finally:
        METHODS.unregister("toy_isotropic")


@pytest.mark.parametrize("method", ["discrete", "exact", "multiplicative"])
def test_learning_rate_exactly_at_the_bound_is_unstable(rng, method):
    x, r = _single(rng, n_out=1)
    lam_max = float(np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1])
    problem = StationaryProblem.single_layer(
        x, r, learning_rate=2.0 / lam_max, batch_size=4, sampling="with_replacement"
    )
    with pytest.raises(UnstableError, match="2/lambda_max"):
        stationary_covariance(problem, method=method)


def test_dense_solver_never_returns_a_non_psd_covariance(rng):
    # just below the deterministic bound the multiplicative noise has already made SGD
    # mean-square unstable: the solver must say so instead of returning an indefinite matrix
    x, r = _single(rng, n_out=1)
    lam_max = float(np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1])
    for factor in (0.999, 0.99, 0.9):
        try:
            out = exact_solver(
                x,
                r,
                learning_rate=factor * 2.0 / lam_max,
                batch_size=1,
                sampling="with_replacement",
                method="dense",
            )
        except UnstableError:
            continue
        assert np.linalg.eigvalsh(out.cov)[0] >= -1e-8 * np.abs(out.cov).max()
