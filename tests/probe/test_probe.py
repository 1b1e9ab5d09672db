"""Tests of sgdfluct.probe (docs/theory.md §11): curvature, the linear control, plateau, config."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from _torch_reference import dense_hessian  # noqa: E402 (after the torch skip)
from sgdfluct.errors import ConfigError, MeasurementError  # noqa: E402
from sgdfluct.probe import (  # noqa: E402
    FluctuationProbe,
    NystromSketch,
    PlateauMonitor,
    plateau_test,
    probe_config_from_dict,
    run_probe,
)

#: float64 round-off of an HVP against autograd's dense Hessian on O(1) entries
HVP_RTOL = 1e-9


def _small_mlp(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).to(
        torch.float64
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    x = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(30, 2, generator=gen, dtype=torch.float64)
    return model, x, y


def _half_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - y) ** 2).sum(-1).mean()


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_curvature_equals_dense_hessian(weight_decay: float) -> None:
    """p_iᵀ H p_j by HVP equals the dense torch.autograd.functional.hessian block."""
    model, x, y = _small_mlp()
    probe = FluctuationProbe(
        model,
        _half_mse,
        (x, y),
        learning_rate=0.1,
        batch_size=5,
        window=400,
        every=1,
        top_k=3,
        weight_decay=weight_decay,
    )
    dense = dense_hessian(model, _half_mse, x, y, weight_decay)
    rng = np.random.default_rng(1)
    start = 0
    for layer, d_l in ((1, 4 * 3 + 3), (2, 3 * 2 + 2)):
        p = np.linalg.qr(rng.standard_normal((d_l, 3)))[0].T  # 3 orthonormal rows
        got = probe.projected_hessian(layer, p)
        block = dense[start : start + d_l, start : start + d_l]
        want = p @ block @ p.T
        np.testing.assert_allclose(got, want, rtol=HVP_RTOL, atol=HVP_RTOL * np.abs(want).max())
        start += d_l


def test_nystrom_exact_and_sketched() -> None:
    """d <= sketch: exact sample covariance; d > sketch: top variances of a low-rank stream."""
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    d, n = 6, 200
    data = rng.standard_normal((n, d)) @ np.diag([3, 2, 1, 0.5, 0.2, 0.1]) + 5.0
    sk = NystromSketch(torch.as_tensor(data[0]), 10, gen)
    for row in data:
        sk.update(torch.as_tensor(row))
    var, _ = sk.top(d)
    np.testing.assert_allclose(var, np.sort(np.linalg.eigvalsh(np.cov(data.T)))[::-1], rtol=1e-10)
    # rank-3 signal in d = 400 plus a weak isotropic tail; sketch of 30 columns
    d = 400
    basis = np.linalg.qr(rng.standard_normal((d, 3)))[0]
    sig = rng.standard_normal((n, 3)) * np.array([4.0, 2.0, 1.0])
    stream = sig @ basis.T + 1e-3 * rng.standard_normal((n, d))
    sk = NystromSketch(torch.as_tensor(stream[0]), 30, gen)
    bytes0 = sk.nbytes()
    for row in stream:
        sk.update(torch.as_tensor(row))
    assert sk.nbytes() == bytes0  # memory independent of the stream length
    var, _ = sk.top(3)
    want = np.sort(np.linalg.eigvalsh(np.cov(stream.T)))[::-1][:3]
    # the Nyström error is bounded by the spectral tail: 400 * 1e-6 relative to O(1) variances
    np.testing.assert_allclose(var, want, rtol=1e-3)
    assert not sk.exact


def test_plateau_test_rule() -> None:
    """Both consecutive changes within their standard error pass; one larger change fails."""
    se = np.array([1e-3, 1e-3, 1e-3])  # change SE: sqrt(2) 1e-3; z = 2 allows 2.83e-3
    assert plateau_test(np.array([1.0, 1.002, 0.9998]), se)
    assert not plateau_test(np.array([1.0, 0.997, 0.994]), se)
    assert not plateau_test(np.array([1.0, 1.0, 0.997]), se)
    assert plateau_test(np.array([1.0, 1.0, 0.997]), se, z=3.0)
    rng = np.random.default_rng(0)
    mon = PlateauMonitor(20)
    assert any(mon.add(1.0 + 1e-3 * rng.standard_normal()) for _ in range(200))
    mon = PlateauMonitor(20)  # a decay far above the noise never passes
    assert not any(mon.add(math.exp(-i / 400) + 1e-4 * rng.standard_normal()) for i in range(400))


def _ts_config(**sgd: object) -> dict:
    raw = {
        "data": {
            "dataset": "teacher_student",
            "n_in": 5,
            "n_out": 2,
            "n_samples": 15,
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
        "probe": {"top_k": 10, "window": 20_000, "bootstrap": 50},
    }
    raw["sgd"].update(sgd)
    return raw


def test_no_plateau_raises_measurement_error() -> None:
    """A run too short to reach the plateau stops with a MeasurementError naming the fix."""
    raw = _ts_config(steps=1300, learning_rate=0.002)
    raw["probe"]["window"] = 1000
    raw["init"]["scale"] = 5.0
    with pytest.raises(MeasurementError, match=r"Raise sgd\.steps"):
        run_probe(probe_config_from_dict(raw))


def test_analyze_before_window_raises() -> None:
    model, x, y = _small_mlp()
    probe = FluctuationProbe(
        model, _half_mse, (x, y), learning_rate=0.1, batch_size=5, window=400, every=1
    )
    probe.observe()
    with pytest.raises(MeasurementError, match="train longer"):
        probe.analyze()


@pytest.mark.parametrize(
    ("section", "key", "value", "match"),
    [
        ("sgd", "learning_rate", -0.1, "sgd.learning_rate"),
        ("sgd", "sampling", "poisson", "sgd.sampling"),
        ("probe", "top_k", 2, "probe.top_k"),
        ("probe", "directions", "random", "probe.directions"),
        ("probe", "window", 40_000, "probe.window"),
        ("model", "loss", "cross_entropy", "model.loss"),
        ("model", "hidden", [4, 0], r"model.hidden\[1\]"),
        ("data", "n_in", 0, "data.n_in"),
        ("probe", "colour", 1, "unknown key probe.colour"),
    ],
)
def test_config_errors(section: str, key: str, value: object, match: str) -> None:
    raw = _ts_config()
    raw[section][key] = value
    with pytest.raises(ConfigError, match=match):
        probe_config_from_dict(raw)


def test_digits_only_keys_rejected_for_teacher_student() -> None:
    raw = _ts_config()
    raw["data"]["n_train"] = 100
    with pytest.raises(ConfigError, match=r"data\.n_train"):
        probe_config_from_dict(raw)


def _train(
    probe: FluctuationProbe,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    params = list(model.parameters())
    for _ in range(steps):
        idx = torch.randint(x.shape[0], (5,), generator=gen)
        grads = torch.autograd.grad(_half_mse(model(x[idx]), y[idx]), params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.sub_(g, alpha=0.05)
        probe.observe()
        if probe.done:
            return


def test_recorder_memory_independent_of_training_length() -> None:
    """The streaming recorders hold the same bytes after a short and a 4x longer window."""
    sizes = []
    for window in (200, 800):
        model, x, y = _small_mlp()
        probe = FluctuationProbe(
            model,
            _half_mse,
            (x, y),
            learning_rate=0.05,
            batch_size=5,
            window=window,
            every=2,
            top_k=3,
            sketch_size=5,
            plateau_block=200,
        )
        _train(probe, model, x, y, 20_000, seed=0)
        assert probe.done
        sizes.append(probe.recorder_bytes())
        run = probe.analyze()
        assert run.layers[0].k == 3 and not run.layers[0].sketch_exact
    assert sizes[0] == sizes[1]


def test_plateau_not_passed_during_fast_decay() -> None:
    """A block that holds the fast initial decay has a large plain scatter; it must not pass."""
    rng = np.random.default_rng(2)
    mon = PlateauMonitor(100)
    losses = [1.0 + 10.0 * math.exp(-i / 15) + 1e-3 * rng.standard_normal() for i in range(300)]
    assert not any(mon.add(v) for v in losses)
