"""The probe's calibrated ψ estimate (docs/theory.md §9, §11; issue 17).

On the single linear layer the exact discrete-time theory of ``run`` gives Σ: the probe's
second-half variances along its frozen directions must agree with ``pᵀ Σ p`` within the standard
errors it reports (its AR(1) errors are what the errors-in-variables fit relies on).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from sgdfluct.errors import ConfigError  # noqa: E402
from sgdfluct.probe import load_data, probe_config_from_dict, run_probe  # noqa: E402
from sgdfluct.theory.discrete import stationary_covariance  # noqa: E402
from sgdfluct.theory.noise import least_squares_residuals  # noqa: E402


def _config(**probe: object) -> dict:
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
        "init": {"scale": 1.0, "seed": 0},
        "sgd": {
            "learning_rate": 0.05,
            "batch_size": 3,
            "sampling": "with_replacement",
            "steps": 30_000,
            "record_every": 2,
            "seed": 1,
        },
        "probe": {"top_k": 10, "window": 20_000, "bootstrap": 20, **probe},
    }


def test_calibrated_variances_match_exact_theory_within_their_errors() -> None:
    """10 directions, burn-in 2000 steps (~40 relaxation times 1/(η h_min)), window 7000 steps:
    Σ z_i² of (measured − theory)/stderr is below the 99.9 % χ²_10 quantile, and the summary
    reports the calibrated estimator with the PCA fit beside it."""
    raw = _config(start=2000, window=7000)
    raw["sgd"]["steps"] = 9000
    cfg = probe_config_from_dict(raw)
    data = load_data(cfg)
    x, y = data.x.numpy(), data.y.numpy()
    theory = stationary_covariance(
        x,
        least_squares_residuals(x, y),
        learning_rate=0.05,
        batch_size=3,
        sampling="with_replacement",
    ).cov
    run, _ = run_probe(cfg)
    cal = run.layers[0].ivfr_calibrated
    var, se = np.asarray(cal["variances"]), np.asarray(cal["stderr"])
    dirs = np.asarray(cal["directions"])  # frozen at mid-window (rows)
    assert dirs.shape == (10, 10)
    want = np.einsum("ia,ab,ib->i", dirs, theory, dirs)
    z = (var - want) / se
    assert float(np.sum(z**2)) <= stats.chi2.ppf(0.999, z.size), z
    summary = run.to_summary()["ivfr"]["layer_1"]
    assert summary["estimator"] == "split_eiv"
    assert "psi_pca" in summary and "psi_pca_sharp" in summary


def test_fixed_start_opens_the_window_at_that_step() -> None:
    raw = _config(start=1000, window=1000)
    raw["sgd"]["steps"] = 2500
    run, _ = run_probe(probe_config_from_dict(raw))
    assert run.plateau_step == 1000
    assert any("probe.start" in n for n in run.notes)


@pytest.mark.parametrize("start", [0, "never", 28_000])
def test_start_out_of_range_is_refused_by_name(start: object) -> None:
    with pytest.raises(ConfigError, match=r"probe\.start"):
        probe_config_from_dict(_config(start=start))
