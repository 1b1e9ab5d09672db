"""The cheap evaluation paths of the loss profiles (issue 19) against the reference paths.

* ``GRID_METHOD = "outward"`` brackets the same grid cells as evaluating every grid point at every
  range (``"full"``): with the same loss path the flatness and the stored profiles are bitwise
  equal, with fewer evaluations; without the stored profile (``profile=False``) only the flatness.
* ``LOSS_PATH = "affine"`` (an affine layer of a ``torch.nn.Sequential``: its input cached, its
  output ``Z_0 + s Z_p``) evaluates the same function as the whole model's forward pass (float
  round-off: ~1e-15 relative in float64); models it does not apply to fall back to the full path.
* ``CURVATURE_PATH = "directional"``: ``p_iᵀ H p_i`` as the second derivative along p_i equals
  the Hessian-vector product's (float round-off); the projected per-sample gradients
  (``_noise.NOISE_PATH = "affine"``) and the output JVPs of the stability check
  (``_stability.JVP_PATH = "affine"``) equal the whole model's.
* ``analyze()`` with all of them against the reference paths on one window.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from sgdfluct.probe import (  # noqa: E402
    FluctuationProbe,
    _fitting,
    _flatness,
    _noise,
    _stability,
)
from sgdfluct.probe._flatness import LossAlong, _affine_site, flatness, profiles  # noqa: E402

#: float64 round-off of a loss or a second derivative evaluated in another order
F64_RTOL = 1e-12
#: ... and of a crossing: |δL| / (|L'| s) with |δL| ~ 1e-15 L on O(1) profiles, plus the ITP
#: resolution (2^-30 of a grid cell)
CROSSING_RTOL = 1e-9


def _mlp(dtype: torch.dtype, seed: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 10),
        torch.nn.ReLU(),
        torch.nn.Linear(10, 8),
        torch.nn.Tanh(),
        torch.nn.Linear(8, 3),
    ).to(dtype)


def _probe(
    model: torch.nn.Module,
    dtype: torch.dtype,
    *,
    mse: bool = False,
    wd: float = 1e-3,
    n_in: tuple[int, ...] = (6,),
) -> FluctuationProbe:
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(200, *n_in, generator=gen, dtype=dtype)
    if mse:
        y = torch.randn(200, 3, generator=gen, dtype=dtype)
        loss_fn = torch.nn.functional.mse_loss
    else:
        y = torch.randint(3, (200,), generator=gen)
        loss_fn = torch.nn.functional.cross_entropy
    return FluctuationProbe(
        model,
        loss_fn,
        (x, y),
        learning_rate=0.05,
        batch_size=8,
        window=400,
        every=1,
        top_k=6,
        weight_decay=wd,
    )


def _directions(probe: FluctuationProbe, lay, k: int = 6, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed + lay.index)
    return np.linalg.qr(rng.standard_normal((lay.dim, k)))[0].T


class _Counting:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.evaluations = 0
        plain = _flatness.profiles

        def counted(*a, **kw):
            self.evaluations += int(a[4].numel())
            return plain(*a, **kw)

        monkeypatch.setattr(_flatness, "profiles", counted)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("loss_path", ["full", "affine"])
def test_outward_grid_is_bitwise_the_full_grid(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, loss_path: str
) -> None:
    """Same loss path: the outward search gives bitwise the flatness, offsets and stored
    profiles of the full grid, with fewer evaluations (fewer still without the profiles)."""
    probe = _probe(_mlp(dtype), dtype)
    params = probe._params()
    with torch.no_grad():
        loss0 = float(probe._full_loss(params))
    monkeypatch.setattr(_flatness, "LOSS_PATH", loss_path)
    counter = _Counting(monkeypatch)
    for lay in probe.layers:
        p = _directions(probe, lay)
        curv = np.diag(probe.projected_hessian(lay.index, p))
        # a small variance with a quarter of the curvature: some directions need doublings
        curv = np.where(np.arange(6) % 2 == 0, 0.25 * curv, curv)
        pt = torch.as_tensor(p, dtype=dtype)
        var = np.full(6, 1e-4)
        got, counts = {}, {}
        for method, profile in (("full", True), ("outward", True), ("outward", False)):
            monkeypatch.setattr(_flatness, "GRID_METHOD", method)
            counter.evaluations = 0
            got[method, profile] = flatness(
                probe, params, lay, pt, loss0, curv, var, profile=profile
            )
            counts[method, profile] = counter.evaluations
        ref = got["full", True]
        for key in (("outward", True), ("outward", False)):
            np.testing.assert_array_equal(got[key][0], ref[0])
            np.testing.assert_array_equal(got[key][1], ref[1])
        np.testing.assert_array_equal(got["outward", True][2], ref[2])
        part = got["outward", False][2]
        seen = np.isfinite(part)
        np.testing.assert_array_equal(part[seen], ref[2][seen])
        assert counts["outward", True] <= counts["full", True]
        assert counts["outward", False] < counts["outward", True]


@pytest.mark.parametrize("case", ["tanh_ce", "relu_mse", "conv_circular"])
def test_affine_path_equals_full_forward(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """Float64: the affine path's profiles equal the whole model's within round-off, and its
    directional curvature the HVP's; the flatness agrees within the crossings' resolution."""
    dtype = torch.float64
    if case == "conv_circular":
        torch.manual_seed(1)
        model = torch.nn.Sequential(
            torch.nn.Conv1d(2, 3, 3, padding=1, padding_mode="circular"),
            torch.nn.Tanh(),
            torch.nn.Flatten(),
            torch.nn.Linear(24, 3),
        ).to(dtype)
        probe = _probe(model, dtype, n_in=(2, 8))
    else:
        probe = _probe(
            _mlp(dtype), dtype, mse=case == "relu_mse", wd=0.0 if "mse" in case else 1e-3
        )
    params = probe._params()
    with torch.no_grad():
        loss0 = float(probe._full_loss(params))
    for lay in probe.layers:
        assert _affine_site(probe.model, lay) is not None
        p = _directions(probe, lay)
        pt = torch.as_tensor(p, dtype=dtype)
        s = torch.linspace(-0.7, 0.7, 9, dtype=dtype).repeat(6, 1)
        monkeypatch.setattr(_flatness, "LOSS_PATH", "full")
        ref = profiles(probe, params, lay, pt, s)
        monkeypatch.setattr(_flatness, "LOSS_PATH", "affine")
        along = LossAlong(probe, params, lay, pt)
        got = profiles(probe, params, lay, pt, s, along=along)
        np.testing.assert_allclose(got, ref, rtol=F64_RTOL)
        hvp = np.diag(probe.projected_hessian(lay.index, p))
        curv = along.curvature()
        assert curv is not None
        np.testing.assert_allclose(
            curv.numpy(), hvp, rtol=F64_RTOL, atol=F64_RTOL * np.abs(hvp).max()
        )
        var = np.full(6, 1e-4)
        flat = {}
        for path in ("full", "affine"):
            monkeypatch.setattr(_flatness, "LOSS_PATH", path)
            flat[path] = flatness(probe, params, lay, pt, loss0, np.abs(hvp), var)[0]
        np.testing.assert_allclose(flat["affine"], flat["full"], rtol=CROSSING_RTOL)


def test_affine_path_falls_back_where_it_does_not_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a plain Sequential, tied weights, a hooked module, a group of modules: no affine
    site, and the full path's numbers bitwise."""
    dtype = torch.float64

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(6, 10), torch.nn.Linear(10, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.tanh(self.a(x)))

    torch.manual_seed(0)
    tied = torch.nn.Sequential(
        torch.nn.Linear(6, 6),
        torch.nn.Tanh(),
        torch.nn.Linear(6, 6),
        torch.nn.Tanh(),
        torch.nn.Linear(6, 3),
    ).to(dtype)
    tied[2].weight = tied[0].weight
    hooked = _mlp(dtype)
    hooked[2].register_forward_hook(lambda m, i, o: o * 1.0)
    cases = [(Net().to(dtype), "all"), (tied, "all"), (hooked, ["2"]), (_mlp(dtype), [("0", "2")])]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(50, 6, generator=gen, dtype=dtype)
    y = torch.randint(3, (50,), generator=gen)
    for model, layers in cases:
        probe = FluctuationProbe(
            model,
            torch.nn.functional.cross_entropy,
            (x, y),
            learning_rate=0.05,
            batch_size=4,
            window=400,
            every=1,
            top_k=3,
            layers=layers,
        )
        params = probe._params()
        for lay in probe.layers:
            assert _affine_site(probe.model, lay) is None, (type(model).__name__, lay.name)
            p = torch.as_tensor(_directions(probe, lay, 3))
            s = torch.linspace(-0.5, 0.5, 5, dtype=dtype).repeat(3, 1)
            monkeypatch.setattr(_flatness, "LOSS_PATH", "full")
            ref = profiles(probe, params, lay, p, s)
            monkeypatch.setattr(_flatness, "LOSS_PATH", "affine")
            along = LossAlong(probe, params, lay, p)
            assert along.site is None and along.curvature() is None
            np.testing.assert_array_equal(profiles(probe, params, lay, p, s, along=along), ref)


@pytest.mark.parametrize("mse", [False, True])
def test_affine_noise_and_jvps_equal_the_full_path(
    monkeypatch: pytest.MonkeyPatch, mse: bool
) -> None:
    """Float64: C_K from δ_nᵀ Z_p[n] equals the whole model's per-sample gradients projected,
    and the stability check's per-sample factors B_μ equal the whole model's JVPs."""
    dtype = torch.float64
    probe = _probe(_mlp(dtype), dtype, mse=mse)
    params = probe._params()
    p_t = {lay.index: torch.as_tensor(_directions(probe, lay, 4)) for lay in probe.layers}
    big_k = 4 * len(probe.layers)
    got = {}
    for noise, jvp in (("grad", "full"), ("affine", "affine")):
        monkeypatch.setattr(_noise, "NOISE_PATH", noise)
        monkeypatch.setattr(_stability, "JVP_PATH", jvp)
        got[noise] = (
            _noise.projected_noise(probe, params, p_t, big_k),
            _stability._sample_factors(probe, params, p_t),
        )
    for a, b in zip(got["affine"], got["grad"], strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=F64_RTOL * np.abs(b).max())


def _trained(dtype: torch.dtype) -> FluctuationProbe:
    """A probe of a float MLP after its window (fixed start, 300 steps recorded)."""
    model = _mlp(dtype, seed=3)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(300, 6, generator=gen, dtype=dtype)
    y = torch.randint(3, (300,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=1e-3)
    probe = FluctuationProbe(
        model,
        torch.nn.functional.cross_entropy,
        (x, y),
        optimizer=opt,
        batch_size=16,
        window=300,
        every=1,
        top_k=5,
        start=300,
        bootstrap=20,
    ).attach(opt)
    while not probe.done:
        idx = torch.randint(300, (16,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return probe


def test_analyze_fast_paths_against_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Float64, one window: the default paths against GRID_METHOD = LOSS_PATH = 'full',
    CURVATURE_PATH = 'hvp' — flatness (stored and calibrated) within the crossings' resolution,
    profiles and curvatures within round-off, everything else equal."""
    probe = _trained(torch.float64)
    fast = probe.analyze()
    monkeypatch.setattr(_flatness, "GRID_METHOD", "full")
    monkeypatch.setattr(_flatness, "LOSS_PATH", "full")
    monkeypatch.setattr(_fitting, "CURVATURE_PATH", "hvp")
    monkeypatch.setattr(_noise, "NOISE_PATH", "grad")
    monkeypatch.setattr(_stability, "JVP_PATH", "full")
    ref = probe.analyze()
    for a, b in zip(fast.layers, ref.layers, strict=True):
        np.testing.assert_allclose(a.flatness, b.flatness, rtol=CROSSING_RTOL)
        np.testing.assert_allclose(a.loss_profile, b.loss_profile, rtol=F64_RTOL)
        np.testing.assert_array_equal(a.profile_offsets, b.profile_offsets)
        np.testing.assert_array_equal(a.curvature, b.curvature)
        np.testing.assert_array_equal(a.variances, b.variances)
        scale = np.abs(b.noise_proj).max()
        np.testing.assert_allclose(a.noise_proj, b.noise_proj, rtol=0, atol=F64_RTOL * scale)
        np.testing.assert_allclose(a.temperature, b.temperature, rtol=F64_RTOL)
        ca, cb = a.ivfr_calibrated, b.ivfr_calibrated
        np.testing.assert_allclose(
            ca["curvature"],
            cb["curvature"],
            rtol=F64_RTOL,
            atol=F64_RTOL * np.abs(cb["curvature"]).max(),
        )
        np.testing.assert_allclose(ca["flatness"], cb["flatness"], rtol=CROSSING_RTOL)
        if cb.get("psi") is not None:
            assert ca["psi"] == pytest.approx(cb["psi"], rel=1e-6)
        if b.ivfr_all["psi"] is not None:
            assert a.ivfr_all["psi"] == pytest.approx(b.ivfr_all["psi"], rel=1e-6)
