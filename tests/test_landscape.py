"""Tests of sgdfluct.landscape (SPEC §9; §10 claims 3, 6) and sgdfluct.plotting.landscape."""

from __future__ import annotations

import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import scipy.linalg as sla
from scipy import stats

from sgdfluct import landscape as ls
from sgdfluct import networks
from sgdfluct.config import DataConfig
from sgdfluct.data import make_dataset
from sgdfluct.plotting import landscape as lplot

# Double-precision round-off of eigen-decompositions and quadratic forms of O(1) matrices.
EXACT_RTOL = 1e-9
# brentq is run with xtol = 1e-13 on O(1) brackets; the closed form is exact.
BRENTQ_RTOL = 1e-9


def _random_psd(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((d, rank if rank is not None else d))
    return a @ a.T / d


def _two_layer_problem(
    rng: np.random.Generator, n_in: int = 6, n_hidden: int = 3, n_out: int = 2, n_samples: int = 30
):
    x = rng.standard_normal((n_samples, n_in))
    y = rng.standard_normal((n_samples, n_out))
    shapes = [(n_hidden, n_in), (n_out, n_hidden)]
    return x, y, shapes


def _continuum_linearized(theta, shapes, x, y, noise_cov=None, scale=1.0):
    """Σ_ab = scale C_ab / (h_a + h_b) in H's eigenbasis, zero on the null space (SPEC §8)."""
    hess = networks.hessian(theta, shapes, x, y)
    c = networks.noise_covariance(theta, shapes, x, y) if noise_cov is None else noise_cov
    h, v = np.linalg.eigh(hess)
    keep = h > h.max() * 1e-9
    vr, hr = v[:, keep], h[keep]
    return vr @ (scale * (vr.T @ c @ vr) / (hr[:, None] + hr[None, :])) @ vr.T


# ------------------------------------------------------------------ fluctuation directions


def test_fluctuation_directions_reconstruct_the_layer_block(rng):
    shapes = [(3, 4), (2, 3)]
    layer_idx = networks.layer_index(shapes)
    cov = _random_psd(rng, networks.n_params(shapes))
    for layer in (1, 2):
        dirs = ls.fluctuation_directions(cov, layer_idx, layer)
        idx = np.flatnonzero(layer_idx == layer)
        block = cov[np.ix_(idx, idx)]
        p = dirs.directions
        np.testing.assert_allclose(p @ p.T, np.eye(dirs.n_directions), atol=EXACT_RTOL)
        np.testing.assert_allclose((p.T * dirs.variances) @ p, block, atol=EXACT_RTOL)
        assert np.all(np.diff(dirs.variances) <= 0)
        assert dirs.n_dropped == 0


def test_fluctuation_directions_drop_null_directions(rng):
    shapes = [(2, 5)]
    cov = _random_psd(rng, 10, rank=6)
    dirs = ls.fluctuation_directions(cov, networks.layer_index(shapes), 1)
    assert (dirs.n_directions, dirs.n_dropped) == (6, 4)


def test_fluctuation_directions_reject_bad_arguments(rng):
    cov = _random_psd(rng, 4)
    idx = networks.layer_index([(2, 2)])
    with pytest.raises(ValueError, match="layer = 3"):
        ls.fluctuation_directions(cov, idx, 3)
    with pytest.raises(ValueError, match="layer_idx"):
        ls.fluctuation_directions(cov, idx[:3], 1)
    with pytest.raises(ValueError, match="rel_threshold"):
        ls.fluctuation_directions(cov, idx, 1, rel_threshold=1.5)
    with pytest.raises(ValueError, match="no positive variance"):
        ls.fluctuation_directions(np.zeros((4, 4)), idx, 1)


def test_window_covariances_estimate_the_covariance(rng):
    d, n_rep, n_time, n_windows = 3, 4, 2000, 4
    true = _random_psd(rng, d) + 0.2 * np.eye(d)
    traj = rng.standard_normal((n_rep, n_time, d)) @ np.linalg.cholesky(true).T
    covs = ls.window_covariances(traj, n_windows)
    assert covs.shape == (n_windows, d, d)
    # pooled over all windows the estimate uses N = R T samples; the standard error of a
    # covariance entry is sqrt((Σ_ii Σ_jj + Σ_ij^2) / N) -> 5 standard errors
    stderr = np.sqrt((np.outer(np.diag(true), np.diag(true)) + true**2) / (n_rep * n_time))
    assert np.all(np.abs(covs.mean(axis=0) - true) < 5 * stderr)
    wins = ls.window_directions(covs, np.ones(d, dtype=np.int64), 1)
    assert len(wins) == n_windows
    with pytest.raises(ValueError, match="n_windows"):
        ls.window_covariances(traj, n_time)


# ------------------------------------------------------------------ profiles and flatness


def test_quadratic_profile_equals_numeric_loss_along_each_layer(rng):
    x, y, shapes = _two_layer_problem(rng)
    theta = rng.standard_normal(networks.n_params(shapes))  # generic point: g != 0
    layer_idx = networks.layer_index(shapes)
    cov = _random_psd(rng, theta.size)
    s = np.linspace(-1.5, 1.5, 13)
    for layer in (1, 2):
        dirs = ls.fluctuation_directions(cov, layer_idx, layer)
        quad = ls.quadratic_profiles(theta, shapes, x, y, dirs)
        assert np.any(np.abs(quad.slopes) > 1e-3)
        numeric = np.array(
            [
                ls.loss_profile(
                    theta, shapes, x, y, ls.embed_direction(p, dirs.indices, theta.size), s
                )
                for p in dirs.directions
            ]
        )
        np.testing.assert_allclose(quad(s), numeric, rtol=EXACT_RTOL)


def test_flatness_closed_form_matches_brentq(rng):
    x, y, shapes = _two_layer_problem(rng)
    theta = rng.standard_normal(networks.n_params(shapes))
    dirs = ls.fluctuation_directions(_random_psd(rng, theta.size), networks.layer_index(shapes), 2)
    quad = ls.quadratic_profiles(theta, shapes, x, y, dirs)
    for factor in (math.e, 1.5):
        closed = ls.flatness_quadratic(quad.loss0, quad.slopes, quad.curvatures, factor=factor)
        for i, p in enumerate(dirs.directions):
            full = ls.embed_direction(p, dirs.indices, theta.size)

            def profile(si: float, full=full) -> float:
                return networks.loss(theta + si * full, shapes, x, y)

            numeric = ls.flatness_numeric(profile, factor=factor)
            assert numeric == pytest.approx(closed[i], rel=BRENTQ_RTOL)


def test_flatness_rejects_bad_arguments():
    with pytest.raises(ValueError, match="factor"):
        ls.flatness_quadratic(1.0, np.zeros(2), np.ones(2), factor=1.0)
    with pytest.raises(ValueError, match="curvatures"):
        ls.flatness_quadratic(1.0, np.zeros(2), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="flat direction"):
        ls.flatness_numeric(lambda s: 1.0 + 0.0 * s)
    with pytest.raises(ValueError, match="L_0 > 0"):
        ls.flatness_numeric(lambda s: s**2)


# ------------------------------------------------------------------ IVFR fit


def test_fit_recovers_an_exact_power_law(rng):
    var = rng.uniform(0.1, 10.0, size=20)
    psi = 0.7
    fit = ls.fit_ivfr(var, 3.0 * np.sqrt(var) ** (-psi), bootstrap=200, rng=rng)
    assert fit.psi == pytest.approx(psi, rel=EXACT_RTOL)
    assert fit.psi_ci[0] == pytest.approx(psi, rel=EXACT_RTOL)
    assert fit.psi_ci[1] == pytest.approx(psi, rel=EXACT_RTOL)
    assert fit.intercept == pytest.approx(math.log(3.0), rel=EXACT_RTOL)


def test_bootstrap_error_matches_ols_standard_error(rng):
    n, psi, noise = 200, 0.5, 0.3
    log_sigma = rng.uniform(-1.0, 1.0, size=n)
    log_f = 1.0 - psi * log_sigma + noise * rng.standard_normal(n)
    fit = ls.fit_ivfr(np.exp(2 * log_sigma), np.exp(log_f), bootstrap=1000, rng=rng)
    ols_se = noise / np.sqrt(np.sum((log_sigma - log_sigma.mean()) ** 2))
    # pairs-bootstrap SD vs the homoscedastic formula: Monte Carlo error of 1000 replicates
    # (~2 %) plus O(1/sqrt(n)) design differences -> 25 %
    assert fit.psi_stderr == pytest.approx(ols_se, rel=0.25)
    # the estimate itself lies within 4 standard errors of the truth
    assert abs(fit.psi - psi) < 4 * ols_se
    assert fit.psi_ci[0] < fit.psi < fit.psi_ci[1]


def test_fit_rejects_isotropic_and_invalid_data():
    with pytest.raises(ValueError, match="isotropic"):
        ls.fit_ivfr(np.ones(5), np.arange(1.0, 6.0), rng=0)
    with pytest.raises(ValueError, match="flatness"):
        ls.fit_ivfr(np.arange(1.0, 6.0), np.zeros(5), rng=0)
    with pytest.raises(ValueError, match=">= 3"):
        ls.fit_ivfr(np.arange(1.0, 3.0), np.ones(2), rng=0)
    with pytest.raises(ValueError, match="bootstrap"):
        ls.fit_ivfr(np.arange(1.0, 6.0), np.ones(5), bootstrap=0, rng=0)


def test_spearman_of_constant_input_is_nan():
    rho, p = ls.spearman(np.ones(4), np.arange(4.0))
    assert math.isnan(rho) and math.isnan(p)


def test_sign_convention_single_layer_with_known_spectrum(rng):
    """Σ = H^2: variance h^2 along H's eigenvectors, curvature h, F ∝ h^{-1/2} = σ^{-1/2}."""
    x = rng.standard_normal((30, 5))
    y = rng.standard_normal((30, 1))
    shapes = [(1, 5)]
    theta = networks.least_squares(x, y).ravel()
    hess = networks.hessian(theta, shapes, x, y)
    sharp = ls.ivfr_analysis(hess @ hess, theta, shapes, x, y, bootstrap=50, rng=rng)[1]
    assert sharp.psi == pytest.approx(0.5, rel=EXACT_RTOL)  # variance larger where sharper
    assert sharp.spearman == pytest.approx(-1.0)
    assert sharp.spearman_curvature == pytest.approx(1.0)
    assert sharp.variance_curvature_slope == pytest.approx(2.0, rel=EXACT_RTOL)
    flat = ls.ivfr_analysis(np.linalg.inv(hess), theta, shapes, x, y, bootstrap=50, rng=rng)[1]
    assert flat.psi == pytest.approx(-1.0, rel=EXACT_RTOL)  # variance larger where flatter
    assert flat.spearman == pytest.approx(1.0)


# ------------------------------------------------------------------ the analytic case of SPEC §9


def test_analytic_ivfr_with_commuting_gram_matrices(rng):
    """Whitened inputs, C = c H, W_1 W_1^T (a_j) and W_2^T W_2 (b_i) commuting (SPEC §9).

    Layer-2 PCs have variance T a_j / (a_j + b_i) and curvature a_j, T = (scale c) / 2.
    """
    n_in, n_hidden, n_out, n_samples = 6, 3, 3, 40
    q, _ = np.linalg.qr(rng.standard_normal((n_samples, n_in)))
    x = q * np.sqrt(n_samples)  # X^T X / P = I exactly
    y = rng.standard_normal((n_samples, n_out))
    u, s, vt = np.linalg.svd(networks.least_squares(x, y))
    a = np.array([0.5, 1.3, 3.1])
    b = s[:n_hidden] ** 2 / a  # product W_2 W_1 = W* (a global minimum, g = 0)
    w1 = np.sqrt(a)[:, None] * vt[:n_hidden]
    w2 = u[:, :n_hidden] * np.sqrt(b)[None, :]
    shapes = [(n_hidden, n_in), (n_out, n_hidden)]
    theta = networks.flatten([w1, w2])
    c, scale = 0.7, 0.02
    cov = _continuum_linearized(
        theta, shapes, x, y, noise_cov=c * networks.hessian(theta, shapes, x, y), scale=scale
    )
    temperature = scale * c / 2
    res = ls.ivfr_analysis(cov, theta, shapes, x, y, bootstrap=100, rng=rng)[2]

    var_ij = temperature * a[None, :] / (a[None, :] + b[:, None])  # [i, j]
    curv_ij = np.broadcast_to(a[None, :], var_ij.shape)
    order = np.argsort(var_ij.ravel())[::-1]
    expected_var, expected_curv = var_ij.ravel()[order], curv_ij.ravel()[order]
    assert np.min(np.abs(np.diff(expected_var))) > 1e-4 * temperature  # non-degenerate pairs
    np.testing.assert_allclose(res.variances, expected_var, rtol=EXACT_RTOL)
    np.testing.assert_allclose(res.curvatures, expected_curv, rtol=EXACT_RTOL)
    np.testing.assert_allclose(res.slopes, 0.0, atol=EXACT_RTOL)

    loss0 = networks.loss(theta, shapes, x, y)
    expected_flat = 2.0 * np.sqrt(2.0 * (math.e - 1.0) * loss0 / expected_curv)
    np.testing.assert_allclose(res.flatness, expected_flat, rtol=EXACT_RTOL)
    slope = stats.linregress(0.5 * np.log(expected_var), np.log(expected_flat)).slope
    assert res.psi == pytest.approx(-slope, rel=EXACT_RTOL)
    assert res.psi > 0  # variance grows with sharpness
    rho = stats.spearmanr(np.log(expected_var), np.log(expected_flat)).statistic
    rho_k = stats.spearmanr(np.log(expected_var), np.log(expected_curv)).statistic
    assert res.spearman == pytest.approx(rho, rel=EXACT_RTOL)
    assert res.spearman_curvature == pytest.approx(rho_k, rel=EXACT_RTOL)
    assert res.n_dropped == 0 and res.n_directions == n_out * n_hidden


# ------------------------------------------------------------------ the single layer (claim 3)

# SPEC §10 claim 3: "curvature along Σ's eigenvectors nearly constant". Measured ratio
# CV(k) / CV(eig H) = 0.26-0.45 for data seeds 0-4 (N_i = 20, P = 40, sigma = 1); the bound
# asks for at least a factor 2 below the Hessian's own spread.
CURVATURE_CV_RATIO_MAX = 0.5
# "weak IVFR": |Spearman| over N_i = 20 directions; measured 0.05-0.39 for seeds 0-4; the
# two-sided 1 % critical value of Spearman's rho at n = 20 is 0.57.
SPEARMAN_WEAK_MAX = 0.57


def test_single_layer_curvature_nearly_constant_along_lyapunov_pcs(global_random_seed):
    ds = make_dataset(
        DataConfig(n_in=20, n_out=1, n_samples=40, label_noise=1.0, seed=global_random_seed)
    )
    x, y, shapes = ds.inputs, ds.targets, [(1, 20)]
    theta = networks.least_squares(x, y).ravel()
    hess = networks.hessian(theta, shapes, x, y)
    c0 = networks.noise_covariance(theta, shapes, x, y)
    sigma = sla.solve_continuous_lyapunov(hess, 0.05 / 4 * c0)
    res = ls.ivfr_analysis(sigma, theta, shapes, x, y, bootstrap=200, rng=global_random_seed)[1]
    assert res.variance_span > 5  # anisotropic covariance
    assert res.curvature_cv < CURVATURE_CV_RATIO_MAX * res.hessian_cv
    assert abs(res.spearman) < SPEARMAN_WEAK_MAX


def test_continuum_covariance_of_c_equal_h_is_isotropic_and_has_no_ivfr(rng):
    x = rng.standard_normal((30, 5))
    y = rng.standard_normal((30, 1))
    shapes = [(1, 5)]
    theta = networks.least_squares(x, y).ravel()
    hess = networks.hessian(theta, shapes, x, y)
    sigma = sla.solve_continuous_lyapunov(hess, 2.0 * hess)  # C = c H -> Σ ∝ I
    with pytest.raises(ValueError, match="isotropic"):
        ls.ivfr_analysis(sigma, theta, shapes, x, y, bootstrap=10, rng=rng)


# ------------------------------------------------------------------ windows, summary, plots


def test_window_bootstrap(rng):
    x, y, shapes = _two_layer_problem(rng, n_in=5, n_hidden=2, n_out=2, n_samples=40)
    theta = networks.balanced_minimum(x, y, shapes)
    cov = _continuum_linearized(theta, shapes, x, y)
    same = np.broadcast_to(cov, (4, *cov.shape))
    res = ls.ivfr_analysis(cov, theta, shapes, x, y, window_covs=same, bootstrap=100, rng=rng)
    for r in res.values():
        assert r.n_windows == 4
        np.testing.assert_allclose(r.window_psi, r.psi, rtol=EXACT_RTOL)
        assert r.psi_ci[0] <= r.psi <= r.psi_ci[1]
    with pytest.raises(ValueError, match="window_covs"):
        ls.ivfr_analysis(cov, theta, shapes, x, y, window_covs=cov[None], rng=0)


def test_ivfr_summary_is_json(rng):
    x, y, shapes = _two_layer_problem(rng)
    theta = networks.balanced_minimum(x, y, shapes)
    res = ls.ivfr_analysis(
        _continuum_linearized(theta, shapes, x, y), theta, shapes, x, y, bootstrap=50, rng=rng
    )
    summary = ls.ivfr_summary(res)
    text = json.dumps(summary, allow_nan=False)
    block = json.loads(text)["ivfr"]
    assert set(block) == {"layer_1", "layer_2"}
    for key in ("psi", "psi_ci", "spearman", "spearman_curvature", "n_directions"):
        assert key in block["layer_2"]
    assert len(block["layer_2"]["psi_ci"]) == 2
    assert block["layer_2"]["n_directions"] == res[2].n_directions


def test_ivfr_analysis_rejects_bad_arguments(rng):
    x, y, shapes = _two_layer_problem(rng)
    theta = networks.balanced_minimum(x, y, shapes)
    cov = _continuum_linearized(theta, shapes, x, y)
    with pytest.raises(ValueError, match="must match"):
        ls.ivfr_analysis(cov[:-1, :-1], theta, shapes, x, y, rng=0)
    with pytest.raises(ValueError, match="layers"):
        ls.ivfr_analysis(cov, theta, shapes, x, y, layers=[3], rng=0)


def test_plots_return_axes(rng):
    x, y, shapes = _two_layer_problem(rng)
    theta = networks.balanced_minimum(x, y, shapes)
    res = ls.ivfr_analysis(
        _continuum_linearized(theta, shapes, x, y), theta, shapes, x, y, bootstrap=20, rng=rng
    )
    ax = lplot.plot_variance_flatness(res[2], others=[(res[1], "layer 1")])
    assert len(ax.collections) == 2 and len(ax.lines) == 2
    ax = lplot.plot_loss_profiles(res[2], n_profiles=3)
    assert len(ax.lines) == 3 + 2  # profiles + the two levels
    _, axes = plt.subplots(1, 2)
    assert lplot.plot_curvature_variance(res[1], ax=axes[0]) is axes[0]
    plt.close("all")
