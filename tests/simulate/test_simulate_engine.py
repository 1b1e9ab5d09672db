"""The SGD engine against a plain per-step reference loop, chunk invariance, memory, divergence."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from sgdfluct import networks
from sgdfluct.simulate import (
    SAMPLING_MODES,
    DivergenceError,
    SimulationResult,
    _kernels,
    batch_indices,
    simulate,
)

ENGINES = ["numpy"] + (["numba"] if _kernels.HAVE_NUMBA else [])
# Engine vs reference loop: both sum the same S per-sample gradients in a different order; after
# n steps the round-off grows like n * eps * |theta| (contractive dynamics keep it bounded).
ROUNDOFF_RTOL = 1e-11
# Streaming moments vs np.cov of the stored trajectory: one pass of float64 sums about a reference
# near the mean; agreement to a few ulps of the second moment.
MOMENT_ATOL = 1e-14


def _problem(
    rng: np.random.Generator, shapes: list[tuple[int, int]], n_samples: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = rng.standard_normal((n_samples, shapes[0][1]))
    y = x @ rng.standard_normal((shapes[0][1], shapes[-1][0])) / np.sqrt(shapes[0][1])
    y += 0.5 * rng.standard_normal(y.shape)
    theta0 = 0.3 * rng.standard_normal(networks.n_params(shapes))
    return x, y, theta0


def _reference_loop(x, y, shapes, theta0, idx, learning_rate):  # type: ignore[no-untyped-def]
    """Straightforward SGD: theta -= eta/S sum_mu grad l_mu, replica by replica, step by step."""
    n_rep, steps, batch = idx.shape
    traj = np.empty((n_rep, steps + 1, theta0.shape[-1]))
    for r in range(n_rep):
        theta = np.array(theta0 if theta0.ndim == 1 else theta0[r], dtype=float)
        traj[r, 0] = theta
        for k in range(steps):
            b = idx[r, k]
            g = networks.per_sample_gradients(theta, shapes, x[b], y[b]).sum(axis=0)
            theta = theta - learning_rate / batch * g
            traj[r, k + 1] = theta
    return traj


SHAPES = {
    "depth1_out2": [(2, 5)],
    "depth2_out2": [(3, 5), (2, 3)],
    "depth3_out1": [(3, 4), (2, 3), (1, 2)],
    # a layer of >= 2000 weights: the numba engine's BLAS kernel (_numba_kernels.GEMM_LAYER_SIZE)
    "depth2_wide": [(45, 46), (2, 45)],
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("sampling", SAMPLING_MODES)
@pytest.mark.parametrize("net", list(SHAPES))
def test_engine_matches_reference_loop(
    engine: str, sampling: str, net: str, rng: np.random.Generator
) -> None:
    shapes = SHAPES[net]
    x, y, theta0 = _problem(rng, shapes, n_samples=14)
    steps, batch, reps, eta, seed = 60, 4, 3, 0.05, 11
    if net == "depth2_wide":  # keep the wide net stable: small weights, small step
        theta0, eta = 0.2 * theta0, 0.002
    res = simulate(
        x, y, shapes, theta0, learning_rate=eta, batch_size=batch, sampling=sampling,
        steps=steps, burn_in=10, replicas=reps, seed=seed, n_batches=2, trajectory_every=1,
        engine=engine,
    )  # fmt: skip
    idx = batch_indices(14, batch, steps, sampling=sampling, replicas=reps, seed=seed)
    ref = _reference_loop(x, y, shapes, theta0, idx, eta)
    assert res.engine == engine
    assert res.trajectory is not None and res.trajectory_steps is not None
    np.testing.assert_array_equal(res.trajectory_steps, np.arange(steps + 1))
    np.testing.assert_allclose(res.trajectory, ref, rtol=ROUNDOFF_RTOL, atol=ROUNDOFF_RTOL)
    np.testing.assert_allclose(res.final, ref[:, -1], rtol=ROUNDOFF_RTOL, atol=ROUNDOFF_RTOL)


def test_per_replica_starts(rng: np.random.Generator) -> None:
    shapes = [(2, 3), (1, 2)]
    x, y, _ = _problem(rng, shapes, n_samples=10)
    starts = 0.3 * rng.standard_normal((4, networks.n_params(shapes)))
    res = simulate(
        x, y, shapes, starts, learning_rate=0.05, batch_size=3, steps=30, burn_in=5,
        replicas=4, seed=2, n_batches=2, trajectory_every=1,
    )  # fmt: skip
    idx = batch_indices(10, 3, 30, replicas=4, seed=2)
    ref = _reference_loop(x, y, shapes, starts, idx, 0.05)
    assert res.trajectory is not None
    np.testing.assert_allclose(res.trajectory, ref, rtol=ROUNDOFF_RTOL, atol=ROUNDOFF_RTOL)


@pytest.mark.parametrize("sampling", SAMPLING_MODES)
def test_chunking_is_bitwise_invariant(sampling: str, rng: np.random.Generator) -> None:
    shapes = [(3, 4), (2, 3)]
    x, y, theta0 = _problem(rng, shapes, n_samples=13)
    kw = dict(
        learning_rate=0.05, batch_size=4, sampling=sampling, steps=1500, burn_in=37,
        record_every=3, replicas=3, seed=5, n_batches=4, trajectory_every=7,
    )  # fmt: skip
    a = simulate(x, y, shapes, theta0, chunk_steps=2048, **kw)  # type: ignore[arg-type]
    b = simulate(x, y, shapes, theta0, chunk_steps=13, **kw)  # type: ignore[arg-type]
    c = simulate(x, y, shapes, theta0, chunk_steps=700, **kw)  # type: ignore[arg-type]
    for other in (b, c):
        for name in ("mean", "mean_stderr", "cov", "cov_stderr", "lag1", "lag1_stderr",
                     "replica_means", "trajectory", "final"):  # fmt: skip
            np.testing.assert_array_equal(getattr(a, name), getattr(other, name), err_msg=name)


@pytest.mark.parametrize("sampling", SAMPLING_MODES)
def test_batch_indices_stream(sampling: str) -> None:
    p, s = 11, 3
    idx = batch_indices(p, s, 1300, sampling=sampling, replicas=2, seed=4)
    assert idx.shape == (2, 1300, 3) and idx.dtype == np.int64
    assert idx.min() >= 0 and idx.max() < p
    # requesting in pieces (start=) gives the same stream
    tail = batch_indices(p, s, 700, sampling=sampling, replicas=2, seed=4, start=600)
    np.testing.assert_array_equal(idx[:, 600:], tail)
    # replicas are independent streams
    assert not np.array_equal(idx[0], idx[1])
    if sampling != "with_replacement":
        assert all(len(set(b)) == s for b in idx.reshape(-1, s).tolist())
    if sampling == "epoch_shuffle":
        per_epoch = p // s
        epochs = idx[:, : per_epoch * (1300 // per_epoch)].reshape(2, -1, per_epoch * s)
        for ep in epochs.reshape(-1, per_epoch * s):
            assert len(set(ep.tolist())) == per_epoch * s  # no repeats within an epoch


def test_seed_sequence_is_not_consumed() -> None:
    ss = np.random.SeedSequence(123)
    a = batch_indices(9, 2, 50, replicas=2, seed=ss)
    b = batch_indices(9, 2, 50, replicas=2, seed=ss)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, batch_indices(9, 2, 50, replicas=2, seed=123))


@pytest.mark.parametrize("engine", ENGINES)
def test_streaming_moments_match_stored_trajectory(engine: str, rng: np.random.Generator) -> None:
    shapes = [(2, 4)]
    x, y, _ = _problem(rng, shapes, n_samples=20)
    theta_star = networks.least_squares(x, y).ravel()
    # a start far from the minimum: the accumulators must not lose precision to the offset
    theta0 = theta_star + 5.0
    steps, burn, every, reps = 3000, 400, 3, 3
    res = simulate(
        x, y, shapes, theta0, learning_rate=0.1, batch_size=4, steps=steps, burn_in=burn,
        record_every=every, replicas=reps, seed=9, n_batches=5, trajectory_every=1,
        engine=engine,
    )  # fmt: skip
    assert isinstance(res, SimulationResult)
    traj = res.trajectory
    assert traj is not None
    k = np.arange(burn, steps, every)
    assert res.n_records == k.size
    u = traj[:, k].reshape(-1, traj.shape[2])
    u_next = traj[:, k + 1].reshape(-1, traj.shape[2])
    mean = u.mean(axis=0)
    np.testing.assert_allclose(res.mean, mean, rtol=0, atol=1e-13)
    np.testing.assert_allclose(res.cov, np.cov(u.T, bias=True), rtol=0, atol=MOMENT_ATOL)
    lag = (u - mean).T @ (u_next - mean) / u.shape[0]
    np.testing.assert_allclose(res.lag1, lag, rtol=0, atol=MOMENT_ATOL)
    np.testing.assert_allclose(res.replica_means, traj[:, k].mean(axis=1), rtol=0, atol=1e-13)
    # batch-means standard errors, recomputed by hand from the stored records
    nb = 5
    bounds = [(b * k.size) // nb for b in range(nb + 1)]
    z = []
    for r in range(reps):
        e = traj[r, k] - res.mean
        for b in range(nb):
            blk = e[bounds[b] : bounds[b + 1]]
            z.append(blk.T @ blk / blk.shape[0])  # pseudo-value up to a constant shift
    z_arr = np.array(z)
    se = z_arr.std(axis=0, ddof=1) / np.sqrt(len(z))
    np.testing.assert_allclose(res.cov_stderr, se, rtol=1e-8, atol=1e-15)
    means = np.array([traj[r, k][bounds[b] : bounds[b + 1]].mean(0) for r in range(reps)
                      for b in range(nb)])  # fmt: skip
    np.testing.assert_allclose(
        res.mean_stderr, means.std(axis=0, ddof=1) / np.sqrt(len(means)), rtol=1e-8
    )


def _peak_bytes(steps: int, x: np.ndarray, y: np.ndarray, theta0: np.ndarray) -> int:
    tracemalloc.start()
    simulate(x, y, [(1, x.shape[1])], theta0, learning_rate=0.05, batch_size=5, steps=steps,
             burn_in=100, record_every=2, replicas=4, seed=0, n_batches=4)  # fmt: skip
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_memory_is_flat_in_steps(rng: np.random.Generator) -> None:
    x = rng.standard_normal((40, 20))
    y = rng.standard_normal((40, 1))
    theta0 = networks.least_squares(x, y).ravel()
    short = _peak_bytes(5_000, x, y, theta0)
    long = _peak_bytes(50_000, x, y, theta0)
    # a stored trajectory would grow by 45_000/2 records x 4 replicas x 20 x 8 B = 14 MB;
    # allow 25 % (allocator noise) plus 200 kB
    assert long <= 1.25 * short + 200_000, (short, long)


def test_divergence_raises_with_stability_bound(rng: np.random.Generator) -> None:
    x = rng.standard_normal((30, 6))
    y = rng.standard_normal((30, 1))
    theta0 = networks.least_squares(x, y).ravel()
    lam = np.linalg.eigvalsh(x.T @ x / 30)[-1]
    with pytest.raises(DivergenceError, match="2/lambda_max") as info:
        simulate(x, y, [(1, 6)], theta0, learning_rate=3.0 / lam, batch_size=30,
                 sampling="without_replacement", steps=5000, burn_in=10, seed=0)  # fmt: skip
    assert f"{lam:.6g}" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"learning_rate": -0.1}, "learning_rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"sampling": "bogus"}, "sampling"),
        ({"burn_in": 200}, "burn_in"),
        ({"n_batches": 1000}, "n_batches"),
        ({"replicas": 0}, "replicas"),
        ({"engine": "gpu"}, "engine"),
        ({"batch_size": 50, "sampling": "epoch_shuffle"}, "batch_size"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((10, 3))
    y = rng.standard_normal((10, 1))
    base = dict(learning_rate=0.1, batch_size=2, steps=200, burn_in=10, replicas=1, n_batches=4)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        simulate(x, y, [(1, 3)], np.zeros(3), **base)  # type: ignore[arg-type]


def test_progress_bar_and_1d_targets(
    rng: np.random.Generator, capsys: pytest.CaptureFixture
) -> None:
    x = rng.standard_normal((12, 3))
    y = rng.standard_normal(12)
    a = simulate(x, y, [(1, 3)], np.zeros(3), learning_rate=0.05, batch_size=3, steps=300,
                 burn_in=50, replicas=2, seed=1, n_batches=2, progress=True)  # fmt: skip
    b = simulate(x, y[:, None], [(1, 3)], np.zeros(3), learning_rate=0.05, batch_size=3,
                 steps=300, burn_in=50, replicas=2, seed=1, n_batches=2)  # fmt: skip
    np.testing.assert_array_equal(a.cov, b.cov)
    assert "SGD" in capsys.readouterr().err
    assert a.cov.shape == (3, 3) and a.replica_means.shape == (2, 3) and a.seconds > 0
