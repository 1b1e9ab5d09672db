"""Property tests of the numerics: simulated covariances are symmetric PSD; Hessian, noise
covariance and SGD itself are equivariant under permuting hidden units; H and C are invariant
under permuting samples."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sgdfluct import networks
from sgdfluct.simulate import simulate

#: round-off tolerance relative to the largest entry: products of a few float64 matmuls whose
#: summation order differs between the permuted and unpermuted problems
ROUND_OFF = 1e-10

problems = st.tuples(
    st.integers(1, 4),  # N_i
    st.integers(1, 2),  # N_o
    st.integers(2, 4),  # hidden units
    st.integers(0, 2**32 - 1),  # seed
)


def _problem(n_in: int, n_out: int, seed: int, p: int | None = None):
    rng = np.random.default_rng(seed)
    p = p or 4 * n_in + 8
    x = rng.standard_normal((p, n_in))
    y = x @ rng.standard_normal((n_in, n_out)) + 0.5 * rng.standard_normal((p, n_out))
    return x, y, rng


def _hidden_permutation(shapes: list[tuple[int, int]], perm: np.ndarray) -> np.ndarray:
    """Parameter index map of a two-layer net whose hidden units are permuted by ``perm``."""
    (h, n_in), (n_out, _) = shapes
    first = np.arange(h * n_in).reshape(h, n_in)[perm]
    second = (h * n_in + np.arange(n_out * h)).reshape(n_out, h)[:, perm]
    return np.concatenate([first.ravel(), second.ravel()])


@settings(max_examples=15, deadline=None)
@given(problems)
def test_simulated_covariance_symmetric_psd(args):
    n_in, n_out, _, seed = args
    x, y, _ = _problem(n_in, n_out, seed)
    shapes = [(n_out, n_in)]
    theta = networks.least_squares(x, y).ravel()
    lam = np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1]
    sim = simulate(
        x,
        y,
        shapes,
        theta,
        learning_rate=0.2 / lam,
        batch_size=2,
        steps=600,
        burn_in=100,
        record_every=2,
        replicas=2,
        seed=seed,
        engine="numpy",
    )
    assert np.array_equal(sim.cov, sim.cov.T)
    assert np.linalg.eigvalsh(sim.cov)[0] >= -ROUND_OFF * np.abs(sim.cov).max()
    assert np.all(sim.cov_stderr >= 0)


@settings(max_examples=25, deadline=None)
@given(problems)
def test_hessian_and_noise_equivariant_under_hidden_permutation(args):
    n_in, n_out, hidden, seed = args
    x, y, rng = _problem(n_in, n_out, seed)
    shapes = [(hidden, n_in), (n_out, hidden)]
    theta = rng.standard_normal(networks.n_params(shapes)) / np.sqrt(hidden)
    index = _hidden_permutation(shapes, rng.permutation(hidden))
    for quantity in (networks.hessian, networks.noise_covariance):
        a = quantity(theta, shapes, x, y)
        b = quantity(theta[index], shapes, x, y)
        np.testing.assert_allclose(b, a[np.ix_(index, index)], atol=ROUND_OFF * np.abs(a).max())
    np.testing.assert_allclose(
        networks.forward(theta[index], shapes, x), networks.forward(theta, shapes, x), atol=1e-12
    )


@settings(max_examples=25, deadline=None)
@given(problems)
def test_hessian_and_noise_invariant_under_permuting_samples(args):
    n_in, n_out, hidden, seed = args
    x, y, rng = _problem(n_in, n_out, seed)
    shapes = [(hidden, n_in), (n_out, hidden)]
    theta = rng.standard_normal(networks.n_params(shapes))
    perm = rng.permutation(x.shape[0])
    for quantity in (networks.hessian, networks.noise_covariance):
        a = quantity(theta, shapes, x, y)
        np.testing.assert_allclose(
            quantity(theta, shapes, x[perm], y[perm]), a, atol=ROUND_OFF * np.abs(a).max()
        )


@settings(max_examples=8, deadline=None)
@given(problems)
@example((1, 1, 2, 231141))  # lambda_max(H) = 0.02 at a near-zero product: 0.1 / it diverged
def test_sgd_equivariant_under_hidden_permutation(args):
    """Same batches, permuted hidden units: every replica's trajectory is the permuted one, so
    the simulated mean and covariance are permuted (to round-off)."""
    n_in, n_out, hidden, seed = args
    x, y, rng = _problem(n_in, n_out, seed)
    shapes = [(hidden, n_in), (n_out, hidden)]
    theta = networks.balanced_minimum(x, y, shapes)
    index = _hidden_permutation(shapes, rng.permutation(hidden))
    lam = np.linalg.eigvalsh(networks.hessian(theta, shapes, x, y))[-1]
    # at a balanced minimum with a small product the weights are small and so is lambda_max(H);
    # SGD's noise moves them along the orbit to where the curvature is of the data's scale
    lam_x = np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1]
    kw = {
        "learning_rate": 0.1 / max(lam, lam_x),
        "batch_size": 2,
        "steps": 400,
        "burn_in": 50,
        "record_every": 2,
        "replicas": 2,
        "seed": seed,
        "engine": "numpy",
    }
    a = simulate(x, y, shapes, theta, **kw)
    b = simulate(x, y, shapes, theta[index], **kw)
    scale = np.abs(a.cov).max()
    np.testing.assert_allclose(b.final, a.final[:, index], atol=ROUND_OFF * np.abs(a.final).max())
    np.testing.assert_allclose(b.cov, a.cov[np.ix_(index, index)], atol=ROUND_OFF * scale + 1e-300)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(0, 2**32 - 1),
    st.floats(1.9, 2.0),
    st.integers(1, 9),
    st.sampled_from(["with_replacement", "without_replacement"]),
)
def test_exact_solver_near_the_stability_edge_is_psd_or_unstable(n_in, seed, edge, batch, mode):
    """At eta lambda_max in [1.9, 2]: either UnstableError, or a converged PSD covariance."""
    from sgdfluct.errors import UnstableError
    from sgdfluct.theory.discrete import stationary_covariance
    from sgdfluct.theory.noise import least_squares_residuals

    x, y, _ = _problem(n_in, 1, seed, p=10)
    eta = edge / np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1]
    try:
        result = stationary_covariance(
            x,
            least_squares_residuals(x, y),
            learning_rate=eta,
            batch_size=batch,
            sampling=mode,
            method="dense",
        )
    except UnstableError:
        return
    cov = result.cov
    if result.converged:
        assert np.linalg.eigvalsh(cov)[0] >= -ROUND_OFF * np.abs(cov).max()
