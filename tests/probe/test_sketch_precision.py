"""The compact (float32, batched, Gaussian-Ω) Nyström sketch against the float64 one (issue 19).

A large layer's sketch (``NystromSketch.compact``: d ℓ² > ``DEFER_QR_FLOPS``) stores its test
matrix and accumulator in float32, takes snapshots in batches and computes its top eigenpairs
from ℓ×ℓ Gram matrices. These tests hold it to the float64 sketch on the same range, and to a
prescribed covariance within the standard error of the sample variances as well as the float64
path; and they check that the probe's batched recording feeds every recorder the same snapshots.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sgdfluct.probe import FluctuationProbe, NystromSketch, _recording, _stream  # noqa: E402


def _pair(
    first: torch.Tensor, ell: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[NystromSketch, NystromSketch]:
    """A compact sketch and a float64 one streamed on the orthonormal basis of its range."""
    monkeypatch.setattr(_stream, "DEFER_QR_FLOPS", 0.0)
    compact = NystromSketch(first, ell, torch.Generator().manual_seed(3))
    monkeypatch.setattr(_stream, "DEFER_QR_FLOPS", 1e12)
    full = NystromSketch(first, ell, torch.Generator().manual_seed(3))
    monkeypatch.undo()
    assert compact.compact and not full.compact and compact.omega is not None
    assert compact.y.dtype == compact.omega.dtype == torch.float32
    full.omega = torch.linalg.qr(compact.omega.to(torch.float64))[0]  # the same range
    return compact, full


def _feed(compact: NystromSketch, full: NystromSketch, rows: torch.Tensor, batch: int) -> None:
    for i in range(0, rows.shape[0], batch):
        compact.extend(rows[i : i + batch])
    for r in rows:
        full.update(r)


def _spectrum(kind: str, d: int) -> torch.Tensor:
    """Standard deviations per coordinate."""
    i = torch.arange(d, dtype=torch.float64)
    if kind == "slow":  # 1 -> 0.01 over all coordinates: no gap within the sketch
        return torch.logspace(0, -2, d, dtype=torch.float64)
    if kind == "steep":  # variance / 10 every 2.5 coordinates: the top 20 span 1e-8
        return 10 ** (-i / 5)
    if kind == "rank30":  # exactly 30 directions, fewer than ℓ = 60
        return torch.where(i < 30, 10 ** (-i / 30), 0.0)
    raise ValueError(kind)


@pytest.mark.parametrize(
    ("kind", "d", "n"),
    [
        ("slow", 3000, 400),
        ("steep", 20_000, 400),
        ("rank30", 20_000, 300),
        ("slow", 20_000, 11),  # n - 1 < k = 20: ten directions carry variance
        ("steep", 20_000, 6),
    ],
)
def test_compact_sketch_matches_float64_sketch(
    kind: str, d: int, n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(n, d, generator=gen, dtype=torch.float64) * _spectrum(kind, d) + 2.0
    rows = rows.float().double()  # float32 weights, as a float32 model's
    compact, full = _pair(rows[0], 60, monkeypatch)
    _feed(compact, full, rows, 16)
    assert compact.count == full.count == n
    (v_c, p_c), (v_f, p_f) = compact.top(20), full.top(20)
    assert v_c.shape == (20,) and p_c.shape == (20, d)
    np.testing.assert_allclose(p_c @ p_c.T, np.eye(20), atol=1e-12)  # orthonormal rows
    big = v_f > 1e-6 * v_f[0]
    np.testing.assert_allclose(v_c[big], v_f[big], rtol=1e-4)  # float32: ~1e-7 of λ_1 each
    np.testing.assert_allclose(v_c[~big], v_f[~big], atol=1e-9 * v_f[0])
    overlap = np.abs(np.sum(p_c[big] * p_f[big], axis=1))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-6)
    if n - 1 < 20:  # the completed directions carry no variance
        assert np.all(v_c[n - 1 :] == 0.0)


def test_compact_sketch_recovers_a_prescribed_covariance(monkeypatch: pytest.MonkeyPatch) -> None:
    """w_t = w̄ + Σ^(1/2) z_t with 20 known variances along random directions in d = 20 000 plus
    a weak isotropic tail: each top variance within 4 standard errors (λ sqrt(2/(n−1))) of its
    prescribed value, the compact sketch's deviation within 1e-3 standard errors of the float64
    path's, and its directions in the prescribed subspace as well as the float64 path's."""
    d, n, k = 20_000, 400, 20
    rng = np.random.default_rng(7)
    lam = 2.0 ** (-np.arange(k) / 2.0)  # 1 ... 2^-9.5: distinct, no degeneracy
    basis = np.linalg.qr(rng.standard_normal((d, k)))[0]
    z = rng.standard_normal((n, k)) * np.sqrt(lam)
    tail = 1e-3 * np.sqrt(lam[-1])
    stream = 0.5 + z @ basis.T + tail * rng.standard_normal((n, d))
    rows = torch.as_tensor(stream).float().double()
    compact, full = _pair(rows[0], 60, monkeypatch)
    _feed(compact, full, rows, 16)
    (v_c, p_c), (v_f, p_f) = compact.top(k), full.top(k)
    se = lam * np.sqrt(2.0 / (n - 1))
    dev_c, dev_f = (v_c - lam) / se, (v_f - lam) / se
    assert np.all(np.abs(dev_c) < 4.0), dev_c
    np.testing.assert_allclose(dev_c, dev_f, atol=1e-3)
    # share of each estimated direction inside the prescribed subspace
    inside_c = np.sum((p_c @ basis) ** 2, axis=1)
    inside_f = np.sum((p_f @ basis) ** 2, axis=1)
    np.testing.assert_allclose(inside_c, inside_f, atol=1e-6)
    assert inside_c.min() > 0.9


def test_compact_batches_equal_single_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(1)
    d, n = 5000, 50
    rows = (torch.randn(n, d, generator=gen) * _spectrum("slow", d).float() + 1.0).double()
    monkeypatch.setattr(_stream, "DEFER_QR_FLOPS", 0.0)
    one = NystromSketch(rows[0], 40, torch.Generator().manual_seed(3))
    many = NystromSketch(rows[0], 40, torch.Generator().manual_seed(3))
    for r in rows:
        one.update(r)
    many.extend(rows[:7])
    many.extend(rows[7:23])
    many.extend(rows[23:])
    assert one.count == many.count == n
    want = one.top(10)[0]
    np.testing.assert_allclose(many.top(10)[0], want, rtol=0, atol=1e-6 * want[0])


def test_compact_sketch_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_stream, "DEFER_QR_FLOPS", 0.0)
    d, ell = 5000, 60
    sk = NystromSketch(torch.zeros(d, dtype=torch.float64), ell, torch.Generator().manual_seed(0))
    assert sk.compact
    # float32 Y and Ω, float64 reference and running sum, the ℓ×ℓ core and its ℓ-sum
    assert sk.nbytes() == 4 * 2 * d * ell + 8 * 2 * d + 8 * (ell * ell + ell)


def _probe_run(batch: int, monkeypatch: pytest.MonkeyPatch) -> FluctuationProbe:
    monkeypatch.setattr(_stream, "DEFER_QR_FLOPS", 0.0)  # every sketched layer compact
    monkeypatch.setattr(_recording, "SNAPSHOT_BATCH", batch)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(30, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 30, generator=gen)
    y = torch.randn(64, 2, generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = FluctuationProbe(
        model,
        lambda o, t: 0.5 * ((o - t) ** 2).sum(1).mean(),
        (x, y),
        optimizer=opt,
        batch_size=8,
        top_k=3,
        window=200,
        every=2,
        sketch_size=12,
        start=50,
    ).attach(opt)
    while not probe.done:
        idx = torch.randint(64, (8,), generator=gen)
        opt.zero_grad()
        probe.loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
    monkeypatch.undo()
    return probe


@pytest.mark.parametrize("batch", [16, 64])
def test_batched_recording_feeds_every_recorder_the_same_snapshots(
    batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SNAPSHOT_BATCH = 16 or 64 (the default; flushes at the quarter, the half and the end, 100
    snapshots) against 1 (every snapshot at once): the same counts and, to float32 round-off,
    the same statistics."""
    ref = _probe_run(1, monkeypatch)
    got = _probe_run(batch, monkeypatch)
    assert got._pending and all(b.n == 0 for b in got._pending.values())  # all flushed
    for i, rec in ref._recorders.items():
        other = got._recorders[i]
        assert isinstance(rec, NystromSketch) and isinstance(other, NystromSketch)
        assert rec.compact == other.compact == (not rec.exact)
        assert rec.count == other.count == 100
        want = rec.top(3)[0]  # float32 round-off: ~1e-7 of the largest variance
        np.testing.assert_allclose(other.top(3)[0], want, rtol=0, atol=1e-6 * want[0])
        for a, b in ((ref._split, got._split), (ref._split_quarter, got._split_quarter)):
            assert a[i].count == b[i].count == 50
            overlap = np.abs(np.sum(b[i].directions * a[i].directions, axis=1))
            np.testing.assert_allclose(overlap, 1.0, atol=1e-6)
            np.testing.assert_allclose(b[i].moments.squares, a[i].moments.squares, rtol=1e-4)
    assert got.recorder_bytes() > ref.recorder_bytes()  # the batch's extra rows
    run = got.analyze()  # the analysis reads the compact sketches (contiguous directions)
    for lay in run.layers:
        assert lay.k == 3 and not lay.sketch_exact
        np.testing.assert_allclose(lay.directions @ lay.directions.T, np.eye(3), atol=1e-12)
        assert np.all(np.isfinite(lay.variances)) and np.all(np.diff(lay.variances) <= 0)


def test_float32_split_projections_match_float64_on_a_prescribed_covariance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A compact layer's split recorder (float32 directions, projections of the sketch's float32
    deviations in its fused GEMM passes) against the float64 recorder on the same snapshots:
    20 prescribed variances along random directions in d = 20 000, the stream offset from zero
    and drifting (|w − w_0| several times the projected deviations).

    Tolerance from float32 round-off: a projection moves by at most ~eps32 sqrt(d) |u| (rounded
    directions and the d-long float32 dot product, ``u = w − w_0``), so a variance by at most
    ``2 σ · δz``; asserted with δz = 1e-6 max|u| (several times that bound's typical size), and
    the deviations from the prescribed variances within 1e-3 standard errors of the float64
    path's (both within 4)."""
    from sgdfluct.ivfr_estimator import series_variances
    from sgdfluct.probe._split import SplitRecorder

    d, n, k, half = 20_000, 400, 20, 37
    rng = np.random.default_rng(11)
    lam = 2.0 ** (-np.arange(k) / 2.0)
    basis = np.linalg.qr(rng.standard_normal((d, k)))[0]
    z = rng.standard_normal((n, k)) * np.sqrt(lam)
    drift = np.linspace(0.0, 3.0, n)[:, None] * rng.standard_normal(d) / np.sqrt(d)
    stream = 0.5 + z @ basis.T + drift + 1e-4 * rng.standard_normal((n, d))
    rows32 = torch.as_tensor(stream, dtype=torch.float32)
    rows = rows32.double()
    monkeypatch.setattr(_stream, "DEFER_QR_FLOPS", 0.0)
    sketch = NystromSketch(rows32[0], 60, torch.Generator().manual_seed(3))
    monkeypatch.undo()
    assert sketch.compact and sketch.reference.dtype == torch.float32
    dirs = basis.T.copy()  # orthonormal rows, float64
    full = SplitRecorder(dirs, lam, rows[half])
    compact = SplitRecorder(dirs, lam, rows32[half], sketch.reference)
    assert compact.rows32.dtype == torch.float32
    assert compact.nbytes() == 4 * k * d + compact.moments.nbytes()  # no float64 copies
    full.extend(rows[half:])
    compact.update(rows32[half])  # one snapshot, as the probe gives the one at mid-window
    for i in range(half + 1, n, 64):  # the probe's batches: deviations from w_0
        u = rows32[i : i + 64] - sketch.reference
        _, (proj,) = sketch.extend_centered(u, [compact.rows32])
        compact.extend_projected(proj)
    assert compact.count == full.count == n - half
    got, want = series_variances(compact.moments), series_variances(full.moments)
    u_max = float((rows32[half:] - sketch.reference).norm(dim=1).max())
    sigma = np.sqrt(want.variances)
    tol = 2.0 * sigma * 1e-6 * u_max
    assert np.all(np.abs(got.variances - want.variances) <= tol), (got.variances, want.variances)
    np.testing.assert_allclose(compact.moments.lag1, full.moments.lag1, rtol=1e-5)
    se = lam * np.sqrt(2.0 / (n - half - 1))
    dev_c, dev_f = (got.variances - lam) / se, (want.variances - lam) / se
    assert np.all(np.abs(dev_f) < 4.0), dev_f
    np.testing.assert_allclose(dev_c, dev_f, atol=1e-3)
    # the rows actually projected on, in float64: the float32 rounding of the frozen directions
    np.testing.assert_array_equal(compact.directions, dirs.astype(np.float32).astype(float))
    np.testing.assert_allclose(compact.directions @ compact.directions.T, np.eye(k), atol=1e-6)


def test_compact_top_in_float32_is_the_float64_top_rounded(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(5)
    d, n = 20_000, 120
    rows = torch.randn(n, d, generator=gen, dtype=torch.float64) * _spectrum("steep", d) + 1.0
    monkeypatch.setattr(_stream, "DEFER_QR_FLOPS", 0.0)
    sketch = NystromSketch(rows[0].float(), 60, torch.Generator().manual_seed(3))
    monkeypatch.undo()
    sketch.extend(rows.float())
    (v64, p64), (v32, p32) = sketch.top(20), sketch.top(20, float32=True)
    assert p64.dtype == np.float64 and p32.dtype == np.float32
    np.testing.assert_array_equal(v32, v64)
    np.testing.assert_array_equal(p32, p64.astype(np.float32))  # rounded in the last pass
