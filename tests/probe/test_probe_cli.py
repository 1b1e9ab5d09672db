"""`sgdfluct probe CONFIG --out DIR` at small size: the outputs of INTERFACE.md, exit codes."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
xr = pytest.importorskip("xarray")

from click.testing import CliRunner  # noqa: E402

from sgdfluct.cli import main  # noqa: E402

SMALL = """
[data]
dataset = "digits"
n_train = 200
seed = 0

[model]
kind = "mlp"
hidden = [8]
activation = "tanh"
bias = true
loss = "mse"

[init]
scale = 1.0
seed = 0

[sgd]
learning_rate = 0.1
batch_size = 20
weight_decay = 0.05
steps = 8000
record_every = 2
seed = 1

[probe]
top_k = 4
window = 800
bootstrap = 20
"""

#: the per-layer variables of INTERFACE.md ("sgdfluct probe")
LAYER_VARIABLES = (
    "pca_variance",
    "curvature",
    "flatness",
    "loss_profile",
    "noise_var",
    "hessian_proj",
    "noise_proj",
    "temperature",
    "drift_share",
    "weight_cov_theory",
)


def test_probe_cli_writes_interface_outputs(tmp_path) -> None:
    cfg = tmp_path / "probe.toml"
    cfg.write_text(SMALL)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["probe", str(cfg), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    for layer in ("layer_1", "layer_2"):
        assert set(summary["ivfr"][layer]) >= {"psi", "psi_ci", "spearman"}
    assert summary["stationarity"]["plateau_step"] > 0
    assert (out / "config.toml").exists()
    assert (out / "figures" / "ivfr.png").exists()
    # the per-layer Hessian spectra ("auto": on for this 610-parameter model), issue 19 item 5
    assert (out / "figures" / "hessian_spectrum.png").exists()
    assert summary["layers"]["layer_1"]["hessian_trace"] is not None
    ds = xr.open_dataset(out / "result.nc", engine="h5netcdf")
    for name in LAYER_VARIABLES:
        for layer in (1, 2):
            assert f"{name}_{layer}" in ds
    for name in ("train_loss", "test_loss", "test_accuracy", "inputs", "targets"):
        assert name in ds
    for name in ("hessian_trace", "hessian_trace_se", "slq_nodes", "spectral_density"):
        for layer in (1, 2):
            assert f"{name}_{layer}" in ds
    assert ds["inputs"].shape == (200, 64)
    assert 0.0 <= float(ds["test_accuracy"]) <= 1.0
    ds.close()


def test_probe_cli_config_error_exit_code(tmp_path) -> None:
    cfg = tmp_path / "probe.toml"
    cfg.write_text(SMALL.replace("top_k = 4", "top_k = 1"))
    res = CliRunner().invoke(main, ["probe", str(cfg), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "probe.top_k" in res.output
