"""Degenerate but valid data run to a trustworthy result (finite, symmetric PSD covariances);
non-finite data given to the engine is refused as bad input, not reported as a divergence."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
import xarray as xr
from reliability_helpers import TINY

from sgdfluct.config import config_from_dict
from sgdfluct.errors import ConfigError, DivergenceError
from sgdfluct.runner import run_experiment
from sgdfluct.simulate import simulate

#: relative size of a negative eigenvalue that still counts as round-off of a PSD matrix
PSD_ROUND_OFF = 1e-10

DEGENERATE = [
    ("one_dimensional", [("n_in = 3", "n_in = 1")]),
    (
        "interpolating_fewer_samples_than_inputs",
        [("n_samples = 12", "n_samples = 3"), ("batch_size = 3", "batch_size = 2")],
    ),
    ("noiseless_labels", [("label_noise = 0.5", "label_noise = 0.0")]),
    ("batch_of_one", [("batch_size = 3", "batch_size = 1")]),
    ("three_outputs", [("n_out = 1", "n_out = 3")]),
]


@pytest.mark.parametrize("edits", [pytest.param(e, id=i) for i, e in DEGENERATE])
def test_degenerate_data_gives_finite_psd_results(tmp_path, record, edits):
    text = TINY
    for old, new in edits:
        text = text.replace(old, new)
    out = tmp_path / "out"
    run_experiment(config_from_dict(tomllib.loads(text)), out, figures=False)
    record.update(exit=0, traceback=False, expected=0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["depth"] == 1
    with xr.open_dataset(out / "result.nc", engine="h5netcdf") as ds:
        for name in ("weight_cov_sim", "weight_cov_discrete", "weight_cov_continuum"):
            cov = ds[name].values
            assert np.isfinite(cov).all(), name
            np.testing.assert_array_equal(cov, cov.T)
            scale = max(np.abs(cov).max(), 1e-300)
            assert np.linalg.eigvalsh(cov)[0] >= -PSD_ROUND_OFF * scale, name


@pytest.mark.parametrize(
    ("where", "value"),
    [
        pytest.param("inputs", np.nan, id="nan_input"),
        pytest.param("inputs", np.inf, id="inf_input"),
        pytest.param("targets", np.nan, id="nan_target"),
        pytest.param("targets", -np.inf, id="inf_target"),
    ],
)
def test_non_finite_data_is_bad_input_not_divergence(record, where, value):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 3))
    y = rng.standard_normal((12, 1))
    (x if where == "inputs" else y)[4, 0] = value
    with pytest.raises(ConfigError, match=f"{where} contain 1 non-finite") as info:
        simulate(
            x, y, [(1, 3)], np.zeros(3), learning_rate=0.05, batch_size=3, steps=100, burn_in=10
        )
    assert not isinstance(info.value, DivergenceError)
    record.update(exit=2, traceback=False, expected=2)
