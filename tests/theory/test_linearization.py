"""Linearization, symmetry null space and noise equilibrium of deep linear nets (SPEC §8)."""

from __future__ import annotations

import numpy as np
import pytest

from sgdfluct import networks as nw
from sgdfluct.theory import linearization as lin
from sgdfluct.theory import symmetry as sym

# central differences (step 1e-6) of polynomials with O(1) coefficients: error ~1e-9
FD_TOL = 1e-7
# identities that hold exactly in exact arithmetic: float64 round-off on O(10) numbers
EXACT_TOL = 1e-10


def _problem(rng, n_in, n_out, n_samples, noise=1.0):
    x = rng.standard_normal((n_samples, n_in))
    w0 = rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
    return x, x @ w0.T + noise * rng.standard_normal((n_samples, n_out))


@pytest.mark.parametrize("shapes", [[(3, 4), (2, 3)], [(3, 4), (3, 3), (2, 3)]])
def test_product_jacobian_matches_finite_differences(shapes, rng):
    theta = rng.standard_normal(nw.n_params(shapes))

    def vec_m(t):
        return nw.product(nw.unflatten(t, shapes)).ravel()

    eps = 1e-6
    fd = np.stack(
        [(vec_m(theta + eps * e) - vec_m(theta - eps * e)) / (2 * eps) for e in np.eye(theta.size)],
        axis=1,
    )
    np.testing.assert_allclose(lin.product_jacobian(theta, shapes), fd, atol=FD_TOL)


def test_two_layer_jacobian_is_the_kronecker_formula(rng):
    w1, w2 = rng.standard_normal((3, 5)), rng.standard_normal((2, 3))
    jac = lin.product_jacobian(nw.flatten([w1, w2]), [(3, 5), (2, 3)])
    expected = np.concatenate([np.kron(w2, np.eye(5)), np.kron(np.eye(2), w1.T)], axis=1)
    np.testing.assert_allclose(jac, expected, atol=EXACT_TOL)


@pytest.mark.parametrize("shapes", [[(3, 4), (2, 3)], [(3, 4), (3, 3), (2, 3)]])
def test_gauss_newton_is_pullback_of_product_hessian_everywhere(shapes, rng):
    x, y = _problem(rng, 4, 2, 15)
    theta = rng.standard_normal(nw.n_params(shapes))
    lz = lin.linearize(theta, shapes, x, y)
    jac = lz.per_sample_jacobians.reshape(-1, theta.size)
    np.testing.assert_allclose(lz.gauss_newton, jac.T @ jac / x.shape[0], atol=EXACT_TOL)


@pytest.mark.parametrize("shapes", [[(4, 6), (3, 4)], [(3, 6), (3, 3), (3, 3)]])
def test_hessian_and_noise_are_pullbacks_at_a_minimum(shapes, rng):
    x, y = _problem(rng, 6, 3, 40)
    theta = nw.balanced_minimum(x, y, shapes)
    lz = lin.linearize(theta, shapes, x, y)
    j = lz.jacobian
    np.testing.assert_allclose(lz.hessian, j.T @ lz.product_hessian @ j, atol=EXACT_TOL)
    np.testing.assert_allclose(lz.noise_cov, j.T @ lz.product_noise @ j, atol=EXACT_TOL)
    # product-space noise equals the single-layer formula at the least-squares minimum
    r = x @ nw.least_squares(x, y).T - y
    c0 = sum(np.kron(np.outer(a, a), np.outer(b, b)) for a, b in zip(r, x, strict=True)) / len(x)
    np.testing.assert_allclose(lz.product_noise, c0, atol=EXACT_TOL)


@pytest.mark.parametrize(
    "shapes", [[(3, 6), (4, 3)], [(3, 6), (3, 3), (4, 3)], [(2, 5), (2, 2), (2, 2), (3, 2)]]
)
def test_symmetry_directions_span_both_null_spaces_at_full_rank(shapes, rng):
    x, y = _problem(rng, shapes[0][1], shapes[-1][0], 50)
    theta = nw.balanced_minimum(x, y, shapes)
    # move along the orbit to a generic (unbalanced) point: W_1 -> A W_1, W_2 -> W_2 A^{-1}
    ws = nw.unflatten(theta, shapes)
    for l in range(len(ws) - 1):
        a = np.eye(shapes[l][0]) + 0.3 * rng.standard_normal((shapes[l][0],) * 2)
        ws[l], ws[l + 1] = a @ ws[l], ws[l + 1] @ np.linalg.inv(a)
    theta = nw.flatten(ws)
    check = sym.check_null_space(theta, shapes, x, y)
    assert check.expected_dim == sum(r * r for r, _ in shapes[:-1])
    assert not check.rank_deficient
    assert check.symmetry_rank == check.null_dim_hessian == check.null_dim_noise
    assert check.symmetry_rank == check.expected_dim
    assert check.symmetry_in_null_hessian < EXACT_TOL
    assert check.symmetry_in_null_noise < EXACT_TOL
    assert check.spans_null_space


def test_rank_deficiency_is_detected(rng):
    # N_h = 4 > N_o = 2 = rank of the product: two dead units, extra flat directions
    shapes = [(4, 6), (2, 4)]
    x, y = _problem(rng, 6, 2, 50)
    check = sym.check_null_space(nw.balanced_minimum(x, y, shapes), shapes, x, y)
    assert check.rank_deficient and check.product_rank == 2
    assert check.null_dim_hessian > check.symmetry_rank
    assert check.symmetry_rank < check.expected_dim
    assert not check.spans_null_space
    theta = nw.balanced_minimum(x, y, shapes)
    # 2 dead units x (N_i + N_o) directions
    assert lin.dead_unit_directions(theta, shapes).shape[1] == 2 * (6 + 2)
    h, _, _ = lin.live_range(theta, shapes, nw.hessian(theta, shapes, x, y))
    # live part: 2 units, 2*6 + 2*2 parameters minus GL(2) (4 directions)
    assert h.size == 2 * 6 + 2 * 2 - 4


def test_imbalance_is_conserved_along_gradient_flow(rng):
    shapes = [(3, 5), (2, 3)]
    x, y = _problem(rng, 5, 2, 30)
    theta0 = 0.5 * rng.standard_normal(nw.n_params(shapes))
    theta1 = nw.gradient_flow(theta0, shapes, x, y, time=20.0)
    # LSODA tolerance rtol 1e-10 over O(1) weights
    np.testing.assert_allclose(
        sym.imbalance(theta1, shapes)[0], sym.imbalance(theta0, shapes)[0], atol=1e-6
    )
    ev = sym.imbalance_eigenvalues(np.stack([theta0, theta1])[None], shapes)
    assert ev.shape == (1, 2, 1, 3)


@pytest.mark.parametrize("hidden", [2, 3, 5])
def test_noise_equilibrium_satisfies_the_balance_condition(hidden, rng):
    x, y = _problem(rng, 6, 3, 60)
    q, _ = np.linalg.qr(rng.standard_normal((hidden, hidden)))
    eq = sym.noise_equilibrium(x, y, hidden, rotation=q)
    w1, w2 = nw.unflatten(eq.theta, eq.shapes)
    np.testing.assert_allclose(w2.T @ eq.a_out @ w2, w1 @ eq.a_in @ w1.T, atol=EXACT_TOL)
    np.testing.assert_allclose(w2 @ w1, eq.product, atol=EXACT_TOL)
    assert eq.rank == min(hidden, 3)
    # it is a global minimum of the (reduced-rank) problem: gradient zero
    assert np.abs(nw.gradient(eq.theta, eq.shapes, x, y)).max() < EXACT_TOL
    # rotation invariance of the predicted imbalance spectrum
    ref = sym.noise_equilibrium(x, y, hidden)
    np.testing.assert_allclose(eq.imbalance_eigenvalues, ref.imbalance_eigenvalues, atol=EXACT_TOL)
    d = w1 @ w1.T - w2.T @ w2
    np.testing.assert_allclose(
        np.linalg.eigvalsh(d)[::-1], eq.imbalance_eigenvalues, atol=EXACT_TOL
    )


def test_multiplicative_variance_is_positive_semidefinite(rng):
    shapes = [(3, 4), (2, 3)]
    x, _ = _problem(rng, 4, 2, 20)
    theta = rng.standard_normal(nw.n_params(shapes))
    jac = nw.per_sample_jacobians(theta, shapes, x)
    a = rng.standard_normal((theta.size, theta.size))
    k, m = lin.gauss_newton_variance(a @ a.T, jac)
    # brute force with explicit per-sample Gauss-Newton matrices
    hs = np.einsum("poi,poj->pij", jac, jac)
    np.testing.assert_allclose(k, np.mean(hs @ (a @ a.T) @ hs, axis=0), rtol=1e-10, atol=1e-8)
    assert np.linalg.eigvalsh(k - m).min() > -1e-8 * np.abs(k).max()
