"""Random-matrix laws for the spectra of H_x and C_0 (SPEC §7; §10 claims 1 and 3)."""

from __future__ import annotations

import numpy as np
import pytest

from sgdfluct.theory.discrete import stationary_covariance
from sgdfluct.theory.noise import least_squares_residuals, single_layer_noise_covariance
from sgdfluct.theory.spectra import (
    generalized_mp_cdf,
    generalized_mp_density,
    ks_distance,
    marchenko_pastur_cdf,
    marchenko_pastur_density,
    normalized_variance,
    single_layer_spectra,
    spectral_distance,
)

N_IN = 200
# KS bound: the 99 % quantile of the Kolmogorov distribution for N_IN i.i.d. draws,
# 1.63 / sqrt(N). Eigenvalues are far more rigid than i.i.d. draws, so a spectrum that follows
# its law lies well inside; the same bound rejects C_0 against the (wrong) MP law.
KS_BOUND = 1.63 / np.sqrt(N_IN)
# Quadrature error of the moments computed from the density on a 20000-point grid.
MOMENT_TOL = 2e-3


def residual_spectra(rng: np.random.Generator, alpha: float):
    p = int(alpha * N_IN)
    x = rng.standard_normal((p, N_IN))
    y = x @ rng.standard_normal(N_IN) / np.sqrt(N_IN) + rng.standard_normal(p)
    r = least_squares_residuals(x, y)
    return (
        x,
        r,
        np.linalg.eigvalsh(x.T @ x / p),
        np.linalg.eigvalsh(single_layer_noise_covariance(x, r)),
    )


def test_mp_density_normalized() -> None:
    q = 0.3
    grid = np.linspace(0, 3, 200001)
    mass = np.trapezoid(marchenko_pastur_density(grid, q), grid)
    assert mass == pytest.approx(1.0, abs=MOMENT_TOL)
    assert marchenko_pastur_cdf(np.array([10.0]), q)[0] == pytest.approx(1.0)


@pytest.mark.parametrize("q", [0.1, 0.5])
def test_generalized_mp_moments(q: float) -> None:
    """Mass 1, mean s, var/mean^2 = 3q (moments of the chi^2_1-weighted law: q E[t^2]/E[t]^2)."""
    s = 0.7
    grid = np.linspace(1e-9, 40 * s * (1 + np.sqrt(q)) ** 2, 20000)
    dens = generalized_mp_density(grid, q, s)
    mass = np.trapezoid(dens, grid)
    mean = np.trapezoid(grid * dens, grid)
    var = np.trapezoid(grid**2 * dens, grid) - mean**2
    assert mass == pytest.approx(1.0, abs=MOMENT_TOL)
    assert mean == pytest.approx(s, rel=MOMENT_TOL)
    assert var / mean**2 == pytest.approx(3 * q, rel=5 * MOMENT_TOL)


@pytest.mark.parametrize("alpha", [1.5, 4.0])
def test_ks_to_laws(rng: np.random.Generator, alpha: float) -> None:
    q = 1 / alpha
    _, _, he, ce = residual_spectra(rng, alpha)
    s = ce.mean()  # the weight scale sigma^2 (1 - q), as realized
    assert ks_distance(he, lambda v: marchenko_pastur_cdf(v, q)) < KS_BOUND
    assert ks_distance(ce, lambda v: generalized_mp_cdf(v, q, s)) < KS_BOUND
    # power: C_0 does not follow MP
    assert ks_distance(ce, lambda v: marchenko_pastur_cdf(v, q, scale=s)) > KS_BOUND


def test_spectral_distance_shrinks_with_alpha(rng: np.random.Generator) -> None:
    dist = [spectral_distance(*residual_spectra(rng, a)[3:1:-1]) for a in (1.5, 6.0, 24.0)]
    assert dist[0] > dist[1] > dist[2]
    _, _, he, ce = residual_spectra(rng, 4.0)
    # normalized variances: ~q and ~3q (finite-N fluctuations of the chi^2 tail: 15 %)
    assert normalized_variance(he) == pytest.approx(0.25, rel=0.15)
    assert normalized_variance(ce) == pytest.approx(0.75, rel=0.15)


def test_single_layer_no_ivfr(rng: np.random.Generator) -> None:
    """Claim 3: anisotropic Sigma, but curvature along its eigenvectors varies less than H."""
    x = rng.standard_normal((120, 40))
    y = x @ rng.standard_normal(40) / np.sqrt(40) + rng.standard_normal(120)
    r = least_squares_residuals(x, y)
    m = stationary_covariance(x, r, learning_rate=0.05, batch_size=4, sampling="with_replacement")
    h = x.T @ x / 120
    sp = single_layer_spectra(h, single_layer_noise_covariance(x, r), m.cov)
    assert sp.cov_anisotropy > 0.3
    assert sp.curvature_cv < sp.hessian_cv
