"""Detailed balance of the continuum (Ornstein-Uhlenbeck) description of SGD (docs/theory.md §6).

``du = -H u dt + sqrt(2D) dB`` with ``D = (f_S η / 2) C_0`` has the stationary covariance
``H Σ + Σ H = 2D``. Detailed balance holds iff ``H D = D H``. Measures: the relative commutator
``||[H, C_0]|| / (||H|| ||C_0||)``, the probability-current matrix ``Q = H Σ - D = ½ [H, Σ]``
(antisymmetric) and the entropy production rate ``Π = tr(H D^{-1} H Σ) - tr H >= 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sgdfluct.theory.lyapunov import continuum_covariance

__all__ = [
    "DetailedBalance",
    "detailed_balance",
    "entropy_production",
    "probability_current",
    "relative_commutator",
]

Array = NDArray[np.float64]

#: Eigenvalues of D below this fraction of the largest are treated as zero (pseudo-inverse).
PINV_RCOND = 1e-10


@dataclass(frozen=True, kw_only=True)
class DetailedBalance:
    """Detailed-balance measures of the single-layer OU process.

    Attributes
    ----------
    commutator : float
        ``||[H, C_0]||_F / (||H||_F ||C_0||_F)`` (0 iff detailed balance).
    current : (d, d) array
        ``Q = H Σ - D`` (antisymmetric; equals ``½ [H, Σ]``).
    current_relative : float
        ``||Q||_F / ||D||_F``.
    entropy_production : float
        ``Π = tr(H D^{-1} H Σ) - tr H`` (per unit continuum time ``t = η k``).
    diffusion_singular : bool
        Whether ``D`` was singular and its pseudo-inverse (restricted to the range of D) was used.
    note : str
        Caveats ("" if none).
    """

    commutator: float
    current: Array
    current_relative: float
    entropy_production: float
    diffusion_singular: bool
    note: str


def relative_commutator(a: Array, b: Array) -> float:
    """``||[A, B]||_F / (||A||_F ||B||_F)`` for square arrays of equal shape (0 if either is 0).

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.theory.detailed_balance import relative_commutator
    >>> h = np.diag([1.0, 2.0])
    >>> print(f"{relative_commutator(h, np.array([[1.0, 0.5], [0.5, 2.0]])):.4f}")
    0.1348
    >>> relative_commutator(h, np.diag([3.0, 1.0]))  # commuting: detailed balance
    0.0
    """
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"a {a.shape} and b {b.shape} must be square arrays of equal shape")
    scale = np.linalg.norm(a) * np.linalg.norm(b)
    if scale == 0:
        return 0.0
    return float(np.linalg.norm(a @ b - b @ a) / scale)


def probability_current(hessian: Array, cov: Array, diffusion: Array) -> Array:
    """Stationary probability-current matrix ``Q = H Σ - D``; shape (d, d).

    Parameters
    ----------
    hessian, cov, diffusion : (d, d) arrays
        ``H``, the stationary covariance ``Σ`` (solving ``H Σ + Σ H = 2 D``) and ``D``.

    Notes
    -----
    The stationary current is ``J(u) = Q Σ^{-1} u p(u)``; with the Lyapunov equation
    ``Q = ½ (H Σ - Σ H)`` is antisymmetric, and zero iff detailed balance holds
    (docs/theory.md §6).

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.theory.detailed_balance import probability_current
    >>> from sgdfluct.theory.lyapunov import continuum_covariance
    >>> h, c = np.diag([1.0, 2.0]), np.array([[1.0, 0.5], [0.5, 2.0]])
    >>> sigma = continuum_covariance(h, c, learning_rate=0.1, batch_factor=0.25)
    >>> q = probability_current(h, sigma, 0.5 * 0.25 * 0.1 * c)  # D = (f_S η / 2) C
    >>> print(f"{q[0, 1]:.4e} {q[1, 0]:.4e}")
    -2.0833e-03 2.0833e-03
    >>> bool(np.allclose(q, 0.5 * (h @ sigma - sigma @ h)))
    True
    """
    h = np.asarray(hessian, float)
    return np.asarray(h @ np.asarray(cov, float) - np.asarray(diffusion, float))


def entropy_production(hessian: Array, cov: Array, diffusion: Array) -> tuple[float, bool]:
    """Entropy production rate ``Π = tr(H D^{-1} H Σ) - tr H`` of the OU process.

    Parameters
    ----------
    hessian, cov, diffusion : (d, d) arrays

    Returns
    -------
    (float, bool)
        ``Π`` and whether ``D`` was singular (then ``D^{-1}`` is the pseudo-inverse on the range
        of D, eigenvalues below ``PINV_RCOND`` times the largest dropped, and ``tr H`` is taken
        on that range too; drift along null directions of D produces no noise to compare with).

    Notes
    -----
    Equals ``tr(Σ^{-1} Q^T D^{-1} Q)`` with ``Q = H Σ - D``, hence ``>= 0`` (docs/theory.md §6).

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.theory.detailed_balance import entropy_production
    >>> from sgdfluct.theory.lyapunov import continuum_covariance
    >>> h, c = np.diag([1.0, 2.0]), np.array([[1.0, 0.5], [0.5, 2.0]])
    >>> sigma = continuum_covariance(h, c, learning_rate=0.1, batch_factor=0.25)
    >>> pi, singular = entropy_production(h, sigma, 0.5 * 0.25 * 0.1 * c)
    >>> print(f"{pi:.6f} (1/21 = {1 / 21:.6f})", singular)
    0.047619 (1/21 = 0.047619) False
    """
    h = np.asarray(hessian, float)
    s = np.asarray(cov, float)
    dvals, dvecs = np.linalg.eigh(0.5 * (np.asarray(diffusion, float) + np.asarray(diffusion).T))
    top = float(np.max(np.abs(dvals))) if dvals.size else 0.0
    if top == 0:
        raise ValueError("diffusion matrix D is zero: entropy production is undefined")
    keep = dvals > PINV_RCOND * top
    singular = not bool(np.all(keep))
    basis = dvecs[:, keep]
    dinv = (basis / dvals[keep]) @ basis.T
    proj = basis @ basis.T
    value = np.trace(h @ dinv @ h @ s) - np.trace(proj @ h @ proj)
    return float(value), singular


def detailed_balance(
    hessian: Array,
    noise_cov: Array,
    *,
    learning_rate: float,
    batch_factor: float,
    cov: Array | None = None,
) -> DetailedBalance:
    """Detailed-balance measures for ``H`` and ``C_0`` (docs/theory.md §6).

    Parameters
    ----------
    hessian, noise_cov : (d, d) arrays
        ``H`` and ``C_0``.
    learning_rate, batch_factor : float
        ``η`` and ``f_S``; ``D = (f_S η / 2) C_0``.
    cov : (d, d) array, optional
        Stationary covariance; default the continuum solution of ``H Σ + Σ H = 2 D``.

    Returns
    -------
    DetailedBalance

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.theory.detailed_balance import detailed_balance
    >>> h, c = np.diag([1.0, 2.0]), np.array([[1.0, 0.5], [0.5, 2.0]])
    >>> res = detailed_balance(h, c, learning_rate=0.1, batch_factor=0.25)
    >>> print(f"{res.commutator:.4f} {res.current_relative:.4f} {res.entropy_production:.4f}")
    0.1348 0.1005 0.0476

    A noise covariance that commutes with ``H`` gives detailed balance:

    >>> res = detailed_balance(h, np.diag([3.0, 1.0]), learning_rate=0.1, batch_factor=0.25)
    >>> print(res.commutator, res.current_relative < 1e-12, abs(res.entropy_production) < 1e-12)
    0.0 True True
    """
    h = np.asarray(hessian, float)
    c = np.asarray(noise_cov, float)
    diffusion = 0.5 * batch_factor * learning_rate * c
    if cov is None:
        cov = continuum_covariance(h, c, learning_rate=learning_rate, batch_factor=batch_factor)
    q = probability_current(h, cov, diffusion)
    pi, singular = entropy_production(h, cov, diffusion)
    dn = float(np.linalg.norm(diffusion))
    note = (
        "D is singular: entropy production uses its pseudo-inverse on range(D)" if singular else ""
    )
    return DetailedBalance(
        commutator=relative_commutator(h, c),
        current=q,
        current_relative=float(np.linalg.norm(q) / dn) if dn > 0 else 0.0,
        entropy_production=pi,
        diffusion_singular=singular,
        note=note,
    )
