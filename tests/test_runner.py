"""`run` end to end at small size: the INTERFACE.md outputs, for depth 1, 2 and 3."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from sgdfluct import networks
from sgdfluct.config import config_from_dict
from sgdfluct.runner import run_experiment

REQUIRED = [
    "inputs",
    "targets",
    "theta_ref",
    "weight_mean_sim",
    "weight_cov_sim",
    "weight_cov_sim_stderr",
    "hessian",
    "noise_cov",
    "weight_cov_continuum",
    "weight_cov_discrete",
]


def _config(depth: int, **sgd):
    base = {
        "data": {"n_in": 5, "n_out": 2, "n_samples": 30, "seed": 3},
        "model": {"depth": depth, "hidden": 2},
        "sgd": {
            "learning_rate": 0.05,
            "batch_size": 5,
            "steps": 20_000,
            "burn_in": 4_000,
            "record_every": 5,
            "replicas": 4,
            "seed": 2,
            **sgd,
        },
        "analysis": {"bootstrap": 50},
    }
    return config_from_dict(base)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_run_writes_interface_outputs(tmp_path, depth):
    # depth >= 2 needs a saturated imbalance and two windows of 100 / (eta h_min) steps after it
    cfg = _config(depth) if depth == 1 else _config(depth, steps=100_000, burn_in=4_000)
    summary = run_experiment(cfg, tmp_path, figures=depth == 1)
    ds = xr.open_dataset(tmp_path / "result.nc", engine="h5netcdf")
    for name in REQUIRED:
        assert name in ds, name
    shapes = cfg.layer_shapes()
    d = networks.n_params(shapes)
    assert ds["weight_cov_sim"].dims == ("param", "param_b")
    assert ds["weight_cov_sim"].shape == (d, d)
    np.testing.assert_array_equal(ds["layer"].values, networks.layer_index(shapes))
    assert ds["inputs"].shape == (30, 5) and ds["targets"].shape == (30, 2)
    for name in ("weight_cov_sim", "weight_cov_continuum", "weight_cov_discrete"):
        cov = ds[name].values
        np.testing.assert_allclose(cov, cov.T, atol=1e-12 * max(np.abs(cov).max(), 1e-300))
        assert np.linalg.eigvalsh((cov + cov.T) / 2).min() > -1e-10 * np.abs(cov).max()
    assert "[sgd]" in ds.attrs["config"]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["depth"] == depth and on_disk == json.loads(json.dumps(summary))
    assert (tmp_path / "config.toml").read_text().count("[data]") == 1
    if depth == 1:
        # theta_ref is the least-squares solution
        np.testing.assert_allclose(
            ds["theta_ref"].values,
            networks.least_squares(ds["inputs"].values, ds["targets"].values).ravel(),
        )
        assert len(list((tmp_path / "figures").glob("*.png"))) >= 4
        assert "layer_1" in summary["ivfr"]
    else:
        assert set(summary["layers"]) == {f"layer_{i}" for i in range(1, depth + 1)}
        assert summary["null_space"]["expected_dim"] == (depth - 1) * 4


def test_same_seed_same_numbers(tmp_path):
    cfg = _config(1, steps=5_000, burn_in=1_000)
    a = run_experiment(cfg, tmp_path / "a", figures=False)
    b = run_experiment(cfg, tmp_path / "b", figures=False)
    ra = xr.open_dataset(tmp_path / "a" / "result.nc", engine="h5netcdf")
    rb = xr.open_dataset(tmp_path / "b" / "result.nc", engine="h5netcdf")
    xr.testing.assert_identical(ra.drop_attrs(), rb.drop_attrs())
    assert a["rel_error_discrete"] == b["rel_error_discrete"]


def test_interpolating_single_layer_has_no_fluctuations(tmp_path):
    cfg = config_from_dict(
        {
            "data": {"n_in": 12, "n_samples": 8},
            "sgd": {
                "learning_rate": 0.02,
                "batch_size": 2,
                "steps": 2_000,
                "burn_in": 500,
                "record_every": 5,
                "replicas": 2,
            },
        }
    )
    summary = run_experiment(cfg, tmp_path, figures=False)
    assert summary["interpolating"] is True
    ds = xr.open_dataset(tmp_path / "result.nc", engine="h5netcdf")
    # round-off only: the per-sample gradients vanish at the interpolating solution
    assert np.abs(ds["weight_cov_sim"].values).max() < 1e-20
    assert np.all(ds["weight_cov_discrete"].values == 0)


def test_cells_sharing_a_data_set_share_its_random_matrix_metrics():
    # the KS distances to the random-matrix laws depend on the data set only: a second cell on
    # the same data (another learning rate) reuses them, with the numbers of a fresh computation
    from sgdfluct.runner import compute
    from sgdfluct.runner._single import _ks_distances

    def config(learning_rate):
        return config_from_dict(
            {
                "data": {"n_in": 4, "n_out": 1, "n_samples": 30, "seed": 3},
                "model": {"depth": 1},
                "sgd": {
                    "learning_rate": learning_rate,
                    "batch_size": 5,
                    "steps": 2_000,
                    "burn_in": 200,
                    "replicas": 2,
                    "seed": 2,
                },
                "analysis": {"bootstrap": 20},
            }
        )

    _ks_distances.cache_clear()
    compute(config(0.02))
    shared = compute(config(0.05)).metrics
    assert _ks_distances.cache_info().hits == 1
    _ks_distances.cache_clear()
    fresh = compute(config(0.05)).metrics
    assert _ks_distances.cache_info().hits == 0
    assert "ks_noise_generalized_mp" in fresh
    assert shared == fresh
