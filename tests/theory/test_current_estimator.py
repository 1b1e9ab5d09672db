"""The simulated probability current (lag-1 antisymmetric part) against the exact theory.

E[u_k u_{k+1}^T] = M (1 - eta H) holds exactly for SGD on the single layer, so the estimator
(lag1 - lag1^T) / (2 eta) targets ½[H, M] with M the exact discrete-time covariance. The engine's
standard error of the antisymmetric part must be calibrated: z-scores of the upper-triangle
entries have mean square ≈ 1.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from sgdfluct import networks
from sgdfluct.config import DataConfig
from sgdfluct.data import make_dataset
from sgdfluct.simulate import simulate
from sgdfluct.theory.discrete import stationary_covariance
from sgdfluct.theory.noise import least_squares_residuals

# band for mean(z^2) over the n upper-triangle entries: chi^2_n / n quantiles at 1e-4 two-sided
# (entries are correlated, which widens the true spread; a 20x overstated error gives ~0.0025)
TAIL = 1e-4


def test_current_matches_theory_within_calibrated_errors(global_random_seed):
    data = make_dataset(DataConfig(n_in=5, n_out=2, n_samples=20, seed=global_random_seed))
    x, y = data.inputs, data.targets
    shapes = [(2, 5)]
    eta, batch = 0.1, 4
    theta = networks.least_squares(x, y).ravel()
    exact = stationary_covariance(
        x,
        least_squares_residuals(x, y),
        learning_rate=eta,
        batch_size=batch,
        sampling="with_replacement",
    )
    hess = networks.hessian(theta, shapes, x, y)
    q_theory = 0.5 * (hess @ exact.cov - exact.cov @ hess)
    sim = simulate(
        x,
        y,
        shapes,
        theta,
        learning_rate=eta,
        batch_size=batch,
        steps=60_000,
        burn_in=2_000,
        record_every=3,
        replicas=32,
        seed=global_random_seed,
    )
    q_sim = (sim.lag1 - sim.lag1.T) / (2 * eta)
    se = sim.lag1_antisym_stderr / (2 * eta)
    iu = np.triu_indices(theta.size, 1)
    z = (q_sim - q_theory)[iu] / se[iu]
    n = z.size
    lo, hi = stats.chi2.ppf([TAIL / 2, 1 - TAIL / 2], n) / n
    assert lo < np.mean(z**2) < hi, (np.mean(z**2), lo, hi)
