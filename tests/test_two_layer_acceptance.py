"""Issue acceptance (docs/theory.md §8a, §8b): the layer-wise theory against the aligned two-layer
measurement, from the paper's random start.

N_i = 6, N_h = 3, N_o = 2, P = 60, eta = 0.05 through the `run` pipeline: the run saturates, the
best theory is within max(3 %, 2 noise floors) of the simulation in every layer, the paper's
continuum linearization is further away than the best theory, the surplus unit dies, and the
Hessian null space at the reached minimum has the closed-form dimension N_h (N_i + N_o) - N_i N_o
= 12 (N_h^2 = 9 plus the excess of one surplus unit).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from sgdfluct.config import load_config, with_overrides
from sgdfluct.runner import run_experiment

# docs/theory.md §8a / issue: "best theory <= 3 % per layer at eta = 0.05"; below the noise floor
# no theory can be judged, hence max(target, 2 x floor) (2 floors: a 2-sigma-like allowance)
ERROR_TARGET = 0.03
FLOOR_MULTIPLE = 2.0


@pytest.mark.slow
def test_best_theory_within_target_per_layer(tmp_path):
    cfg = with_overrides(
        load_config(Path(__file__).parents[1] / "configs" / "two_layer.toml"),
        {"sgd.steps": 200_000, "sgd.burn_in": 20_000, "sgd.replicas": 8},
    )
    assert cfg.init_kind == "random"
    summary = run_experiment(cfg, tmp_path, figures=False)
    assert summary["saturation"]["saturated"], summary["saturation"]
    for name, layer in summary["layers"].items():
        limit = max(ERROR_TARGET, FLOOR_MULTIPLE * layer["noise_floor"])
        assert layer["rel_error_renormalized"] <= limit, (name, layer)
        assert layer["rel_error_continuum"] > layer["rel_error_renormalized"], (name, layer)
    for key in ("null_space", "null_space_constructed"):
        null = summary[key]
        assert null["symmetry_dim"] == 9
        assert null["null_dim_hessian"] == null["expected_dim"] == 12, null
        assert null["null_dim_noise"] == 12
        assert null["symmetry_in_null_hessian"] < 1e-8
    assert summary["dead_hidden_units"] == 1  # N_h = 3 > rank 2 of the product
    surplus = summary["surplus_units"]
    assert surplus["n_surplus"] == 1 and surplus["death_step"] is not None
    ds = xr.open_dataset(tmp_path / "result.nc")
    start = ds["theta_start"].values
    assert start.shape == (8, 24)
    assert np.unique(start[:, 0]).size == 8  # one independent start per replica
