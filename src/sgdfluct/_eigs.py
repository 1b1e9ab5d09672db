"""Top eigenpairs of a symmetric operator given only by products: block Krylov with restarts.

The probe's Hessian directions (``directions = "hessian"``, docs/theory.md §11) come from
Hessian-vector products. Single-vector Lanczos (ARPACK) resolves one copy of a repeated eigenvalue
per converged Ritz pair and, in finite precision, returns "ghost" copies of one Ritz value instead
of an orthonormal basis of the eigenspace. Output layers of networks trained with MSE have exactly
such spectra: each eigenvalue of the activation Gram matrix appears ``N_o`` times. A block method
with a block at least as large as the multiplicity, full reorthogonalization and a Rayleigh–Ritz
step on the whole Krylov basis finds the whole eigenspace (Golub & Underwood 1977; Saad,
"Numerical methods for large eigenvalue problems", §6.7).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

__all__ = ["top_eigenpairs"]

Array = NDArray[np.float64]


def _orth(basis: Array, vecs: Array) -> Array:
    """``vecs`` orthogonalized against ``basis`` (twice: classical Gram–Schmidt, "twice is
    enough") and orthonormalized; columns that vanish (rank deficiency) are dropped."""
    for _ in range(2):
        if basis.shape[1]:
            vecs = vecs - basis @ (basis.T @ vecs)
    q, r = np.linalg.qr(vecs)
    keep = np.abs(np.diag(r)) > 1e-10 * max(1.0, float(np.abs(r).max(initial=0.0)))
    return q[:, keep]


def top_eigenpairs(
    matmat: Callable[[Array], Array],
    dim: int,
    k: int,
    *,
    rng: np.random.Generator | int,
    block: int | None = None,
    steps: int = 4,
    tol: float = 1e-8,
    max_restarts: int = 200,
) -> tuple[Array, Array]:
    """Largest ``k`` eigenvalues and orthonormal eigenvectors of a symmetric operator.

    Parameters
    ----------
    matmat : callable ``(dim, b) -> (dim, b)``
        Products with the symmetric operator.
    dim : int
        Its dimension.
    k : int
        Number of eigenpairs (1 <= k <= dim).
    rng : numpy Generator or int seed
        Draws the starting block.
    block : int, optional
        Block size (default ``min(dim, max(2 k, k + 10))``); it must be at least the multiplicity
        of the eigenvalues to be resolved (``N_o`` on an MSE output layer).
    steps : int
        Krylov blocks per restart (the basis has up to ``steps * block`` columns).
    tol : float
        Converged when every one of the top ``k`` Ritz pairs has residual
        ``||A x - θ x|| <= tol * max|θ|``.
    max_restarts : int
        Restarts before giving up (returns the best pairs found).

    Returns
    -------
    (evals (k,), evecs (dim, k))
        Decreasing eigenvalues and orthonormal eigenvectors.

    Examples
    --------
    A spectrum with a 5-fold top eigenvalue (as on an MSE output layer with 5 outputs):

    >>> import numpy as np
    >>> from sgdfluct._eigs import top_eigenpairs
    >>> rng = np.random.default_rng(0)
    >>> q, _ = np.linalg.qr(rng.standard_normal((60, 60)))
    >>> lam = np.concatenate([np.full(5, 3.0), np.full(5, 2.0), np.linspace(1.0, 0.0, 50)])
    >>> a = (q * lam) @ q.T
    >>> vals, vecs = top_eigenpairs(lambda v: a @ v, 60, 8, rng=1)
    >>> print(np.round(vals, 8))
    [3. 3. 3. 3. 3. 2. 2. 2.]
    >>> top = q[:, :5]  # the 5-fold eigenspace is found whole
    >>> print(round(float(np.linalg.norm(top.T @ vecs[:, :5]) ** 2 / 5), 8))
    1.0
    """
    if not 1 <= k <= dim:
        raise ValueError(f"k = {k} is out of range: expected an integer in [1, {dim}]")
    b = min(dim, block if block is not None else max(2 * k, k + 10))
    if b < k:
        raise ValueError(f"block = {b} is out of range: expected >= k = {k}")
    if b * steps >= dim or dim <= 64:
        full = matmat(np.eye(dim))
        vals, vecs = np.linalg.eigh(0.5 * (full + full.T))
        return vals[::-1][:k].copy(), vecs[:, ::-1][:, :k].copy()
    gen = np.random.default_rng(rng)
    v = _orth(np.zeros((dim, 0)), gen.standard_normal((dim, b)))
    images = matmat(v)
    vals = np.zeros(k)
    x = v[:, :k]
    for _ in range(max_restarts):
        basis, img = v, images
        for _ in range(steps - 1):
            nxt = _orth(basis, img)
            if nxt.shape[1] == 0:
                break
            nimg = matmat(nxt)
            basis = np.hstack([basis, nxt])
            images = np.hstack([images, nimg])
            img = nimg
        t = basis.T @ images
        theta, s = np.linalg.eigh(0.5 * (t + t.T))
        order = np.argsort(theta)[::-1][:b]
        theta, s = theta[order], s[:, order]
        x, ax = basis @ s, images @ s
        vals = theta[:k]
        resid = np.linalg.norm(ax[:, :k] - x[:, :k] * vals, axis=0)
        if resid.max() <= tol * max(float(np.abs(theta).max()), 1e-300):
            break
        v, images = x, ax  # thick restart: the Ritz vectors are orthonormal, their images known
    return vals.copy(), x[:, :k].copy()
