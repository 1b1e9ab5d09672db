"""Stability checks of the probe: the probe is as strict as ``run`` (docs/theory.md §5.4, §11).

* :func:`check_window_stability` — at the window mean ``w̄``: the deterministic bound
  ``η λ_max(H) < 2`` (:func:`sgdfluct.theory.stability.check_learning_rate`, the check of ``run``)
  and the mean-square stability of SGD in the probed subspace (:func:`subspace_spectral_radius`).
* :func:`check_loss_growth` — when the plateau test never passes, a training loss that grows by
  orders of magnitude is reported as divergence (with ``η``, ``λ_max`` and the bound), not as a
  run that is merely too short.

Every failure raises :class:`~sgdfluct.errors.UnstableError` or
:class:`~sgdfluct.errors.DivergenceError` (exit 3), naming ``η``, ``λ_max`` and the bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray

from sgdfluct.errors import DivergenceError, UnstableError
from sgdfluct.theory.stability import check_learning_rate

if TYPE_CHECKING:  # pragma: no cover
    from ._core import FluctuationProbe

__all__ = [
    "GROWTH_FACTOR",
    "JVP_PATH",
    "MS_ITERATIONS",
    "MS_RTOL",
    "MS_WINDOW_GROWTH",
    "check_loss_growth",
    "check_window_stability",
    "subspace_spectral_radius",
]

Array = NDArray[np.float64]

#: Arnoldi restarts (each a few applications of the second-moment map, O(n n_out K²) each)
MS_ITERATIONS = 2000
#: relative accuracy of the spectral radius (ARPACK ``tol``): well inside the margin
#: ``ln(MS_WINDOW_GROWTH) / window`` of the decision for windows up to ~10⁶ steps
MS_RTOL = 1e-7
#: the second moment may grow by at most this factor over the recording window: ``ρ ≥ 1`` is
#: refused when ``ρ^window ≥ MS_WINDOW_GROWTH``. The soft directions just above the near-null
#: level have ``ρ ≈ 1 − 2 η θ`` within ~1e-3 of 1 (digits: 0.9985), so a marginal excess of
#: the linearized map over 1 that the window cannot see is not called an instability
MS_WINDOW_GROWTH = 2.0
#: a loss whose last plateau block mean exceeds the first of the last three by this factor, with
#: every block above the one before, is growing, not drifting towards a plateau
GROWTH_FACTOR = 10.0
#: directions per vectorized Jacobian-vector product
_JVP_CHUNK = 16
#: how the output's Jacobian-vector products along the probed directions are taken: "affine"
#: (every probed layer an affine layer of a ``torch.nn.Sequential``,
#: ``probe._flatness.LossAlong``: the JVP of the modules after the layer along ``Z_p``) or "full"
#: (the reference: ``torch.func.jvp`` of the whole model)
JVP_PATH = "affine"


def _bound(lam_max: float) -> str:
    return f"{2.0 / lam_max:.6g}" if lam_max > 0 else "unbounded (lambda_max <= 0)"


def _unstable_message(
    eta: float, lam_max: float, batch_factor: float, rho: float, window: int
) -> str:
    log10 = window * math.log10(rho)
    growth = f"{10**log10:.3g}" if log10 < 300 else f"10^{log10:.0f}"
    return (
        f"SGD is not mean-square stable at learning_rate = {eta:.6g} (batch factor f_S = "
        f"{batch_factor:.4g}): in the probed subspace at the window mean the second-moment map "
        f"has spectral radius {rho:.6g} >= 1 (the second moment grows by a factor {growth} over "
        f"the window of {window} steps), so the measured variances are not stationary. "
        f"lambda_max(H) = {lam_max:.6g}, eta * lambda_max = "
        f"{eta * lam_max:.6g}; the deterministic bound 2/lambda_max = {_bound(lam_max)} is not "
        "sufficient at this batch size: lower the learning rate or raise the batch size"
    )


def subspace_spectral_radius(
    hessian: Array,
    sample_factors: Array,
    *,
    learning_rate: float,
    batch_factor: float,
    max_iter: int = MS_ITERATIONS,
    rtol: float = MS_RTOL,
) -> float:
    """Spectral radius of the SGD second-moment map compressed to K directions.

    Parameters
    ----------
    hessian : (K, K) array
        ``H_K = Pᵀ H P``, the Hessian of the training loss (with its weight-decay term) in the
        probed subspace.
    sample_factors : (n, m, K) array
        ``B_μ`` with ``B_μᵀ B_μ = A_μ``, the per-sample Gauss–Newton curvature in the subspace
        (``m`` outputs).
    learning_rate : float or (K, K) array
        ``η``, or the step-size matrix ``E = Pᵀ diag(η_j) P`` when the parameters have their own
        learning rates (optimizer parameter groups): then ``ηH`` reads ``E H`` and the noise term
        ``E (K(M) − Ā M Ā) Eᵀ``.
    batch_factor : float
        ``f_S`` (docs/theory.md §3).

    Returns
    -------
    float
        ``ρ(T)``; SGD is mean-square stable in the subspace iff ``ρ < 1``.

    Notes
    -----
    docs/theory.md §5 in the subspace: a deviation ``u`` from the minimum evolves as
    ``u ← u − η (A_B u + g_B)``, so its second moment follows
    ``T(M) = (I − ηH_K) M (I − ηH_K) + η² f_S (K(M) − Ā M Ā)``, ``K(M) = (1/n) Σ_μ A_μ M A_μ``,
    ``Ā = (1/n) Σ_μ A_μ``: the multiplicative noise of the per-sample curvatures (the part of the
    gradient noise that grows with the deviation). ``K(M) − Ā M Ā`` is the covariance of
    ``A_μ M^{1/2}`` and maps PSD matrices to PSD matrices, as does the first term when
    ``M ⪰ 0``, so ``T`` is a positive map and its spectral radius is its Perron root (ARPACK on
    the K² vectorization, dense for K <= 8). For a linear model with the squared loss
    ``A_μ = x_μ x_μᵀ`` (⊗ I) exactly and, with all directions probed, ``ρ`` is the spectral
    radius of the exact single-layer map of ``run``
    (:func:`sgdfluct.theory.discrete.mean_square_spectral_radius` reports the equivalent
    splitting operator: both are >= 1 together). For other models ``A_μ`` is the Gauss–Newton
    part of the per-sample Hessian.
    """
    h = np.asarray(hessian, dtype=float)
    b = np.asarray(sample_factors, dtype=float)
    k = h.shape[0]
    n = b.shape[0]
    fs = float(batch_factor)
    # one η, or the K×K step-size matrix Pᵀ diag(η) P of per-parameter learning rates
    eta = np.asarray(learning_rate, dtype=float) * (np.eye(k) if np.ndim(learning_rate) == 0 else 1)
    step = np.eye(k) - eta @ h
    a_bar = np.einsum("nok,nol->kl", b, b) / max(n, 1)

    flat_b = b.reshape(n * b.shape[1], k) if n else b.reshape(0, k)

    def apply(m: Array) -> Array:
        out = step @ m @ step.T
        if fs > 0 and n > 0:
            q = np.matmul(np.matmul(b, m), b.transpose(0, 2, 1))  # B_μ M B_μᵀ (n, m, m)
            kmm = flat_b.T @ np.matmul(q, b).reshape(-1, k) / n  # (1/n) Σ B_μᵀ q_μ B_μ
            out = out + fs * (eta @ (kmm - a_bar @ m @ a_bar) @ eta.T)
        return np.asarray(0.5 * (out + out.T))

    return _perron_root(apply, k, max_iter=max_iter, rtol=rtol)


def _perron_root(apply: Callable[[Array], Array], k: int, *, max_iter: int, rtol: float) -> float:
    """Spectral radius of the positive map ``apply`` on k×k symmetric matrices: dense for small
    k, else implicitly restarted Arnoldi (ARPACK, from the identity) with power iteration as the
    fall-back; the Perron root of a positive map is its largest eigenvalue in modulus."""
    import scipy.sparse.linalg as spla

    def matvec(v: Array) -> Array:
        return apply(np.asarray(v, dtype=float).reshape(k, k)).ravel()

    if k * k <= 64:
        dense = np.column_stack([matvec(e) for e in np.eye(k * k)])
        return float(np.max(np.abs(np.linalg.eigvals(dense))))
    op = spla.LinearOperator((k * k, k * k), matvec=matvec, dtype=float)
    try:
        vals = spla.eigs(op, k=1, which="LM", v0=np.eye(k).ravel(), tol=rtol, maxiter=max_iter)
        return float(np.max(np.abs(vals[0] if isinstance(vals, tuple) else vals)))
    except spla.ArpackNoConvergence:  # pragma: no cover - fall back to the power iteration
        pass
    m = np.eye(k) / math.sqrt(k)
    rho = 0.0
    for _ in range(max_iter):
        tm = apply(m)
        rho = float(np.linalg.norm(tm))  # m has unit Frobenius norm
        if not rho > 0:
            return 0.0
        m = tm / rho
    return rho


def _sample_factors(
    probe: FluctuationProbe, params: Mapping[str, torch.Tensor], dirs: Mapping[int, torch.Tensor]
) -> Array:
    """``B_μ = Λ_μ^{1/2} J_μ P`` (n, m, K): Jacobian-vector products of the model's outputs along
    the probed directions, weighted by the square root of the per-sample loss Hessian in the
    outputs ``Λ_μ`` (PSD part)."""
    fn = torch.func.functional_call
    model, x, y = probe.model, probe.x, probe.y

    def outputs(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return fn(model, p, (x,))

    def one(t: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.func.jvp(outputs, (dict(params),), (t,))[1]

    cols = []
    alongs = None
    if JVP_PATH == "affine":
        from ._flatness import LossAlong

        alongs = [LossAlong(probe, params, lay, dirs[lay.index]) for lay in probe.layers]
        if any(a.site is None for a in alongs):
            alongs = None
    for a, lay in enumerate(probe.layers):
        p = dirs[lay.index]
        for c in range(0, p.shape[0], _JVP_CHUNK):
            if alongs is not None:  # the output's derivative along Z_p of the layer's output
                al = alongs[a]

                def along_zp(zp: torch.Tensor, _al: Any = al) -> torch.Tensor:
                    return torch.func.jvp(_al.tail_out, (_al.z0,), (zp,))[1]

                zp = al.zp_rows(range(c, min(p.shape[0], c + _JVP_CHUNK)))
                cols.append(torch.func.vmap(along_zp)(zp))
                continue
            tangents = probe._layer_tangents(params, lay, p[c : c + _JVP_CHUNK])
            cols.append(torch.func.vmap(one)(tangents))  # (chunk, n, ...)
    with torch.no_grad():
        out = outputs(dict(params))
    jac = torch.cat(cols).reshape(-1, out.shape[0], int(np.prod(out.shape[1:], dtype=int)))
    jac_np = jac.permute(1, 2, 0).to(torch.float64).cpu().numpy()  # (n, m, K)

    def sample_loss(o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return probe.loss_fn(o.reshape(1, *out.shape[1:]), t.unsqueeze(0))

    flat = out.reshape(out.shape[0], -1).detach()
    lam = torch.func.vmap(torch.func.hessian(sample_loss))(flat, y)
    lam_np = lam.reshape(flat.shape[0], flat.shape[1], flat.shape[1]).to(torch.float64)
    evals, evecs = np.linalg.eigh(
        0.5 * (lam_np.cpu().numpy() + lam_np.cpu().numpy().swapaxes(1, 2))
    )
    root = np.einsum("nij,nj,nkj->nik", evecs, np.sqrt(np.clip(evals, 0.0, None)), evecs)
    return np.asarray(np.einsum("nij,njk->nik", root, jac_np))


def _step_sizes(probe: FluctuationProbe, dirs: Mapping[int, torch.Tensor]) -> Array | None:
    """``Pᵀ diag(η_j) P`` (K, K) over the probed directions when the trained parameters do not
    all share one learning rate (parameter groups); None when they do."""
    lr_of: Mapping[str, float] = getattr(probe, "_lr_of", {})
    if len(set(lr_of.values())) <= 1:
        return None
    blocks = []
    for lay in probe.layers:
        rates = np.concatenate(
            [
                np.full(int(np.prod(s, dtype=int)), lr_of[n])
                for n, s in zip(lay.param_names, lay.shapes, strict=True)
            ]
        )
        p = dirs[lay.index].to(torch.float64).cpu().numpy()
        blocks.append((p * rates) @ p.T)
    from scipy.linalg import block_diag

    return np.asarray(block_diag(*blocks))


def check_window_stability(
    probe: FluctuationProbe,
    params: Mapping[str, torch.Tensor],
    dirs: Mapping[int, torch.Tensor],
    hessian: Array,
    lambda_max: float,
) -> float:
    """Raise :class:`UnstableError` unless SGD is stable at the window mean; return ``ρ``.

    First the deterministic bound ``η λ_max(H) < 2`` (the check of ``run``), then the
    mean-square stability of the probed subspace (:func:`subspace_spectral_radius` with the
    projected Hessian ``hessian`` (K, K) and per-sample curvatures along ``dirs``, layer index →
    (k_l, d_l) rows), restricted to the eigenvectors of ``hessian`` with eigenvalues above the
    near-null level ``near_null_rtol · λ_max``: along near-null directions (symmetry orbits of
    deep linear nets, ReLU rescalings) nothing restores the weights, ``I − ηH`` is the identity
    there and ``ρ`` would be >= 1 for any η; negative eigenvalues at the window mean are the
    drift along curved orbits the probe reports separately (docs/theory.md §11).
    """
    eta = probe.learning_rate
    steps = _step_sizes(probe, dirs)
    if steps is None:  # one η for every parameter: the bound of `run`
        check_learning_rate(lambda_max, eta)
    theta, evec = np.linalg.eigh(np.asarray(hessian, dtype=float))
    live = theta > probe.near_null_rtol * lambda_max
    if not live.any():
        return 0.0
    if probe.f_s == 0:
        factors = np.zeros((0, 1, int(live.sum())))
    else:
        factors = _sample_factors(probe, params, dirs) @ evec[:, live]
    rho = subspace_spectral_radius(
        np.diag(theta[live]),
        factors,
        learning_rate=eta if steps is None else evec[:, live].T @ steps @ evec[:, live],
        batch_factor=probe.f_s,
    )
    if not rho < 1.0 and probe.window * math.log(rho) >= math.log(MS_WINDOW_GROWTH):
        raise UnstableError(_unstable_message(eta, lambda_max, probe.f_s, rho, probe.window))
    return rho


def check_loss_growth(probe: FluctuationProbe) -> None:
    """Raise when the training loss grows instead of settling (no plateau by ``steps − window``).

    Growing: the last three plateau blocks each above the one before with the last
    :data:`GROWTH_FACTOR` times the first, or a block of the last three :data:`GROWTH_FACTOR`²
    times the smallest block mean seen so far (the bursts of a mean-square unstable run). With
    ``λ_max(H)`` at the current weights the error is :class:`UnstableError` (``η λ_max >= 2``,
    the message of ``run``) or :class:`DivergenceError` (below the deterministic bound: the
    noise makes SGD unstable). A no-op otherwise (the caller reports a loss still drifting).
    """
    means = [m for m, _ in probe.plateau.blocks]
    if len(means) < 3:
        return
    m = means[-3:]
    lowest = min([mm for mm, _ in probe.plateau.history] + m)
    if 0 < m[0] < m[1] < m[2] and m[2] >= GROWTH_FACTOR * m[0]:
        growth = f"the training loss grew from {m[0]:.3g} to {m[1]:.3g} to {m[2]:.3g} (block means)"
    elif lowest > 0 and max(m) >= GROWTH_FACTOR**2 * lowest:
        growth = (
            f"the training loss rose from a block mean of {lowest:.3g} to {max(m):.3g} (last "
            f"block means {m[0]:.3g}, {m[1]:.3g}, {m[2]:.3g})"
        )
    else:
        return
    lam_max = probe._lambda_max(probe._params())
    eta = probe.learning_rate
    try:
        check_learning_rate(lam_max, eta)
    except UnstableError as exc:
        raise UnstableError(f"{exc}; {growth} by step {probe.step}") from None
    raise DivergenceError(
        f"SGD diverges at learning_rate = {eta:.6g}: {growth} by step {probe.step}. "
        f"lambda_max(H) = {lam_max:.6g} at the current weights, eta * lambda_max = "
        f"{eta * lam_max:.6g} < 2 (the bound 2/lambda_max = {_bound(lam_max)}): the gradient "
        "noise makes SGD mean-square unstable below that bound; lower the learning rate or raise "
        "the batch size"
    )
