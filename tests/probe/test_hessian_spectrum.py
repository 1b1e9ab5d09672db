"""Per-layer Hessian trace (Hutch++) and spectral density (SLQ) of the probe (issue 19, item 5).

The truth is the dense Hessian of a small float64 MLP (autograd's ``hessian``, not the probe's
HVPs). Every tolerance is a stated multiple of the estimator's standard error (its own, or the
exact one of a Rademacher quadratic form), a round-off level, or the density's resolution σ.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from _torch_reference import dense_hessian  # noqa: E402 (after the torch skip)
from sgdfluct.errors import ConfigError  # noqa: E402
from sgdfluct.probe import (  # noqa: E402
    FluctuationProbe,
    SpectrumSettings,
    probe_config_from_dict,
)
from sgdfluct.probe._curvature import layer_matmat  # noqa: E402
from sgdfluct.probe._spectrum import (  # noqa: E402
    hessian_spectra,
    hutchpp_trace,
    lanczos_quadrature,
    layer_spectrum,
    rademacher,
)

#: standard errors allowed between an estimate and the truth (two-sided normal: p ≈ 6e-5;
#: Student t with 19 degrees of freedom, the Hutch++ SE's: p ≈ 8e-4)
Z_MAX = 4.0
#: float64 round-off of quadrature moments (Gauss quadrature is exact up to degree 2m − 1)
MOMENT_RTOL = 1e-9


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small models: one torch thread (several are many times slower on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - y) ** 2).sum(-1).mean()


def _model(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """20 -> 16 (tanh) -> 3: layer 1 has 336 parameters (stochastic path), layer 2 has 51."""
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(20, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)
    ).to(torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    x = torch.randn(120, 20, generator=gen, dtype=torch.float64)
    y = torch.randn(120, 3, generator=gen, dtype=torch.float64)
    return model, x, y


def _probe(model, x, y, wd: float = 0.0, **kw) -> FluctuationProbe:
    settings = {"learning_rate": 0.05, "batch_size": 10, "window": 400, "every": 1, "top_k": 5}
    return FluctuationProbe(model, _mse, (x, y), weight_decay=wd, **{**settings, **kw})


@pytest.fixture(scope="module")
def layer1() -> tuple[FluctuationProbe, np.ndarray, dict]:
    """The probe, the dense block H_11 (336 × 336, with weight decay 0.01) and its params."""
    wd = 0.01
    model, x, y = _model()
    probe = _probe(model, x, y, wd)
    dense = dense_hessian(model, _mse, x, y, wd)
    h11 = dense[:336, :336]
    params = {n: p.detach() for n, p in model.named_parameters()}
    return probe, h11, params


def _quadratic_form_se(a: np.ndarray, n: int) -> float:
    """Exact SE of the mean of n Rademacher forms zᵀAz / d: sqrt(2(||A||_F² − Σ a_ii²) / n) / d."""
    d = a.shape[0]
    return math.sqrt(2.0 * (np.sum(a**2) - np.sum(np.diag(a) ** 2)) / n) / d


def test_hutchpp_trace_within_its_standard_error_of_the_dense_trace(layer1) -> None:
    """Layer 1 (d = 336 > 220 HVPs: the stochastic path): |Hutch++ − tr H| <= 4 SE (its own)."""
    probe, h11, params = layer1
    lay = probe._layer(1)
    st = SpectrumSettings()
    spec = layer_spectrum(layer_matmat(probe, params, lay), lay.dim, st, np.random.default_rng(0))
    assert spec.method == "hutch++/slq" and spec.dim == 336
    assert spec.trace_matvecs == 60 and spec.matvecs == 60 + 4 * 40
    true = float(np.trace(h11))
    assert spec.trace_se > 0
    assert abs(spec.trace - true) <= Z_MAX * spec.trace_se, (spec.trace, true, spec.trace_se)


def test_hutchpp_standard_error_is_calibrated() -> None:
    """200 independent Hutch++ runs (30 matvecs: 10 deflated probes) on a dense PSD matrix with
    a decaying spectrum: the share within 2 of their own SEs is Student t_9's 0.923, within 4
    binomial standard errors (±0.075 for 200 runs): [0.85, 0.99]."""
    rng = np.random.default_rng(5)
    d = 300
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = 1.0 / (1.0 + np.arange(d)) ** 0.7
    a = (q * lam) @ q.T
    true = float(lam.sum())
    hits = 0
    for seed in range(200):
        est, se, _ = hutchpp_trace(lambda v: a @ v, d, 30, np.random.default_rng(seed))
        hits += abs(est - true) <= 2 * se
    assert 0.85 <= hits / 200 <= 0.99


def test_slq_moments_match_dense_eigvalsh(layer1) -> None:
    """Layer 1's SLQ (4 starts × 40 steps): mass 1; mean tr(H)/d and second moment tr(H²)/d within
    4 exact standard errors of the Rademacher forms; per start, the quadrature reproduces
    zᵀH^k z/d for k <= 3 to round-off; the Ritz nodes lie in [λ_min, λ_max] (interlacing) and
    reach both ends to within the density's resolution σ; the broadened density integrates to 1."""
    probe, h11, params = layer1
    lay = probe._layer(1)
    d = lay.dim
    st = SpectrumSettings()
    spec = layer_spectrum(layer_matmat(probe, params, lay), d, st, np.random.default_rng(0))
    evals = np.linalg.eigvalsh(h11)
    h2 = h11 @ h11
    assert spec.moment(0) == pytest.approx(1.0, abs=1e-12)
    assert abs(spec.mean - evals.mean()) <= Z_MAX * _quadratic_form_se(h11, st.starts)
    assert abs(spec.moment(2) - np.mean(evals**2)) <= Z_MAX * _quadratic_form_se(h2, st.starts)
    # exactness per start: the same start vectors through lanczos_quadrature
    z = rademacher(np.random.default_rng(3), d, 2)
    matmat = layer_matmat(probe, params, lay)
    for col in range(2):
        nodes, weights, m = lanczos_quadrature(matmat, z[:, col : col + 1], st.steps)
        assert m == st.steps
        zc = z[:, col]
        for k in range(4):
            want = zc @ np.linalg.matrix_power(h11, k) @ zc / d
            got = float(np.sum(weights * nodes**k))
            assert got == pytest.approx(
                want, rel=MOMENT_RTOL, abs=MOMENT_RTOL * abs(evals).max() ** k
            )
    norm = np.abs(evals).max()
    lo, hi = spec.support
    assert evals[0] - 1e-9 * norm <= lo and hi <= evals[-1] + 1e-9 * norm
    assert lo - evals[0] <= spec.broadening and evals[-1] - hi <= spec.broadening
    mass = np.trapezoid(spec.density, spec.grid)
    assert mass == pytest.approx(1.0, abs=1e-5)  # tails beyond the 5 % margin: ~5σ


def test_small_layer_takes_the_dense_path() -> None:
    """Layer 2 (51 parameters <= 220 HVPs): its dense block, exact trace and eigenvalues."""
    wd = 0.01
    model, x, y = _model()
    probe = _probe(model, x, y, wd)
    dense = dense_hessian(model, _mse, x, y, wd)[336:, 336:]
    params = {n: p.detach() for n, p in model.named_parameters()}
    lay = probe._layer(2)
    spec = layer_spectrum(
        layer_matmat(probe, params, lay), lay.dim, SpectrumSettings(), np.random.default_rng(0)
    )
    assert spec.method == "dense" and spec.trace_se == 0 and spec.matvecs == 51
    scale = np.abs(dense).max()
    assert spec.trace == pytest.approx(np.trace(dense), rel=1e-10, abs=1e-10 * scale)
    np.testing.assert_allclose(spec.nodes, np.linalg.eigvalsh(dense), atol=1e-10 * scale)
    assert spec.weights.sum() == pytest.approx(1.0, abs=1e-12)


def _trained_probe(**kw) -> FluctuationProbe:
    """The small MLP trained by plain SGD, the window at a fixed step (no plateau wait)."""
    model, x, y = _model(1)
    probe = _probe(model, x, y, 0.01, window=300, every=2, start=100, bootstrap=20, **kw)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=0.01)
    probe.attach(opt)
    gen = torch.Generator().manual_seed(2)
    while not probe.done:
        idx = torch.randint(x.shape[0], (10,), generator=gen)
        opt.zero_grad()
        _mse(model(x[idx]), y[idx]).backward()
        opt.step()
    return probe


def test_analyze_exposes_the_spectra_and_writes_the_figure(tmp_path) -> None:
    """analyze(): every layer's trace and density on the result, in summary.json's and
    result.nc's additions, and the hessian_spectrum figure written beside the others."""
    from sgdfluct.io import atomic_save_figure

    run = _trained_probe().analyze()
    for lr, method in zip(run.layers, ("hutch++/slq", "dense"), strict=True):
        spec = lr.hessian_spectrum
        assert spec is not None and spec.method == method
        assert lr.hessian_trace == spec.trace and np.isfinite(lr.hessian_trace_se)
    summary = run.to_summary()
    lay1 = summary["layers"]["layer_1"]
    assert lay1["hessian_trace"] == run.layers[0].hessian_trace
    assert lay1["hessian_spectrum"]["matvecs"] == 220
    ds = run.to_dataset()
    for v in (1, 2):
        for name in ("hessian_trace", "hessian_trace_se", "slq_nodes", "slq_weights"):
            assert f"{name}_{v}" in ds
        assert ds[f"spectral_density_{v}"].shape == (1024,)
    for name in ("pca_variance_1", "curvature_1", "temperature_2"):  # the contract is unchanged
        assert name in ds
    figs = run.figures()
    assert {"ivfr", "temperature", "theory", "train_loss", "hessian_spectrum"} <= set(figs)
    path = tmp_path / "figures" / "hessian_spectrum.png"
    atomic_save_figure(figs["hessian_spectrum"], path)
    assert path.stat().st_size > 10_000


def test_spectrum_off_and_auto_skip() -> None:
    """False: no spectra, no figure, null in the summary; "auto" above max_model_params (here
    10 < 387 parameters): skipped with a note; True: computed whatever the size."""
    run = _trained_probe(hessian_spectrum=False).analyze()
    assert all(lr.hessian_spectrum is None for lr in run.layers)
    assert math.isnan(run.layers[0].hessian_trace)
    assert "hessian_spectrum" not in run.figures()
    assert run.to_summary()["layers"]["layer_1"]["hessian_trace"] is None
    assert "hessian_trace_1" not in run.to_dataset()
    model, x, y = _model()
    params = {n: p.detach() for n, p in model.named_parameters()}
    small = SpectrumSettings(max_model_params=10, trace_matvecs=6, starts=1, steps=3)
    notes: list[str] = []
    got = hessian_spectra(_probe(model, x, y, spectrum=small), params, notes)
    assert set(got.values()) == {None}
    assert len(notes) == 1 and "spectral density were skipped" in notes[0]
    got = hessian_spectra(_probe(model, x, y, spectrum=small, hessian_spectrum=True), params, [])
    assert got[1] is not None and got[1].matvecs == 6 + 3 and got[1].steps == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"trace_matvecs": 61}, "multiple of 3"),
        ({"steps": 1}, "steps"),
        ({"kappa": 1.0}, "kappa"),
    ],
)
def test_spectrum_settings_refused_by_name(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SpectrumSettings(**kwargs)


def test_config_key_hessian_spectrum() -> None:
    base = {"data": {"dataset": "digits", "n_train": 200}, "sgd": {"steps": 5000}}
    cfg = probe_config_from_dict({**base, "probe": {"window": 1000}})
    assert cfg.probe.hessian_spectrum == "auto"
    cfg = probe_config_from_dict({**base, "probe": {"window": 1000, "hessian_spectrum": False}})
    assert cfg.probe.hessian_spectrum is False
    with pytest.raises(ConfigError, match=r"probe\.hessian_spectrum"):
        probe_config_from_dict({**base, "probe": {"window": 1000, "hessian_spectrum": "yes"}})
    model, x, y = _model()
    with pytest.raises(ConfigError, match="hessian_spectrum"):
        _probe(model, x, y, hessian_spectrum="on")
