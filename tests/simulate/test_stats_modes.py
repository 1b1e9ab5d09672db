"""Statistics modes: kept records with lazy moments = streaming accumulators; the top-k subspace
sketch against the full covariance; the automatic, visible switch above the memory budget."""

from __future__ import annotations

import numpy as np
import pytest

from sgdfluct import networks
from sgdfluct.simulate import _stats, simulate
from sgdfluct.simulate._stats import RecordMoments, StreamingMoments

# Two float64 evaluations of the same sums in a different order (GEMMs over records vs streaming
# accumulators about the same reference): agreement to a few ulps of the second moment.
MOMENT_ATOL = 1e-14
# Standard errors: the square root of a difference of sums of squares (sum z^2 - K zbar^2) in a
# different order; relative round-off ~ eps * (sum z^2) / var(z), well below 1e-8 here.
STDERR_RTOL = 1e-8
# Nystrom sketch of a covariance of rank <= k: exact up to the stabilising shift
# nu = sqrt(d) eps ||Y|| (Tropp et al. 2017), i.e. round-off relative to the largest eigenvalue.
NYSTROM_RTOL = 1e-9


def _walk(rng: np.random.Generator, n_rep: int, n_rec: int, d: int) -> np.ndarray:
    return rng.standard_normal((n_rep, n_rec + 1, d)).cumsum(axis=1) * 0.1 + 2.0


@pytest.mark.parametrize(("n_rec", "n_batches"), [(40, 5), (37, 4), (12, 12)])
def test_record_moments_equal_streaming(
    n_rec: int, n_batches: int, rng: np.random.Generator
) -> None:
    n_rep, d = 3, 4
    v = _walk(rng, n_rep, n_rec, d)
    ref = v[:, 0].mean(0)
    accs = [
        StreamingMoments(ref, n_rep, n_rec, n_batches),
        RecordMoments(ref, n_rep, n_rec, n_batches),
    ]
    for acc in accs:
        for lo in range(0, n_rec, 7):
            hi = min(n_rec, lo + 7)
            acc.add(v[:, lo:hi], v[:, lo + 1 : hi + 1])
    stream, records = (acc.result() for acc in accs)
    assert accs[0].n_rep == n_rep  # one batch per (replica, batch) in both
    for name in ("mean", "cov", "lag1", "replica_means"):
        np.testing.assert_allclose(getattr(records, name), getattr(stream, name), rtol=0,
                                   atol=MOMENT_ATOL, err_msg=name)  # fmt: skip
    for name in ("mean_stderr", "cov_stderr", "lag1_stderr"):
        np.testing.assert_allclose(getattr(records, name), getattr(stream, name),
                                   rtol=STDERR_RTOL, atol=1e-15, err_msg=name)  # fmt: skip
    # antisymmetric part: records mode keeps the mean correction (q_b = D_b - D_b^T about the
    # pooled means); by hand from the records
    bounds = [(b * n_rec) // n_batches for b in range(n_batches + 1)]
    mw = v[:, 1 : n_rec + 1].reshape(-1, d).mean(0)
    q = []
    for r in range(n_rep):
        for b in range(n_batches):
            lo, hi = bounds[b], bounds[b + 1]
            dd = (v[r, lo:hi] - stream.mean).T @ (v[r, lo + 1 : hi + 1] - mw) / (hi - lo)
            q.append(dd - dd.T)
    se_q = np.array(q).std(axis=0, ddof=1) / np.sqrt(len(q))
    np.testing.assert_allclose(records.lag1_antisym_stderr, se_q, rtol=STDERR_RTOL, atol=1e-15)


def test_short_run_keeps_records_and_matches_trajectory(rng: np.random.Generator) -> None:
    shapes = [(3, 4), (2, 3)]
    x = rng.standard_normal((15, 4))
    y = rng.standard_normal((15, 2))
    theta0 = 0.3 * rng.standard_normal(networks.n_params(shapes))
    res = simulate(x, y, shapes, theta0, learning_rate=0.05, batch_size=3, steps=400,
                   burn_in=50, record_every=10, replicas=3, seed=1, n_batches=4,
                   trajectory_every=1)  # fmt: skip
    assert res.statistics == "records"  # 35 records per replica, <= 16 per batch
    k = np.arange(50, 400, 10)
    traj = res.trajectory
    u = traj[:, k].reshape(-1, traj.shape[2])
    np.testing.assert_allclose(res.cov, np.cov(u.T, bias=True), rtol=0, atol=MOMENT_ATOL)
    bounds = [(b * k.size) // 4 for b in range(5)]
    z = [(e := traj[r, k][bounds[b] : bounds[b + 1]] - res.mean).T @ e / e.shape[0]
         for r in range(3) for b in range(4)]  # fmt: skip
    se = np.array(z).std(axis=0, ddof=1) / np.sqrt(len(z))
    np.testing.assert_allclose(res.cov_stderr, se, rtol=STDERR_RTOL)


def _low_rank_problem(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # inputs in a 3-dimensional subspace of R^8: the weight fluctuations about the minimum stay in
    # it (every gradient is a combination of inputs), so the covariance has rank 3
    basis = np.linalg.qr(rng.standard_normal((8, 3)))[0]
    x = rng.standard_normal((30, 3)) @ basis.T
    y = rng.standard_normal((30, 1))
    return x, y, networks.least_squares(x, y).ravel()


def test_subspace_sketch_is_exact_for_low_rank_covariance(rng: np.random.Generator) -> None:
    x, y, theta0 = _low_rank_problem(rng)
    kw = dict(learning_rate=0.1, batch_size=4, steps=3000, burn_in=100, record_every=1,
              replicas=2, seed=3, n_batches=4)  # fmt: skip
    full = simulate(x, y, [(1, 8)], theta0, statistics="full", **kw)  # type: ignore[arg-type]
    sub = simulate(x, y, [(1, 8)], theta0, statistics="subspace", subspace_rank=5, **kw)  # type: ignore[arg-type]
    assert sub.statistics == "subspace" and sub.cov is None and sub.lag1 is None
    assert sub.subspace is not None and sub.subspace.rank == 5
    lam_full = np.linalg.eigvalsh(full.cov)[::-1]
    assert lam_full[3] < 1e-12 * lam_full[0]  # rank 3 indeed
    scale = lam_full[0]
    np.testing.assert_allclose(sub.subspace.covariance(), full.cov, rtol=0,
                               atol=NYSTROM_RTOL * scale)  # fmt: skip
    np.testing.assert_allclose(sub.subspace.eigenvalues[:3], lam_full[:3], rtol=NYSTROM_RTOL)
    np.testing.assert_allclose(sub.mean, full.mean, rtol=0, atol=1e-13)
    np.testing.assert_allclose(sub.mean_stderr, full.mean_stderr, rtol=STDERR_RTOL, atol=1e-16)
    np.testing.assert_allclose(sub.replica_means, full.replica_means, rtol=0, atol=1e-13)
    # rank 0: no sketch, the same mean and standard error
    bare = simulate(x, y, [(1, 8)], theta0, statistics="subspace", subspace_rank=0, **kw)  # type: ignore[arg-type]
    assert bare.subspace is None and bare.cov is None
    np.testing.assert_allclose(bare.mean, sub.mean, rtol=0, atol=1e-15)
    np.testing.assert_allclose(bare.mean_stderr, sub.mean_stderr, rtol=1e-12, atol=1e-16)


def test_auto_switches_to_subspace_above_the_budget_visibly(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y, theta0 = _low_rank_problem(rng)
    monkeypatch.setattr(_stats, "STATS_BYTES", 1000)
    from sgdfluct.simulate import _engine

    monkeypatch.setattr(_engine, "STATS_BYTES", 1000)
    with pytest.warns(UserWarning, match="budget"):
        res = simulate(x, y, [(1, 8)], theta0, learning_rate=0.1, batch_size=4, steps=500,
                       burn_in=100, replicas=2, seed=3, n_batches=4)  # fmt: skip
    assert res.statistics == "subspace"
    assert res.subspace is not None and "budget" in res.subspace.note
    with pytest.raises(ValueError, match="statistics = 'bogus'"):
        simulate(x, y, [(1, 8)], theta0, learning_rate=0.1, batch_size=4, steps=500,
                 burn_in=100, replicas=2, seed=3, n_batches=4, statistics="bogus")  # fmt: skip


@pytest.mark.parametrize("cond", [1.0, 1e4, 1e7])
def test_thin_qr_is_a_qr_factorization(cond: float, rng: np.random.Generator) -> None:
    """CholeskyQR2 of the subspace sketch: q orthonormal and q r = e to round-off (relative to
    ||e||, a few hundred ulps), r upper triangular, for conditions up to 1e7; the same
    factorization as Householder QR up to the signs of the columns."""
    d, k = 5000, 64
    u, _ = np.linalg.qr(rng.standard_normal((d, k)))
    v, _ = np.linalg.qr(rng.standard_normal((k, k)))
    e = (u * np.geomspace(1.0, 1.0 / cond, k)) @ v.T
    q, r = _stats._thin_qr(e)
    assert np.abs(q.T @ q - np.eye(k)).max() < 1e-12
    assert np.linalg.norm(q @ r - e) < 1e-13 * np.linalg.norm(e)
    np.testing.assert_array_equal(r, np.triu(r))
    q_h, r_h = np.linalg.qr(e)
    signs = np.sign(np.diag(r)) * np.sign(np.diag(r_h))
    np.testing.assert_allclose(q * signs, q_h, rtol=0, atol=1e-13 * cond)


def test_thin_qr_falls_back_on_a_rank_deficient_matrix(rng: np.random.Generator) -> None:
    """A Gram matrix that is singular to working precision: the Householder factorization."""
    e = rng.standard_normal((300, 5)) @ rng.standard_normal((5, 8))  # rank 5 < 8 columns
    q, r = _stats._thin_qr(e)
    assert np.all(np.isfinite(q)) and np.all(np.isfinite(r))
    assert np.abs(q.T @ q - np.eye(8)).max() < 1e-12
    np.testing.assert_allclose(q @ r, e, rtol=0, atol=1e-12 * np.abs(e).max())
