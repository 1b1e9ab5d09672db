"""The subspace analysis of one window: drift share, range projection and the per-layer theory.

docs/theory.md §11 (drift share, range projection), §5 in the subspace (the additive
discrete-time equation), §6 (the commutator); temperatures ``T_i = f_S η c_ii / (2 k_i)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import NDArray

from sgdfluct.landscape import spearman
from sgdfluct.theory.detailed_balance import relative_commutator
from sgdfluct.theory.lyapunov import discrete_additive_covariance

from ._fitting import fit_pca
from ._flatness import MAX_DOUBLINGS, flatness
from ._params import flatten_layer
from ._result import DRIFT_SHARE_MAX, WELL_ABOVE_ZERO_RTOL, WINDOW_RELAXATIONS, LayerResult
from ._select import Layer
from ._stream import CoordinateMoments

if TYPE_CHECKING:
    from ._core import FluctuationProbe


__all__ = ["drift_share", "layer_result", "range_projected"]


Array = NDArray[np.float64]


def drift_share(
    h_k: Array, lam_max: float, near_null_rtol: float, notes: list[str]
) -> tuple[Array, Array, Array, NDArray[np.bool_]]:
    """Eigenvalues θ (K,) and eigenvectors (K, K) of ``H_K``, the drift share (K,) of every probed
    direction and the near-null mask (K,): ``|θ_j| <= near_null_rtol · λ_max`` (docs/theory.md §11;
    :meth:`FluctuationProbe.analyze`). A note is added when ``H_K`` has negative eigenvalues below
    the near-null level."""
    theta, evec = np.linalg.eigh(h_k)
    null = np.abs(theta) <= near_null_rtol * lam_max
    drift = (evec[:, null] ** 2).sum(axis=1)
    n_negative = int(np.sum(theta < -near_null_rtol * lam_max))
    if n_negative:
        notes.append(
            f"the Hessian in the probed subspace has {n_negative} "
            f"negative eigenvalue(s) (down to {theta.min():.3g}, lambda_max = {lam_max:.3g}) "
            "at the window mean: the mean is not near a minimum, as when the weights drift far "
            "along a curved symmetry orbit during the window; drift shares and range_cov may "
            "miss that drift (shorten the window, or lower eta / raise the batch size)"
        )
    return theta, evec, drift, null


def range_projected(
    probe: FluctuationProbe,
    dirs: Mapping[int, Array],
    order: Sequence[int],
    e_null: Array,
    big_k: int,
    notes: list[str],
) -> Array:
    """Joint measured covariance ``M_K`` (K×K) projected off the near-null eigenvectors.

    ``Π M_K Π`` with ``Π = I − E_0 E_0ᵀ`` (``E_0``: the near-null eigenvectors of
    ``H_K = Pᵀ H P``, the columns of ``e_null``); NaN-filled, with a note, when the joint
    covariance was not recorded (PCA directions of layers with more than ``sketch_size``
    parameters together).
    """
    if probe._joint is None:
        notes.append(
            f"range_cov not measured: the probed layers have more than sketch_size = "
            f"{probe.sketch_size} parameters together, so the cross-layer covariance of the "
            "PCA directions is not recorded; use directions = 'hessian'"
        )
        return np.full((big_k, big_k), np.nan)
    if isinstance(probe._joint, CoordinateMoments):
        m_k = probe._joint.covariance()
    else:
        var, vec = probe._joint.top(probe._joint.dim)
        sigma = vec.T @ (var[:, None] * vec)
        sizes = [dirs[i].shape[1] for i in order]
        cols = np.concatenate([[0], np.cumsum(sizes)])
        p_big = np.zeros((big_k, int(cols[-1])))
        row = 0
        for j, i in enumerate(order):
            p_big[row : row + dirs[i].shape[0], cols[j] : cols[j + 1]] = dirs[i]
            row += dirs[i].shape[0]
        m_k = p_big @ sigma @ p_big.T
    proj = np.eye(big_k) - e_null @ e_null.T
    out = proj @ m_k @ proj
    return np.asarray(0.5 * (out + out.T))


def layer_result(
    probe: FluctuationProbe,
    lay: Layer,
    params: Mapping[str, torch.Tensor],
    loss0: float,
    lam_max: float,
    directions: Array,
    measured: Array,
    h_l: Array,
    c_l: Array,
    drift: Array,
    range_cov: Array,
    exact: bool,
    gen: np.random.Generator,
) -> LayerResult:
    notes: list[str] = []
    var = np.clip(np.diag(measured).copy(), 0.0, None)
    curv = np.diag(h_l).copy()
    noise = np.clip(np.diag(c_l).copy(), 0.0, None)
    eta, fs = probe._layer_lr(lay), probe.f_s
    if not math.isfinite(eta):
        lrs = {n: probe._lr_of[n] for n in lay.param_names}
        notes.append(
            f"the parameters of this layer have different learning rates ({lrs}): η is not "
            "one number in the layer, so temperatures and the subspace theory are undefined "
            "(NaN); probe the parameters separately (layers=[name, ...])"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        temp = np.where(curv > 0, fs * eta * noise / (2.0 * np.where(curv > 0, curv, 1.0)), np.nan)
    if np.any(curv <= 0):
        notes.append(
            f"{int(np.sum(curv <= 0))} direction(s) with curvature <= 0: temperature "
            "undefined (null)"
        )
    p = torch.as_tensor(directions, dtype=probe.x.dtype, device=probe.x.device)
    flat, offs, prof = flatness(probe, params, lay, p, loss0, curv, var)
    if np.any(~np.isfinite(flat)):
        notes.append(
            f"{int(np.sum(~np.isfinite(flat)))} direction(s) stay below factor * L_0 after "
            f"{MAX_DOUBLINGS} doublings: flatness unbounded (NaN)"
        )
    sharp = (curv >= WELL_ABOVE_ZERO_RTOL * lam_max) & (drift < DRIFT_SHARE_MAX)
    ivfr_all = fit_pca(probe, var, flat, gen)
    ivfr_sharp = fit_pca(probe, np.where(sharp, var, 0.0), np.where(sharp, flat, np.nan), gen)
    pos = curv > 0
    rho_tk = math.nan
    if pos.sum() >= 3:
        rho_tk = spearman(curv[pos], temp[pos])[0]
    commut = relative_commutator(h_l, c_l)
    m_th = np.full_like(h_l, np.nan)
    err = math.nan
    try:
        if math.isfinite(eta):
            m_th = discrete_additive_covariance(h_l, c_l, learning_rate=eta, batch_factor=fs)
            err = float(np.linalg.norm(m_th - measured) / np.linalg.norm(measured))
    except ValueError as exc:
        notes.append(f"subspace theory undefined: {exc}")
    k_min = float(curv[sharp].min()) if sharp.any() else math.nan
    relax = probe.window * eta * k_min
    if math.isfinite(relax) and relax < WINDOW_RELAXATIONS:
        notes.append(
            f"window = {probe.window} steps is {relax:.3g} relaxation times 1/(eta k_min) of "
            f"the sharp directions (k_min = {k_min:.3g}); {WINDOW_RELAXATIONS:g} wanted: "
            "slow directions are under-sampled"
        )
    if not exact:
        notes.append(
            f"streaming Nyström sketch (d = {lay.dim} > sketch size {probe.sketch_size}): "
            "top variances are lower bounds, tight when the spectrum decays"
        )
    return LayerResult(
        layer=lay.index,
        name=lay.name,
        n_params=lay.dim,
        directions=directions,
        variances=var,
        weight_cov_measured=measured,
        curvature=curv,
        flatness=flat,
        profile_offsets=offs,
        loss_profile=prof,
        noise_var=noise,
        hessian_proj=h_l,
        noise_proj=c_l,
        temperature=temp,
        drift_share=drift,
        range_cov=range_cov,
        range_variance=np.diag(range_cov).copy(),
        window_mean=flatten_layer(params, lay).to(torch.float64).cpu().numpy(),
        sharp=sharp,
        weight_cov_theory=m_th,
        ivfr_all=ivfr_all,
        ivfr_sharp=ivfr_sharp,
        spearman_temperature_curvature=float(rho_tk),
        commutator=float(commut),
        theory_error=err,
        window_relaxations=float(relax),
        sketch_exact=exact,
        notes=tuple(notes),
        learning_rate=eta,
    )
