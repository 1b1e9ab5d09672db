"""Lyapunov equations for the stationary weight covariance (docs/theory.md §5).

* Continuum (Langevin) limit, additive noise: ``H Σ + Σ H = f_S η C``.
* Discrete time, additive noise only (multiplicative terms dropped):
  ``H M + M H - η H M H = f_S η C`` (the discrete Lyapunov equation of ``u -> (I - ηH) u``).

Both take any symmetric positive definite ``H`` and symmetric ``C`` of the same size.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from sgdfluct.theory.stability import check_learning_rate

__all__ = [
    "continuum_covariance",
    "discrete_additive_covariance",
    "lyapunov_residual",
]

Array = NDArray[np.float64]


def _check_pair(hessian: Array, noise_cov: Array) -> tuple[Array, Array]:
    h = np.asarray(hessian, dtype=float)
    c = np.asarray(noise_cov, dtype=float)
    if h.ndim != 2 or h.shape[0] != h.shape[1]:
        raise ValueError(f"hessian has shape {h.shape}, expected a square (d, d) array")
    if c.shape != h.shape:
        raise ValueError(f"noise_cov has shape {c.shape}, expected {h.shape} like hessian")
    if not (np.all(np.isfinite(h)) and np.all(np.isfinite(c))):
        raise ValueError("hessian and noise_cov must be finite")
    return h, c


def _check_scalars(learning_rate: float, batch_factor: float) -> None:
    if not np.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(f"learning_rate={learning_rate} must be > 0")
    if not np.isfinite(batch_factor) or batch_factor < 0:
        raise ValueError(f"batch_factor={batch_factor} must be >= 0")


def _positive_eigh(h: Array) -> tuple[Array, Array]:
    evals, evecs = np.linalg.eigh(0.5 * (h + h.T))
    if evals[0] <= evals[-1] * 1e-12 or evals[-1] <= 0:
        raise ValueError(
            f"hessian must be positive definite (smallest eigenvalue {evals[0]:.3g}, largest "
            f"{evals[-1]:.3g}); an overparameterized single layer (P < N_i) has no unique "
            "stationary covariance"
        )
    return evals, evecs


def continuum_covariance(
    hessian: Array,
    noise_cov: Array,
    *,
    learning_rate: float,
    batch_factor: float,
    method: str = "bartels-stewart",
) -> Array:
    """Continuum-limit stationary covariance ``Σ``; shape (d, d).

    Parameters
    ----------
    hessian : (d, d) array
        Symmetric positive definite ``H``.
    noise_cov : (d, d) array
        Symmetric per-sample gradient covariance ``C`` (not divided by the batch size).
    learning_rate : float
        ``η > 0``.
    batch_factor : float
        ``f_S >= 0`` (see :func:`sgdfluct.theory.noise.batch_factor`).
    method : {"bartels-stewart", "eigen"}
        ``scipy.linalg.solve_continuous_lyapunov`` or the eigenbasis of ``H``
        (``Σ_ab = f_S η C_ab / (h_a + h_b)``).

    Notes
    -----
    Solves ``H Σ + Σ H = f_S η C`` (docs/theory.md §5; the paper's theory). It misses O(η) terms
    relative to the exact discrete-time equation (:mod:`sgdfluct.theory.discrete`).

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.theory.lyapunov import continuum_covariance, lyapunov_residual
    >>> h, c = np.diag([1.0, 2.0]), np.array([[1.0, 0.5], [0.5, 2.0]])
    >>> sigma = continuum_covariance(h, c, learning_rate=0.1, batch_factor=0.25)
    >>> print(np.round(sigma, 5))
    [[0.0125  0.00417]
     [0.00417 0.0125 ]]
    >>> lyapunov_residual(h, sigma, 0.25 * 0.1 * c) < 1e-12
    True

    If ``C = c H`` the solution is isotropic, ``Σ = (f_S η c / 2) I`` (docs/theory.md §5):

    >>> print(np.round(continuum_covariance(h, 3.0 * h, learning_rate=0.1, batch_factor=0.25), 6))
    [[0.0375 0.    ]
     [0.     0.0375]]
    """
    h, c = _check_pair(hessian, noise_cov)
    _check_scalars(learning_rate, batch_factor)
    rhs = batch_factor * learning_rate * 0.5 * (c + c.T)
    if method == "bartels-stewart":
        _positive_eigh(h)
        sol = scipy.linalg.solve_continuous_lyapunov(h, rhs)
    elif method == "eigen":
        evals, evecs = _positive_eigh(h)
        rot = evecs.T @ rhs @ evecs
        sol = evecs @ (rot / (evals[:, None] + evals[None, :])) @ evecs.T
    else:
        raise ValueError(f"method={method!r} is not one of ('bartels-stewart', 'eigen')")
    return np.asarray(0.5 * (sol + sol.T))


def discrete_additive_covariance(
    hessian: Array,
    noise_cov: Array,
    *,
    learning_rate: float,
    batch_factor: float,
) -> Array:
    """Discrete-time stationary covariance with additive noise only; shape (d, d).

    Parameters
    ----------
    hessian, noise_cov : (d, d) arrays
        As in :func:`continuum_covariance`.
    learning_rate : float
        ``η``, with ``0 < η λ_max(H) < 2``.
    batch_factor : float
        ``f_S >= 0``.

    Notes
    -----
    Solves ``H M + M H - η H M H = f_S η C``, i.e. in the eigenbasis of ``H``
    ``M_ab = f_S η C_ab / (h_a + h_b - η h_a h_b)``. The multiplicative noise term
    ``K(M) - H M H`` of the exact equation is dropped. If ``[H, C] = 0`` this is
    ``M = f_S η C [H (2 - η H)]^{-1}`` (docs/theory.md §5 special case).

    Raises
    ------
    UnstableError
        If ``η λ_max(H) >= 2`` (the deterministic part of the SGD map is unstable).

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.theory.lyapunov import discrete_additive_covariance
    >>> h, c = np.diag([1.0, 2.0]), np.array([[1.0, 0.5], [0.5, 2.0]])
    >>> m = discrete_additive_covariance(h, c, learning_rate=0.1, batch_factor=0.25)
    >>> print(np.round(m, 5))
    [[0.01316 0.00446]
     [0.00446 0.01389]]

    A commuting ``C`` gives ``M = f_S η C [H (2 - η H)]^{-1}`` (docs/theory.md §5):

    >>> cd, hd = np.array([1.0, 2.0]), h.diagonal()
    >>> m = discrete_additive_covariance(h, np.diag(cd), learning_rate=0.1, batch_factor=0.25)
    >>> print(np.round(np.diag(m), 6), np.round(0.25 * 0.1 * cd / (hd * (2 - 0.1 * hd)), 6))
    [0.013158 0.013889] [0.013158 0.013889]
    >>> discrete_additive_covariance(h, c, learning_rate=1.0, batch_factor=0.25)
    Traceback (most recent call last):
    ...
    sgdfluct.errors.UnstableError: ...
    """
    h, c = _check_pair(hessian, noise_cov)
    _check_scalars(learning_rate, batch_factor)
    evals, evecs = _positive_eigh(h)
    check_learning_rate(float(evals[-1]), learning_rate)
    rot = evecs.T @ (batch_factor * learning_rate * 0.5 * (c + c.T)) @ evecs
    den = evals[:, None] + evals[None, :] - learning_rate * np.outer(evals, evals)
    sol = evecs @ (rot / den) @ evecs.T
    return np.asarray(0.5 * (sol + sol.T))


def lyapunov_residual(
    hessian: Array,
    cov: Array,
    rhs: Array,
    *,
    learning_rate: float = 0.0,
) -> float:
    """Relative residual ``||H Σ + Σ H - η_d H Σ H - R||_F / ||R||_F``.

    Parameters
    ----------
    hessian, cov, rhs : (d, d) arrays
        ``H``, a candidate solution ``Σ`` and the right-hand side ``R`` (e.g. ``f_S η C``).
    learning_rate : float
        ``η_d``: 0 for the continuum equation, ``η`` for the discrete additive one.

    Examples
    --------
    The continuum solution does not solve the discrete equation; the miss is ``O(η)``:

    >>> import numpy as np
    >>> from sgdfluct.theory.lyapunov import continuum_covariance, lyapunov_residual
    >>> h, c = np.diag([1.0, 2.0]), np.array([[1.0, 0.5], [0.5, 2.0]])
    >>> sigma = continuum_covariance(h, c, learning_rate=0.1, batch_factor=0.25)
    >>> print(f"{lyapunov_residual(h, sigma, 0.025 * c, learning_rate=0.1):.4f}")
    0.0902
    """
    h = np.asarray(hessian, float)
    s = np.asarray(cov, float)
    r = np.asarray(rhs, float)
    lhs = h @ s + s @ h - learning_rate * h @ s @ h
    scale = np.linalg.norm(r)
    if scale == 0:
        return float(np.linalg.norm(lhs))
    return float(np.linalg.norm(lhs - r) / scale)
