"""Issue acceptance (SPEC §8a): the layer-wise theory against the aligned two-layer measurement.

N_i = 6, N_h = 3, N_o = 2, P = 60, eta = 0.05 through the `run` pipeline: the best theory is
within max(3 %, 2 noise floors) of the simulation in every layer, the paper's continuum
linearization is further away than the best theory, and the Hessian null space at the balanced
minimum contains the N_h^2 symmetry directions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sgdfluct.config import load_config, with_overrides
from sgdfluct.runner import run_experiment

# SPEC §8a / issue: "best theory <= 3 % per layer at eta = 0.05"; below the noise floor no
# theory can be judged, hence max(target, 2 x floor) (2 floors: a 2-sigma-like allowance)
ERROR_TARGET = 0.03
FLOOR_MULTIPLE = 2.0


@pytest.mark.slow
def test_best_theory_within_target_per_layer(tmp_path):
    cfg = with_overrides(
        load_config(Path(__file__).parents[1] / "configs" / "two_layer.toml"),
        {"sgd.steps": 200_000, "sgd.burn_in": 20_000, "sgd.replicas": 8},
    )
    summary = run_experiment(cfg, tmp_path, figures=False)
    for name, layer in summary["layers"].items():
        limit = max(ERROR_TARGET, FLOOR_MULTIPLE * layer["noise_floor"])
        assert layer["rel_error_renormalized"] <= limit, (name, layer)
        assert layer["rel_error_continuum"] > layer["rel_error_renormalized"], (name, layer)
    null = summary["null_space"]
    assert null["null_dim_hessian"] >= null["expected_dim"] == 9
    assert null["symmetry_in_null_hessian"] < 1e-8
    assert summary["dead_hidden_units"] == 1  # N_h = 3 > rank 2 of the product
