"""The 1-D problem n_in = n_out = 1 runs and matches the closed form of docs/theory.md §5."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from sgdfluct.config import config_from_dict
from sgdfluct.runner import run_experiment

#: a simulated variance must lie within this many of its standard errors of the closed form
#: (two-sided normal tail ~6e-5: a correct estimator essentially never fails)
Z_TOL = 4.0


def closed_form(x: np.ndarray, y: np.ndarray, eta: float, f_s: float) -> float:
    """Exact stationary variance of one weight: §5 with H = h, C_0 = c, K(M) = m4 M.

    ``2 h M - eta h^2 M = f_S eta (c + m4 M - h^2 M)`` gives
    ``M = f_S eta c / (2 h - eta h^2 - f_S eta (m4 - h^2))``.
    """
    w = float(np.sum(x * y) / np.sum(x * x))
    r = y - w * x
    h = float(np.mean(x**2))
    c = float(np.mean(x**2 * r**2))
    m4 = float(np.mean(x**4))
    return f_s * eta * c / (2 * h - eta * h**2 - f_s * eta * (m4 - h**2))


def test_one_weight_runs_and_matches_the_closed_form(tmp_path):
    eta, batch = 0.05, 5
    config = config_from_dict(
        {
            "data": {"n_in": 1, "n_out": 1, "n_samples": 50, "label_noise": 1.0, "seed": 0},
            "model": {"depth": 1},
            "sgd": {
                "learning_rate": eta,
                "batch_size": batch,
                "sampling": "with_replacement",
                "steps": 60_000,
                "burn_in": 2_000,
                "record_every": 5,
                "replicas": 8,
                "seed": 1,
            },
        }
    )
    run_experiment(config, tmp_path / "run", figures=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    ds = xr.open_dataset(tmp_path / "run" / "result.nc")
    x, y = ds["inputs"].values[:, 0], ds["targets"].values[:, 0]
    expected = closed_form(x, y, eta, 1.0 / batch)  # f_S = 1/S with replacement
    # the exact discrete-time theory is the closed form (round-off level)
    assert float(ds["weight_cov_discrete"].values[0, 0]) == pytest.approx(expected, rel=1e-9)
    sim = float(ds["weight_cov_sim"].values[0, 0])
    se = float(ds["weight_cov_sim_stderr"].values[0, 0])
    assert abs(sim - expected) <= Z_TOL * se, (sim, expected, se)
    # the probability current is zero by symmetry: its relative error is undefined, with a note
    assert summary["rel_error_current"] is None
    assert "zero by symmetry" in summary["rel_error_current_note"]
    assert summary["commutator"] == 0.0
