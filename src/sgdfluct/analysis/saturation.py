"""The saturation gate of a depth >= 2 run from a random start (docs/theory.md §8b).

From a random start a run has three phases: the loss decays (about ``1 / (eta h_min)`` steps), the
imbalance ``D = W_1 W_1^T - W_2^T W_2`` drifts along the symmetry orbit towards the noise
equilibrium (much slower), surplus hidden units may die, and then the state is quasi-stationary.
The measurement (§8a) may only use the last phase. :func:`saturation_gate` decides where it starts
and whether it was reached at all; a run that did not saturate cannot support a verdict
``holds`` (the claims read ``saturation.saturated``).

The gate asks five questions, each of which must pass:

1. the training loss has saturated (:func:`~sgdfluct.analysis.alignment.detect_saturation` on the
   per-snapshot loss);
2. the imbalance eigenvalues have saturated (same detector);
3. the hidden Gram eigenvalues ``eig(W_l W_l^T + W_{l+1}^T W_{l+1})`` have saturated: dying
   (surplus) units have reached their end point, dead or alive;
4. the dimension of the live range of the Gauss-Newton matrix ``J^T J / P`` (off the orbit and the
   dead units, §8a step 4) is the same at every block end of the second half in every replica
   examined (the full Hessian at a snapshot has a residual term of either sign, which made the
   count flicker with power-law inputs);
5. no drift in the second half: per replica, the change over the second half of a straight line
   fitted to the block means of the imbalance and Gram eigenvalues; a drift is a change that is
   both significant (t-test over replicas, Bonferroni over components, family-wise 5 %) and
   larger than ``rtol`` times the Gram scale.

The burn-in is the latest saturation step of 1-3, at least the end of the first block (which holds
the start and the loss decay), and the midpoint when one of them did not saturate.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sgdfluct import networks as nw
from sgdfluct.analysis.alignment import (
    Saturation,
    detect_saturation,
    imbalance_and_gram_eigenvalues,
)
from sgdfluct.theory.layered import layer_slices
from sgdfluct.theory.linearization import live_range

__all__ = ["SaturationGate", "saturation_gate", "snapshot_losses", "surplus_unit_decay"]

Array = NDArray[np.float64]
Shapes = Sequence[tuple[int, int]]

#: family-wise false-alarm rate of the second-half drift test (Bonferroni over components)
DRIFT_ALPHA = 0.05
#: relative Gram eigenvalues inside this range count as the decaying phase of a surplus unit
#: (above: still entangled with the live units; below: round-off)
DECAY_WINDOW = (1e-12, 1e-1)
#: at most this many replicas are examined for the range-dimension test (cost: one Hessian
#: eigendecomposition per block end and replica)
RANGE_REPLICAS = 4


@dataclass(frozen=True, kw_only=True)
class SaturationGate:
    """Outcome of :func:`saturation_gate`.

    Attributes
    ----------
    saturated : bool
        All five tests passed.
    step : int
        First step of the quasi-stationary phase (the burn-in of the measurement).
    loss, imbalance, gram : Saturation
        The three detectors (loss per snapshot, imbalance eigenvalues, hidden Gram eigenvalues).
    range_dims : list of int
        Live-range dimension of H at the block ends of the second half (replicas concatenated).
    range_stable : bool
    drift : dict
        ``{"imbalance": {...}, "gram": {...}}`` with the largest relative change over the second
        half, its t statistic and whether it counts as a drift.
    drift_free : bool
    reasons : list of str
        Why the run did not saturate (empty when it did).
    imbalance_values, gram_values : (R, T, L-1, N_h) arrays
        The eigenvalues the detectors ran on (:func:`imbalance_eigenvalues`,
        :func:`hidden_gram_eigenvalues`), kept for the caller's other uses.
    """

    saturated: bool
    step: int
    loss: Saturation
    imbalance: Saturation
    gram: Saturation
    range_dims: list[int]
    range_stable: bool
    drift: dict[str, Any]
    drift_free: bool
    reasons: list[str] = field(default_factory=list)
    imbalance_values: Array | None = field(default=None, repr=False)
    gram_values: Array | None = field(default=None, repr=False)

    def to_summary(self) -> dict[str, Any]:
        """The ``summary.json`` block ``saturation``."""
        return {
            "saturated": bool(self.saturated),
            "step": int(self.step),
            "loss_saturated": bool(self.loss.saturated),
            "loss_step": int(self.loss.step),
            "imbalance_saturated": bool(self.imbalance.saturated),
            "imbalance_step": int(self.imbalance.step),
            "gram_saturated": bool(self.gram.saturated),
            "gram_step": int(self.gram.step),
            "range_dims": [int(v) for v in sorted(set(self.range_dims))],
            "range_stable": bool(self.range_stable),
            "drift_free": bool(self.drift_free),
            "drift": self.drift,
            "reasons": "; ".join(self.reasons) if self.reasons else "",
        }


def snapshot_losses(trajectory: Array, shapes: Shapes, inputs: Array, targets: Array) -> Array:
    """Training loss ``(1/2P) sum ||y - M x||^2`` of every snapshot, shape ``(...)``.

    Uses the product ``M`` and the data moments, so the cost does not grow with ``P``; one fused
    kernel per snapshot (:func:`sgdfluct._smallmat.chain_losses`), no batched temporaries.
    """
    from sgdfluct._smallmat import chain_losses

    traj = np.asarray(trajectory, dtype=float)
    x, y = np.asarray(inputs, float), np.asarray(targets, float)
    p = x.shape[0]
    hx, bxy, c = x.T @ x / p, y.T @ x / p, float(np.sum(y * y)) / p
    lead = traj.shape[:-1]
    flat = traj.reshape(-1, traj.shape[-1])
    offsets = [s.start for s in layer_slices(shapes)]
    return chain_losses(flat, offsets, shapes, hx, bxy, c).reshape(lead)


def _second_half_drift(
    steps: Array, values: Array, scale: float, rtol: float, n_blocks: int
) -> dict[str, Any]:
    """Change over the second half (straight line per replica through the block means)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    r = v.shape[0]
    flat = v.reshape(r, v.shape[1], -1)
    half = flat[:, steps.size // 2 :]
    t_half = steps[steps.size // 2 :].astype(float)
    edges = np.linspace(0, t_half.size, max(3, n_blocks // 2) + 1).astype(int)
    blocks = np.stack([half[:, a:b].mean(axis=1) for a, b in itertools.pairwise(edges)], 1)
    tb = np.array([t_half[a:b].mean() for a, b in itertools.pairwise(edges)])
    tc = tb - tb.mean()
    slope = np.einsum("b,rbk->rk", tc, blocks - blocks.mean(axis=1, keepdims=True)) / np.sum(tc**2)
    change = slope * float(t_half[-1] - t_half[0])  # (R, K)
    k = change.shape[1]
    mean = change.mean(axis=0)
    if r >= 2:
        se = change.std(axis=0, ddof=1) / np.sqrt(r)
        dof = r - 1
    else:  # one replica: residual scatter of the block means about the line
        resid = blocks[0] - blocks[0].mean(axis=0) - np.outer(tc, slope[0])
        dof = max(1, tb.size - 2)
        se = np.sqrt(np.sum(resid**2, axis=0) / dof / np.sum(tc**2)) * float(t_half[-1] - t_half[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        tstat = np.where(se > 0, np.abs(mean) / se, np.where(mean != 0, np.inf, 0.0))
    crit = float(stats.t.ppf(1 - DRIFT_ALPHA / (2 * max(k, 1)), dof))
    relevant = np.abs(mean) > rtol * scale
    drifting = relevant & (tstat > crit)
    worst = int(np.argmax(np.abs(mean))) if k else 0
    return {
        "max_rel_change": float(np.abs(mean[worst]) / scale) if k and scale > 0 else 0.0,
        "t_statistic": float(tstat[worst]) if k else 0.0,
        "t_critical": crit,
        "drifting": bool(np.any(drifting)),
    }


def surplus_unit_decay(
    steps: Array, gram: Array, n_live: int, *, dead_rtol: float = 1e-2
) -> dict[str, Any]:
    """How the surplus hidden units (beyond ``n_live``, the rank of the product) evolve.

    Parameters
    ----------
    steps : (T,) array
    gram : (R, T, L-1, N_h) array
        Descending hidden Gram eigenvalues (:func:`hidden_gram_eigenvalues`).
    n_live : int
        Number of units the product needs (its rank); the rest are surplus.
    dead_rtol : float
        A unit counts as dead when its eigenvalue is below ``dead_rtol`` times the largest.

    Returns
    -------
    dict
        ``n_surplus``; the surplus eigenvalues relative to the largest at the start and at the end
        (replica mean); ``death_step`` (first snapshot from which on the replica-mean relative
        eigenvalue of every surplus unit stays below ``dead_rtol``; None if never);
        ``decay_rate_per_step`` (OLS slope of ``log`` of the relative eigenvalue over the
        snapshots where it lies inside ``DECAY_WINDOW``; None without surplus units or with
        fewer than three such snapshots).
    """
    g = np.asarray(gram, dtype=float)
    n_h = g.shape[-1]
    n_surplus = max(0, n_h - int(n_live))
    out: dict[str, Any] = {"n_surplus": n_surplus}
    if n_surplus == 0:
        out.update(rel_start=[], rel_end=[], death_step=None, decay_rate_per_step=None)
        return out
    rel = g[..., n_h - n_surplus :] / g[..., :1]  # (R, T, L-1, n_surplus)
    rel_mean = rel.mean(axis=0).reshape(g.shape[1], -1)  # (T, K)
    out["rel_start"] = rel_mean[0].tolist()
    tail = max(1, steps.size // 10)
    out["rel_end"] = rel_mean[-tail:].mean(axis=0).tolist()
    below = np.all(rel_mean < dead_rtol, axis=1)
    # first index from which on all later snapshots are below
    after = np.flip(np.cumprod(np.flip(below).astype(int))).astype(bool)
    idx = np.flatnonzero(after)
    out["death_step"] = int(steps[idx[0]]) if idx.size else None
    # decay rate: OLS slope of log(relative eigenvalue) over the snapshots where every surplus
    # unit is in its decaying phase (between DECAY_WINDOW[0] and DECAY_WINDOW[1]; below, round-off)
    lo, hi = DECAY_WINDOW
    phase = np.all((rel_mean > lo) & (rel_mean < hi), axis=1)
    t = steps[phase].astype(float)
    logs = np.log(rel_mean[phase]).mean(axis=1) if phase.any() else np.empty(0)
    out["decay_rate_per_step"] = (
        float(np.polyfit(t, logs, 1)[0]) if t.size >= 3 and np.ptp(t) > 0 else None
    )
    return out


def saturation_gate(
    trajectory: Array,
    steps: Array,
    shapes: Shapes,
    inputs: Array,
    targets: Array,
    *,
    rtol: float = 0.01,
    n_blocks: int = 20,
    range_rtol: float = 1e-7,
    dead_rtol: float = 1e-2,
) -> SaturationGate:
    """Decide where the quasi-stationary phase starts and whether the run reached it (§8b).

    Parameters
    ----------
    trajectory : (R, T, d) array
    steps : (T,) array
    shapes : sequence of (rows, cols), depth >= 2
    inputs, targets : arrays
    rtol : float
        Allowed residual change relative to the scale of each quantity (the final loss, the
        Frobenius norm of the final ``W_1 W_1^T``); see
        :func:`~sgdfluct.analysis.alignment.detect_saturation`.
    n_blocks : int
    range_rtol, dead_rtol : float
        As in :func:`~sgdfluct.theory.linearization.live_range`.

    Returns
    -------
    SaturationGate
    """
    traj = np.asarray(trajectory, dtype=float)
    steps = np.asarray(steps)
    if traj.ndim != 3 or traj.shape[1] != steps.size:
        raise ValueError(f"trajectory {traj.shape} must be (R, T = {steps.size}, d)")
    n_blocks = min(n_blocks, steps.size)
    loss = snapshot_losses(traj, shapes, inputs, targets)
    loss_scale = float(np.mean(loss[:, steps.size // 2 :]))
    sat_loss = detect_saturation(
        steps, loss[..., None], rtol=rtol, scale=loss_scale, n_blocks=n_blocks
    )
    w0 = traj[:, -1, layer_slices(shapes)[0]].reshape(traj.shape[0], *shapes[0])
    gram_scale = float(np.mean(np.linalg.norm(w0 @ np.swapaxes(w0, 1, 2), axis=(1, 2))))
    imb, gram = imbalance_and_gram_eigenvalues(traj, shapes)
    sat_imb = detect_saturation(steps, imb, rtol=rtol, scale=gram_scale, n_blocks=n_blocks)
    sat_gram = detect_saturation(steps, gram, rtol=rtol, scale=gram_scale, n_blocks=n_blocks)

    # 4. live-range dimension at the block ends of the second half
    edges = np.linspace(0, steps.size, n_blocks + 1).astype(int)
    ends = edges[n_blocks // 2 + 1 :] - 1
    dims: list[int] = []
    for rep in range(min(traj.shape[0], RANGE_REPLICAS)):
        for e in ends:
            theta = traj[rep, e]
            # the Gauss-Newton part J^T J / P: at a snapshot (not a minimum) the residual term of
            # the full Hessian gives the smallest range eigenvalues either sign, so the count
            # would flicker with the noise (seen with power-law inputs); J^T J changes rank only
            # when a unit dies or the product loses rank, which is what this test is for
            jac = nw.per_sample_jacobians(theta, shapes, inputs)
            flat_jac = jac.reshape(-1, jac.shape[-1])
            gauss_newton = flat_jac.T @ flat_jac / jac.shape[0]  # one GEMM (einsum did not)
            h, _, _ = live_range(
                theta, shapes, gauss_newton, range_rtol=range_rtol, dead_rtol=dead_rtol
            )
            dims.append(int(h.size))
    range_stable = len(set(dims)) == 1

    # 5. drift in the second half
    drift = {
        "imbalance": _second_half_drift(steps, imb, gram_scale, rtol, n_blocks),
        "gram": _second_half_drift(steps, gram, gram_scale, rtol, n_blocks),
    }
    drift_free = not any(v["drifting"] for v in drift.values())

    reasons = []
    for name, sat in (("loss", sat_loss), ("imbalance", sat_imb), ("hidden Gram", sat_gram)):
        if not sat.saturated:
            reasons.append(f"the {name} did not saturate in the first half")
    if not range_stable:
        reasons.append(
            f"the live range dimension of H changed in the second half: {sorted(set(dims))}"
        )
    for name, d in drift.items():
        if d["drifting"]:
            reasons.append(
                f"the {name} eigenvalues drift in the second half (change "
                f"{d['max_rel_change']:.3g} of the Gram scale, t = {d['t_statistic']:.3g})"
            )
    parts_ok = sat_loss.saturated and sat_imb.saturated and sat_gram.saturated
    mid = int(steps[edges[n_blocks // 2]])
    # the first block holds the start and the loss decay: never measured, even when its block
    # mean happens to lie within the saturation threshold
    first_block_end = int(steps[edges[1]])
    step = max(sat_loss.step, sat_imb.step, sat_gram.step, first_block_end) if parts_ok else mid
    return SaturationGate(
        saturated=not reasons,
        step=int(min(step, mid)),
        loss=sat_loss,
        imbalance=sat_imb,
        gram=sat_gram,
        range_dims=dims,
        range_stable=range_stable,
        drift=drift,
        drift_free=drift_free,
        reasons=reasons,
        imbalance_values=imb,
        gram_values=gram,
    )
