"""The difference of two theories' errors against the same simulated covariance, with its paired
standard error (docs/theory.md §8a; claim 7e, §10.7).

Two relative errors ``e_a = ||A - S|| / ||S||`` and ``e_b = ||B - S|| / ||S||`` measured against the
same simulated covariance ``S`` share its sampling noise: most of it cancels in ``e_a - e_b``. The
noise floor of either error (``||se(S)|| / ||S||``) is therefore far too large a standard error for
the difference. Here the difference is linearized in ``S`` and its standard error is taken from
the scatter of the quasi-stationary windows whose mean is ``S`` (their joint covariance, so
correlations between entries count).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["ErrorGap", "error_gap"]

Array = NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class ErrorGap:
    """``e_a - e_b`` and its paired standard error.

    Attributes
    ----------
    value : float
        ``||A - S|| / ||S|| - ||B - S|| / ||S||`` at the pooled ``S``.
    stderr : float
        Paired standard error over the windows (NaN with fewer than two windows).
    n_windows : int
    """

    value: float
    stderr: float
    n_windows: int


def error_gap(theory_a: Array, theory_b: Array | None, window_covs: Array) -> ErrorGap:
    """Difference of two theories' relative Frobenius errors against the pooled simulation.

    Parameters
    ----------
    theory_a, theory_b : (d, d) arrays
        The two theories' covariances ``A`` and ``B``. ``theory_b = None``: the error of ``A``
        alone (``e_b = 0``), with its standard error by the same delta method.
    window_covs : (n_windows, d, d) array
        Per-window simulated covariances ``S_w``; the pooled one is their mean ``S``.

    Returns
    -------
    ErrorGap

    Notes
    -----
    ``g(S) = (||A - S|| - ||B - S||) / ||S||``. Its gradient is
    ``G = -[(A - S)/||A - S|| - (B - S)/||B - S||] / ||S|| - g S / ||S||^2``; to first order
    ``g(S) - g(E S) = <G, S - E S>`` and ``S - E S`` is the mean of the ``S_w - E S``, so
    ``se(g) = sd_w(<G, S_w>) / sqrt(n_windows)`` (the delta method with the windows' own joint
    covariance; the windows are taken as independent, as for the noise floor).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = np.eye(3) + 0.01 * rng.standard_normal((50, 3, 3))
    >>> gap = error_gap(1.2 * np.eye(3), 1.1 * np.eye(3), s)
    >>> round(gap.value, 2), gap.stderr < 0.01, gap.n_windows
    (0.1, True, 50)
    """
    w = np.asarray(window_covs, dtype=float)
    a = np.asarray(theory_a, dtype=float)
    s = w.mean(axis=0) if w.ndim == 3 else w
    b = s if theory_b is None else np.asarray(theory_b, dtype=float)
    if w.ndim != 3 or a.shape != w.shape[1:] or b.shape != w.shape[1:]:
        raise ValueError(
            f"error_gap needs (d, d) theories and (n_windows, d, d) windows; got {a.shape}, "
            f"{b.shape}, {w.shape}"
        )
    norm_s = float(np.linalg.norm(s))
    if not norm_s > 0:
        raise ValueError("the pooled simulated covariance has zero norm: relative error undefined")
    da, db = a - s, b - s
    na, nb = float(np.linalg.norm(da)), float(np.linalg.norm(db))
    value = (na - nb) / norm_s
    n = w.shape[0]
    if n < 2:
        return ErrorGap(value=value, stderr=float("nan"), n_windows=n)
    unit_a = da / na if na > 0 else np.zeros_like(da)
    unit_b = db / nb if nb > 0 else np.zeros_like(db)
    grad = -(unit_a - unit_b) / norm_s - value * s / norm_s**2
    projections = np.einsum("ij,wij->w", grad, w)
    stderr = float(projections.std(ddof=1) / np.sqrt(n))
    return ErrorGap(value=value, stderr=stderr, n_windows=n)
