"""Estimators on single-layer simulation output (docs/theory.md §5, §6, §10 claims 2 and 4).

Everything here takes plain arrays (statistics accumulated by a simulation) and never imports the
theory or the simulation packages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "RelativeError",
    "current_from_lag1",
    "relative_frobenius_error",
]

Array = NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class RelativeError:
    """Relative Frobenius error ``||A - B||_F / ||B||_F`` of an estimate ``A`` of ``B``.

    Attributes
    ----------
    value : float
        The relative error.
    stderr : float
        Its standard error from the entry-wise standard errors of ``A`` (linear propagation;
        NaN-free: 0 when no standard errors were given).
    noise_floor : float
        ``sqrt(sum se_ij^2) / ||B||_F``: the error expected from sampling noise alone if ``B`` were
        exact. ``value`` close to ``noise_floor`` means agreement within statistical error.
    """

    value: float
    stderr: float
    noise_floor: float


def relative_frobenius_error(
    estimate: Array,
    reference: Array,
    estimate_stderr: Array | None = None,
) -> RelativeError:
    """Relative Frobenius error of ``estimate`` against ``reference`` with its standard error.

    Parameters
    ----------
    estimate : array
        ``A`` (e.g. a simulated covariance).
    reference : array, same shape
        ``B`` (e.g. the theory), with ``||B||_F > 0``.
    estimate_stderr : array, same shape, optional
        Entry-wise standard errors of ``A`` (entries treated as independent; for a symmetric
        matrix the two copies of an off-diagonal entry are counted both, consistently in
        ``value`` and ``noise_floor``).

    Returns
    -------
    RelativeError

    Notes
    -----
    ``e = ||A - B|| / ||B||``; ``se(e) = sqrt(sum ((A - B)_ij se_ij)^2) / (||A - B|| ||B||)``;
    noise floor ``sqrt(sum se_ij^2) / ||B||`` (the expected ``e`` when ``B = E[A]``, to leading
    order, for many entries).
    """
    a = np.asarray(estimate, float)
    b = np.asarray(reference, float)
    if a.shape != b.shape:
        raise ValueError(f"estimate {a.shape} and reference {b.shape} must have the same shape")
    bn = float(np.linalg.norm(b))
    if not bn > 0:
        raise ValueError("reference has zero norm: relative error undefined")
    diff = a - b
    dn = float(np.linalg.norm(diff))
    if estimate_stderr is None:
        return RelativeError(value=dn / bn, stderr=0.0, noise_floor=0.0)
    se = np.asarray(estimate_stderr, float)
    if se.shape != a.shape:
        raise ValueError(f"estimate_stderr {se.shape} must have the shape of estimate {a.shape}")
    floor = float(np.linalg.norm(se)) / bn
    stderr = float(np.linalg.norm(diff * se)) / (dn * bn) if dn > 0 else floor
    return RelativeError(value=dn / bn, stderr=stderr, noise_floor=floor)


def current_from_lag1(
    lag1: Array,
    learning_rate: float,
    lag1_stderr: Array | None = None,
    *,
    lag1_samples: Array | None = None,
) -> tuple[Array, Array | None]:
    """Probability-current estimate ``Q̂ = (lag1 - lag1^T) / (2 η)`` from lag-1 statistics.

    Parameters
    ----------
    lag1 : (d, d) array
        ``mean_k u_k u_{k+1}^T`` (``u`` = weights minus the stationary mean).
    learning_rate : float
        ``η > 0``; continuum time ``t = η k``.
    lag1_stderr : (d, d) array, optional
        Entry-wise standard error of ``lag1``. Then ``stderr_ij = sqrt(se_ij^2 + se_ji^2)/(2η)``,
        which treats ``lag1_ij`` and ``lag1_ji`` as independent; they are usually strongly
        positively correlated, so this is a conservative (too large) error.
    lag1_samples : (n, d, d) array, optional
        Independent estimates of ``lag1`` (replicas or long windows; ``lag1`` should be their
        mean). Preferred: the standard error is then the spread of the per-sample ``Q̂``,
        ``std / sqrt(n)``. Mutually exclusive with ``lag1_stderr``.

    Returns
    -------
    (Q̂, stderr) : ((d, d) array, (d, d) array or None)

    Notes
    -----
    For the OU process ``E[u_{k+1} | u_k] = (1 - η H) u_k``, so
    ``lag1 = Σ (1 - η H)^T = Σ - η Σ H`` and ``(lag1 - lag1^T)/(2η) = ½ (H Σ - Σ H) = Q``
    (docs/theory.md §6). For discrete SGD this is exact with ``Σ`` the exact stationary covariance.
    """
    l1 = np.asarray(lag1, float)
    if l1.ndim != 2 or l1.shape[0] != l1.shape[1]:
        raise ValueError(f"lag1 has shape {l1.shape}, expected (d, d)")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate={learning_rate} must be > 0")
    q = (l1 - l1.T) / (2 * learning_rate)
    if lag1_samples is not None:
        if lag1_stderr is not None:
            raise ValueError("give either lag1_stderr or lag1_samples, not both")
        ls = np.asarray(lag1_samples, float)
        if ls.ndim != 3 or ls.shape[1:] != l1.shape or ls.shape[0] < 2:
            raise ValueError(f"lag1_samples has shape {ls.shape}, expected (n >= 2, *{l1.shape})")
        qs = (ls - ls.transpose(0, 2, 1)) / (2 * learning_rate)
        return q, qs.std(axis=0, ddof=1) / np.sqrt(ls.shape[0])
    if lag1_stderr is None:
        return q, None
    se = np.asarray(lag1_stderr, float)
    if se.shape != l1.shape:
        raise ValueError(f"lag1_stderr {se.shape} must have the shape of lag1 {l1.shape}")
    return q, np.sqrt(se**2 + se.T**2) / (2 * learning_rate)
