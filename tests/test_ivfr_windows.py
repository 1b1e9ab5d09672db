"""``run``'s calibrated IVFR estimate from window covariances (docs/theory.md §9; issue 17)."""

from __future__ import annotations

import numpy as np

from sgdfluct import networks
from sgdfluct.landscape import ivfr_analysis, ivfr_summary


def _problem(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x = rng.standard_normal((400, 6)) * np.geomspace(0.3, 3.0, 6)
    y = x @ rng.standard_normal((6, 2)) + 0.5 * rng.standard_normal((400, 2))
    theta = networks.least_squares(x, y).ravel()
    hess = networks.hessian(theta, [(2, 6)], x, y)
    return x, y, theta, hess


def _windows(cov: np.ndarray, n_windows: int, records: int, rng: np.random.Generator) -> np.ndarray:
    chol = np.linalg.cholesky(cov)
    out = []
    for _ in range(n_windows):
        z = rng.standard_normal((records, cov.shape[0])) @ chol.T
        out.append(np.cov(z.T))
    return np.asarray(out)


def test_windowed_estimate_recovers_psi_one_and_reports_the_estimator() -> None:
    """Σ = H at a least-squares minimum (g = 0, F ∝ k^{-1/2}): ψ = 1. Twelve windows of 2000
    independent records: the calibrated interval covers 1, the PCA fit moves to psi_pca."""
    rng = np.random.default_rng(0)
    x, y, theta, hess = _problem(rng)
    covs = _windows(hess, 12, 2000, rng)
    res = ivfr_analysis(covs.mean(0), theta, [(2, 6)], x, y, window_covs=covs, bootstrap=50, rng=1)
    cal = res[1].calibrated
    assert cal is not None and cal.psi_ci[0] <= 1.0 <= cal.psi_ci[1]
    block = ivfr_summary(res)["ivfr"]["layer_1"]
    assert block["estimator"] == "split_eiv" and block["psi"] == cal.psi
    assert block["psi_pca"] is not None and "calibrated" in block


def test_isotropic_windows_give_no_psi() -> None:
    """Σ = I (no relation): the calibrated estimate is not identified (psi null, with the
    reason)."""
    rng = np.random.default_rng(1)
    x, y, theta, _ = _problem(rng)
    covs = _windows(np.eye(12), 12, 2000, rng)
    res = ivfr_analysis(covs.mean(0), theta, [(2, 6)], x, y, window_covs=covs, bootstrap=50, rng=1)
    block = ivfr_summary(res)["ivfr"]["layer_1"]
    assert block["psi"] is None and "not identified" in block["calibrated"]["note"]


def test_few_windows_keep_the_pca_fit_labelled() -> None:
    rng = np.random.default_rng(2)
    x, y, theta, hess = _problem(rng)
    covs = _windows(hess, 3, 500, rng)
    res = ivfr_analysis(covs.mean(0), theta, [(2, 6)], x, y, window_covs=covs, bootstrap=20, rng=1)
    block = ivfr_summary(res)["ivfr"]["layer_1"]
    assert block["estimator"] == "pca" and "psi_pca" not in block
