"""Measurement of the depth>=2 covariance from trajectories (SPEC §8a recipe)."""

from __future__ import annotations

import numpy as np
import pytest

from sgdfluct import networks as nw
from sgdfluct.analysis import alignment as al
from sgdfluct.theory.layered import layered_covariance
from sgdfluct.theory.symmetry import imbalance_eigenvalues, noise_equilibrium

EXACT_TOL = 1e-10


def _rotations(rng, n, k):
    q, r = np.linalg.qr(rng.standard_normal((n, k, k)))
    return q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]


@pytest.mark.parametrize("shapes", [[(3, 5), (2, 3)], [(3, 5), (3, 3), (2, 3)]])
def test_procrustes_undoes_hidden_rotations(shapes, rng):
    theta = rng.standard_normal(nw.n_params(shapes))
    n = 6
    rots = [_rotations(rng, n, r) for r, _ in shapes[:-1]]
    rotated = np.stack([al.frame_transform([r[i] for r in rots], shapes) @ theta for i in range(n)])
    aligned, _ = al.align_snapshots(rotated, theta, shapes, sweeps=20)
    # depth 2: exact in one step; depth 3: alternating sweeps converge to round-off
    np.testing.assert_allclose(aligned, np.broadcast_to(theta, aligned.shape), atol=1e-8)
    # the product (the function) is untouched by the alignment
    for a in aligned:
        np.testing.assert_allclose(
            nw.product(nw.unflatten(a, shapes)), nw.product(nw.unflatten(theta, shapes)), atol=1e-10
        )


def test_frame_transform_matches_weight_rotation(rng):
    shapes = [(3, 4), (2, 3)]
    w1, w2 = rng.standard_normal((3, 4)), rng.standard_normal((2, 3))
    o = _rotations(rng, 1, 3)[0]
    t = al.frame_transform([o], shapes)
    np.testing.assert_allclose(
        t @ nw.flatten([w1, w2]), nw.flatten([o @ w1, w2 @ o.T]), atol=EXACT_TOL
    )
    np.testing.assert_allclose(t @ t.T, np.eye(t.shape[0]), atol=EXACT_TOL)


def test_saturation_of_a_relaxing_signal(rng):
    steps = np.arange(2000) * 10
    target = np.array([1.5, 1.0])
    curve = target * (1 - np.exp(-steps / 2000.0))[:, None]
    ev = curve[None] + 0.01 * rng.standard_normal((8, steps.size, 2))
    sat = al.detect_saturation(steps, ev, rtol=0.01, n_blocks=20)
    assert sat.saturated
    # deterministic part within 1 % of |target| = 1.8 after t = 2000 ln(100 * 1.5 / 1.8) ~ 8800
    assert 6000 <= sat.step <= 12000
    flat = al.detect_saturation(
        steps[:100], np.broadcast_to(curve[:100], (1, 100, 2)), rtol=0.01, n_blocks=10
    )
    assert not flat.saturated


def test_synthetic_trajectory_recovers_the_covariance(rng):
    """Gaussian deviations of known covariance, each snapshot rotated by a random rotation."""
    x = rng.standard_normal((40, 5))
    y = x @ rng.standard_normal((3, 5)).T / np.sqrt(5) + rng.standard_normal((40, 3))
    shapes = [(3, 5), (3, 3)]
    theta = noise_equilibrium(x, y, 3).theta
    hess = nw.hessian(theta, shapes, x, y)
    h, v = np.linalg.eigh(hess)
    v = v[:, h > 1e-7 * h[-1]]
    true = 1e-4 * (v / h[h > 1e-7 * h[-1]]) @ v.T  # a covariance on range(H)
    n_rep, n_t = 4, 400
    dev = rng.multivariate_normal(np.zeros(theta.size), true, size=(n_rep, n_t))
    rots = _rotations(rng, n_rep * n_t, 3)
    traj = np.empty_like(dev)
    for i in range(n_rep):
        for k in range(n_t):
            traj[i, k] = al.frame_transform([rots[i * n_t + k]], shapes) @ (theta + dev[i, k])
    meas = al.measure_layered_covariance(
        traj,
        np.arange(n_t),
        shapes,
        x,
        y,
        learning_rate=0.05,
        burn_in_step=0,
        window_steps=100,
        window_bias_correction=False,  # i.i.d. deviations: no SGD autocorrelation to correct
    )
    assert meas.n_windows == 16 and meas.range_dim == v.shape[1]
    for layer in (1, 2):
        err = meas.relative_error(true, layer)
        # the Procrustes step removes O(sigma^2) of the variance; the rest is sampling noise, whose
        # size is the noise floor: allow 4 floors
        assert err < 4 * meas.noise_floor(layer), (layer, err, meas.noise_floor(layer))
    assert meas.null_variance < 1e-2 * meas.range_variance


def _sgd(x, y, shapes, theta0, eta, s, steps, every, reps, rng):
    ws = [np.broadcast_to(w, (reps, *w.shape)).copy() for w in nw.unflatten(theta0, shapes)]
    out = []
    for k in range(steps):
        if k % every == 0:
            out.append(np.concatenate([w.reshape(reps, -1) for w in ws], 1))
        idx = rng.integers(0, x.shape[0], size=(reps, s))
        h = x[idx] @ np.swapaxes(ws[0], 1, 2)
        r = h @ np.swapaxes(ws[1], 1, 2) - y[idx]
        g2 = np.swapaxes(r, 1, 2) @ h / s
        g1 = np.swapaxes(r @ ws[1], 1, 2) @ x[idx] / s
        ws[0] -= eta * g1
        ws[1] -= eta * g2
    return np.stack(out, axis=1), np.arange(len(out)) * every


def test_short_sgd_run_matches_the_multiplicative_theory(rng):
    n_in, n_h, n_out, p = 4, 2, 2, 40
    x = rng.standard_normal((p, n_in))
    y = x @ rng.standard_normal((n_out, n_in)).T / 2 + rng.standard_normal((p, n_out))
    shapes = [(n_h, n_in), (n_out, n_h)]
    eq = noise_equilibrium(x, y, n_h)
    eta, s = 0.1, 5
    traj, steps = _sgd(x, y, shapes, eq.theta, eta, s, 24000, 5, 16, rng)
    meas = al.measure_layered_covariance(
        traj, steps, shapes, x, y, learning_rate=eta, window_factor=60
    )
    th = layered_covariance(
        meas.theta_ref,
        shapes,
        x,
        y,
        learning_rate=eta,
        batch_size=s,
        sampling="with_replacement",
        method="multiplicative",
    )
    for layer in (1, 2):
        floor = meas.noise_floor(layer)
        # 3 floors of sampling noise plus the 3 % accuracy SPEC §8a states for this theory
        assert meas.relative_error(th.cov, layer) < 3 * floor + 0.03, (layer, floor)
    # imbalance eigenvalues stay positive-definite-ish and finite; dead units: none (N_h = N_o)
    ev = imbalance_eigenvalues(traj, shapes)
    assert np.all(np.isfinite(ev))
    assert al.hidden_gram_eigenvalues(traj[:, -1], shapes).min() > 1e-2
