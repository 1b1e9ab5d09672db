"""Property tests of the single-layer theory: symmetric PSD covariances and invariances."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sgdfluct.theory.discrete import stationary_covariance
from sgdfluct.theory.lyapunov import continuum_covariance
from sgdfluct.theory.noise import (
    least_squares_residuals,
    single_layer_hessian,
    single_layer_noise_covariance,
)

# round-off of the iterative solver (tol=1e-12) relative to the largest entry
TOL = 1e-9

problems = st.tuples(
    st.integers(2, 6),  # N_i
    st.integers(1, 2),  # N_o
    st.integers(0, 2**32 - 1),  # seed
    st.floats(0.01, 0.2),  # eta * lambda_max
    st.integers(2, 6),  # batch size
)


def build(n, n_out, seed):
    rng = np.random.default_rng(seed)
    p = 3 * n + 2
    x = rng.standard_normal((p, n))
    y = x @ rng.standard_normal((n, n_out)) + rng.standard_normal((p, n_out))
    return x, least_squares_residuals(x, y), rng


@settings(max_examples=25, deadline=None)
@given(problems)
def test_covariances_symmetric_psd(args) -> None:
    n, n_out, seed, scaled_eta, bs = args
    x, r, _ = build(n, n_out, seed)
    eta = scaled_eta / np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1]
    m = stationary_covariance(x, r, learning_rate=eta, batch_size=bs, sampling="with_replacement")
    assert np.array_equal(m.cov, m.cov.T)
    assert np.linalg.eigvalsh(m.cov)[0] >= -TOL * np.abs(m.cov).max()
    s = continuum_covariance(
        single_layer_hessian(x, n_out),
        single_layer_noise_covariance(x, r),
        learning_rate=eta,
        batch_factor=1 / bs,
    )
    assert np.linalg.eigvalsh(s)[0] >= -TOL * np.abs(s).max()


@settings(max_examples=25, deadline=None)
@given(problems)
def test_rotation_permutation_and_scale_invariance(args) -> None:
    """X -> X O rotates M by I ⊗ O; permuting samples changes nothing; r -> c r scales M by c^2."""
    n, n_out, seed, scaled_eta, bs = args
    x, r, rng = build(n, n_out, seed)
    eta = scaled_eta / np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1]
    kw = {"learning_rate": eta, "batch_size": bs, "sampling": "without_replacement"}
    m = stationary_covariance(x, r, **kw).cov
    scale = TOL * np.abs(m).max()
    o, _ = np.linalg.qr(rng.standard_normal((n, n)))
    big = np.kron(np.eye(n_out), o)
    m_rot = stationary_covariance(x @ o, r, **kw).cov
    np.testing.assert_allclose(m_rot, big.T @ m @ big, atol=scale)
    perm = rng.permutation(x.shape[0])
    np.testing.assert_allclose(stationary_covariance(x[perm], r[perm], **kw).cov, m, atol=scale)
    np.testing.assert_allclose(stationary_covariance(x, 3 * r, **kw).cov, 9 * m, atol=9 * scale)
