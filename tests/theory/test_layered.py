"""Layer-wise covariance theories on range(H_theta) (SPEC §8a) and the analytic check of SPEC §9."""

from __future__ import annotations

import numpy as np
import pytest

from sgdfluct import networks as nw
from sgdfluct.theory import layered as lay
from sgdfluct.theory.noise import batch_factor
from sgdfluct.theory.symmetry import noise_equilibrium

# closed forms evaluated in float64 on O(1) numbers: round-off only
EXACT_TOL = 1e-10
# the multiplicative fixed point stops at a relative change of 1e-10 (its default tol)
FIXED_POINT_TOL = 1e-8


def _problem(rng, n_in=5, n_out=3, n_samples=40):
    x = rng.standard_normal((n_samples, n_in))
    w0 = rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
    return x, x @ w0.T + rng.standard_normal((n_samples, n_out))


def test_analytic_case_of_spec_section_9(rng):
    """Whitened inputs, C_M = c H_M, commuting Grams: layer-2 variance T a_j / (a_j + b_i)."""
    n_in, n_h, n_out, p = 5, 3, 4, 40
    q, _ = np.linalg.qr(rng.standard_normal((p, n_in)))
    x = np.sqrt(p) * q  # X^T X / P = I exactly
    a = np.array([0.5, 1.3, 2.9])  # eigenvalues of W_1 W_1^T
    b = np.array([0.8, 0.2, 1.7])  # eigenvalues of W_2^T W_2
    w1 = np.zeros((n_h, n_in))
    w1[:, :n_h] = np.diag(np.sqrt(a))
    w2 = np.zeros((n_out, n_h))
    w2[:n_h] = np.diag(np.sqrt(b))
    shapes = [(n_h, n_in), (n_out, n_h)]
    theta = nw.flatten([w1, w2])
    y = x @ (w2 @ w1).T  # zero residual: exact Hessian = J^T H_M J
    hess = nw.hessian(theta, shapes, x, y)
    c, eta, f_s = 0.7, 0.05, 0.1
    cov, _, _ = lay.solve_linearized(
        hess, c * hess, learning_rate=eta, batch_factor=f_s, discrete=False
    )
    temperature = f_s * eta * c / 2
    b_out = np.concatenate([b, np.zeros(n_out - n_h)])  # outputs beyond N_h have no partner
    expected = temperature * a[None, :] / (a[None, :] + b_out[:, None])  # (N_o, N_h)
    block = lay.layer_block(cov, shapes, 2)
    np.testing.assert_allclose(block, np.diag(expected.ravel()), atol=EXACT_TOL)
    # curvature along the layer-2 PCs (unit vectors of W_2 entries (i, j)) is a_j
    curv = np.diag(lay.layer_block(hess, shapes, 2)).reshape(n_out, n_h)
    np.testing.assert_allclose(curv, np.broadcast_to(a, (n_out, n_h)), atol=EXACT_TOL)


def test_commuting_case_closed_forms(rng):
    x, y = _problem(rng)
    shapes = [(3, 5), (3, 3)]
    theta = noise_equilibrium(x, y, 3).theta
    hess = nw.hessian(theta, shapes, x, y)
    eta, f_s, c = 0.1, 0.25, 2.0
    h, v = np.linalg.eigh(hess)
    keep = h > 1e-7 * h[-1]
    h, v = h[keep], v[:, keep]
    cont, _, _ = lay.solve_linearized(
        hess, c * hess, learning_rate=eta, batch_factor=f_s, discrete=False
    )
    np.testing.assert_allclose(cont, f_s * eta * c / 2 * v @ v.T, atol=EXACT_TOL)
    disc, _, _ = lay.solve_linearized(hess, c * hess, learning_rate=eta, batch_factor=f_s)
    np.testing.assert_allclose(disc, f_s * eta * c * (v / (2 - eta * h)) @ v.T, atol=EXACT_TOL)


@pytest.mark.parametrize("method", ["continuum", "discrete", "multiplicative"])
@pytest.mark.parametrize("shapes", [[(3, 5), (3, 3)], [(2, 5), (2, 2), (3, 2)]])
def test_residuals_of_each_method(method, shapes, rng):
    x, y = _problem(rng)
    theta = nw.balanced_minimum(x, y, shapes)
    res = lay.layered_covariance(
        theta,
        shapes,
        x,
        y,
        learning_rate=0.1,
        batch_size=4,
        sampling="with_replacement",
        method=method,
    )
    assert res.converged
    assert res.residual < (EXACT_TOL if method != "multiplicative" else FIXED_POINT_TOL)
    assert np.allclose(res.cov, res.cov.T)
    assert np.linalg.eigvalsh(res.cov).min() > -EXACT_TOL * np.abs(res.cov).max()
    # zero on the null space (orbit directions)
    null = res.range_basis.shape[0] - res.range_basis.shape[1]
    assert null == sum(r * r for r, _ in shapes[:-1])
    resid_null = (
        res.cov
        - res.range_basis @ (res.range_basis.T @ res.cov @ res.range_basis) @ res.range_basis.T
    )
    assert np.abs(resid_null).max() < EXACT_TOL


def test_renormalized_converges_and_is_self_consistent(rng):
    x, y = _problem(rng)
    shapes = [(3, 5), (3, 3)]
    theta = noise_equilibrium(x, y, 3).theta
    kw = dict(learning_rate=0.1, batch_size=4, sampling="with_replacement")
    res = lay.layered_covariance(
        theta,
        shapes,
        x,
        y,
        method="renormalized",
        renorm_iterations=6,
        n_monte_carlo=64,
        rng=np.random.default_rng(3),
        **kw,
    )
    disc = lay.layered_covariance(theta, shapes, x, y, method="discrete", **kw)
    assert res.converged
    # geometric convergence of the fixed point: the rate is O(eta f_S) ~ 0.03 per iteration
    assert res.residual < 1e-5
    # a correction, not a different answer: within 20 % of the discrete solution here
    assert lay.relative_frobenius_error(res.cov, disc.cov) < 0.2
    with pytest.raises(ValueError, match="rng"):
        lay.layered_covariance(theta, shapes, x, y, method="renormalized", **kw)


def test_discrete_correction_is_first_order_in_eta(rng):
    x, y = _problem(rng)
    shapes = [(3, 5), (3, 3)]
    theta = noise_equilibrium(x, y, 3).theta
    rel = []
    for eta in (0.02, 0.01):
        kw = dict(learning_rate=eta, batch_size=4, sampling="with_replacement")
        c = lay.layered_covariance(theta, shapes, x, y, method="continuum", **kw).cov
        d = lay.layered_covariance(theta, shapes, x, y, method="discrete", **kw).cov
        rel.append(lay.relative_frobenius_error(c, d))
    # O(eta) correction: halving eta halves it up to O(eta^2) terms (~ eta h_max ~ 5 %)
    assert rel[0] / rel[1] == pytest.approx(2.0, rel=0.1)


def test_batch_factor_and_errors(rng):
    # one f_S for the whole theory package (theory.noise), arguments (S, P, sampling)
    assert batch_factor(10, 100, "with_replacement") == pytest.approx(0.1)
    assert batch_factor(10, 100, "without_replacement") == pytest.approx(90 / 990)
    assert batch_factor(100, 100, "without_replacement") == 0.0
    assert batch_factor(10, 100, "epoch_shuffle") == batch_factor(10, 100, "without_replacement")
    with pytest.raises(ValueError, match="sampling"):
        batch_factor(2, 10, "bogus")
    with pytest.raises(ValueError, match="batch_size"):
        batch_factor(20, 10, "without_replacement")
    x, y = _problem(rng)
    shapes = [(3, 5), (3, 3)]
    theta = nw.balanced_minimum(x, y, shapes)
    res = lay.layered_covariance(
        theta, shapes, x, y, learning_rate=0.1, batch_size=4, sampling="epoch_shuffle"
    )
    assert not res.sampling_exact
    assert res.batch_factor == batch_factor(4, x.shape[0], "epoch_shuffle")
    with pytest.raises(ValueError, match="unstable"):
        lay.layered_covariance(
            theta,
            shapes,
            x,
            y,
            learning_rate=50.0,
            batch_size=4,
            sampling="with_replacement",
            method="discrete",
        )
    with pytest.raises(ValueError, match="method"):
        lay.layered_covariance(
            theta,
            shapes,
            x,
            y,
            learning_rate=0.1,
            batch_size=4,
            sampling="with_replacement",
            method="bogus",  # type: ignore[arg-type]
        )
