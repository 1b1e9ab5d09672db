"""The probe is as strict as `run` about stability (issue 22).

On the teacher-student linear model of ``run`` (N_i = 5, P = 40, data seed 0: λ_max(H) = 1.517,
2/λ_max = 1.318; at batch size 4 `run` finds the mean-square edge between η = 0.7 and 0.9):

* full-batch GD at η = 1.34 > 2/λ_max: the loss grows geometrically; the plateau test no longer
  passes and the probe exits 3 naming η, λ_max and the bound (before: exit 0, loss 1e144);
* η = 0.9, batch 4 (`run`: "not mean-square stable, spectral radius 1.46"): exit 3 from the
  mean-square check of the probed subspace (before: exit 0, variances 163-385);
* stable controls just below each bound (GD at η = 1.28, batch 4 at η = 0.7) exit 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from click.testing import CliRunner  # noqa: E402
from reliability_helpers import PROBE_LINEAR  # noqa: E402

from sgdfluct.cli import main  # noqa: E402
from sgdfluct.errors import ConfigError  # noqa: E402
from sgdfluct.probe import (  # noqa: E402
    FluctuationProbe,
    _stream,
    load_data,
    probe_config_from_dict,
)
from sgdfluct.probe._stability import subspace_spectral_radius  # noqa: E402
from sgdfluct.probe._stream import PLATEAU_SUB_BLOCKS, PlateauMonitor  # noqa: E402
from sgdfluct.theory.discrete import mean_square_spectral_radius  # noqa: E402

CONFIG = PROBE_LINEAR
GD = {"batch": 40, "sampling": "without_replacement"}  # f_S = 0: gradient descent
BATCH4 = {"batch": 4, "sampling": "with_replacement"}
#: 2/λ_max(H) of this data set (checked in test_data_set_bounds)
GD_BOUND = 1.318068764342328


def _probe(tmp_path, record, eta, kw):
    cfg = tmp_path / "probe.toml"
    cfg.write_text(CONFIG.format(eta=eta, **kw))
    result = CliRunner().invoke(main, ["probe", str(cfg), "--out", str(tmp_path / "out"), "-q"])
    lines = [line for line in result.output.splitlines() if line.startswith("error")]
    record.update(exit=result.exit_code, message=lines[0] if lines else "")
    return result, lines[0] if lines else ""


def test_data_set_bounds() -> None:
    """The premises of the cases below, from `run`'s theory (independent of the probe)."""
    cfg = probe_config_from_dict(_dict(1.0, GD))
    x = load_data(cfg).x.numpy()
    lam = np.linalg.eigvalsh(x.T @ x / len(x))
    assert 2 / lam[-1] == pytest.approx(GD_BOUND, rel=1e-12)
    kw = dict(batch_size=4, sampling="with_replacement")
    assert mean_square_spectral_radius(x, learning_rate=0.7, **kw) < 1
    assert mean_square_spectral_radius(x, learning_rate=0.9, **kw) > 1


def _dict(eta, kw):
    import tomllib

    return tomllib.loads(CONFIG.format(eta=eta, **kw))


def test_gradient_descent_above_the_bound_exits_3(tmp_path, record) -> None:
    result, message = _probe(tmp_path, record, 1.34, GD)
    record.update(expected=3, traceback=result.exc_info is not None and result.exit_code == 1)
    assert result.exit_code == 3, result.output
    assert "learning_rate = 1.34" in message
    assert "lambda_max(H) = 1.51737" in message
    assert f"2/lambda_max = {GD_BOUND:.6g}" in message
    assert not (tmp_path / "out").exists()


def test_gradient_descent_past_a_passed_plateau_still_exits_3(tmp_path, record, monkeypatch):
    """Were the plateau declared on the growing loss (the old test), the window analysis refuses
    it: η λ_max >= 2 at the window mean."""
    monkeypatch.setattr(_stream, "log_plateau_test", lambda *a, **k: True)
    result, message = _probe(tmp_path, record, 1.34, GD)
    record.update(expected=3, traceback=False)
    assert result.exit_code == 3, result.output
    assert "eta * lambda_max = 2.03" in message and "diverges" in message


def test_batch_four_past_the_mean_square_edge_exits_3(tmp_path, record) -> None:
    result, message = _probe(tmp_path, record, 0.9, BATCH4)
    record.update(expected=3, traceback=False)
    assert result.exit_code == 3, result.output
    assert "not mean-square stable at learning_rate = 0.9" in message
    assert "spectral radius" in message and "lambda_max(H) = 1.51737" in message
    assert f"2/lambda_max = {GD_BOUND:.6g}" in message


def test_stable_control_below_the_mean_square_edge_exits_0(tmp_path, record) -> None:
    result, _ = _probe(tmp_path, record, 0.7, BATCH4)
    record.update(expected=0, traceback=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "summary.json").is_file()


def test_stable_gradient_descent_just_below_the_bound_is_analysed() -> None:
    """GD at η = 1.28 < 2/λ_max converges to the minimum (a loss constant to the last bit, which
    the plateau test now accepts) and passes both stability checks. In-process: GD has no
    fluctuations, and the CLI's log-scaled variance figure warns about all-zero data."""
    from sgdfluct.probe import run_probe

    run, _ = run_probe(probe_config_from_dict(_dict(1.28, GD)))
    assert run.lambda_max * 1.28 < 2
    assert run.plateau_step > 0


@pytest.mark.parametrize(
    ("rate", "noise"), [(1e-6, 0.0), (1e-3, 0.0), (0.5, 0.0), (1e-2, 0.1), (0.3, 0.1)]
)
def test_plateau_never_passes_on_geometric_growth(rate, noise) -> None:
    """Loss e^{rate t}: no sub-block passes at any rate without noise (docs of
    log_plateau_test); with multiplicative noise, none once the growth per block exceeds it.
    (Growth buried in noise passes locally; the mean-square check at the window mean is the
    backstop, as above.)"""
    gen = np.random.default_rng(0)
    mon = PlateauMonitor(block_records=20 * PLATEAU_SUB_BLOCKS)
    for t in range(2 * 3 * 20 * PLATEAU_SUB_BLOCKS):  # 6 blocks; e^{0.5 t} stays finite
        assert not mon.add(math.exp(rate * t) * gen.lognormal(0.0, noise)), t


def test_plateau_passes_on_a_stationary_loss() -> None:
    """The control: a stationary (AR(1), positive) loss passes within a few blocks."""
    gen = np.random.default_rng(1)
    mon = PlateauMonitor(block_records=20 * PLATEAU_SUB_BLOCKS)
    value, passed_at = 0.0, None
    for i in range(40 * 3 * 20 * PLATEAU_SUB_BLOCKS):
        value = 0.9 * value + gen.standard_normal()
        if mon.add(5.0 + 0.2 * value):
            passed_at = i
            break
    assert passed_at is not None


def test_subspace_spectral_radius_is_the_exact_second_moment_map() -> None:
    """Agreement of two constructions on a linear model: the matrix-free power iteration and the
    dense K²×K² matrix of T(M) = (I − ηH) M (I − ηH) + η² f_S (K(M) − HMH), A_μ = x_μ x_μᵀ; and
    the mean-square edge agrees with `run`'s splitting operator."""
    cfg = probe_config_from_dict(_dict(1.0, GD))
    x = load_data(cfg).x.numpy()
    h = x.T @ x / len(x)
    d = h.shape[0]
    eye = np.eye(d)
    for eta in (0.5, 0.7, 0.9):
        fs = 0.25
        a = np.einsum("ni,nj->nij", x, x)
        kmat = np.einsum("nab,ncd->acbd", a, a).reshape(d * d, d * d) / len(x)
        step = eye - eta * h
        dense = np.kron(step, step) + eta**2 * fs * (kmat - np.kron(h, h))
        want = float(np.max(np.abs(np.linalg.eigvals(dense))))
        got = subspace_spectral_radius(h, x[:, None, :], learning_rate=eta, batch_factor=fs)
        assert got == pytest.approx(want, rel=1e-5)
        ms = mean_square_spectral_radius(
            x, learning_rate=eta, batch_size=4, sampling="with_replacement"
        )
        assert (got < 1) == (ms < 1)
    # gradient descent: ρ = max_i (1 − η λ_i)²
    lam = np.linalg.eigvalsh(h)
    got = subspace_spectral_radius(h, x[:, None, :], learning_rate=1.28, batch_factor=0.0)
    assert got == pytest.approx(float(np.max((1 - 1.28 * lam) ** 2)), rel=1e-6)


def test_maximize_is_refused_by_name() -> None:
    model = torch.nn.Linear(3, 1, bias=False).double()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, maximize=True)
    with pytest.raises(ConfigError, match="maximize"):
        FluctuationProbe(
            model, torch.nn.functional.mse_loss, (x, y), optimizer=opt, batch_size=4, top_k=3,
            window=400, every=2,
        )  # fmt: skip


def test_step_size_matrix_reduces_to_one_learning_rate() -> None:
    """``learning_rate`` as the matrix η I gives the scalar result; a smaller η on some
    directions (parameter groups) can only help here (diagonal H)."""
    gen = np.random.default_rng(3)
    h = np.diag([1.5, 1.0, 0.4])
    b = gen.standard_normal((30, 1, 3))
    kw = dict(batch_factor=0.25)
    scalar = subspace_spectral_radius(h, b, learning_rate=0.9, **kw)
    matrix = subspace_spectral_radius(h, b, learning_rate=0.9 * np.eye(3), **kw)
    assert matrix == pytest.approx(scalar, rel=1e-10)
    slower = subspace_spectral_radius(h, b, learning_rate=np.diag([0.9, 0.9, 0.1]), **kw)
    assert slower < scalar


@pytest.mark.slow
def test_parameter_groups_with_their_own_learning_rates_are_checked() -> None:
    """torch.optim.SGD with two groups (weight, bias): the window check uses each group's η; a
    stable run is analysed, and a weight η past the mean-square edge is refused (exit 3)."""
    from sgdfluct.errors import DivergenceError, UnstableError

    cfg = probe_config_from_dict(_dict(0.7, BATCH4))
    data = load_data(cfg)
    x, y = data.x, data.y

    def train(weight_lr: float) -> None:
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 1, bias=True).double()
        opt = torch.optim.SGD(
            [{"params": [model.weight], "lr": weight_lr}, {"params": [model.bias], "lr": 0.05}]
        )

        def half_mse(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return 0.5 * ((out - t) ** 2).sum(-1).mean()

        probe = FluctuationProbe(
            model, half_mse, (x, y), optimizer=opt, batch_size=4, top_k=6, window=2000, every=2,
            steps=6000, bootstrap=20,
        )  # fmt: skip
        gen = torch.Generator().manual_seed(1)
        for _ in range(6000):
            idx = torch.randint(len(x), (4,), generator=gen)
            opt.zero_grad()
            half_mse(model(x[idx]), y[idx]).backward()
            opt.step()
            probe.observe()
            if probe.done:
                break
        probe.analyze()

    train(0.5)
    with pytest.raises(UnstableError, match="not mean-square stable"):
        train(0.9)
    # further past the edge the loss bursts over orders of magnitude before any plateau: named
    # as divergence (exit 3), not as a loss "still drifting" (exit 2)
    with pytest.raises(DivergenceError, match="rose from a block mean"):
        train(0.95)


@pytest.mark.parametrize("eta", [0.3, 0.9])
def test_arnoldi_spectral_radius_matches_the_dense_map(eta) -> None:
    """K = 9 (> the dense limit): ARPACK on the K² vectorization agrees with the eigenvalues of
    the dense K²×K² map built independently (A_μ = x_μ x_μᵀ, f_S = 1/4)."""
    gen = np.random.default_rng(7)
    x = gen.standard_normal((60, 9)) * np.linspace(0.3, 1.2, 9)
    h = x.T @ x / len(x)
    d = h.shape[0]
    a = np.einsum("ni,nj->nij", x, x)
    kmat = np.einsum("nab,ncd->acbd", a, a).reshape(d * d, d * d) / len(x)
    step = np.eye(d) - eta * h
    dense = np.kron(step, step) + eta**2 * 0.25 * (kmat - np.kron(h, h))
    want = float(np.max(np.abs(np.linalg.eigvals(dense))))
    got = subspace_spectral_radius(h, x[:, None, :], learning_rate=eta, batch_factor=0.25)
    assert got == pytest.approx(want, rel=1e-6)
