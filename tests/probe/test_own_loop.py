"""The probe with torch's own losses and the shipped own-loop example (issue 21, docs §11).

``F.mse_loss`` used to crash every Hessian-vector product with torch's "ZeroTensors are immutable"
(its forward-mode derivative writes into the constant target's tangent); the probe now feeds a
floating target a materialized zero tangent. These tests check the products against autograd's
dense Hessian for ``F.mse_loss`` (float64 and float32) and ``F.cross_entropy``, and run
``examples/probe_own_loop.py`` at smoke size.
"""

from __future__ import annotations

import copy
import runpy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from _torch_reference import dense_hessian  # noqa: E402 (after the torch skip)

F = torch.nn.functional

from sgdfluct.probe import FluctuationProbe  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "probe_own_loop.py"

#: relative round-off of an HVP against the dense Hessian on O(1) entries: float64 ~1e-16 per
#: operation over a few dozen operations; float32 ~1e-7 per operation (both with a 1000x margin)
HVP_RTOL = {torch.float64: 1e-12, torch.float32: 1e-4}


def _model_and_data(dtype: torch.dtype, loss: str) -> tuple[torch.nn.Module, torch.Tensor, Any]:
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 3))
    model = model.to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype))
    x = torch.randn(30, 4, generator=gen, dtype=dtype)
    labels = torch.randint(3, (30,), generator=gen)
    y = F.one_hot(labels, 3).to(dtype) if loss == "mse" else labels
    return model, x, y


@pytest.mark.parametrize(
    ("loss", "dtype"),
    [("mse", torch.float64), ("mse", torch.float32), ("cross_entropy", torch.float64)],
)
def test_torch_losses_hvp_equals_dense_hessian(loss: str, dtype: torch.dtype) -> None:
    """p Hp by the probe's HVPs equals the dense autograd Hessian block, F.mse_loss included."""
    model, x, y = _model_and_data(dtype, loss)
    loss_fn = F.mse_loss if loss == "mse" else F.cross_entropy
    probe = FluctuationProbe(
        model, loss_fn, (x, y), learning_rate=0.1, batch_size=5, window=400, every=1, top_k=3
    )
    model64 = copy.deepcopy(model).to(torch.float64)
    y64 = y.to(torch.float64) if loss == "mse" else y
    dense = dense_hessian(model64, loss_fn, x.to(torch.float64), y64)
    rng = np.random.default_rng(1)
    start = 0
    for layer, d_l in ((1, 4 * 3 + 3), (2, 3 * 3 + 3)):
        p = np.linalg.qr(rng.standard_normal((d_l, 3)))[0].T
        got = probe.projected_hessian(layer, p)
        want = p @ dense[start : start + d_l, start : start + d_l] @ p.T
        tol = HVP_RTOL[dtype] * np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=HVP_RTOL[dtype], atol=tol)
        start += d_l


@pytest.mark.parametrize(
    "argv",
    [["--smoke"], ["--smoke", "--dtype", "float32"], ["--smoke", "--loss", "cross_entropy"]],
    ids=["mse-float64", "mse-float32", "cross_entropy-float64"],
)
def test_own_loop_example_runs(argv: list[str]) -> None:
    """examples/probe_own_loop.py trains, reaches the plateau and analyzes (smoke size)."""
    threads = torch.get_num_threads()
    try:
        module = runpy.run_path(str(EXAMPLE))
        summary = module["main"](argv)
    finally:
        torch.set_num_threads(threads)
    assert set(summary["ivfr"]) == {"layer_1", "layer_2", "layer_3"}
    acc = summary["test_accuracy"]
    assert acc is not None and acc > 0.5  # 10 classes: chance is 0.1; the smoke run reaches ~0.8
    for fit in summary["ivfr"].values():
        assert fit["psi"] is None or np.isfinite(fit["psi"])
