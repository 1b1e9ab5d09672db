"""Property tests of sgdfluct.landscape: invariances and agreement of independent methods."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgdfluct import landscape as ls
from sgdfluct import networks

# Round-off of eigen-decompositions / quadratic forms of well-conditioned O(1) matrices.
EXACT_RTOL = 1e-8
# brentq (xtol = 1e-13) against the closed form; profiles with F in [1e-3, 1e3].
BRENTQ_RTOL = 1e-8

seeds = st.integers(min_value=0, max_value=2**32 - 1)


@settings(max_examples=40, deadline=None)
@given(
    loss0=st.floats(0.05, 20.0),
    slope=st.floats(-5.0, 5.0),
    curvature=st.floats(0.05, 20.0),
    factor=st.floats(1.1, 5.0),
)
def test_closed_form_flatness_equals_root_finding(loss0, slope, curvature, factor):
    closed = ls.flatness_quadratic(loss0, np.array([slope]), np.array([curvature]), factor=factor)

    def profile(s: float) -> float:
        return loss0 + slope * s + 0.5 * curvature * s * s

    assert ls.flatness_numeric(profile, factor=factor) == pytest.approx(closed[0], rel=BRENTQ_RTOL)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, d=st.integers(3, 12))
def test_directions_are_orthonormal_and_reconstruct_the_block(seed, d):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    cov = a @ a.T + 1e-3 * np.eye(d)
    dirs = ls.fluctuation_directions(cov, np.ones(d, dtype=np.int64), 1)
    p = dirs.directions
    np.testing.assert_allclose(p @ p.T, np.eye(d), atol=EXACT_RTOL)
    scale = np.abs(cov).max()
    np.testing.assert_allclose((p.T * dirs.variances) @ p, cov, atol=EXACT_RTOL * scale)
    assert np.all(dirs.variances > 0)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, var_scale=st.floats(1e-3, 1e3), flat_scale=st.floats(1e-3, 1e3))
def test_psi_and_spearman_invariant_under_rescaling(seed, var_scale, flat_scale):
    """ψ is a log-log slope: rescaling σ² or F only moves the intercept."""
    rng = np.random.default_rng(seed)
    var = rng.uniform(0.1, 10.0, size=15)
    flat = np.exp(rng.standard_normal(15))
    base = ls.fit_ivfr(var, flat, bootstrap=30, rng=np.random.default_rng(1))
    scaled = ls.fit_ivfr(
        var_scale * var, flat_scale * flat, bootstrap=30, rng=np.random.default_rng(1)
    )
    assert scaled.psi == pytest.approx(base.psi, rel=EXACT_RTOL, abs=EXACT_RTOL)
    assert scaled.psi_ci == pytest.approx(base.psi_ci, rel=EXACT_RTOL, abs=EXACT_RTOL)
    assert ls.spearman(var_scale * var, flat)[0] == pytest.approx(ls.spearman(var, flat)[0])


@settings(max_examples=15, deadline=None)
@given(seed=seeds, n_hidden=st.integers(1, 3))
def test_two_layer_profiles_are_exactly_quadratic_in_one_layer(seed, n_hidden):
    rng = np.random.default_rng(seed)
    shapes = [(n_hidden, 4), (2, n_hidden)]
    x = rng.standard_normal((12, 4))
    y = rng.standard_normal((12, 2))
    theta = rng.standard_normal(networks.n_params(shapes))
    a = rng.standard_normal((theta.size, theta.size))
    layer = int(rng.integers(1, 3))
    dirs = ls.fluctuation_directions(a @ a.T, networks.layer_index(shapes), layer)
    quad = ls.quadratic_profiles(theta, shapes, x, y, dirs)
    s = np.array([-0.7, 0.3, 1.1])
    for i, p in enumerate(dirs.directions):
        full = ls.embed_direction(p, dirs.indices, theta.size)
        numeric = ls.loss_profile(theta, shapes, x, y, full, s)
        np.testing.assert_allclose(quad(s)[i], numeric, rtol=EXACT_RTOL, atol=EXACT_RTOL)
    assert np.all(quad.curvatures >= -EXACT_RTOL)  # convex along one layer
    assert math.isfinite(quad.loss0)
