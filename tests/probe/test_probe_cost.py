"""The probe's cost rules (issue 19): sketch size from k, compact (float32, never
orthonormalized) large sketches, memory-bounded chunks, and layer selection through the probe
config."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from sgdfluct.errors import ConfigError  # noqa: E402
from sgdfluct.probe import (  # noqa: E402
    FluctuationProbe,
    NystromSketch,
    _stream,
    probe_config_from_dict,
)
from sgdfluct.probe._params import CHUNK_BYTES, memory_chunk  # noqa: E402
from sgdfluct.probe._recording import MIN_SKETCH_SIZE, SKETCH_FLOOR_BYTES  # noqa: E402


def _stream_rows(d: int, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -3, d, dtype=torch.float64)
    return torch.randn(n, d, generator=gen, dtype=torch.float64) * scales + 2.0


def test_large_sketch_is_compact_and_never_orthonormalized() -> None:
    """Above DEFER_QR_FLOPS (d ℓ²) a sketch is compact: float32 Gaussian Ω and Y, no QR when
    the window opens nor at top() (the comparison with the float64 path on the same range is in
    test_sketch_precision.py); the digits MLP's 2080 x 256 sketch stays float64 orthonormal."""
    gen = torch.Generator().manual_seed(0)
    small = NystromSketch(torch.zeros(2080, dtype=torch.float64), 256, gen)
    assert 2080 * 256**2 <= _stream.DEFER_QR_FLOPS and not small.compact
    assert small.omega is not None and small.omega.dtype == torch.float64
    np.testing.assert_allclose(small.omega.T @ small.omega, np.eye(256), atol=1e-12)
    d, ell = 60_000, 60
    assert d * ell**2 > _stream.DEFER_QR_FLOPS
    rows = _stream_rows(d, 40)
    big = NystromSketch(rows[0], ell, torch.Generator().manual_seed(3))
    assert big.compact and big.omega is not None
    assert big.omega.dtype == big.y.dtype == torch.float32
    omega = big.omega.clone()
    big.extend(rows[:16])
    big.extend(rows[16:])
    var, dirs = big.top(10)
    assert torch.equal(big.omega, omega)  # streamed and read on the same Gaussian Ω
    assert np.all(np.diff(var) <= 0) and dirs.shape == (10, d) and dirs.flags.c_contiguous
    np.testing.assert_allclose(dirs @ dirs.T, np.eye(10), atol=1e-12)


def test_sketch_memory_is_16_ell_bytes_per_parameter() -> None:
    """A float64 sketch (d ℓ² <= DEFER_QR_FLOPS); a compact one: test_sketch_precision.py."""
    d, ell = 5000, 60
    sk = NystromSketch(torch.zeros(d, dtype=torch.float64), ell, torch.Generator().manual_seed(0))
    assert sk.nbytes() == 8 * (2 * d * ell + 2 * d)


def _mse_probe(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, **kw: int) -> Any:
    """A probe with the mean squared error, η = 0.01, batch 2, window 400 recorded every step."""
    return FluctuationProbe(
        model,
        lambda o, t: ((o - t) ** 2).mean(),
        (x, y),
        learning_rate=0.01,
        batch_size=2,
        window=400,
        every=1,
        **kw,
    )


@pytest.mark.parametrize(
    ("n_in", "top_k", "want"),
    [
        (4, 20, MIN_SKETCH_SIZE),  # 150-parameter layer: the 256 floor (exact PCA)
        (4, 150, 320),  # k + p = 2k + 20 above the floor
        (4000, 20, 209),  # 20 005 parameters: the floor shrinks to 64 MiB / (16 d) = 209
        (20000, 20, 60),  # 80 004 parameters: k + p = 60 (16 * 60 = 960 bytes a parameter)
    ],
)
def test_default_sketch_size(n_in: int, top_k: int, want: int) -> None:
    hidden = {4: 30, 4000: 5, 20000: 4}[n_in]
    model = torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.Linear(hidden, 2)).double()
    x = torch.randn(10, n_in, dtype=torch.float64)
    y = torch.randn(10, 2, dtype=torch.float64)
    probe = _mse_probe(model, x, y, top_k=top_k)
    d_max = max(lay.dim for lay in probe.layers)
    assert want == max(2 * top_k + 20, min(MIN_SKETCH_SIZE, SKETCH_FLOOR_BYTES // (16 * d_max)))
    assert probe.sketch_size == want


def test_memory_chunk() -> None:
    assert memory_chunk(256, 8 * 3000) == 256  # small models: the default (bitwise as before)
    assert memory_chunk(256, 4 * 1_068_810) == CHUNK_BYTES // (4 * 1_068_810) == 62
    assert memory_chunk(128, 10 * CHUNK_BYTES) == 1


def _config(layers: object) -> dict:
    return {
        "data": {"dataset": "digits", "n_train": 200},
        "sgd": {"steps": 5000},
        "probe": {"window": 1000, "layers": layers},
    }


@pytest.mark.parametrize(
    ("layers", "want"),
    [
        ("all", "all"),
        ([1, 3], (1, 3)),
        (["0", "*.weight"], ("0", "*.weight")),
        ([["0", "2"], 3], (("0", "2"), 3)),
    ],
)
def test_config_layers_accepts_names_globs_and_groups(layers: object, want: object) -> None:
    assert probe_config_from_dict(_config(layers)).probe.layers == want


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        ([0], r"probe\.layers\[0\] = 0"),
        ([""], r"probe\.layers\[0\] = '' is not allowed"),
        ([[]], r"probe\.layers\[0\] = \[\] is not allowed"),
        ([[["0"]]], r"probe\.layers\[0\]\[0\]"),
        ([1.5], r"probe\.layers\[0\] = 1.5"),
        ([], r"probe\.layers = \[\] is not allowed"),
        ("fc", r"probe\.layers"),
    ],
)
def test_config_layers_refused_by_name(layers: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        probe_config_from_dict(_config(layers))


def test_training_loss_subset_shrinks_above_1e5_parameters() -> None:
    """A record of the training loss costs at most what 2048 samples of a 10⁵-parameter model
    cost: smaller models keep 2048 (bitwise as before), 256 at the 1.07 M MLP, never fewer."""
    from sgdfluct.probe._core import (
        TRAIN_LOSS_FULL_PARAMS,
        TRAIN_LOSS_MIN_SAMPLES,
        TRAIN_LOSS_SAMPLES,
        default_loss_samples,
    )

    assert default_loss_samples(TRAIN_LOSS_FULL_PARAMS) == TRAIN_LOSS_SAMPLES == 2048
    assert default_loss_samples(200_000) == 1024
    assert default_loss_samples(1_068_810) == TRAIN_LOSS_MIN_SAMPLES == 256
    assert default_loss_samples(10**9) == 256
    model = torch.nn.Linear(1200, 100)  # 120 100 parameters
    x = torch.randn(3000, 1200)
    y = torch.randn(3000, 100)
    probe = _mse_probe(model, x, y)
    assert probe.loss_samples == 2048 * 100_000 // 120_100 == 1705
    assert probe._x_loss.shape[0] == 1705
