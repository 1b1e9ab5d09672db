"""The linear control (docs/theory.md §11): a single linear layer on teacher-student data.

No symmetries, so the raw PCA is meaningful: the probe's covariance, along the top eigenvectors of
the exact discrete-time theory of ``run`` (:func:`sgdfluct.theory.stationary_covariance`, same
data, same SGD), agrees with the theory within the statistical error estimated from independent
SGD replicas (windows of ~200 relaxation times 1/(η h_min)).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from sgdfluct.probe import load_data, probe_config_from_dict, run_probe  # noqa: E402
from sgdfluct.theory.discrete import stationary_covariance  # noqa: E402
from sgdfluct.theory.noise import least_squares_residuals  # noqa: E402

#: independent SGD replicas (seeds) giving the standard error of each variance
REPLICAS = 6
#: two-sided 99 % Student-t quantile for REPLICAS - 1 degrees of freedom (4 checks: ~4 % chance
#: of a false failure in total)
T_QUANTILE = float(stats.t.ppf(0.995, REPLICAS - 1))
#: a window-mean-centered variance is biased low by ~2 tau / window (tau = 1/(eta h_min) ~ 50
#: steps for alpha = 8, window 10000): ~1 %; 1.5 % is added to the tolerance
CENTERING_BIAS = 0.015


def _config(seed: int) -> dict:
    return {
        "data": {
            "dataset": "teacher_student",
            "n_in": 5,
            "n_out": 2,
            "n_samples": 40,
            "label_noise": 1.0,
            "seed": 3,
            "n_test": 50,
        },
        "model": {"kind": "linear", "hidden": [], "loss": "mse"},
        "init": {"scale": 1.0, "seed": seed},
        "sgd": {
            "learning_rate": 0.05,
            "batch_size": 3,
            "sampling": "with_replacement",
            "steps": 25_000,
            "record_every": 2,
            "seed": seed,
        },
        "probe": {"top_k": 10, "window": 10_000, "bootstrap": 20},
    }


@pytest.mark.slow
def test_single_layer_probe_matches_exact_theory() -> None:
    cfg = probe_config_from_dict(_config(0))
    data = load_data(cfg)
    x, y = data.x.numpy(), data.y.numpy()
    theory = stationary_covariance(
        x,
        least_squares_residuals(x, y),
        learning_rate=0.05,
        batch_size=3,
        sampling="with_replacement",
    ).cov
    evals, evecs = np.linalg.eigh(theory)
    top = evecs[:, ::-1][:, :3].T  # theory's top-3 directions (rows)
    want = np.concatenate([evals[::-1][:3], [np.trace(theory)]])
    got = []
    for seed in range(1, REPLICAS + 1):
        run, _ = run_probe(probe_config_from_dict(_config(seed)))
        layer = run.layers[0]
        assert layer.sketch_exact and layer.k == 10
        cov = layer.directions.T @ np.diag(layer.variances) @ layer.directions
        got.append(np.concatenate([np.einsum("ia,ab,ib->i", top, cov, top), [np.trace(cov)]]))
    got_arr = np.asarray(got)
    mean = got_arr.mean(0)
    se = got_arr.std(0, ddof=1) / np.sqrt(REPLICAS)
    tol = T_QUANTILE * se + CENTERING_BIAS * want
    assert np.all(np.abs(mean - want) <= tol), (mean / want, se / want)
