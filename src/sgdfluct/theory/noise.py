"""Hessian, SGD noise covariance and batch factor of the single layer at its minimum
(docs/theory.md §4).

For a single linear layer ``f(x) = W x`` with ``W`` of shape (N_o, N_i) and parameters
``theta = vec(W)`` (row-major), at the least-squares minimum ``W*`` with residuals
``r_mu = W* x_mu - y_mu``:

* Hessian ``H = I_{N_o} ⊗ H_x`` with ``H_x = X^T X / P``;
* per-sample gradient covariance ``C_0 = (1/P) sum_mu (r_mu r_mu^T) ⊗ (x_mu x_mu^T)``
  (the mean gradient vanishes at the minimum);
* the covariance of a mini-batch gradient is ``f_S C_0`` with the batch factor ``f_S``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from sgdfluct.config import SAMPLING_MODES
from sgdfluct.networks import least_squares

__all__ = [
    "SAMPLING_MODES",
    "batch_factor",
    "least_squares_residuals",
    "sampling_note",
    "single_layer_hessian",
    "single_layer_noise_covariance",
]

Array = NDArray[np.float64]


_EPOCH_SHUFFLE_NOTE = (
    "sampling='epoch_shuffle': successive batches of an epoch are correlated; the "
    "without_replacement batch factor (P-S)/(S(P-1)) is used as an approximation and the exact "
    "discrete-time theory is only approximate for this mode (docs/theory.md §3)"
)


def _check_sampling(sampling: str) -> None:
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"sampling={sampling!r} is not one of {SAMPLING_MODES}")


def sampling_note(sampling: str) -> str:
    """Caveat attached to results computed for ``sampling`` ("" when the theory is exact)."""
    _check_sampling(sampling)
    return _EPOCH_SHUFFLE_NOTE if sampling == "epoch_shuffle" else ""


def batch_factor(batch_size: int, n_samples: int, sampling: str) -> float:
    """Batch factor ``f_S``: the mini-batch gradient covariance is ``f_S C``.

    Parameters
    ----------
    batch_size : int
        ``S``, with ``1 <= S`` (and ``S <= P`` without replacement).
    n_samples : int
        ``P >= 1``.
    sampling : {"with_replacement", "without_replacement", "epoch_shuffle"}
        ``"epoch_shuffle"`` gets the ``"without_replacement"`` value as an approximation
        (see :func:`sampling_note`).

    Returns
    -------
    float
        ``1/S`` with replacement, ``(P - S) / (S (P - 1))`` without replacement (0 when
        ``S = P``: full-batch gradient descent has no noise).
    """
    _check_sampling(sampling)
    if int(n_samples) != n_samples or n_samples < 1:
        raise ValueError(f"n_samples={n_samples} must be an integer >= 1")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be an integer >= 1")
    if sampling == "with_replacement":
        return 1.0 / batch_size
    if batch_size > n_samples:
        raise ValueError(
            f"batch_size={batch_size} must be <= n_samples={n_samples} for sampling={sampling!r}"
        )
    if n_samples == 1:
        return 0.0
    return (n_samples - batch_size) / (batch_size * (n_samples - 1))


def _as_2d_residuals(residuals: Array, n_samples: int) -> Array:
    r = np.asarray(residuals, dtype=float)
    if r.ndim == 1:
        r = r[:, None]
    if r.ndim != 2 or r.shape[0] != n_samples:
        raise ValueError(
            f"residuals have shape {np.shape(residuals)}, expected ({n_samples},) or "
            f"({n_samples}, N_o)"
        )
    if not np.all(np.isfinite(r)):
        raise ValueError("residuals contain non-finite values")
    return r


def _as_inputs(inputs: Array) -> Array:
    x = np.asarray(inputs, dtype=float)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(
            f"inputs have shape {np.shape(inputs)}, expected (P, N_i) with P, N_i >= 1"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("inputs contain non-finite values")
    return x


def least_squares_residuals(inputs: Array, targets: Array) -> Array:
    """Residuals ``r_mu = W* x_mu - y_mu`` at the least-squares solution; shape (P, N_o).

    Parameters
    ----------
    inputs : (P, N_i) array
    targets : (P, N_o) or (P,) array
    """
    x = _as_inputs(inputs)
    y = _as_2d_residuals(targets, x.shape[0])
    w_star = least_squares(x, y)
    return np.asarray(x @ w_star.T - y)


def single_layer_hessian(inputs: Array, n_out: int = 1) -> Array:
    """Hessian ``H = I_{N_o} ⊗ H_x`` of the single-layer loss; shape (N_o N_i, N_o N_i).

    Parameters
    ----------
    inputs : (P, N_i) array
        Design matrix ``X``.
    n_out : int
        ``N_o >= 1``.

    Notes
    -----
    ``H_x = X^T X / P``. The loss is quadratic, so ``H`` is the same at every point.
    """
    x = _as_inputs(inputs)
    if int(n_out) != n_out or n_out < 1:
        raise ValueError(f"n_out={n_out} must be an integer >= 1")
    hx = x.T @ x / x.shape[0]
    return np.kron(np.eye(int(n_out)), hx)


def single_layer_noise_covariance(inputs: Array, residuals: Array) -> Array:
    """Per-sample gradient covariance ``C_0`` at the minimum; shape (N_o N_i, N_o N_i).

    Parameters
    ----------
    inputs : (P, N_i) array
    residuals : (P, N_o) or (P,) array
        ``r_mu = W* x_mu - y_mu`` at the least-squares minimum (see
        :func:`least_squares_residuals`).

    Notes
    -----
    ``C_0 = (1/P) sum_mu (r_mu r_mu^T) ⊗ (x_mu x_mu^T)``, not divided by the batch size. The
    mean gradient ``(1/P) sum_mu r_mu ⊗ x_mu`` vanishes at the minimum and is not subtracted.
    """
    x = _as_inputs(inputs)
    r = _as_2d_residuals(residuals, x.shape[0])
    p, n_in = x.shape
    n_out = r.shape[1]
    g = np.einsum("po,pi->poi", r, x).reshape(p, n_out * n_in)  # per-sample gradients r ⊗ x
    return np.asarray(g.T @ g / p)
