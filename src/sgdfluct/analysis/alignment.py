"""Measuring the stationary weight covariance of deep linear nets from SGD trajectories
(docs/theory.md §8a).

Recipe (steps 1-5 of docs/theory.md §8a):

1. burn in until the imbalance eigenvalues have saturated (:func:`detect_saturation`);
2. cut the rest into windows of ``T_w >= window_factor / (eta h_min)`` steps;
3. align the hidden units of every snapshot to the window mean by orthogonal Procrustes (one
   orthogonal matrix per hidden layer, alternating sweeps for depth >= 3; iterate with the mean);
4. project deviations on range(H_theta(window mean)); the orbit (null) variance is kept apart;
5. pool windows and replicas in the frame of a common reference (Procrustes of every window mean),
   with standard errors from the scatter between windows and the resulting noise floor.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sgdfluct import networks as nw
from sgdfluct.theory.layered import layer_block, layer_slices, relative_frobenius_error
from sgdfluct.theory.linearization import live_range
from sgdfluct.theory.symmetry import imbalance_eigenvalues

__all__ = [
    "MeasuredCovariance",
    "Saturation",
    "align_snapshots",
    "detect_saturation",
    "frame_transform",
    "hidden_gram_eigenvalues",
    "imbalance_and_gram_eigenvalues",
    "measure_layered_covariance",
    "window_mean_bias",
]

Array = NDArray[np.float64]
Shapes = Sequence[tuple[int, int]]


# ----------------------------------------------------------------------------------------------
# Procrustes alignment of hidden units
# ----------------------------------------------------------------------------------------------
def _split(batch: Array, shapes: Shapes) -> list[Array]:
    """(n, d) -> list of (n, rows_l, cols_l)."""
    return [
        batch[:, s].reshape(batch.shape[0], r, c)
        for s, (r, c) in zip(layer_slices(shapes), shapes, strict=True)
    ]


def _apply(weights: list[Array], rots: list[Array]) -> list[Array]:
    """``W_l -> O_l W_l O_{l-1}^T`` (O_0 = O_L = I) for batches of snapshots."""
    out = []
    for l, w in enumerate(weights):
        if l < len(rots):
            w = rots[l] @ w
        if l > 0:
            w = w @ np.swapaxes(rots[l - 1], 1, 2)
        out.append(w)
    return out


def align_snapshots(
    snapshots: Array,
    target: Array,
    shapes: Shapes,
    *,
    sweeps: int = 3,
    bases: list[Array] | None = None,
) -> tuple[Array, list[Array]]:
    """Rotate the hidden units of every snapshot onto ``target`` (orthogonal Procrustes).

    Parameters
    ----------
    snapshots : (n, d) array
    target : (d,) array
    shapes : sequence of (rows, cols), depth >= 2
    sweeps : int
        Alternating sweeps over the hidden layers (one suffices for depth 2); depth >= 3 starts
        from a forward pass that matches ``W_l`` alone, layer by layer.
    bases : list of (n, N_{h,l}, N_{h,l}) arrays, optional
        Warm start of the Procrustes solver, updated in place (see
        :func:`sgdfluct._smallmat.procrustes_rotation`): pass the same list again when aligning
        the same snapshots to a nearby target. The result does not depend on it beyond rounding.

    Returns
    -------
    aligned : (n, d) array
        ``W_l -> O_l W_l O_{l-1}^T``.
    rotations : list of (n, N_{h,l}, N_{h,l}) arrays
        One orthogonal matrix per snapshot and hidden layer.

    Notes
    -----
    For hidden layer l with the others fixed, ``O_l`` maximizes
    ``tr(O_l A)``, ``A = W_l' W̄_l^T + W_{l+1}'^T W̄_{l+1} = U S V^T``, hence ``O_l = V U^T``
    (depth 2: the docs/theory.md §8a formula). Rotations act on ``theta`` as
    ``blockdiag_l(O_l ⊗ O_{l-1})`` (:func:`frame_transform`).
    """
    from sgdfluct._smallmat import procrustes_rotation

    if len(shapes) < 2:
        raise ValueError("alignment needs depth L >= 2")
    snapshots = np.atleast_2d(np.asarray(snapshots, dtype=float))
    weights = _split(snapshots, shapes)
    tgt = _split(np.asarray(target, dtype=float)[None, :], shapes)
    n = snapshots.shape[0]
    rots: list[Array] = [np.broadcast_to(np.eye(r), (n, r, r)).copy() for r, _ in shapes[:-1]]
    if bases is None:
        bases = [r.copy() for r in rots]  # identity: a cold start
    n_sweeps = 1 if len(shapes) == 2 else max(1, sweeps)
    if len(shapes) > 2:
        # initial forward pass matching W_l only (avoids poor local optima of the sweeps)
        for l in range(len(shapes) - 1):
            w_l = weights[l] if l == 0 else weights[l] @ np.swapaxes(rots[l - 1], 1, 2)
            rots[l] = procrustes_rotation(w_l @ np.swapaxes(tgt[l], 1, 2), bases[l])
    for _ in range(n_sweeps):
        for l in range(len(shapes) - 1):
            w_l = weights[l] if l == 0 else weights[l] @ np.swapaxes(rots[l - 1], 1, 2)
            w_n = weights[l + 1] if l + 1 == len(rots) else rots[l + 1] @ weights[l + 1]
            a = w_l @ np.swapaxes(tgt[l], 1, 2) + np.swapaxes(w_n, 1, 2) @ tgt[l + 1]
            rots[l] = procrustes_rotation(a, bases[l])
    aligned = np.concatenate([w.reshape(n, -1) for w in _apply(weights, rots)], axis=1)
    return aligned, rots


def frame_transform(rotations: Sequence[Array], shapes: Shapes) -> Array:
    """Linear map (d, d) on ``theta`` of hidden rotations: ``blockdiag_l(O_l ⊗ O_{l-1})``.

    ``rotations`` holds one (N_{h,l}, N_{h,l}) orthogonal matrix per hidden layer.
    """
    d = nw.n_params(shapes)
    out = np.zeros((d, d))
    for l, s in enumerate(layer_slices(shapes)):
        left = rotations[l] if l < len(rotations) else np.eye(shapes[l][0])
        right = rotations[l - 1] if l > 0 else np.eye(shapes[l][1])
        out[s, s] = np.kron(left, right)
    return out


#: the Procrustes-mean iterations before the last one align every ``ALIGN_TARGET_THINNING``-th
#: snapshot of a window only: they only find the target of the last iteration, which aligns every
#: snapshot (the covariance is taken from that one). Measured on the quick reproduction's 20-5-5
#: and 20-5-5-5 cells: the pooled covariance moves by < 2 % of its standard error (tested
#: against ``target_thinning=1``, the exact path, in tests/analysis/test_alignment_thinning.py)
ALIGN_TARGET_THINNING = 4
#: ... but never on fewer snapshots than this (short windows keep every snapshot)
ALIGN_TARGET_MIN_SNAPSHOTS = 64


def _align_to_mean(
    snapshots: Array, shapes: Shapes, start: Array, iterations: int, target_thinning: int = 1
) -> tuple[Array, Array, list[Array]]:
    """Procrustes mean of a window: ``iterations`` rounds of aligning to the current target and
    taking the mean; all but the last round on every ``target_thinning``-th snapshot (at least
    ``ALIGN_TARGET_MIN_SNAPSHOTS`` of them)."""
    target = start
    aligned: Array = snapshots
    rots: list[Array] = []
    snapshots = np.atleast_2d(snapshots)
    n = snapshots.shape[0]
    thin = max(1, min(int(target_thinning), n // ALIGN_TARGET_MIN_SNAPSHOTS))
    rounds = max(1, iterations)
    if thin > 1 and rounds > 1:
        sub = np.ascontiguousarray(snapshots[::thin])
        sub_bases = [
            np.broadcast_to(np.eye(r), (sub.shape[0], r, r)).copy() for r, _ in shapes[:-1]
        ]
        for _ in range(rounds - 1):
            sub_aligned, _ = align_snapshots(sub, target, shapes, bases=sub_bases)
            target = sub_aligned.mean(axis=0)
        # warm start of the full round: each thinned snapshot's basis for its neighbours
        bases = [np.ascontiguousarray(np.repeat(b, thin, axis=0)[:n]) for b in sub_bases]
        rounds = 1
    else:
        bases = [np.broadcast_to(np.eye(r), (n, r, r)).copy() for r, _ in shapes[:-1]]
    for _ in range(rounds):
        aligned, rots = align_snapshots(snapshots, target, shapes, bases=bases)
        target = aligned.mean(axis=0)
    return aligned, target, rots


# ----------------------------------------------------------------------------------------------
# Imbalance saturation and dead units
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Saturation:
    """Saturation of the imbalance eigenvalues.

    Attributes
    ----------
    saturated : bool
        Some block after which every block mean stays within ``threshold`` of the final one.
    step : int
        First SGD step of that block (the burn-in); the last block's start if not saturated.
    block_steps : (n_blocks,) array
        First step of every block.
    block_means : (n_blocks, L-1, N_h) array
        Replica- and block-averaged imbalance eigenvalues.
    distance : (n_blocks,) array
        ``||block mean - final block mean||``.
    threshold : (n_blocks,) array
        ``max(rtol * scale, 3 * standard error of the difference)``.
    final : (L-1, N_h) array
        Mean over the last block (the saturated values).
    """

    saturated: bool
    step: int
    block_steps: Array
    block_means: Array
    distance: Array
    threshold: Array
    final: Array


#: family-wise false-alarm rate of the saturation test over all blocks (see detect_saturation)
SATURATION_ALPHA = 0.05


def _noise_quantile(n_blocks: int) -> float:
    """Normal quantile for the block-vs-final comparison (Bonferroni over ``n_blocks``)."""
    from scipy import stats

    return float(stats.norm.ppf(1.0 - SATURATION_ALPHA / n_blocks))


def detect_saturation(
    steps: Array,
    eigenvalues: Array,
    *,
    rtol: float = 0.01,
    scale: float | None = None,
    n_blocks: int = 20,
) -> Saturation:
    """Find the step after which the imbalance eigenvalues have saturated (docs/theory.md §8a,
    step 1).

    Parameters
    ----------
    steps : (T,) array
        SGD step of every snapshot.
    eigenvalues : (R, T, ...) array
        Imbalance eigenvalues (:func:`sgdfluct.theory.symmetry.imbalance_eigenvalues`).
    rtol : float
        Allowed residual drift relative to ``scale``. Default 1 %: the imbalance fixes the orbit
        point, and a drift of 1 % of the Gram scale moves the Hessian eigenvalues (and hence the
        covariance) by about 1 %, well below the 3 % accuracy targeted per layer.
    scale : float, optional
        Reference size (e.g. the Frobenius norm of ``W_1 W_1^T``); default: norm of the final mean.
    n_blocks : int
        The snapshots are cut into this many blocks.

    Notes
    -----
    A block is saturated when its replica-averaged mean lies within ``max(rtol * scale, q SE)``
    of the mean of the second half of the run (the stationary reference), so that noise alone
    does not prevent saturation. SE is the standard error of that difference, estimated from the
    scatter of the block means in the second half about a per-replica straight line (pooled over
    replicas, so it is well determined even for one replica, and a residual drift does not count
    as noise); ``q`` is the normal quantile at one-sided level ``SATURATION_ALPHA / n_blocks``
    (Bonferroni over the blocks). An earlier version compared with the last block and used
    ``3 SE`` from the spread over replicas only: with few replicas single noisy blocks then pushed
    the burn-in to the end of the run. The burn-in is the first block from which on every block
    of the first half is saturated; if none is, ``saturated`` is False and the burn-in is the
    midpoint.
    """
    ev = np.asarray(eigenvalues, dtype=float)
    steps = np.asarray(steps)
    if ev.ndim < 2 or ev.shape[1] != steps.shape[0]:
        raise ValueError(
            f"eigenvalues {ev.shape} must have shape (R, T, ...) with T = {steps.size}"
        )
    if not 2 <= n_blocks <= steps.size:
        raise ValueError(f"n_blocks = {n_blocks} must lie in [2, T = {steps.size}]")
    edges = np.linspace(0, steps.size, n_blocks + 1).astype(int)
    per_rep = np.stack([ev[:, a:b].mean(axis=1) for a, b in itertools.pairwise(edges)], 1)
    means = per_rep.mean(axis=0)  # (n_blocks, ...)
    mid = n_blocks // 2
    # reference: the mean of the second half of the run (less noisy than one final block)
    final = means[mid:].mean(axis=0)
    distance = np.linalg.norm(means.reshape(n_blocks, -1) - final.ravel(), axis=1)
    # noise of one replica-averaged block mean, from the scatter of the block means of the second
    # half of the run about a straight line fitted per replica and component (so a residual
    # drift does not pass for noise; R (n_blocks/2 - 2) degrees of freedom, well determined even
    # for one or two replicas)
    half = per_rep[:, mid:].reshape(per_rep.shape[0], n_blocks - mid, -1)
    m = half.shape[1]
    if m >= 3:
        design = np.vstack([np.ones(m), np.arange(m) - (m - 1) / 2]).T  # (m, 2)
        coef, *_ = np.linalg.lstsq(design, half.transpose(1, 0, 2).reshape(m, -1), rcond=None)
        fitted = (design @ coef).reshape(m, half.shape[0], -1).transpose(1, 0, 2)
        dev, dof = half - fitted, half.shape[0] * (m - 2)
    else:
        dev, dof = half - half.mean(axis=1, keepdims=True), half.shape[0] * (m - 1)
    block_var = np.sum(dev**2, axis=(0, 1)) / dof if dof > 0 else np.zeros(dev.shape[2])
    # a block against the mean of the m reference blocks: variance (1 + 1/m) block_var / R
    se = np.full(n_blocks, float(np.sqrt((1 + 1 / m) * np.sum(block_var) / per_rep.shape[0])))
    ref = float(np.linalg.norm(final)) if scale is None else float(scale)
    threshold = np.maximum(rtol * ref, _noise_quantile(n_blocks) * se)
    ok = distance <= threshold
    # the burn-in ends at the first block from which every block of the first half is saturated;
    # the second half is the stationary reference (a run that still drifts there is reported as
    # not saturated and measured from the midpoint)
    bad = np.nonzero(~ok[:mid])[0]
    first = 0 if bad.size == 0 else int(bad[-1] + 1)
    saturated = first < mid
    return Saturation(
        saturated=saturated,
        step=int(steps[edges[first]]),
        block_steps=steps[edges[:-1]],
        block_means=means,
        distance=distance,
        threshold=threshold,
        final=final,
    )


def hidden_gram_eigenvalues(trajectory: Array, shapes: Shapes) -> Array:
    """Eigenvalues (descending) of the hidden Gram ``W_l W_l^T + W_{l+1}^T W_{l+1}``.

    Shape (..., L-1, N_h). Rotation invariant; eigenvalues that decay to zero are dead hidden
    units (surplus units when ``N_h`` exceeds the rank of the product, docs/theory.md §8a).
    """
    from sgdfluct._smallmat import eigvalsh_desc

    traj = np.asarray(trajectory, dtype=float)
    lead = traj.shape[:-1]
    out = []
    for l in range(len(shapes) - 1):
        sl, sn = layer_slices(shapes)[l], layer_slices(shapes)[l + 1]
        w_l = traj[..., sl].reshape(*lead, *shapes[l])
        w_n = traj[..., sn].reshape(*lead, *shapes[l + 1])
        g = w_l @ np.swapaxes(w_l, -1, -2) + np.swapaxes(w_n, -1, -2) @ w_n
        out.append(eigvalsh_desc(g))
    return np.stack(out, axis=-2)


def imbalance_and_gram_eigenvalues(trajectory: Array, shapes: Shapes) -> tuple[Array, Array]:
    """The imbalance eigenvalues (:func:`sgdfluct.theory.symmetry.imbalance_eigenvalues`) and the
    hidden Gram eigenvalues (:func:`hidden_gram_eigenvalues`) in one pass over the snapshots.

    Both are eigenvalues of ``W_l W_l^T -/+ W_{l+1}^T W_{l+1}``: one fused kernel forms the two
    products once per snapshot and hidden layer and diagonalizes both (no batched temporaries).
    Same numbers as the two functions to rounding (tests/test_smallmat.py).

    Returns
    -------
    imbalance, gram : (..., L-1, N_h) arrays
    """
    from sgdfluct._smallmat import gram_pair_eigenvalues

    widths = {r for r, _ in shapes[:-1]}
    if len(shapes) < 2 or len(widths) != 1:
        raise ValueError(f"expected depth >= 2 with one hidden width, got shapes {list(shapes)}")
    traj = np.asarray(trajectory, dtype=float)
    lead = traj.shape[:-1]
    flat = traj.reshape(-1, traj.shape[-1])
    slices = layer_slices(shapes)
    imb, gram = [], []
    for l in range(len(shapes) - 1):
        pair = (shapes[l], shapes[l + 1])
        i, g = gram_pair_eigenvalues(flat, (slices[l].start, slices[l + 1].start), pair)
        imb.append(i.reshape(*lead, -1))
        gram.append(g.reshape(*lead, -1))
    return np.stack(imb, axis=-2), np.stack(gram, axis=-2)


# ----------------------------------------------------------------------------------------------
# The measurement
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class MeasuredCovariance:
    """Aligned, projected and pooled covariance of a depth-L network (docs/theory.md §8a).

    Attributes
    ----------
    theta_ref : (d,) array
        Pooled mean of the aligned window means (the reference frame).
    cov : (d, d) array
        Pooled covariance on range(H(theta_ref)), in the frame of ``theta_ref``.
    cov_stderr : (d, d) array
        Standard error of ``cov`` from the scatter between windows.
    window_covs : (n_windows, d, d) array
        Per-window covariances (aligned, projected, in the common frame).
    window_means : (n_windows, d) array
        Window means in the common frame.
    null_variance : float
        Mean squared deviation along null(H) per snapshot (orbit directions), pooled.
    range_variance : float
        ``trace(cov)``, for comparison with ``null_variance``.
    n_windows : int
    window_steps : int
        Window length in SGD steps.
    window_snapshots : int
    burn_in_step : int
    h_min : float
        Smallest nonzero eigenvalue of H used to size the windows.
    range_dim : int
    saturation : Saturation or None
        None when the burn-in was given.
    shapes : tuple of (rows, cols)
    window_bias_max : float
        Largest relative bias of a window covariance entry removed by the window-mean
        correction (:func:`window_mean_bias`; 0 when the correction is off).
    """

    theta_ref: Array
    cov: Array
    cov_stderr: Array
    window_covs: Array
    window_means: Array
    null_variance: float
    range_variance: float
    n_windows: int
    window_steps: int
    window_snapshots: int
    burn_in_step: int
    h_min: float
    range_dim: int
    saturation: Saturation | None
    shapes: tuple[tuple[int, int], ...]
    window_bias_max: float = 0.0

    def layer(self, layer: int) -> Array:
        """Block of ``cov`` for ``W_layer`` (1-based)."""
        return layer_block(self.cov, self.shapes, layer)

    def noise_floor(self, layer: int) -> float:
        """Relative error an exact theory would show: ``||SE_block||_F / ||cov_block||_F``."""
        se = layer_block(self.cov_stderr, self.shapes, layer)
        return float(np.linalg.norm(se) / np.linalg.norm(self.layer(layer)))

    def relative_error(self, theory_cov: Array, layer: int) -> float:
        """``||theory_block - cov_block||_F / ||cov_block||_F`` for ``W_layer``."""
        return relative_frobenius_error(
            layer_block(theory_cov, self.shapes, layer), self.layer(layer)
        )


def window_mean_bias(h: Array, learning_rate: float, n: int, spacing: int) -> Array:
    """Expected ratio ``E[S_ab] / Sigma_ab`` of a window covariance to the stationary one.

    Parameters
    ----------
    h : (k,) array
        Eigenvalues of H on its live range.
    learning_rate : float
    n : int
        Snapshots per window.
    spacing : int
        SGD steps between snapshots.

    Returns
    -------
    (k, k) array
        ``1 - (1 + g(l_a) + g(l_b)) / n`` with ``l_a = (1 - eta h_a)^spacing`` and
        ``g(l) = sum_{k=1}^{n-1} (1 - k/n) l^k``.

    Notes
    -----
    The sample covariance about the window mean of ``n`` stationary snapshots has expectation
    ``Sigma - Var(mean) = Sigma - (1/n) [Sigma + sum_{k=1}^{n-1} (1 - k/n) (C_k + C_k^T)]`` with
    the lag covariance ``C_k = E[u_{t+k s} u_t^T] = (1 - eta H)^{k s} Sigma`` of the linearized
    mean dynamics ``E[u_{t+1} | u_t] = (1 - eta H) u_t`` (exact at depth 1). In H's eigenbasis
    this is ``Sigma_ab`` times the returned factor; it depends on H only, not on a theory of
    Sigma, so dividing by it removes the bias from the measurement (docs/theory.md §8a).
    """
    lam = (1.0 - learning_rate * np.asarray(h, dtype=float)) ** int(spacing)
    k = np.arange(1, int(n))
    w = 1.0 - k / n
    g = np.array([float(np.sum(w * l**k)) for l in lam])
    return np.asarray(1.0 - (1.0 + g[:, None] + g[None, :]) / n)


def _scatter(dev: Array) -> Array:
    """``dev^T dev / n`` by a BLAS symmetric rank-k update (half the flops of a GEMM)."""
    from scipy.linalg.blas import dsyrk

    from sgdfluct._smallmat import symmetrize_from_lower

    upper = dsyrk(1.0 / dev.shape[0], np.asfortranarray(dev.T), trans=0)  # upper triangle
    out = np.ascontiguousarray(upper.T)  # C-order lower triangle holds the values
    symmetrize_from_lower(out)
    return out


def measure_layered_covariance(
    trajectory: Array,
    steps: Array,
    shapes: Shapes,
    inputs: Array,
    targets: Array,
    *,
    learning_rate: float,
    burn_in_step: int | None = None,
    window_steps: int | None = None,
    window_factor: float = 100.0,
    saturation_rtol: float = 0.01,
    align_iterations: int = 3,
    range_rtol: float = 1e-7,
    dead_rtol: float = 1e-2,
    window_bias_correction: bool = True,
    target_thinning: int = ALIGN_TARGET_THINNING,
) -> MeasuredCovariance:
    """Stationary covariance of a depth-L linear network from SGD snapshots (docs/theory.md §8a
    recipe).

    Parameters
    ----------
    trajectory : (R, T, d) array
        Snapshots of R replicas.
    steps : (T,) array
        SGD step index of every snapshot (equally spaced).
    shapes : sequence of (rows, cols), depth >= 2
    inputs : (P, N_i) array
    targets : (P, N_o) array
    learning_rate : float
        ``eta`` (sizes the windows).
    burn_in_step : int, optional
        Discard snapshots before this step; default: :func:`detect_saturation`.
    window_steps : int, optional
        Window length in steps; default ``ceil(window_factor / (eta h_min))``.
    window_factor : float
        docs/theory.md §8a: ``T_w >~ 100 / (eta h_min)``; shorter windows bias slow modes low.
    saturation_rtol : float
        See :func:`detect_saturation`.
    align_iterations : int
        Procrustes-mean iterations per window and for the pooling.
    range_rtol : float
        Eigenvalues of H above ``range_rtol * max`` define its range.
    dead_rtol : float
        Dead-unit threshold of :func:`sgdfluct.theory.linearization.live_range`; the directions of
        dead (surplus) hidden units count as null directions.
    window_bias_correction : bool
        Divide the pooled window covariances, in the eigenbasis of H on its live range, by the
        expected shrinkage of a covariance taken about its own window mean
        (:func:`window_mean_bias`): slow modes lose about ``2 / window_factor`` of their
        variance otherwise.
    target_thinning : int
        The Procrustes-mean iterations before the last one use every ``target_thinning``-th
        snapshot of a window (``ALIGN_TARGET_THINNING``); the last one aligns all of them and the
        covariance is taken from it. 1: every iteration on every snapshot (the exact path).

    Returns
    -------
    MeasuredCovariance

    Raises
    ------
    ValueError
        If fewer than two windows fit after the burn-in (the message states the steps needed).
    """
    traj = np.asarray(trajectory, dtype=float)
    steps = np.asarray(steps, dtype=np.int64)
    shapes_t = tuple((int(r), int(c)) for r, c in shapes)
    if len(shapes_t) < 2:
        raise ValueError("measure_layered_covariance needs depth L >= 2")
    if traj.ndim != 3 or traj.shape[1] != steps.size or traj.shape[2] != nw.n_params(shapes_t):
        raise ValueError(
            f"trajectory has shape {traj.shape}, expected "
            f"(R, {steps.size}, {nw.n_params(shapes_t)})"
        )
    if not np.all(np.isfinite(traj)):
        raise FloatingPointError("trajectory contains non-finite weights (SGD diverged)")
    if steps.size < 2 or np.any(np.diff(steps) <= 0):
        raise ValueError("steps must be increasing with at least two snapshots")
    spacing = int(steps[1] - steps[0])

    saturation = None
    if burn_in_step is None:
        evals = imbalance_eigenvalues(traj, shapes_t)
        w0 = traj[:, -1, layer_slices(shapes_t)[0]].reshape(traj.shape[0], *shapes_t[0])
        gram_scale = float(np.mean(np.linalg.norm(w0 @ np.swapaxes(w0, 1, 2), axis=(1, 2))))
        saturation = detect_saturation(
            steps, evals, rtol=saturation_rtol, scale=gram_scale, n_blocks=min(20, steps.size)
        )
        burn_in_step = saturation.step
    keep = steps >= burn_in_step
    traj, steps = traj[:, keep], steps[keep]

    # window length from h_min at a late snapshot (H's spectrum is rotation invariant)
    def rng_of(theta: Array) -> tuple[Array, Array]:
        h, v, _ = live_range(
            theta,
            shapes_t,
            nw.hessian(theta, shapes_t, inputs, targets),
            range_rtol=range_rtol,
            dead_rtol=dead_rtol,
        )
        return h, v

    h_late, _ = rng_of(traj[0, -1])
    h_min = float(h_late.min())
    if window_steps is None:
        window_steps = int(np.ceil(window_factor / (learning_rate * h_min)))
    per_window = max(2, int(np.ceil(window_steps / spacing)))
    n_per_rep = traj.shape[1] // per_window
    if n_per_rep * traj.shape[0] < 2:
        raise ValueError(
            f"only {traj.shape[1] * spacing} steps after the burn-in (step {burn_in_step}) per "
            f"replica and {traj.shape[0]} replica(s): need at least two windows of "
            f"{per_window * spacing} steps (window_factor / (learning_rate * h_min), h_min = "
            f"{h_min:.3g})"
        )

    means, covs, nulls = [], [], []
    for rep in range(traj.shape[0]):
        for k in range(n_per_rep):
            snaps = traj[rep, k * per_window : (k + 1) * per_window]
            aligned, mean, _ = _align_to_mean(
                snaps, shapes_t, snaps[len(snaps) // 2], align_iterations, target_thinning
            )
            _, basis = rng_of(mean)
            # the scatter matrix once (one rank-k update), then its projection on range(H) and
            # the null variance from traces: tr S - tr(B^T S B) (B orthonormal)
            scatter = _scatter(aligned - mean)
            core = basis.T @ scatter @ basis
            covs.append(basis @ core @ basis.T)
            nulls.append(max(0.0, float(np.trace(scatter) - np.trace(core))))
            means.append(mean)
    means_a = np.asarray(means)

    # pool in a common frame
    ref = means_a[0]
    rots: list[Array] = []
    for _ in range(max(1, align_iterations)):
        aligned_means, rots = align_snapshots(means_a, ref, shapes_t)
        ref = aligned_means.mean(axis=0)
    window_covs = np.empty((len(covs), *covs[0].shape))
    for w, cov in enumerate(covs):
        t = frame_transform([r[w] for r in rots], shapes_t)
        window_covs[w] = t @ cov @ t.T
    h_ref, basis = rng_of(ref)
    # projection on range(H(ref)) and the bias correction in one pass through the range
    # coordinates: B (B^T S B / f) B^T (= B B^T S B B^T without the correction)
    core = np.matmul(np.matmul(basis.T, window_covs), basis)
    bias_max = 0.0
    if window_bias_correction:
        factor = window_mean_bias(h_ref, learning_rate, per_window, spacing)
        bias_max = float(1.0 - factor.min())
        core = core / factor
    window_covs = np.matmul(np.matmul(basis, core), basis.T)
    n_w = window_covs.shape[0]
    cov = window_covs.mean(axis=0)
    stderr = window_covs.std(axis=0, ddof=1) / np.sqrt(n_w)
    return MeasuredCovariance(
        theta_ref=ref,
        cov=0.5 * (cov + cov.T),
        cov_stderr=stderr,
        window_covs=window_covs,
        window_means=aligned_means,
        null_variance=float(np.mean(nulls)),
        range_variance=float(np.trace(cov)),
        n_windows=n_w,
        window_steps=per_window * spacing,
        window_snapshots=per_window,
        burn_in_step=int(burn_in_step),
        h_min=h_min,
        range_dim=int(basis.shape[1]),
        saturation=saturation,
        shapes=shapes_t,
        window_bias_max=bias_max,
    )
