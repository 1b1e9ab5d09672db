"""The saturation gate (docs/theory.md §8b), surplus-unit decay and the random start."""

from __future__ import annotations

import numpy as np
import pytest

from sgdfluct import networks as nw
from sgdfluct.analysis.saturation import (
    saturation_gate,
    snapshot_losses,
    surplus_unit_decay,
)

SHAPES = [(2, 3), (2, 2)]


def _problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 3))
    y = x @ rng.normal(size=(3, 2)) + 0.5 * rng.normal(size=(40, 2))
    return x, y, nw.balanced_minimum(x, y, SHAPES)


def _jitter(theta: np.ndarray, replicas: int, steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return theta + 1e-3 * rng.normal(size=(replicas, steps, theta.size))


def test_snapshot_losses_equal_the_loss():
    x, y, theta = _problem()
    traj = _jitter(theta, 2, 5, 1)
    got = snapshot_losses(traj, SHAPES, x, y)
    want = np.array([[nw.loss(t, SHAPES, x, y) for t in rep] for rep in traj])
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_stationary_trajectory_saturates():
    x, y, theta = _problem()
    steps = np.arange(400) * 10
    gate = saturation_gate(_jitter(theta, 3, steps.size, 2), steps, SHAPES, x, y)
    assert gate.saturated, gate.reasons
    assert gate.range_stable and gate.drift_free
    assert gate.step <= steps[steps.size // 2]
    assert gate.to_summary()["saturated"] is True


def test_orbit_drift_is_not_saturated():
    """Moving along the symmetry orbit (W_1 -> a W_1, W_2 -> W_2 / a) leaves the loss flat but
    changes the imbalance: the gate must refuse the run."""
    x, y, theta = _problem()
    steps = np.arange(400) * 10
    scale = 1.0 + 0.3 * steps / steps[-1]
    w1, w2 = nw.unflatten(theta, SHAPES)
    path = np.stack([nw.flatten([a * w1, w2 / a]) for a in scale])
    traj = path[None] + 1e-3 * np.random.default_rng(3).normal(size=(3, *path.shape))
    gate = saturation_gate(traj, steps, SHAPES, x, y)
    assert not gate.saturated
    assert gate.loss.saturated  # the loss does not see the orbit
    assert not gate.imbalance.saturated
    assert gate.drift["imbalance"]["drifting"]
    assert any("imbalance" in r for r in gate.reasons)


def test_surplus_unit_decay_rate_and_death():
    steps = np.arange(100, dtype=float)
    live = np.ones_like(steps)
    gram = np.stack([np.full_like(steps, 2.0), live, np.exp(-steps / 10.0)], axis=-1)
    gram = np.broadcast_to(gram[None, :, None, :], (2, 100, 1, 3))
    out = surplus_unit_decay(steps, gram, n_live=2, dead_rtol=1e-2)
    assert out["n_surplus"] == 1
    # relative eigenvalue exp(-t/10) / 2 falls below 1e-2 at t = 10 ln 50 = 39.1
    assert out["death_step"] == 40
    assert out["decay_rate_per_step"] == pytest.approx(-0.1, rel=1e-9)
    assert surplus_unit_decay(steps, gram, n_live=3)["n_surplus"] == 0


def test_random_start_per_replica():
    shapes = [(50, 200), (10, 50)]
    starts = nw.random_start(shapes, replicas=3, scale=2.0, seed=7)
    assert starts.shape == (3, nw.n_params(shapes))
    # a replica's start does not depend on how many replicas are drawn
    np.testing.assert_array_equal(
        nw.random_start(shapes, replicas=1, scale=2.0, seed=7)[0], starts[0]
    )
    assert not np.allclose(starts[0], starts[1])
    w1, w2 = nw.unflatten(starts[0], shapes)
    # W_l ~ N(0, scale^2 / fan_in): relative SE of a sample SD is sqrt(1 / (2 n)): 0.7 % for
    # the 10_000 entries of W_1 (tolerance 5 % = 7 SE), 3.2 % for the 500 of W_2 (10 % = 3 SE)
    assert np.std(w1) == pytest.approx(2.0 / np.sqrt(200), rel=0.05)
    assert np.std(w2) == pytest.approx(2.0 / np.sqrt(50), rel=0.1)
    with pytest.raises(ValueError, match="scale"):
        nw.random_start(shapes, scale=0.0)


def test_gradient_flow_start_keeps_the_imbalance():
    from sgdfluct.theory.symmetry import imbalance

    x, y, _ = _problem()
    start = nw.random_start(SHAPES, replicas=1, seed=1)[0]
    end = nw.gradient_flow_start(x, y, SHAPES, replicas=1, seed=1)[0]
    np.testing.assert_allclose(imbalance(end, SHAPES)[0], imbalance(start, SHAPES)[0], atol=1e-6)
    assert np.linalg.norm(nw.gradient(end, SHAPES, x, y)) < 1e-6


def test_window_mean_bias_matches_an_ar1_process():
    """Sample variance about the window mean of a stationary AR(1) u_{t+1} = a u_t + e_t."""
    from sgdfluct.analysis.alignment import window_mean_bias

    a, n, windows = 0.9, 50, 20_000
    rng = np.random.default_rng(0)
    u = np.empty((windows, n))
    u[:, 0] = rng.normal(size=windows) / np.sqrt(1 - a * a)  # stationary start
    for t in range(1, n):
        u[:, t] = a * u[:, t - 1] + rng.normal(size=windows)
    ratio = np.mean(u.var(axis=1)) * (1 - a * a)
    # eta h = 1 - a with eta = 1
    want = float(window_mean_bias(np.array([1 - a]), 1.0, n, 1)[0, 0])
    # SE of the ratio: the per-window variances scatter with SD ~0.4 (relative) / sqrt(20_000)
    assert ratio == pytest.approx(want, abs=0.01)
    assert want < 0.8  # a strong bias at this window length: the test can tell
