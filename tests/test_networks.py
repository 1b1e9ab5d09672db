"""Networks: analytic derivatives against finite differences, minima, parameter order."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sgdfluct import networks as nw

# central differences with step 1e-6 in float64: truncation ~1e-12, round-off ~1e-10 * scale
FD_TOL = 1e-6


def _fd_grad(f, x, eps=1e-6):
    return np.array([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in np.eye(x.size)])


@pytest.mark.parametrize("shapes", [[(2, 4)], [(3, 4), (2, 3)], [(3, 4), (2, 3), (2, 2)]])
def test_gradient_and_hessian_match_finite_differences(shapes, rng):
    x = rng.standard_normal((7, shapes[0][1]))
    y = rng.standard_normal((7, shapes[-1][0]))
    theta = rng.standard_normal(nw.n_params(shapes))
    g = nw.gradient(theta, shapes, x, y)
    np.testing.assert_allclose(g, _fd_grad(lambda t: nw.loss(t, shapes, x, y), theta), atol=FD_TOL)
    np.testing.assert_allclose(nw.per_sample_gradients(theta, shapes, x, y).mean(0), g, atol=1e-12)
    h = nw.hessian(theta, shapes, x, y)
    fd_h = np.array(
        [
            (
                nw.gradient(theta + 1e-6 * e, shapes, x, y)
                - nw.gradient(theta - 1e-6 * e, shapes, x, y)
            )
            / 2e-6
            for e in np.eye(theta.size)
        ]
    )
    np.testing.assert_allclose(h, fd_h, atol=FD_TOL * max(1.0, np.abs(h).max()))
    np.testing.assert_allclose(h, h.T, atol=1e-12)


@pytest.mark.parametrize(
    "shapes", [[(2, 4)], [(3, 4), (2, 3)], [(5, 6), (5, 5), (3, 5)], [(4, 3), (2, 4), (3, 2)]]
)
@pytest.mark.parametrize("chunk", [None, 1])
def test_hessian_sum_equals_the_sum_of_hessians(shapes, chunk, rng, monkeypatch):
    """The batched sum (one contraction per block) against the loop over :func:`hessian`, in
    one chunk and with one point per chunk; rounding of the summation order only."""
    if chunk is not None:
        monkeypatch.setattr(nw, "SUM_CHUNK_ENTRIES", chunk)
    x = rng.standard_normal((9, shapes[0][1]))
    y = rng.standard_normal((9, shapes[-1][0]))
    thetas = rng.standard_normal((11, nw.n_params(shapes)))
    loop = sum(nw.hessian(t, shapes, x, y) for t in thetas)
    np.testing.assert_allclose(
        nw.hessian_sum(thetas, shapes, x, y), loop, rtol=0, atol=1e-13 * np.abs(loop).max()
    )


def test_parameter_order_is_row_major_forward(rng):
    w1, w2 = rng.standard_normal((3, 4)), rng.standard_normal((2, 3))
    theta = nw.flatten([w1, w2])
    np.testing.assert_array_equal(theta[:12], w1.ravel())
    np.testing.assert_array_equal(theta[4], w1[1, 0])
    np.testing.assert_array_equal(nw.layer_index([(3, 4), (2, 3)]), [1] * 12 + [2] * 6)


def test_noise_covariance_definition(rng):
    shapes = [(2, 3)]
    x, y = rng.standard_normal((9, 3)), rng.standard_normal((9, 2))
    theta = rng.standard_normal(6)
    g = nw.per_sample_gradients(theta, shapes, x, y)
    c = g.T @ g / 9 - np.outer(g.mean(0), g.mean(0))
    np.testing.assert_allclose(nw.noise_covariance(theta, shapes, x, y), c, atol=1e-12)


@pytest.mark.parametrize("depth", [2, 3])
def test_balanced_minimum_is_balanced_critical_point(depth, rng):
    x, y = rng.standard_normal((30, 5)), rng.standard_normal((30, 3))
    shapes = [(4, 5)] + [(4, 4)] * (depth - 2) + [(3, 4)]
    theta = nw.balanced_minimum(x, y, shapes)
    assert np.abs(nw.gradient(theta, shapes, x, y)).max() < 1e-12
    ws = nw.unflatten(theta, shapes)
    for lower, upper in itertools.pairwise(ws):
        np.testing.assert_allclose(lower @ lower.T, upper.T @ upper, atol=1e-12)
    # product equals the least-squares solution (N_h >= rank)
    np.testing.assert_allclose(nw.product(ws), nw.least_squares(x, y), atol=1e-12)


def test_gradient_flow_reaches_minimum(rng):
    x, y = rng.standard_normal((30, 4)), rng.standard_normal((30, 2))
    shapes = [(3, 4), (2, 3)]
    theta0 = 0.3 * rng.standard_normal(nw.n_params(shapes))
    end = nw.gradient_flow(theta0, shapes, x, y, time=2e3)
    assert np.abs(nw.gradient(end, shapes, x, y)).max() < 1e-7
    np.testing.assert_allclose(
        nw.loss(end, shapes, x, y),
        nw.loss(nw.balanced_minimum(x, y, shapes), shapes, x, y),
        rtol=1e-8,
    )
