"""Depth-L linear networks ``f(x) = W_L ... W_2 W_1 x`` (docs/theory.md §2).

Parameters travel as one flat vector ``theta``: row-major ``vec(W_1)``, then ``vec(W_2)``, ... in
forward order. ``shapes`` is the list of ``(rows, cols)`` of ``W_1 ... W_L``.

Loss ``L(theta) = (1/2P) sum_mu ||y_mu - f(x_mu)||^2`` with per-sample loss
``l_mu = 1/2 ||y_mu - f(x_mu)||^2``. All derivatives below are analytic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "balanced_minimum",
    "flatten",
    "forward",
    "gradient",
    "gradient_flow",
    "gradient_flow_start",
    "hessian",
    "hessian_sum",
    "layer_index",
    "least_squares",
    "loss",
    "n_params",
    "noise_covariance",
    "per_sample_gradients",
    "per_sample_jacobians",
    "product",
    "random_start",
    "unflatten",
]

Array = NDArray[np.float64]
Shapes = Sequence[tuple[int, int]]


def n_params(shapes: Shapes) -> int:
    """Number of parameters ``d = sum_l rows_l * cols_l``."""
    return int(sum(r * c for r, c in shapes))


def layer_index(shapes: Shapes) -> NDArray[np.int64]:
    """Layer number (1-based) of every entry of ``theta``; shape (d,)."""
    return np.concatenate(
        [np.full(r * c, i + 1, dtype=np.int64) for i, (r, c) in enumerate(shapes)]
    )


def unflatten(theta: Array, shapes: Shapes) -> list[Array]:
    """Split ``theta`` (d,) into the weight matrices ``[W_1, ..., W_L]`` (views, row-major)."""
    theta = np.asarray(theta, dtype=float)
    if theta.shape != (n_params(shapes),):
        raise ValueError(f"theta has shape {theta.shape}, expected ({n_params(shapes)},)")
    out, start = [], 0
    for r, c in shapes:
        out.append(theta[start : start + r * c].reshape(r, c))
        start += r * c
    return out


def flatten(weights: Sequence[Array]) -> Array:
    """Inverse of :func:`unflatten`: concatenate row-major ``vec(W_l)``."""
    return np.concatenate([np.asarray(w, dtype=float).ravel() for w in weights])


def product(weights: Sequence[Array]) -> Array:
    """End-to-end matrix ``W_L ... W_1`` of shape (N_o, N_i)."""
    m = weights[0]
    for w in weights[1:]:
        m = w @ m
    return m


def forward(theta: Array, shapes: Shapes, inputs: Array) -> Array:
    """Outputs ``f(x_mu)`` for inputs (P, N_i); returns (P, N_o)."""
    return inputs @ product(unflatten(theta, shapes)).T


def loss(theta: Array, shapes: Shapes, inputs: Array, targets: Array) -> float:
    """``L(theta) = (1/2P) sum_mu ||y_mu - f(x_mu)||^2``."""
    r = forward(theta, shapes, inputs) - targets
    return float(0.5 * np.sum(r * r) / inputs.shape[0])


def _activations(weights: Sequence[Array], inputs: Array) -> list[Array]:
    """``a_0 = x, a_l = W_l a_{l-1}`` for every sample: list of (P, n_l) arrays."""
    acts = [inputs]
    for w in weights:
        acts.append(acts[-1] @ w.T)
    return acts


def _suffix_products(weights: Sequence[Array]) -> list[Array]:
    """``A_l = W_L ... W_{l+1}`` (..., N_o, rows_l) for every layer l (A_L = I); the weights
    may carry leading batch axes (one point of a batch each, as in :func:`hessian_sum`)."""
    n_out = weights[-1].shape[-2]
    lead = weights[-1].shape[:-2]
    suffix = [np.broadcast_to(np.eye(n_out), (*lead, n_out, n_out))]
    for w in reversed(weights[1:]):
        suffix.append(suffix[-1] @ w)
    return suffix[::-1]


def per_sample_gradients(theta: Array, shapes: Shapes, inputs: Array, targets: Array) -> Array:
    """Gradients ``g_mu = grad l_mu`` of every sample; shape (P, d).

    For layer l: ``d l_mu / d W_l = (A_l^T r_mu) a_{l-1,mu}^T`` with ``r_mu = f(x_mu) - y_mu``.
    """
    weights = unflatten(theta, shapes)
    acts = _activations(weights, inputs)
    r = acts[-1] - targets
    blocks = []
    for l, a_l in enumerate(_suffix_products(weights)):
        back = r @ a_l  # (P, rows_l)
        blocks.append(np.einsum("pi,pj->pij", back, acts[l]).reshape(inputs.shape[0], -1))
    return np.concatenate(blocks, axis=1)


def gradient(theta: Array, shapes: Shapes, inputs: Array, targets: Array) -> Array:
    """Full-batch gradient ``grad L`` (d,)."""
    weights = unflatten(theta, shapes)
    acts = _activations(weights, inputs)
    r = acts[-1] - targets
    p = inputs.shape[0]
    return np.concatenate(
        [((r @ a_l).T @ acts[l] / p).ravel() for l, a_l in enumerate(_suffix_products(weights))]
    )


def per_sample_jacobians(theta: Array, shapes: Shapes, inputs: Array) -> Array:
    """Jacobians ``J_mu = d f(x_mu) / d theta``; shape (P, N_o, d).

    Block l is ``kron(A_l, a_{l-1,mu}^T)`` in the row-major convention.
    """
    weights = unflatten(theta, shapes)
    acts = _activations(weights, inputs)
    p = inputs.shape[0]
    blocks = [
        np.einsum("ok,pj->pokj", a_l, acts[l]).reshape(p, a_l.shape[0], -1)
        for l, a_l in enumerate(_suffix_products(weights))
    ]
    return np.concatenate(blocks, axis=2)


def hessian(theta: Array, shapes: Shapes, inputs: Array, targets: Array) -> Array:
    """Exact Hessian ``∇²L(theta)`` (d, d) at any point: Gauss-Newton plus residual term.

    Notes
    -----
    ``∇²L = (1/P) sum_mu J_mu^T J_mu + (1/P) sum_mu sum_o r_mu,o ∇² f_o(x_mu)``. For a linear
    network ``f`` is linear in each layer, so the residual term only has off-diagonal layer
    blocks: for layers ``l < m`` its ``((i,j),(k,p))`` entry is ``B_jk E_ip`` with
    ``B = W_{m-1} ... W_{l+1}`` and ``E = (1/P) sum_mu (A_m^T r_mu) a_{l-1,mu}^T``.
    """
    weights = unflatten(theta, shapes)
    p = inputs.shape[0]
    acts = _activations(weights, inputs)
    suffix = _suffix_products(weights)
    offsets = np.cumsum([0] + [a * b for a, b in shapes])
    d = int(offsets[-1])
    # Gauss-Newton: J_mu's layer-l block is kron(A_l, a_{l-1,mu}^T) and A_l does not depend on
    # mu, so block (l, m) of (1/P) sum_mu J_mu^T J_mu is kron(A_l^T A_m, (1/P) sum_mu
    # a_{l-1,mu} a_{m-1,mu}^T): O(d^2) instead of a (P N_o) x d x d product
    hess = np.empty((d, d))
    for l in range(len(weights)):
        for m in range(l, len(weights)):
            block = np.kron(suffix[l].T @ suffix[m], acts[l].T @ acts[m] / p)
            sl, sm = slice(offsets[l], offsets[l + 1]), slice(offsets[m], offsets[m + 1])
            hess[sl, sm] = block
            if m != l:
                hess[sm, sl] = block.T
    if len(weights) == 1:
        return hess
    r = acts[-1] - targets
    for m in range(len(weights)):
        back = r @ suffix[m]  # (P, rows_m)
        for l in range(m):
            e = back.T @ acts[l] / p  # (rows_m, cols_l)
            between = np.eye(shapes[l][0])  # B = W_{m-1} ... W_{l+1}: (cols_m, rows_l)
            for w in weights[l + 1 : m]:
                between = w @ between
            # block[(i, j), (k, q)] = E[i, q] * B[j, k]
            block = np.einsum("iq,jk->ijkq", e, between).reshape(
                shapes[m][0] * shapes[m][1], shapes[l][0] * shapes[l][1]
            )
            sm, sl = slice(offsets[m], offsets[m + 1]), slice(offsets[l], offsets[l + 1])
            hess[sm, sl] += block
            hess[sl, sm] += block.T
    return hess


def noise_covariance(theta: Array, shapes: Shapes, inputs: Array, targets: Array) -> Array:
    """Per-sample gradient covariance ``C = (1/P) sum g_mu g_mu^T - gbar gbar^T`` (d, d).

    Not divided by the batch size (docs/theory.md §4).
    """
    g = per_sample_gradients(theta, shapes, inputs, targets)
    g = g - g.mean(axis=0)
    return g.T @ g / g.shape[0]


#: float64 entries of the batched temporaries of :func:`hessian_sum` per chunk of points (8 MiB)
SUM_CHUNK_ENTRIES = 2**20


def _batched_weights(thetas: Array, shapes: Shapes) -> list[Array]:
    """(n, d) -> list of (n, rows_l, cols_l) views."""
    offsets = np.cumsum([0] + [r * c for r, c in shapes])
    return [
        thetas[:, offsets[l] : offsets[l + 1]].reshape(thetas.shape[0], r, c)
        for l, (r, c) in enumerate(shapes)
    ]


def _chunks(n: int, per_point: int) -> list[slice]:
    size = max(1, SUM_CHUNK_ENTRIES // max(per_point, 1))
    return [slice(a, min(n, a + size)) for a in range(0, n, size)]


def hessian_sum(thetas: Array, shapes: Shapes, inputs: Array, targets: Array) -> Array:
    """``sum_k ∇²L(theta_k)`` over the rows of ``thetas`` (n, d) (:func:`hessian`).

    Every block of :func:`hessian` is a Kronecker product (or its residual analogue) of two
    small matrices of each point; their sum over the points is one contraction over the batch
    axis (a GEMM) per block: the same sum as a loop over :func:`hessian`, up to the rounding of
    the summation order.
    """
    thetas = np.atleast_2d(np.asarray(thetas, dtype=float))
    d, p = thetas.shape[1], inputs.shape[0]
    offsets = np.cumsum([0] + [a * b for a, b in shapes])
    hess = np.zeros((d, d))
    depth = len(shapes)
    width = max(max(r, c) for r, c in shapes)
    for sl in _chunks(thetas.shape[0], p * width * depth):
        weights = _batched_weights(thetas[sl], shapes)
        n = weights[0].shape[0]
        acts = [np.broadcast_to(inputs, (n, *inputs.shape))]
        for w in weights:
            acts.append(acts[-1] @ np.swapaxes(w, 1, 2))
        suffix = _suffix_products(weights)
        for l in range(depth):
            for m in range(l, depth):
                left = np.swapaxes(suffix[l], 1, 2) @ suffix[m]  # (n, rows_l, rows_m)
                right = np.swapaxes(acts[l], 1, 2) @ acts[m] / p  # (n, cols_l, cols_m)
                # sum_k kron(left_k, right_k)[(i, j), (k', q)] = sum_k left[i, k'] right[j, q]
                block = (
                    np.tensordot(left, right, axes=([0], [0]))
                    .transpose(0, 2, 1, 3)
                    .reshape(offsets[l + 1] - offsets[l], offsets[m + 1] - offsets[m])
                )
                sa, sb = slice(offsets[l], offsets[l + 1]), slice(offsets[m], offsets[m + 1])
                hess[sa, sb] += block
                if m != l:
                    hess[sb, sa] += block.T
        if depth == 1:
            continue
        r = acts[-1] - targets
        for m in range(depth):
            back = r @ suffix[m]  # (n, P, rows_m)
            for l in range(m):
                e = np.swapaxes(back, 1, 2) @ acts[l] / p  # (n, rows_m, cols_l)
                between = np.broadcast_to(np.eye(shapes[l][0]), (n, shapes[l][0], shapes[l][0]))
                for w in weights[l + 1 : m]:
                    between = w @ between  # (n, cols_m, rows_l)
                # block[(i, j), (k, q)] = sum_k E[i, q] B[j, k]
                block = (
                    np.tensordot(e, between, axes=([0], [0]))
                    .transpose(0, 2, 3, 1)
                    .reshape(shapes[m][0] * shapes[m][1], shapes[l][0] * shapes[l][1])
                )
                sm, sl_ = slice(offsets[m], offsets[m + 1]), slice(offsets[l], offsets[l + 1])
                hess[sm, sl_] += block
                hess[sl_, sm] += block.T
    return hess


def least_squares(inputs: Array, targets: Array) -> Array:
    """Minimum-norm least-squares solution ``W*`` (N_o, N_i) of ``y ≈ W x``."""
    sol, *_ = np.linalg.lstsq(inputs, targets, rcond=None)
    return np.asarray(sol.T)


def balanced_minimum(inputs: Array, targets: Array, shapes: Shapes) -> Array:
    """A balanced global minimum ``theta`` of a depth-L (L >= 1) linear network.

    The product ``M`` is the reduced-rank least-squares solution of rank
    ``r = min(rank W*, N_h)`` (SVD of ``W* H_x^{1/2}``); with ``M = U s V^T`` the layers are
    ``W_L = U s^{1/L}``, ``W_l = s^{1/L}`` (hidden), ``W_1 = s^{1/L} V^T``, padded with zero rows
    and columns when ``N_h > r``. They satisfy ``W_l W_l^T = W_{l+1}^T W_{l+1}`` (balanced).
    """
    shapes = list(shapes)
    w_star = least_squares(inputs, targets)
    depth = len(shapes)
    if depth == 1:
        return w_star.ravel().copy()
    width = min(r for r, _ in shapes[:-1])
    hx = inputs.T @ inputs / inputs.shape[0]
    evals, evecs = np.linalg.eigh(hx)
    keep = evals > evals.max() * 1e-12
    half = (evecs[:, keep] * np.sqrt(evals[keep])) @ evecs[:, keep].T
    half_inv = (evecs[:, keep] / np.sqrt(evals[keep])) @ evecs[:, keep].T
    u, s, vt = np.linalg.svd(w_star @ half, full_matrices=False)
    rank = min(width, int(np.sum(s > s.max() * 1e-12)) if s.size else 0)
    m = (u[:, :rank] * s[:rank]) @ vt[:rank] @ half_inv
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    u, s, vt = u[:, :rank], s[:rank], vt[:rank]
    root = s ** (1.0 / depth)
    weights = []
    for l, (rows, cols) in enumerate(shapes):
        w = np.zeros((rows, cols))
        if l == 0:
            w[:rank] = root[:, None] * vt
        elif l == depth - 1:
            w[:, :rank] = u * root[None, :]
        else:
            w[:rank, :rank] = np.diag(root)
        weights.append(w)
    return flatten(weights)


def gradient_flow(
    theta0: Array,
    shapes: Shapes,
    inputs: Array,
    targets: Array,
    *,
    time: float = 1e3,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> Array:
    """Integrate gradient flow ``dtheta/dt = -grad L`` from ``theta0`` up to ``time``.

    Returns the end point (d,). Uses an implicit stiff solver (LSODA via ``solve_ivp``).
    """

    def rhs(_t: float, th: Array) -> Array:
        return -gradient(th, shapes, inputs, targets)

    from scipy.integrate import solve_ivp  # deferred: keeps `import sgdfluct` light

    sol = solve_ivp(
        rhs, (0.0, time), np.asarray(theta0, float), method="LSODA", rtol=rtol, atol=atol
    )
    if not sol.success:
        raise RuntimeError(f"gradient flow failed: {sol.message}")
    return np.asarray(sol.y[:, -1])


# ----------------------------------------------------------------------------------------------
# Starting points (docs/theory.md §8b); appended by the science issue
# ----------------------------------------------------------------------------------------------
def random_start(shapes: Shapes, *, replicas: int = 1, scale: float = 1.0, seed: int = 0) -> Array:
    """I.i.d. Gaussian starts ``W_l ~ N(0, scale^2 / fan_in)``, one draw per replica (§8b).

    Parameters
    ----------
    shapes : sequence of (rows, cols)
        ``fan_in`` of ``W_l`` is its number of columns.
    replicas : int
        Number of independent starts.
    scale : float
        Standard-deviation factor (> 0).
    seed : int
        Root of ``SeedSequence(seed)``; replica ``r`` uses its ``r``-th spawned child, so a
        replica's start does not depend on how many replicas are drawn.

    Returns
    -------
    (replicas, d) array

    Examples
    --------
    >>> random_start([(3, 6), (2, 3)], replicas=2, seed=0).shape
    (2, 24)
    """
    if int(replicas) < 1:
        raise ValueError(f"replicas = {replicas!r}: expected an integer >= 1")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale = {scale!r}: expected a finite number > 0")
    out = np.empty((int(replicas), n_params(shapes)))
    for r, child in enumerate(np.random.SeedSequence(int(seed)).spawn(int(replicas))):
        rng = np.random.default_rng(child)
        out[r] = flatten(
            [rng.normal(0.0, scale / np.sqrt(cols), size=(rows, cols)) for rows, cols in shapes]
        )
    return out


def gradient_flow_start(
    inputs: Array,
    targets: Array,
    shapes: Shapes,
    *,
    replicas: int = 1,
    scale: float = 1.0,
    seed: int = 0,
    time: float = 1e4,
) -> Array:
    """Gradient flow from every replica's :func:`random_start` (§8b).

    Gradient flow conserves the imbalances ``W_l W_l^T - W_{l+1}^T W_{l+1}``, so each replica
    lands on the minimum manifold at its start's imbalance. ``time`` is in units of the loss
    (the slowest mode decays like ``exp(-h_min t)``).

    Returns
    -------
    (replicas, d) array
    """
    starts = random_start(shapes, replicas=replicas, scale=scale, seed=seed)
    return np.stack([gradient_flow(s, shapes, inputs, targets, time=time) for s in starts])
