"""Batched kernels for many small matrices: orthogonal Procrustes factors, symmetric eigenvalues.

The depth >= 2 analysis aligns every snapshot's hidden units (one orthogonal Procrustes problem per
snapshot, hidden layer and sweep) and follows the hidden Gram and imbalance eigenvalues along the
trajectory: millions of N_h x N_h problems with N_h ~ 2-20. LAPACK through NumPy's batched
``linalg`` costs ~10 us per 5 x 5 matrix (call overhead, not flops); the Jacobi kernels below do
the same work in well under 1 us, in parallel over the batch. Importing this module imports numba.

Both kernels are exact up to rounding: Jacobi sweeps run until every off-diagonal pair is
negligible relative to its diagonal (one-sided Jacobi: columns orthogonal to ``EPS``), so the
results agree with ``numpy.linalg`` to ~1e-14 (tests/test_smallmat.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

__all__ = [
    "chain_losses",
    "eigvalsh_desc",
    "gram_pair_eigenvalues",
    "procrustes_rotation",
    "symmetrize_from_lower",
]

Array = NDArray[np.float64]

#: convergence threshold of the Jacobi rotations (relative)
EPS = 1e-15
#: cap on Jacobi sweeps (quadratic convergence: 6-10 suffice in double precision)
MAX_SWEEPS = 60
#: above this size LAPACK (numpy.linalg) is as fast or faster (O(k^3) flops dominate its overhead)
JACOBI_MAX = 8


@njit(cache=True, inline="always")
def _polar_one(
    a: Array,
    out: Array,
    b: Array,
    v: Array,
    norms: Array,
    order: NDArray[np.int64],
    v0: Array,
    warm: bool,
) -> None:  # pragma: no cover - compiled
    """``out = V U^T`` for ``a = U S V^T`` (k x k): one-sided Jacobi on the columns of ``a V0``
    (``V0 = v0`` if ``warm``, else I); ``V`` is written back to ``v0``."""
    k = a.shape[0]
    for i in range(k):
        for j in range(k):
            if warm:
                acc = 0.0
                for m in range(k):
                    acc += a[i, m] * v0[m, j]
                b[i, j] = acc
                v[i, j] = v0[i, j]
            else:
                b[i, j] = a[i, j]
                v[i, j] = 1.0 if i == j else 0.0
    for _ in range(MAX_SWEEPS):
        rotated = False
        for p in range(k - 1):
            for q in range(p + 1, k):
                alpha = 0.0
                beta = 0.0
                gamma = 0.0
                for i in range(k):
                    alpha += b[i, p] * b[i, p]
                    beta += b[i, q] * b[i, q]
                    gamma += b[i, p] * b[i, q]
                if gamma == 0.0 or abs(gamma) <= EPS * np.sqrt(alpha * beta):
                    continue
                rotated = True
                zeta = (beta - alpha) / (2.0 * gamma)
                t = (1.0 if zeta >= 0.0 else -1.0) / (abs(zeta) + np.sqrt(1.0 + zeta * zeta))
                c = 1.0 / np.sqrt(1.0 + t * t)
                s = c * t
                for i in range(k):
                    bp = b[i, p]
                    bq = b[i, q]
                    b[i, p] = c * bp - s * bq
                    b[i, q] = s * bp + c * bq
                    vp = v[i, p]
                    vq = v[i, q]
                    v[i, p] = c * vp - s * vq
                    v[i, q] = s * vp + c * vq
        if not rotated:
            break
    # columns of b are U S; normalize them in order of decreasing norm with modified
    # Gram-Schmidt, completing rank-deficient directions from the unit vectors
    for j in range(k):
        acc = 0.0
        for i in range(k):
            acc += b[i, j] * b[i, j]
        norms[j] = np.sqrt(acc)
    for j in range(k):  # insertion sort of the column indices by decreasing norm
        m = j
        while m > 0 and norms[order[m - 1]] < norms[j]:
            order[m] = order[m - 1]
            m -= 1
        order[m] = j
    top = norms[order[0]]
    done = 0
    for jj in range(k):
        j = order[jj]
        good = norms[j] > 1e-13 * top and top > 0.0
        if good:
            _orthonormalize(b, j, order, done)
            acc = 0.0
            for i in range(k):
                acc += b[i, j] * b[i, j]
            good = np.sqrt(acc) > 0.5 * norms[j]
        if not good:  # complete with the first unit vector independent of the columns so far
            for e in range(k):
                for i in range(k):
                    b[i, j] = 1.0 if i == e else 0.0
                _orthonormalize(b, j, order, done)
                acc = 0.0
                for i in range(k):
                    acc += b[i, j] * b[i, j]
                if acc > 0.25:
                    break
        acc = np.sqrt(acc)
        for i in range(k):
            b[i, j] /= acc
        done += 1
    # out = V U^T
    for i in range(k):
        for j in range(k):
            acc = 0.0
            for m in range(k):
                acc += v[i, m] * b[j, m]
            out[i, j] = acc
            v0[i, j] = v[i, j]


@njit(cache=True, inline="always")
def _orthonormalize(
    b: Array, j: int, order: NDArray[np.int64], done: int
) -> None:  # pragma: no cover
    """Remove from column ``j`` of ``b`` its components along the ``done`` finished columns."""
    k = b.shape[0]
    for _ in range(2):  # twice is enough (Kahan)
        for mm in range(done):
            m = order[mm]
            dot = 0.0
            for i in range(k):
                dot += b[i, m] * b[i, j]
            for i in range(k):
                b[i, j] -= dot * b[i, m]


#: matrices per parallel task (scratch arrays are allocated once per task, not per matrix)
TASK = 512


@njit(cache=True, parallel=True)
def _procrustes_batch(a: Array, out: Array, basis: Array, warm: bool) -> None:  # pragma: no cover
    n, k = a.shape[0], a.shape[1]
    for t in prange((n + TASK - 1) // TASK):
        b = np.empty((k, k))
        v = np.empty((k, k))
        norms = np.empty(k)
        order = np.empty(k, dtype=np.int64)
        for i in range(t * TASK, min(n, (t + 1) * TASK)):
            _polar_one(a[i], out[i], b, v, norms, order, basis[i], warm)


def procrustes_rotation(a: Array, basis: Array | None = None) -> Array:
    """Orthogonal ``O`` maximizing ``tr(O a)`` for every matrix of the batch: ``O = V U^T``.

    Parameters
    ----------
    a : (..., k, k) array
        With SVD ``a = U S V^T``.
    basis : (..., k, k) array, optional
        Warm start and output: on entry the right singular vectors ``V`` of nearby matrices
        (e.g. the previous sweep of an alternating alignment; the Jacobi sweeps then start from
        ``a V``, nearly diagonalized, and need fewer rotations), on exit those of ``a``
        (overwritten in place; must be a C-contiguous float64 array). The result does not
        depend on the start beyond rounding (unique for full-rank ``a``).

    Returns
    -------
    (..., k, k) array
        ``V U^T`` (the polar factor of ``a^T``); for rank-deficient ``a`` one of the maximizers.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"expected a batch of square matrices, got shape {a.shape}")
    k = a.shape[-1]
    if basis is not None and (
        basis.shape != a.shape or basis.dtype != np.float64 or not basis.flags.c_contiguous
    ):
        raise ValueError(f"basis must be a C-contiguous float64 array of shape {a.shape}")
    if k > JACOBI_MAX:
        u, _, vt = np.linalg.svd(a)
        if basis is not None:
            basis[...] = np.swapaxes(vt, -1, -2)
        return np.asarray(np.swapaxes(vt, -1, -2) @ np.swapaxes(u, -1, -2))
    flat = np.ascontiguousarray(a.reshape(-1, k, k))
    out = np.empty_like(flat)
    if basis is None:
        _procrustes_batch(flat, out, np.empty_like(flat), False)
    else:
        _procrustes_batch(flat, out, basis.reshape(-1, k, k), True)
    return out.reshape(a.shape)


@njit(cache=True, inline="always")
def _jacobi_eigvals_desc(m: Array, d: Array, out: Array) -> None:  # pragma: no cover - compiled
    """Eigenvalues (descending, into ``out``) of the symmetric ``m`` by cyclic Jacobi rotations;
    ``m`` is overwritten, ``d`` is scratch of length k. Each rotation updates the two rows and
    columns it touches once (symmetric storage kept full). The matrix is scaled by a power of two
    (exact) so that the convergence sums of squares neither underflow nor overflow."""
    k = m.shape[0]
    amax = 0.0
    for p in range(k):
        for q in range(k):
            amax = max(amax, abs(m[p, q]))
    unit = 1.0
    if amax > 0.0:
        unit = 2.0 ** np.floor(np.log2(amax))
        for p in range(k):
            for q in range(k):
                m[p, q] /= unit
    for _ in range(MAX_SWEEPS):
        off = 0.0
        scale = 0.0
        for p in range(k):
            scale += m[p, p] * m[p, p]
            for q in range(p + 1, k):
                off += m[p, q] * m[p, q]
        if off <= EPS * EPS * scale or off == 0.0:
            break
        for p in range(k - 1):
            for q in range(p + 1, k):
                apq = m[p, q]
                if apq == 0.0:
                    continue
                theta = (m[q, q] - m[p, p]) / (2.0 * apq)
                if abs(theta) > 1e150:  # theta^2 would overflow: t ~ 1 / (2 theta)
                    t = 0.5 / theta
                else:
                    sign = 1.0 if theta >= 0.0 else -1.0
                    t = sign / (abs(theta) + np.sqrt(theta * theta + 1.0))
                c = 1.0 / np.sqrt(t * t + 1.0)
                s = t * c
                for r in range(k):
                    if r != p and r != q:
                        mrp = m[r, p]
                        mrq = m[r, q]
                        m[r, p] = c * mrp - s * mrq
                        m[p, r] = m[r, p]
                        m[r, q] = s * mrp + c * mrq
                        m[q, r] = m[r, q]
                m[p, p] -= t * apq
                m[q, q] += t * apq
                m[p, q] = 0.0
                m[q, p] = 0.0
    for p in range(k):
        d[p] = m[p, p] * unit
    d.sort()
    for p in range(k):
        out[p] = d[k - 1 - p]


@njit(cache=True, parallel=True)
def _eigvalsh_batch(a: Array, out: Array) -> None:  # pragma: no cover - compiled
    n, k = a.shape[0], a.shape[1]
    for t in prange((n + TASK - 1) // TASK):
        m = np.empty((k, k))
        d = np.empty(k)
        for idx in range(t * TASK, min(n, (t + 1) * TASK)):
            m[:, :] = a[idx]
            _jacobi_eigvals_desc(m, d, out[idx])


@njit(cache=True, parallel=True)
def _gram_pair_batch(
    flat: Array, off_l: int, off_n: int, r: int, c: int, o: int, imb: Array, gram: Array
) -> None:  # pragma: no cover - compiled
    n = flat.shape[0]
    for t in prange((n + TASK - 1) // TASK):
        a = np.empty((r, r))
        b = np.empty((r, r))
        m = np.empty((r, r))
        d = np.empty(r)
        for i in range(t * TASK, min(n, (t + 1) * TASK)):
            row = flat[i]
            for p in range(r):
                for q in range(p, r):
                    s1 = 0.0
                    for j in range(c):
                        s1 += row[off_l + p * c + j] * row[off_l + q * c + j]
                    s2 = 0.0
                    for j in range(o):
                        s2 += row[off_n + j * r + p] * row[off_n + j * r + q]
                    a[p, q] = s1
                    a[q, p] = s1
                    b[p, q] = s2
                    b[q, p] = s2
            for p in range(r):
                for q in range(r):
                    m[p, q] = a[p, q] - b[p, q]
            _jacobi_eigvals_desc(m, d, imb[i])
            for p in range(r):
                for q in range(r):
                    m[p, q] = a[p, q] + b[p, q]
            _jacobi_eigvals_desc(m, d, gram[i])


@njit(cache=True, parallel=True)
def _chain_loss_batch(
    flat: Array,
    offsets: NDArray[np.int64],
    rows: NDArray[np.int64],
    cols: NDArray[np.int64],
    hx: Array,
    bxy: Array,
    const: float,
    out: Array,
) -> None:  # pragma: no cover - compiled
    n = flat.shape[0]
    n_layers = rows.shape[0]
    width = 0
    for l in range(n_layers):
        width = max(width, rows[l])
    c0 = cols[0]
    o = rows[n_layers - 1]
    for t in prange((n + TASK - 1) // TASK):
        cur = np.empty((width, c0))
        nxt = np.empty((width, c0))
        for i in range(t * TASK, min(n, (t + 1) * TASK)):
            row = flat[i]
            r0 = rows[0]
            for p in range(r0):
                for j in range(c0):
                    cur[p, j] = row[offsets[0] + p * c0 + j]
            inner = r0
            for l in range(1, n_layers):
                rl = rows[l]
                base = offsets[l]
                for p in range(rl):
                    for j in range(c0):
                        acc = 0.0
                        for q in range(inner):
                            acc += row[base + p * inner + q] * cur[q, j]
                        nxt[p, j] = acc
                for p in range(rl):
                    for j in range(c0):
                        cur[p, j] = nxt[p, j]
                inner = rl
            quad = 0.0
            lin = 0.0
            for p in range(o):
                for j in range(c0):
                    acc = 0.0
                    for q in range(c0):
                        acc += cur[p, q] * hx[q, j]
                    quad += acc * cur[p, j]
                    lin += cur[p, j] * bxy[p, j]
            out[i] = 0.5 * quad - lin + 0.5 * const


def chain_losses(
    flat: Array, offsets: Array, shapes: Array, hx: Array, bxy: Array, const: float
) -> Array:
    """``0.5 tr(M H_x M^T) - tr(M B_xy^T) + 0.5 c`` with ``M = W_L ... W_1`` for every row of
    ``flat`` (row-major layer blocks at ``offsets``, shapes ``(rows, cols)``): the training loss of
    every snapshot from the data moments, without batched temporaries."""
    flat = np.ascontiguousarray(flat, dtype=np.float64)
    shp = np.asarray(shapes, dtype=np.int64).reshape(-1, 2)
    out = np.empty(flat.shape[0])
    _chain_loss_batch(
        flat,
        np.asarray(offsets, dtype=np.int64),
        np.ascontiguousarray(shp[:, 0]),
        np.ascontiguousarray(shp[:, 1]),
        np.ascontiguousarray(hx, dtype=np.float64),
        np.ascontiguousarray(bxy, dtype=np.float64),
        float(const),
        out,
    )
    return out


def gram_pair_eigenvalues(
    flat: Array, offsets: tuple[int, int], shapes: tuple[tuple[int, int], tuple[int, int]]
) -> tuple[Array, Array]:
    """Eigenvalues (descending) of ``W_l W_l^T - W_n^T W_n`` and ``W_l W_l^T + W_n^T W_n`` for
    every row of ``flat`` (the imbalance and the hidden Gram of one hidden layer), in one pass.

    Parameters
    ----------
    flat : (n, d) array
        Snapshots; ``W_l`` is the row-major ``shapes[0]`` block at ``offsets[0]``, ``W_n`` the
        ``shapes[1]`` block at ``offsets[1]`` (``shapes[0][0] == shapes[1][1]``, the hidden
        width ``k``).

    Returns
    -------
    imbalance, gram : (n, k) arrays
    """
    (r, c), (o, r2) = shapes
    if r != r2:
        raise ValueError(f"layer shapes {shapes} do not chain")
    flat = np.ascontiguousarray(flat, dtype=np.float64)
    n = flat.shape[0]
    if r > JACOBI_MAX:
        w_l = flat[:, offsets[0] : offsets[0] + r * c].reshape(n, r, c)
        w_n = flat[:, offsets[1] : offsets[1] + o * r].reshape(n, o, r)
        a = w_l @ np.swapaxes(w_l, 1, 2)
        b = np.swapaxes(w_n, 1, 2) @ w_n
        return eigvalsh_desc(a - b), eigvalsh_desc(a + b)
    imb = np.empty((n, r))
    gram = np.empty((n, r))
    _gram_pair_batch(flat, int(offsets[0]), int(offsets[1]), r, c, o, imb, gram)
    return imb, gram


def eigvalsh_desc(a: Array) -> Array:
    """Eigenvalues, descending, of every symmetric matrix of the batch (lower and upper triangle
    both read: pass symmetric matrices).

    Parameters
    ----------
    a : (..., k, k) array

    Returns
    -------
    (..., k) array
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"expected a batch of square matrices, got shape {a.shape}")
    k = a.shape[-1]
    if k > JACOBI_MAX:
        return np.asarray(np.linalg.eigvalsh(a)[..., ::-1])
    flat = np.ascontiguousarray(a.reshape(-1, k, k))
    out = np.empty((flat.shape[0], k))
    _eigvalsh_batch(flat, out)
    return out.reshape(*a.shape[:-1])


@njit(cache=True)
def _mirror_lower(a: Array) -> None:  # pragma: no cover - compiled
    n = a.shape[0]
    for i in range(n):
        for j in range(i):
            a[j, i] = a[i, j]


def symmetrize_from_lower(a: Array) -> None:
    """Make the C-contiguous square ``a`` symmetric in place from its lower triangle (one pass
    over half the matrix; ``a[j, i] = a[i, j]`` for ``j < i``)."""
    if a.ndim != 2 or a.shape[0] != a.shape[1] or not a.flags.c_contiguous:
        raise ValueError(f"expected a C-contiguous square matrix, got shape {a.shape}")
    _mirror_lower(a)
