"""Linearization of depth-L linear networks around any point (docs/theory.md §8).

The network ``f(x) = W_L ... W_1 x`` depends on ``theta`` only through the product
``M(theta) = W_L ... W_1`` (N_o, N_i). With the row-major vectorization used everywhere in
sgdfluct, the product map has the Jacobian ``J = d vec(M) / d theta`` whose layer-l block is
``A_l ⊗ B_l^T`` with ``A_l = W_L ... W_{l+1}`` and ``B_l = W_{l-1} ... W_1``; for two layers
``J = [W_2 ⊗ I_{N_i}, I_{N_o} ⊗ W_1^T]``.

In product space the loss is the single-layer loss, with Hessian ``H_M = I_{N_o} ⊗ H_x`` and noise
covariance ``C_M = cov_mu(r_mu ⊗ x_mu)``. At a point whose product is the least-squares solution,
``H_theta = J^T H_M J`` and ``C_theta = J^T C_M J`` (the Hessian's residual term vanishes there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sgdfluct import networks as nw

__all__ = [
    "Linearization",
    "dead_unit_directions",
    "gauss_newton_variance",
    "hessian_range",
    "linearize",
    "live_range",
    "product_jacobian",
    "product_space_hessian",
    "product_space_noise",
]

Array = NDArray[np.float64]
Shapes = Sequence[tuple[int, int]]


def product_jacobian(theta: Array, shapes: Shapes) -> Array:
    """Jacobian of the product map ``vec(M(theta))`` (row-major); shape (N_o N_i, d).

    Parameters
    ----------
    theta : (d,) array
        Parameters, row-major ``vec(W_1), ..., vec(W_L)``.
    shapes : sequence of (rows, cols)
        Shapes of ``W_1 ... W_L``.

    Notes
    -----
    ``M = A_l W_l B_l`` with ``A_l = W_L ... W_{l+1}`` and ``B_l = W_{l-1} ... W_1``, hence
    ``d vec(M) = (A_l ⊗ B_l^T) d vec(W_l)`` for row-major ``vec``. For ``L = 2``:
    ``J = [W_2 ⊗ I_{N_i}, I_{N_o} ⊗ W_1^T]``.
    """
    weights = nw.unflatten(theta, shapes)
    n_in = shapes[0][1]
    blocks = []
    for l in range(len(weights)):
        left = np.eye(weights[-1].shape[0])
        for w in reversed(weights[l + 1 :]):
            left = left @ w
        right = np.eye(n_in)
        for w in weights[:l]:
            right = w @ right
        blocks.append(np.kron(left, right.T))
    return np.concatenate(blocks, axis=1)


def product_space_hessian(inputs: Array, n_out: int) -> Array:
    """Product-space Hessian ``H_M = I_{N_o} ⊗ H_x``, ``H_x = X^T X / P``; (N_o N_i, N_o N_i)."""
    inputs = np.asarray(inputs, dtype=float)
    if n_out < 1:
        raise ValueError(f"n_out = {n_out} must be >= 1")
    return np.kron(np.eye(n_out), inputs.T @ inputs / inputs.shape[0])


def product_space_noise(product: Array, inputs: Array, targets: Array) -> Array:
    """Product-space noise covariance ``C_M``; shape (N_o N_i, N_o N_i).

    Parameters
    ----------
    product : (N_o, N_i) array
        End-to-end matrix ``M``.
    inputs : (P, N_i) array
    targets : (P, N_o) array

    Notes
    -----
    Per-sample gradients ``g_mu = vec(r_mu x_mu^T) = r_mu ⊗ x_mu`` with ``r_mu = M x_mu - y_mu``;
    ``C_M = (1/P) sum_mu g_mu g_mu^T - gbar gbar^T``. At the least-squares minimum ``gbar = 0`` and
    ``C_M = (1/P) sum_mu (r_mu r_mu^T) ⊗ (x_mu x_mu^T)`` (docs/theory.md §4).
    """
    inputs = np.asarray(inputs, dtype=float)
    r = inputs @ np.asarray(product, dtype=float).T - targets
    g = np.einsum("po,pi->poi", r, inputs).reshape(inputs.shape[0], -1)
    g = g - g.mean(axis=0)
    return g.T @ g / inputs.shape[0]


def gauss_newton_variance(sigma: Array, jacobians: Array) -> tuple[Array, Array]:
    """Multiplicative-noise terms ``K(Σ) = (1/P) sum_mu H_mu Σ H_mu`` and ``H̄ Σ H̄``.

    Parameters
    ----------
    sigma : (d, d) array
        Weight covariance ``Σ``.
    jacobians : (P, N_o, d) array
        Per-sample Jacobians ``J_mu`` (:func:`sgdfluct.networks.per_sample_jacobians`).

    Returns
    -------
    k_term : (d, d) array
        ``K(Σ)`` with the per-sample Gauss-Newton matrices ``H_mu = J_mu^T J_mu``.
    mean_term : (d, d) array
        ``H̄ Σ H̄`` with ``H̄ = (1/P) sum_mu H_mu``; ``K(Σ) - H̄ Σ H̄`` is the covariance over samples
        of ``H_mu u`` for ``u ~ N(0, Σ)`` (positive semi-definite).
    """
    p = jacobians.shape[0]
    js = jacobians @ sigma  # (P, N_o, d)
    inner = js @ np.swapaxes(jacobians, 1, 2)  # (P, N_o, N_o)
    k_term = np.einsum("pad,pab,pbe->de", jacobians, inner, jacobians, optimize=True) / p
    flat = jacobians.reshape(-1, jacobians.shape[2])
    h_bar = flat.T @ flat / p
    return k_term, h_bar @ sigma @ h_bar


@dataclass(frozen=True, kw_only=True)
class Linearization:
    """Local quantities of a depth-L linear network at ``theta``.

    Attributes
    ----------
    theta : (d,) array
    shapes : tuple of (rows, cols)
    jacobian : (N_o N_i, d) array
        Product-map Jacobian ``J``.
    hessian : (d, d) array
        Exact Hessian ``∇²L(theta)`` (Gauss-Newton plus residual term).
    gauss_newton : (d, d) array
        ``J^T H_M J = (1/P) sum_mu J_mu^T J_mu``.
    noise_cov : (d, d) array
        Per-sample gradient covariance ``C_theta`` (cross-layer blocks kept; not divided by S).
    per_sample_jacobians : (P, N_o, d) array
        ``J_mu = d f(x_mu) / d theta``; ``H_mu = J_mu^T J_mu``.
    product_hessian, product_noise : (N_o N_i, N_o N_i) arrays
        ``H_M`` and ``C_M`` at the product ``M(theta)``.
    """

    theta: Array
    shapes: tuple[tuple[int, int], ...]
    jacobian: Array
    hessian: Array
    gauss_newton: Array
    noise_cov: Array
    per_sample_jacobians: Array
    product_hessian: Array
    product_noise: Array

    def range_basis(self, rtol: float = 1e-7) -> tuple[Array, Array]:
        """Eigenvalues (d_r,) and orthonormal eigenvectors (d, d_r) of H above ``rtol * max``."""
        return hessian_range(self.hessian, rtol)


def hessian_range(hessian: Array, rtol: float = 1e-7) -> tuple[Array, Array]:
    """Eigen-pairs of a symmetric matrix with eigenvalue ``> rtol * max eigenvalue``.

    Returns ``(h, V)`` with ``h`` (d_r,) ascending and ``V`` (d, d_r) orthonormal columns.
    """
    if not 0.0 < rtol < 1.0:
        raise ValueError(f"rtol = {rtol} must lie in (0, 1)")
    evals, evecs = np.linalg.eigh(0.5 * (hessian + hessian.T))
    if evals[-1] <= 0.0:
        raise ValueError("the Hessian has no positive eigenvalue: not near a minimum")
    keep = evals > rtol * evals[-1]
    return evals[keep], evecs[:, keep]


def dead_unit_directions(theta: Array, shapes: Shapes, dead_rtol: float = 1e-2) -> Array:
    """Orthonormal directions (d, k) of dead hidden units (surplus units, docs/theory.md §8a).

    At hidden layer l the Gram ``G_l = W_l W_l^T + W_{l+1}^T W_{l+1}`` has eigenvectors ``v``;
    those with eigenvalue below ``dead_rtol * max`` are dead units. Their directions are
    ``delta W_l = v a^T`` and ``delta W_{l+1} = b v^T`` (any ``a``, ``b``): ``cols_l + rows_{l+1}``
    directions per dead unit. Along them the loss is quartic (the unit does not enter the product
    to first order), so the linear theory does not apply; they are excluded from the range.
    """
    if not 0.0 <= dead_rtol < 1.0:
        raise ValueError(f"dead_rtol = {dead_rtol} must lie in [0, 1)")
    weights = nw.unflatten(np.asarray(theta, dtype=float), shapes)
    offsets = np.cumsum([0] + [r * c for r, c in shapes])
    d = int(offsets[-1])
    cols = []
    for l in range(len(shapes) - 1):
        w_l, w_n = weights[l], weights[l + 1]
        evals, evecs = np.linalg.eigh(w_l @ w_l.T + w_n.T @ w_n)
        top = max(float(evals[-1]), 0.0)
        for j in np.nonzero(evals <= dead_rtol * top)[0] if top > 0 else range(evals.size):
            v = evecs[:, j]
            for a in np.eye(w_l.shape[1]):
                vec = np.zeros(d)
                vec[offsets[l] : offsets[l + 1]] = np.outer(v, a).ravel()
                cols.append(vec)
            for b in np.eye(w_n.shape[0]):
                vec = np.zeros(d)
                vec[offsets[l + 1] : offsets[l + 2]] = np.outer(b, v).ravel()
                cols.append(vec)
    if not cols:
        return np.zeros((d, 0))
    q, r = np.linalg.qr(np.stack(cols, axis=1))
    keep = np.abs(np.diag(r)) > 1e-10
    return np.asarray(q[:, keep])


def _without_dead_units(theta: Array, shapes: Shapes, dead_rtol: float) -> Array:
    """``theta`` with every dead hidden unit (as in :func:`dead_unit_directions`) set to zero."""
    weights = [w.copy() for w in nw.unflatten(np.asarray(theta, dtype=float), shapes)]
    for l in range(len(shapes) - 1):
        w_l, w_n = weights[l], weights[l + 1]
        evals, evecs = np.linalg.eigh(w_l @ w_l.T + w_n.T @ w_n)
        top = max(float(evals[-1]), 0.0)
        dead = evecs[:, evals <= dead_rtol * top] if top > 0 else evecs
        if dead.shape[1]:
            keep = np.eye(dead.shape[0]) - dead @ dead.T
            weights[l] = keep @ w_l
            weights[l + 1] = w_n @ keep
    return nw.flatten(weights)


def live_range(
    theta: Array,
    shapes: Shapes,
    hessian: Array,
    *,
    range_rtol: float = 1e-7,
    dead_rtol: float = 1e-2,
) -> tuple[Array, Array, int]:
    """Range of H off the symmetry orbit and dead units: ``(h (d_r,), V (d, d_r), n_excluded)``.

    Notes
    -----
    Let ``P`` project orthogonally to the span of the symmetry generators
    (:func:`sgdfluct.theory.symmetry.symmetry_basis`) and of the dead-unit directions
    (:func:`dead_unit_directions`). The range is spanned by the eigenvectors of ``P H P`` with
    eigenvalue ``> range_rtol * max`` (docs/theory.md §8a: ~1e-7). At a minimum of full rank this
    is exactly
    ``range(H)`` (the orbit is ``null(H)``); at a window mean, which is not a critical point, the
    orbit directions carry a small curvature ``O(|grad L|)`` of either sign and are excluded
    explicitly; dead-unit directions are quartic, not quadratic, and are excluded too.
    ``n_excluded`` is the dimension of the excluded span. Depth 1: plain ``range(H)``.
    """
    from sgdfluct.theory.symmetry import symmetry_basis

    if len(shapes) < 2:
        h, v = hessian_range(hessian, range_rtol)
        return h, v, 0
    # the symmetry generators at the point with its dead units removed: at a nearly dead unit
    # (Gram eigenvalue eps > 0) the generators that mix it with live units have O(eps) parts
    # outside the dead-unit span, which a rank-revealing tolerance would count as extra excluded
    # dimensions (seen from random starts, where surplus units decay but stay nonzero)
    excl = np.concatenate(
        [
            symmetry_basis(_without_dead_units(theta, shapes, dead_rtol), shapes),
            dead_unit_directions(theta, shapes, dead_rtol),
        ],
        axis=1,
    )
    u, sv, _ = np.linalg.svd(excl, full_matrices=False)
    excl = u[:, sv > 1e-8 * sv[0]] if sv.size and sv[0] > 0 else u[:, :0]
    proj = np.eye(hessian.shape[0]) - excl @ excl.T
    h, v = hessian_range(proj @ hessian @ proj, range_rtol)
    return h, v, int(excl.shape[1])


def linearize(theta: Array, shapes: Shapes, inputs: Array, targets: Array) -> Linearization:
    """All local quantities of the network at ``theta`` (any point, any depth L >= 1).

    Parameters
    ----------
    theta : (d,) array
    shapes : sequence of (rows, cols)
    inputs : (P, N_i) array
    targets : (P, N_o) array

    Returns
    -------
    Linearization
    """
    theta = np.asarray(theta, dtype=float)
    inputs = np.asarray(inputs, dtype=float)
    targets = np.asarray(targets, dtype=float)
    shapes_t = tuple((int(r), int(c)) for r, c in shapes)
    if inputs.ndim != 2 or inputs.shape[1] != shapes_t[0][1]:
        raise ValueError(f"inputs has shape {inputs.shape}, expected (P, {shapes_t[0][1]})")
    if targets.shape != (inputs.shape[0], shapes_t[-1][0]):
        raise ValueError(
            f"targets has shape {targets.shape}, expected ({inputs.shape[0]}, {shapes_t[-1][0]})"
        )
    jac = product_jacobian(theta, shapes_t)
    h_m = product_space_hessian(inputs, shapes_t[-1][0])
    psj = nw.per_sample_jacobians(theta, shapes_t, inputs)
    return Linearization(
        theta=theta,
        shapes=shapes_t,
        jacobian=jac,
        hessian=nw.hessian(theta, shapes_t, inputs, targets),
        gauss_newton=jac.T @ h_m @ jac,
        noise_cov=nw.noise_covariance(theta, shapes_t, inputs, targets),
        per_sample_jacobians=psj,
        product_hessian=h_m,
        product_noise=product_space_noise(
            nw.product(nw.unflatten(theta, shapes_t)), inputs, targets
        ),
    )
