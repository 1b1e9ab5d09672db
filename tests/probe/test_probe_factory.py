"""`sgdfluct probe` on a user's model by import path (`[model] factory`, issue 19): a CNN on the
digits images, its layers chosen by name and glob; every mistake in the factory a named error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from click.testing import CliRunner

from sgdfluct.cli import main

MODELS = '''
import torch
from sklearn.datasets import load_digits


def make():
    """A CNN on the 8x8 digits: conv 1->2 (3x3), ReLU, linear 72->10."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(72, 10),
    ).double()
    bunch = load_digits()
    x = torch.as_tensor(bunch.data[:300] / 16.0).reshape(-1, 1, 8, 8)
    y = torch.as_tensor(bunch.target[:300])
    xt = torch.as_tensor(bunch.data[300:400] / 16.0).reshape(-1, 1, 8, 8)
    return model, (x, y), (xt, torch.as_tensor(bunch.target[300:400]))


def broken():
    raise RuntimeError("no data here")


def not_a_model():
    return "model", (torch.zeros(3, 2), torch.zeros(3))


def mismatched():
    return torch.nn.Linear(2, 1), (torch.zeros(3, 2), torch.zeros(4))


def with_batchnorm():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3)).double()
    return model, (torch.zeros(10, 2, dtype=torch.float64), torch.zeros(10, 3, dtype=torch.float64))


NOT_CALLABLE = 3
'''

CONFIG = """
[model]
factory = "{factory}"
loss = "cross_entropy"

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
layers = {layers}
"""


def _write(tmp_path: Path, factory: str, layers: str = '"all"', extra: str = "") -> Path:
    (tmp_path / "my_models.py").write_text(MODELS)
    cfg = tmp_path / "probe.toml"
    cfg.write_text(CONFIG.format(factory=factory, layers=layers) + extra)
    return cfg


@pytest.mark.slow  # ~10 s on a quiet machine, 37 s at load 9
def test_cnn_by_import_path_with_layers_by_name(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "my_models:make", layers='["0", "3.weight"]')
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["probe", str(cfg), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    layers = summary["layers"]
    assert [v["name"] for v in layers.values()] == ["0", "3.weight"]
    assert [v["n_params"] for v in layers.values()] == [2 * 9 + 2, 72 * 10]
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert 'factory = "my_models:make"' in (out / "config.toml").read_text()
    assert "[data]" not in (out / "config.toml").read_text()


@pytest.mark.parametrize(
    ("factory", "extra", "match"),
    [
        ("missing_module:make", "", r"cannot import 'missing_module' \(ModuleNotFoundError"),
        ("my_models:nothing", "", r"module 'my_models' has no attribute 'nothing'"),
        ("my_models:NOT_CALLABLE", "", r"'NOT_CALLABLE' is not callable"),
        ("my_models:broken", "", r"raised RuntimeError: no data here"),
        ("my_models:not_a_model", "", r"returned str as the model: expected a torch\.nn\.Module"),
        ("my_models:mismatched", "", r"inputs \(3, 2\) and targets \(4,\)"),
        ("my_models:with_batchnorm", "", r"module '1' \(BatchNorm1d\) is in training mode"),
        ("my_models", "", r"model\.factory = 'my_models' is not allowed"),
        ("my_models:make", "\n[data]\nn_train = 100\n", r"\[data\] section is not allowed"),
    ],
    ids=lambda v: v if isinstance(v, str) and v else "",
)
def test_factory_mistakes_are_named(tmp_path: Path, factory: str, extra: str, match: str) -> None:
    cfg = _write(tmp_path, factory, extra=extra)
    if factory == "my_models:with_batchnorm":
        cfg.write_text(cfg.read_text().replace("cross_entropy", "mse"))
    res = CliRunner().invoke(main, ["probe", str(cfg), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert re.search(match, res.output), res.output
