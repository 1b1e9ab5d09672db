"""Loss landscape along the fluctuation directions and the inverse variance-flatness relation.

docs/theory.md §9. Per layer, the eigenvectors ``p_i`` of the layer's block of a weight covariance
(theory or
simulation) are the fluctuation directions, with variances ``sigma_i^2``. Along each direction the
loss profile ``L_i(s) = L(theta_ref + s p_i)`` (other layers held at ``theta_ref``) is, for a linear
network, exactly the quadratic ``L_0 + g_i s + k_i s^2 / 2`` with curvature ``k_i = p_i^T H p_i``.
The flatness ``F_i`` (Feng & Tu, PNAS 2021) is the width of the interval where
``L_i(s) <= factor * L_0``. The IVFR is the power law ``F_i ∝ sigma_i^{-psi}``.

Sign convention: ``psi > 0`` means the flatness is small where the variance is large, i.e. the
variance is *larger along sharper directions* (the paper's claim). The analysis reports whichever
sign the data show.

Everything here is a pure function over arrays; :func:`ivfr_analysis` is the one entry point the
runner calls, for theory and simulation covariances alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sgdfluct import networks

__all__ = [
    "FluctuationDirections",
    "IVFRFit",
    "IVFRResult",
    "QuadraticProfiles",
    "embed_direction",
    "fit_ivfr",
    "flatness_numeric",
    "flatness_quadratic",
    "fluctuation_directions",
    "ivfr_analysis",
    "ivfr_summary",
    "loss_profile",
    "quadratic_profiles",
    "spearman",
    "window_covariances",
    "window_directions",
]

Array = NDArray[np.float64]
Shapes = Sequence[tuple[int, int]]

#: Directions whose variance is below this fraction of the layer's largest variance are dropped
#: (null / projected-out directions of a rank-deficient covariance; numerical zeros are ~1e-16).
DEFAULT_REL_THRESHOLD = 1e-8
#: Relative tolerance below which values count as equal: ties in rank statistics, and an
#: isotropic covariance (round-off of eigen-decompositions of O(1) matrices is ~1e-14).
TIE_RTOL = 1e-10


# --------------------------------------------------------------------------------------------------
# Fluctuation directions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FluctuationDirections:
    """Principal fluctuation directions of one layer.

    Attributes
    ----------
    layer : int
        Layer number (1-based, as :func:`sgdfluct.networks.layer_index`).
    indices : (d_l,) int array
        Positions of the layer's parameters inside ``theta``.
    directions : (n, d_l) array
        Orthonormal eigenvectors ``p_i`` (rows) of the layer block, sorted by decreasing variance.
    variances : (n,) array
        Eigenvalues ``sigma_i^2`` (> ``rel_threshold * max``), decreasing.
    n_dropped : int
        Number of eigen-directions dropped because their variance fell below the threshold
        (null directions, e.g. projected-out symmetry directions). ``n + n_dropped = d_l``.
    rel_threshold : float
        The relative threshold used.
    """

    layer: int
    indices: NDArray[np.int64]
    directions: Array
    variances: Array
    n_dropped: int
    rel_threshold: float

    @property
    def n_directions(self) -> int:
        return int(self.variances.size)


def _check_square(name: str, mat: Array) -> Array:
    mat = np.asarray(mat, dtype=float)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"{name} must be a square (d, d) matrix, got shape {mat.shape}")
    if not np.all(np.isfinite(mat)):
        raise ValueError(f"{name} contains non-finite entries")
    return mat


def _layer_positions(layer_idx: NDArray[np.int64], layer: int) -> NDArray[np.int64]:
    idx = np.flatnonzero(np.asarray(layer_idx) == layer)
    if idx.size == 0:
        allowed = sorted({int(v) for v in np.unique(layer_idx)})
        raise ValueError(f"layer = {layer} is out of range: expected one of {allowed}")
    return idx.astype(np.int64)


def fluctuation_directions(
    cov: Array,
    layer_idx: NDArray[np.int64],
    layer: int,
    *,
    rel_threshold: float = DEFAULT_REL_THRESHOLD,
) -> FluctuationDirections:
    """Eigen-decomposition of one layer's block of a weight covariance.

    Parameters
    ----------
    cov : (d, d) array
        Weight covariance over all parameters (symmetrized here).
    layer_idx : (d,) int array
        Layer number of every parameter (:func:`sgdfluct.networks.layer_index`).
    layer : int
        Which layer (1-based).
    rel_threshold : float
        Directions with ``sigma_i^2 <= rel_threshold * max_j sigma_j^2`` are dropped and counted in
        ``n_dropped`` (must lie in [0, 1)).

    Returns
    -------
    FluctuationDirections

    Notes
    -----
    ``Σ_ll = sum_i sigma_i^2 p_i p_i^T`` with ``Σ_ll`` the ``(layer, layer)`` block of ``cov``
    (docs/theory.md §9).

    Examples
    --------
    Layer 1 holds parameters 0-2; its zero-variance direction is dropped:

    >>> import numpy as np
    >>> from sgdfluct.landscape import fluctuation_directions
    >>> cov = np.diag([4.0, 1.0, 0.0, 2.0, 0.5])
    >>> d = fluctuation_directions(cov, np.array([1, 1, 1, 2, 2]), 1)
    >>> print(d.variances, d.n_dropped, np.abs(d.directions))
    [4. 1.] 1 [[1. 0. 0.]
     [0. 1. 0.]]
    """
    cov = _check_square("cov", cov)
    layer_idx = np.asarray(layer_idx)
    if layer_idx.shape != (cov.shape[0],):
        raise ValueError(
            f"layer_idx has shape {layer_idx.shape}, expected ({cov.shape[0]},) to match cov"
        )
    if not 0.0 <= rel_threshold < 1.0:
        raise ValueError(f"rel_threshold = {rel_threshold} is out of range: expected [0, 1)")
    idx = _layer_positions(layer_idx, layer)
    block = cov[np.ix_(idx, idx)]
    block = 0.5 * (block + block.T)
    evals, evecs = np.linalg.eigh(block)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    top = evals[0]
    if not top > 0.0:
        raise ValueError(f"the layer-{layer} block of cov has no positive variance (max = {top})")
    keep = evals > rel_threshold * top
    return FluctuationDirections(
        layer=int(layer),
        indices=idx,
        directions=np.ascontiguousarray(evecs[:, keep].T),
        variances=evals[keep].copy(),
        n_dropped=int(np.sum(~keep)),
        rel_threshold=float(rel_threshold),
    )


def window_covariances(trajectories: Array, n_windows: int) -> Array:
    """Per-window covariances of thinned trajectories (single layer, docs/theory.md §9 window-wise
    PCA).

    Parameters
    ----------
    trajectories : (R, T, d) array
        ``R`` replicas of ``T`` recorded (thinned) parameter vectors, stationary part only.
    n_windows : int
        Number of consecutive time windows (1 <= n_windows <= T // 2).

    Returns
    -------
    (W, d, d) array
        Covariance of each window, pooling the replicas about the window's pooled mean.

    Notes
    -----
    Window ``w`` holds steps ``[w T_w, (w+1) T_w)`` with ``T_w = T // W`` (a remainder is
    discarded); its covariance is ``(1/(R T_w - 1)) sum (u - ū)(u - ū)^T``.

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.landscape import window_covariances
    >>> rng = np.random.default_rng(0)
    >>> traj = rng.standard_normal((2, 1000, 3)) * np.array([1.0, 2.0, 3.0])  # (R, T, d)
    >>> covs = window_covariances(traj, 4)
    >>> print(covs.shape, np.round(np.diag(covs.mean(axis=0)), 1))
    (4, 3, 3) [1.  3.8 9. ]
    """
    traj = np.asarray(trajectories, dtype=float)
    if traj.ndim != 3:
        raise ValueError(f"trajectories must have shape (R, T, d), got {traj.shape}")
    _, n_time, d = traj.shape
    if not 1 <= n_windows <= n_time // 2:
        raise ValueError(
            f"n_windows = {n_windows} is out of range: expected an integer in [1, {n_time // 2}]"
        )
    width = n_time // n_windows
    out = np.empty((n_windows, d, d))
    for w in range(n_windows):
        chunk = traj[:, w * width : (w + 1) * width].reshape(-1, d)
        dev = chunk - chunk.mean(axis=0)
        out[w] = dev.T @ dev / (chunk.shape[0] - 1)
    return out


def window_directions(
    window_covs: Array,
    layer_idx: NDArray[np.int64],
    layer: int,
    *,
    rel_threshold: float = DEFAULT_REL_THRESHOLD,
) -> list[FluctuationDirections]:
    """Window-wise PCA: :func:`fluctuation_directions` of every window's covariance.

    Parameters
    ----------
    window_covs : (W, d, d) array
        Per-window covariances (for depth >= 2 already aligned, projected and expressed in the
        common frame of ``theta_ref``, docs/theory.md §8a; for one layer e.g.
        :func:`window_covariances`).
    layer_idx, layer, rel_threshold
        As in :func:`fluctuation_directions`.

    Returns
    -------
    list of FluctuationDirections, one per window

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.landscape import window_covariances, window_directions
    >>> traj = np.random.default_rng(1).standard_normal((2, 400, 2)) * np.array([2.0, 1.0])
    >>> dirs = window_directions(window_covariances(traj, 2), np.array([1, 1]), 1)
    >>> [d.n_directions for d in dirs], [bool(d.variances[0] > 3 * d.variances[1]) for d in dirs]
    ([2, 2], [True, True])
    """
    covs = np.asarray(window_covs, dtype=float)
    if covs.ndim != 3 or covs.shape[1] != covs.shape[2]:
        raise ValueError(f"window_covs must have shape (W, d, d), got {covs.shape}")
    return [fluctuation_directions(c, layer_idx, layer, rel_threshold=rel_threshold) for c in covs]


# --------------------------------------------------------------------------------------------------
# Loss profiles, curvature and flatness
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class QuadraticProfiles:
    """Exact quadratic loss profiles ``L_i(s) = L_0 + g_i s + k_i s^2 / 2`` along directions.

    Attributes
    ----------
    loss0 : float
        ``L_0 = L(theta_ref)``.
    slopes : (n,) array
        ``g_i = p_i^T grad L(theta_ref)``.
    curvatures : (n,) array
        ``k_i = p_i^T H p_i`` with ``H`` the exact Hessian at ``theta_ref``.
    """

    loss0: float
    slopes: Array
    curvatures: Array

    def __call__(self, s: Array) -> Array:
        """Profiles on a grid ``s`` (m,); returns (n, m)."""
        s = np.asarray(s, dtype=float)
        return self.loss0 + self.slopes[:, None] * s + 0.5 * self.curvatures[:, None] * s**2


def embed_direction(direction: Array, indices: NDArray[np.int64], n_params: int) -> Array:
    """Embed a layer direction (d_l,) into the full parameter space (d,), zero elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.landscape import embed_direction
    >>> print(embed_direction(np.array([0.6, 0.8]), np.array([1, 3]), 4))
    [0.  0.6 0.  0.8]
    """
    full = np.zeros(n_params)
    full[np.asarray(indices)] = direction
    return full


def loss_profile(
    theta_ref: Array,
    shapes: Shapes,
    inputs: Array,
    targets: Array,
    direction: Array,
    s: Array,
) -> Array:
    """Numeric loss profile ``L(theta_ref + s p)`` on a grid (via :func:`networks.loss`).

    Parameters
    ----------
    theta_ref : (d,) array
    shapes : list of (rows, cols)
    inputs : (P, N_i) array
    targets : (P, N_o) array
    direction : (d,) array
        Direction ``p`` in the full parameter space (see :func:`embed_direction`).
    s : (m,) array
        Displacements.

    Returns
    -------
    (m,) array

    Examples
    --------
    A single layer ``f(x) = w x`` with one sample ``x = 1, y = 1``: ``L(w) = (w - 1)^2 / 2``.

    >>> import numpy as np
    >>> from sgdfluct.landscape import loss_profile
    >>> x, y = np.ones((1, 1)), np.ones((1, 1))
    >>> print(loss_profile(np.zeros(1), [(1, 1)], x, y, np.ones(1), np.array([0.0, 1.0, 2.0])))
    [0.5 0.  0.5]
    """
    theta_ref = np.asarray(theta_ref, dtype=float)
    direction = np.asarray(direction, dtype=float)
    if direction.shape != theta_ref.shape:
        raise ValueError(f"direction has shape {direction.shape}, expected {theta_ref.shape}")
    return np.array(
        [networks.loss(theta_ref + si * direction, shapes, inputs, targets) for si in np.ravel(s)]
    )


def _layer_derivatives(
    theta_ref: Array, shapes: Shapes, inputs: Array, targets: Array, indices: NDArray[np.int64]
) -> tuple[float, Array, Array]:
    """``L_0``, the layer's gradient (d_l,) and its Hessian block (d_l, d_l) at ``theta_ref``."""
    loss0 = networks.loss(theta_ref, shapes, inputs, targets)
    grad = networks.gradient(theta_ref, shapes, inputs, targets)[indices]
    hess = networks.hessian(theta_ref, shapes, inputs, targets)[np.ix_(indices, indices)]
    return loss0, grad, hess


def quadratic_profiles(
    theta_ref: Array,
    shapes: Shapes,
    inputs: Array,
    targets: Array,
    directions: FluctuationDirections,
) -> QuadraticProfiles:
    """Exact quadratic profiles along a layer's fluctuation directions.

    Parameters
    ----------
    theta_ref : (d,) array
        Reference point (least-squares ``W*`` or the window mean).
    shapes : list of (rows, cols)
    inputs : (P, N_i) array
    targets : (P, N_o) array
    directions : FluctuationDirections
        Directions of one layer (unit vectors in that layer's parameters).

    Returns
    -------
    QuadraticProfiles

    Notes
    -----
    A linear network's output is linear in each single layer's weights, so along a direction
    confined to one layer the loss is exactly ``L_0 + g s + k s^2 / 2`` with ``g = p^T ∇L`` and
    ``k = p^T H_ll p`` (``H_ll`` the layer block of the exact Hessian, docs/theory.md §9).

    Examples
    --------
    At the least-squares minimum of a single layer the slopes vanish and the profile is exact:

    >>> import numpy as np
    >>> from sgdfluct import networks
    >>> from sgdfluct.landscape import (
    ...     embed_direction, fluctuation_directions, loss_profile, quadratic_profiles)
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((50, 3))
    >>> y = x @ np.array([[1.0], [0.5], [-1.0]]) + 0.3 * rng.standard_normal((50, 1))
    >>> theta = networks.least_squares(x, y).ravel()
    >>> dirs = fluctuation_directions(np.diag([3.0, 2.0, 1.0]), np.array([1, 1, 1]), 1)
    >>> prof = quadratic_profiles(theta, [(1, 3)], x, y, dirs)
    >>> print(bool(np.allclose(prof.slopes, 0.0, atol=1e-12)), np.round(prof.curvatures, 3))
    True [1.263 0.696 0.809]
    >>> s = np.array([-0.5, 0.0, 0.5])
    >>> p1 = embed_direction(dirs.directions[0], dirs.indices, 3)
    >>> bool(np.allclose(loss_profile(theta, [(1, 3)], x, y, p1, s), prof(s)[0]))
    True
    """
    loss0, grad, hess = _layer_derivatives(theta_ref, shapes, inputs, targets, directions.indices)
    p = directions.directions
    return QuadraticProfiles(
        loss0=loss0,
        slopes=p @ grad,
        curvatures=np.sum((p @ hess) * p, axis=1),
    )


def flatness_quadratic(
    loss0: float, slopes: Array, curvatures: Array, *, factor: float = math.e
) -> Array:
    """Closed-form flatness of quadratic profiles (Feng & Tu 2021).

    Parameters
    ----------
    loss0 : float
        ``L_0 >= 0``.
    slopes : (n,) array
        ``g_i``.
    curvatures : (n,) array
        ``k_i > 0``.
    factor : float
        Level ``factor * L_0`` defining the flat interval (> 1; Feng & Tu use e).

    Returns
    -------
    (n,) array
        ``F_i``.

    Notes
    -----
    Width of ``{s : L_0 + g s + k s^2 / 2 <= factor L_0}``:
    ``F = 2 sqrt(g^2 + 2 k (factor - 1) L_0) / k`` (docs/theory.md §9).

    Examples
    --------
    Four times the curvature halves the flatness; a slope widens it:

    >>> import numpy as np
    >>> from sgdfluct.landscape import flatness_quadratic
    >>> f = flatness_quadratic(1.0, np.array([0.0, 0.0, 1.0]), np.array([1.0, 4.0, 4.0]))
    >>> print(np.round(f, 4), f"{2 * np.sqrt(2 * (np.e - 1)):.4f}")
    [3.7076 1.8538 1.92  ] 3.7076
    """
    if not factor > 1.0:
        raise ValueError(f"factor = {factor} is out of range: expected factor > 1")
    if not loss0 >= 0.0:
        raise ValueError(f"loss0 = {loss0} is out of range: expected loss0 >= 0")
    g = np.asarray(slopes, dtype=float)
    k = np.asarray(curvatures, dtype=float)
    if np.any(k <= 0.0):
        raise ValueError(f"curvatures must be > 0 for a bounded flat interval; min = {k.min():.3g}")
    return 2.0 * np.sqrt(g**2 + 2.0 * k * (factor - 1.0) * loss0) / k


def flatness_numeric(
    profile: Callable[[float], float],
    *,
    factor: float = math.e,
    step: float = 1e-2,
    max_doublings: int = 80,
    xtol: float = 1e-13,
) -> float:
    """Flatness of a general profile by bracketing and Brent's method.

    Parameters
    ----------
    profile : callable ``s -> L(s)``
        The loss along a direction; ``L(0) = L_0 > 0``.
    factor : float
        Level ``factor * L_0`` (> 1).
    step : float
        Initial bracket half-width (> 0); it is doubled until the profile exceeds the level.
    max_doublings : int
        Give up (``ValueError``) after this many doublings on one side (a flat direction).
    xtol : float
        Absolute tolerance of ``scipy.optimize.brentq``.

    Returns
    -------
    float
        ``s_+ - s_-`` with ``s_± `` the first crossings of ``factor * L_0`` on either side of 0.

    Notes
    -----
    For a quasi-convex profile (e.g. a linear network along one layer) the sub-level set
    ``{s : L(s) <= factor L_0}`` is the interval ``[s_-, s_+]``.

    Examples
    --------
    Agrees with :func:`flatness_quadratic` on a quadratic profile (``L_0 = 1``, ``k = 4``):

    >>> from sgdfluct.landscape import flatness_numeric
    >>> print(f"{flatness_numeric(lambda s: 1.0 + 0.5 * 4.0 * s**2):.6f}")
    1.853797
    """
    if not factor > 1.0:
        raise ValueError(f"factor = {factor} is out of range: expected factor > 1")
    if not step > 0.0:
        raise ValueError(f"step = {step} is out of range: expected step > 0")
    loss0 = float(profile(0.0))
    if not loss0 > 0.0:
        raise ValueError(f"profile(0) = {loss0}: the flatness needs L_0 > 0")
    level = factor * loss0

    def excess(s: float) -> float:
        return float(profile(s)) - level

    ends = []
    for sign in (1.0, -1.0):
        inner, outer = 0.0, sign * step
        for _ in range(max_doublings):
            if excess(outer) > 0.0:
                break
            inner, outer = outer, 2.0 * outer
        else:
            raise ValueError(
                f"the profile stays below {factor:.4g} L_0 up to |s| = {abs(outer):.3g} "
                "(flat direction): flatness is unbounded"
            )
        from scipy import optimize  # deferred: keeps `import sgdfluct` light

        ends.append(optimize.brentq(excess, inner, outer, xtol=xtol))
    return float(ends[0] - ends[1])


# --------------------------------------------------------------------------------------------------
# IVFR statistics
# --------------------------------------------------------------------------------------------------


def _snap_ties(values: Array, rtol: float) -> Array:
    """Replace values equal up to relative ``rtol`` by one representative (for ranking)."""
    order = np.argsort(values, kind="stable")
    sv = values[order]
    out = sv.copy()
    for i in range(1, sv.size):
        if sv[i] - out[i - 1] <= rtol * max(abs(sv[i]), abs(out[i - 1])):
            out[i] = out[i - 1]
    snapped = np.empty_like(values)
    snapped[order] = out
    return snapped


def spearman(x: Array, y: Array, *, tie_rtol: float = TIE_RTOL) -> tuple[float, float]:
    """Spearman rank correlation and its two-sided p-value.

    Parameters
    ----------
    x, y : (n,) arrays
        Paired values, n >= 3.
    tie_rtol : float
        Values equal up to this relative tolerance are ties (average ranks), so that round-off
        from eigen-decompositions does not break genuine ties (e.g. the degenerate curvatures of
        the analytic case of docs/theory.md §9).

    Returns
    -------
    (rho, p_value) : (float, float)
        ``(nan, nan)`` when either input is constant (the rank correlation is undefined); the
        callers document that case.

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.landscape import spearman
    >>> rho, _ = spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 9.0, 7.0, 1.0]))
    >>> print(rho)
    -1.0
    >>> spearman(np.array([1.0, 2.0, 3.0]), np.array([5.0, 5.0, 5.0]))
    (nan, nan)
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or x.size < 3:
        raise ValueError(
            f"spearman needs two 1-d arrays of equal length >= 3; got {x.shape}, {y.shape}"
        )
    x, y = _snap_ties(x, tie_rtol), _snap_ties(y, tie_rtol)
    if np.ptp(x) == 0.0 or np.ptp(y) == 0.0:
        return math.nan, math.nan
    from scipy import stats  # deferred: keeps `import sgdfluct` light

    res = stats.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def _ols_slope(x: Array, y: Array) -> tuple[float, float]:
    """OLS ``y = a + b x``: returns (b, a)."""
    xc = x - x.mean()
    sxx = float(xc @ xc)
    b = float(xc @ (y - y.mean())) / sxx
    return b, float(y.mean() - b * x.mean())


@dataclass(frozen=True, kw_only=True)
class IVFRFit:
    """Power-law fit ``log F = a - psi log sigma`` with bootstrap interval.

    Attributes
    ----------
    psi : float
        Exponent (``F ∝ sigma^{-psi}``); > 0 means larger variance along sharper directions.
    intercept : float
        ``a``.
    psi_ci : (float, float)
        Bootstrap percentile interval of ``psi`` at level ``confidence``.
    psi_stderr : float
        Bootstrap standard deviation of ``psi``.
    pearson_r : float
        Pearson correlation of (log sigma, log F); ``psi_RMA = psi / |r|`` (reduced major axis).
    confidence : float
    n_bootstrap : int
        Bootstrap replicates used (degenerate replicates, with constant resampled variances, are
        skipped and not counted).
    """

    psi: float
    intercept: float
    psi_ci: tuple[float, float]
    psi_stderr: float
    pearson_r: float
    confidence: float
    n_bootstrap: int


def _validate_fit_inputs(variances: Array, flatness: Array) -> tuple[Array, Array]:
    var = np.asarray(variances, dtype=float)
    flat = np.asarray(flatness, dtype=float)
    if var.ndim != 1 or var.shape != flat.shape:
        raise ValueError(
            f"variances and flatness must be 1-d of equal length; got {var.shape}, {flat.shape}"
        )
    if var.size < 3:
        raise ValueError(f"the IVFR fit needs >= 3 directions, got {var.size}")
    if not (np.all(var > 0) and np.all(np.isfinite(var))):
        raise ValueError("variances must be finite and > 0")
    if not (np.all(flat > 0) and np.all(np.isfinite(flat))):
        raise ValueError("flatness must be finite and > 0 (L_0 = 0 gives F = 0: no IVFR defined)")
    if np.ptp(np.log(var)) <= TIE_RTOL:
        raise ValueError(
            f"all variances are equal to relative {TIE_RTOL:g} (isotropic covariance): "
            "psi is undefined"
        )
    return var, flat


def fit_ivfr(
    variances: Array,
    flatness: Array,
    *,
    bootstrap: int = 1000,
    rng: np.random.Generator | int,
    confidence: float = 0.95,
    replicate: Callable[[np.random.Generator], tuple[Array, Array]] | None = None,
) -> IVFRFit:
    """Fit the IVFR exponent ``psi`` with a bootstrap confidence interval.

    Parameters
    ----------
    variances : (n,) array
        ``sigma_i^2`` (> 0).
    flatness : (n,) array
        ``F_i`` (> 0).
    bootstrap : int
        Number of bootstrap replicates (>= 1).
    rng : numpy Generator or int seed
    confidence : float
        Level of the percentile interval, in (0, 1).
    replicate : callable, optional
        ``rng -> (variances, flatness)`` giving a resampled data set *before* the directions are
        resampled (used by :func:`ivfr_analysis` to resample windows); default: the data itself.

    Returns
    -------
    IVFRFit

    Notes
    -----
    Ordinary least squares of ``log F`` on ``log sigma``: ``log F_i = a - psi log sigma_i``.

    Why OLS and not an errors-in-variables fit (total least squares / reduced major axis): the
    IVFR question is whether the flatness *is predicted by* the variance, and the observed rank
    correlations are weak (docs/theory.md §8a: Spearman ~0.2). The reduced-major-axis slope equals
    the OLS
    slope divided by ``|r|``; for weakly correlated data it stays large even when there is no
    relation, so it would manufacture an IVFR. OLS goes to 0 with the correlation. Its one bias,
    attenuation from noise in ``log sigma`` (sampling noise of eigenvalues), pulls ``psi`` toward 0,
    i.e. it is conservative; the window bootstrap of :func:`ivfr_analysis` carries that noise into
    the interval. The RMA slope can be recovered as ``psi / |pearson_r|``.

    The bootstrap resamples directions with replacement (after ``replicate``) and refits; the
    interval is the percentile interval of the replicates.

    Examples
    --------
    An exact power law ``F ∝ sigma^{-1}`` (variance larger where sharper) gives ``psi = 1``:

    >>> import numpy as np
    >>> from sgdfluct.landscape import fit_ivfr
    >>> var = np.array([1.0, 2.0, 4.0, 8.0])
    >>> fit = fit_ivfr(var, 3.0 / np.sqrt(var), bootstrap=200, rng=0)
    >>> print(f"{fit.psi:.4f} [{fit.psi_ci[0]:.4f}, {fit.psi_ci[1]:.4f}] r = {fit.pearson_r:.4f}")
    1.0000 [1.0000, 1.0000] r = -1.0000
    """
    var, flat = _validate_fit_inputs(variances, flatness)
    if bootstrap < 1:
        raise ValueError(f"bootstrap = {bootstrap} is out of range: expected an integer >= 1")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence = {confidence} is out of range: expected (0, 1)")
    gen = np.random.default_rng(rng)
    x, y = 0.5 * np.log(var), np.log(flat)
    slope, intercept = _ols_slope(x, y)
    pearson = float(np.corrcoef(x, y)[0, 1]) if np.ptp(y) > 0 else 0.0
    boot = []
    for _ in range(bootstrap):
        if replicate is None:
            bx, by = x, y
        else:
            bv, bf = replicate(gen)
            bx, by = 0.5 * np.log(bv), np.log(bf)
        pick = gen.integers(0, bx.size, size=bx.size)
        rx = bx[pick]
        if np.ptp(rx) == 0.0:
            continue
        boot.append(-_ols_slope(rx, by[pick])[0])
    if not boot:
        raise ValueError("every bootstrap replicate was degenerate (constant variances)")
    arr = np.asarray(boot)
    tail = 0.5 * (1.0 - confidence)
    lo, hi = np.quantile(arr, [tail, 1.0 - tail])
    return IVFRFit(
        psi=-slope,
        intercept=intercept,
        psi_ci=(float(lo), float(hi)),
        psi_stderr=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        pearson_r=pearson,
        confidence=confidence,
        n_bootstrap=int(arr.size),
    )


@dataclass(frozen=True, kw_only=True)
class IVFRResult:
    """IVFR analysis of one layer.

    Attributes
    ----------
    layer : int
    psi : float
        Exponent of ``F ∝ sigma^{-psi}`` (OLS, see :func:`fit_ivfr`); ``psi > 0``: variance larger
        along sharper directions (the paper's IVFR); ``psi < 0``: the opposite.
    psi_ci : (float, float)
        Bootstrap percentile interval (directions, and windows when given).
    psi_stderr : float
        Bootstrap standard deviation of ``psi``.
    intercept : float
        ``a`` of ``log F = a - psi log sigma``.
    pearson_r : float
        Pearson correlation of (log sigma, log F).
    spearman, spearman_pvalue : float
        Spearman rank correlation of (log sigma^2, log F) and its p-value; IVFR means < 0.
        NaN when the flatness is exactly constant (documented, not silent).
    spearman_curvature, spearman_curvature_pvalue : float
        Spearman rank correlation of (log sigma^2, log k); IVFR means > 0. NaN when the curvature
        is exactly constant.
    n_directions : int
        Directions used; ``n_dropped`` more had variance below the relative threshold.
    n_dropped : int
    variance_curvature_slope : float
        OLS slope of ``log sigma^2`` on ``log k`` (how fast the variance grows with the
        curvature; the "log-log slope" of docs/theory.md §8a). NaN when the curvature is exactly
        constant.
    curvature_cv : float
        Coefficient of variation ``std(k) / mean(k)`` of the curvature over the directions.
    hessian_cv : float
        Coefficient of variation of the non-zero eigenvalues of the layer's Hessian block
        (reference for ``curvature_cv``: an "effectively isotropic loss" has curvature_cv ≪
        hessian_cv).
    variance_span : float
        ``max sigma^2 / min sigma^2``.
    loss0 : float
        ``L_0``.
    factor : float
        Flatness level factor.
    n_windows : int
        Windows resampled by the bootstrap (0 when none were given).
    window_psi : (W,) array
        ``psi`` fitted in each window separately (empty when no windows).
    variances, flatness, curvatures, slopes : (n,) arrays
        Per-direction ``sigma_i^2``, ``F_i``, ``k_i``, ``g_i`` (decreasing variance).
    directions : (n, d_l) array
        The unit directions ``p_i`` (rows) in the layer's parameters.
    calibrated : sgdfluct.ivfr_estimator.CalibratedFit or None
        The calibrated estimate (directions from the first half of the windows, variances with
        batch-means errors on the second half, errors-in-variables fit; docs/theory.md §9); only
        with >= 4 windows. ``psi`` above is the PCA fit (kept for comparison with Feng & Tu).
    """

    layer: int
    psi: float
    psi_ci: tuple[float, float]
    psi_stderr: float
    intercept: float
    pearson_r: float
    spearman: float
    spearman_pvalue: float
    spearman_curvature: float
    spearman_curvature_pvalue: float
    n_directions: int
    n_dropped: int
    variance_curvature_slope: float
    curvature_cv: float
    hessian_cv: float
    variance_span: float
    loss0: float
    factor: float
    n_windows: int
    window_psi: Array
    variances: Array
    flatness: Array
    curvatures: Array
    slopes: Array
    directions: Array
    calibrated: Any = None

    @property
    def ivfr_holds(self) -> bool:
        """Whether the interval excludes 0 on the positive side (variance larger where sharper)."""
        return bool(self.psi_ci[0] > 0.0)


def _cv(values: Array) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.std() / values.mean())


def _layer_analysis(
    cov: Array,
    layer_idx: NDArray[np.int64],
    layer: int,
    derivs: tuple[float, Array, Array],
    *,
    factor: float,
    window_covs: Array | None,
    bootstrap: int,
    rng: np.random.Generator,
    rel_threshold: float,
    confidence: float,
) -> IVFRResult:
    loss0, grad, hess = derivs
    dirs = fluctuation_directions(cov, layer_idx, layer, rel_threshold=rel_threshold)

    def profile_stats(d: FluctuationDirections) -> tuple[Array, Array, Array]:
        p = d.directions
        g = p @ grad
        k = np.sum((p @ hess) * p, axis=1)
        return g, k, flatness_quadratic(loss0, g, k, factor=factor)

    slopes, curv, flat = profile_stats(dirs)
    replicate = None
    window_psi = np.empty(0)
    n_windows = 0
    if window_covs is not None:
        covs = np.asarray(window_covs, dtype=float)
        if covs.ndim != 3 or covs.shape[1:] != cov.shape:
            raise ValueError(
                f"window_covs must have shape (W, {cov.shape[0]}, {cov.shape[1]}), got {covs.shape}"
            )
        n_windows = covs.shape[0]
        if n_windows < 2:
            raise ValueError(f"window_covs holds {n_windows} window(s): expected >= 2")
        psis = []
        for d in window_directions(covs, layer_idx, layer, rel_threshold=rel_threshold):
            x = 0.5 * np.log(d.variances)
            if d.n_directions >= 3 and np.ptp(x) > 0:
                psis.append(-_ols_slope(x, np.log(profile_stats(d)[2]))[0])
        window_psi = np.asarray(psis)

        # the layer's block of every window, flattened once: a resample's mean block is then one
        # (W,) x (W, m^2) product (resampling the full d x d covariances copied W d^2 floats)
        idx = _layer_positions(layer_idx, layer)
        blocks = covs[:, idx[:, None], idx[None, :]].reshape(n_windows, -1)
        block_idx = np.ones(idx.size, dtype=np.int64)

        def replicate(gen: np.random.Generator) -> tuple[Array, Array]:
            pick = gen.integers(0, n_windows, size=n_windows)
            weights = np.bincount(pick, minlength=n_windows) / n_windows
            block = (weights @ blocks).reshape(idx.size, idx.size)
            d = fluctuation_directions(block, block_idx, 1, rel_threshold=rel_threshold)
            return d.variances, profile_stats(d)[2]

    fit = fit_ivfr(
        dirs.variances,
        flat,
        bootstrap=bootstrap,
        rng=rng,
        confidence=confidence,
        replicate=replicate,
    )
    calibrated = None
    if window_covs is not None and n_windows >= MIN_CALIBRATION_WINDOWS:
        calibrated = _calibrated_fit(
            np.asarray(window_covs, dtype=float),
            layer_idx,
            layer,
            profile_stats,
            rel_threshold=rel_threshold,
            confidence=confidence,
        )
    rho, rho_p = spearman(dirs.variances, flat)  # ranks of log values = ranks of values
    rho_k, rho_k_p = spearman(dirs.variances, curv)
    hess_evals = np.linalg.eigvalsh(0.5 * (hess + hess.T))
    hess_evals = hess_evals[hess_evals > hess_evals.max() * 1e-10]
    return IVFRResult(
        layer=int(layer),
        psi=fit.psi,
        psi_ci=fit.psi_ci,
        psi_stderr=fit.psi_stderr,
        intercept=fit.intercept,
        pearson_r=fit.pearson_r,
        spearman=rho,
        spearman_pvalue=rho_p,
        spearman_curvature=rho_k,
        spearman_curvature_pvalue=rho_k_p,
        n_directions=dirs.n_directions,
        n_dropped=dirs.n_dropped,
        variance_curvature_slope=(
            _ols_slope(np.log(curv), np.log(dirs.variances))[0]
            if np.ptp(np.log(curv)) > TIE_RTOL
            else math.nan
        ),
        curvature_cv=_cv(curv),
        hessian_cv=_cv(hess_evals),
        variance_span=float(dirs.variances[0] / dirs.variances[-1]),
        loss0=float(loss0),
        factor=float(factor),
        n_windows=n_windows,
        window_psi=window_psi,
        variances=dirs.variances,
        flatness=flat,
        curvatures=curv,
        slopes=slopes,
        directions=dirs.directions,
        calibrated=calibrated,
    )


#: windows needed for the calibrated estimate (two halves of >= 2 windows each)
MIN_CALIBRATION_WINDOWS = 4


def _calibrated_fit(
    covs: Array,
    layer_idx: NDArray[np.int64],
    layer: int,
    profile_stats: Callable[[FluctuationDirections], tuple[Array, Array, Array]],
    *,
    rel_threshold: float,
    confidence: float,
) -> Any:
    """The calibrated IVFR estimate from window covariances (docs/theory.md §9): PCA of the first
    half of the windows (and of its first half, for the direction-noise correction
    :func:`sgdfluct.ivfr_estimator.richardson_fit`), per-window variances along those directions
    on the second half (batch means), out-of-sample stability, errors-in-variables fit
    (:func:`sgdfluct.ivfr_estimator.fit_ivfr_calibrated`)."""
    from sgdfluct.ivfr_estimator import (
        fit_ivfr_calibrated,
        out_of_sample_stable,
        richardson_fit,
        window_variances,
    )

    half = covs.shape[0] // 2
    fits = []
    for n_sel in (half, max(half // 2, 1)):
        sel = fluctuation_directions(
            covs[:n_sel].mean(axis=0), layer_idx, layer, rel_threshold=rel_threshold
        )
        idx = sel.indices
        blocks = covs[half:][:, idx[:, None], idx[None, :]]
        per_window = np.einsum("ia,wab,ib->wi", sel.directions, blocks, sel.directions)
        meas = out_of_sample_stable(window_variances(per_window), sel.variances)
        fits.append(fit_ivfr_calibrated(meas, profile_stats(sel)[2], confidence=confidence))
    return richardson_fit(*fits)


def ivfr_analysis(
    cov: Array,
    theta_ref: Array,
    shapes: Shapes,
    inputs: Array,
    targets: Array,
    *,
    factor: float = math.e,
    window_covs: Array | None = None,
    bootstrap: int = 1000,
    rng: np.random.Generator | int,
    layers: Sequence[int] | None = None,
    rel_threshold: float = DEFAULT_REL_THRESHOLD,
    confidence: float = 0.95,
) -> dict[int, IVFRResult]:
    """IVFR analysis of every layer of a weight covariance (theory or simulation).

    Parameters
    ----------
    cov : (d, d) array
        Weight covariance (depth >= 2: projected on range(H) and in the frame of ``theta_ref``).
    theta_ref : (d,) array
        Reference point of the loss profiles (``W*`` or the quasi-stationary window mean).
    shapes : list of (rows, cols)
        Layer shapes ``W_1 ... W_L``.
    inputs : (P, N_i) array
    targets : (P, N_o) array
    factor : float
        Flatness level ``factor * L_0`` (> 1; default e, Feng & Tu).
    window_covs : (W, d, d) array, optional
        Per-window covariances in the same frame (W >= 2). The bootstrap then resamples windows
        (pooled covariance of the resampled windows -> PCA) as well as directions, and
        ``window_psi`` holds each window's own fit.
    bootstrap : int
        Bootstrap replicates (>= 1).
    rng : numpy Generator or int seed
    layers : sequence of int, optional
        Layers to analyse (1-based); default all.
    rel_threshold : float
        Relative variance threshold for dropping null directions (:func:`fluctuation_directions`).
    confidence : float
        Level of ``psi_ci``.

    Returns
    -------
    dict
        ``{layer: IVFRResult}``.

    Notes
    -----
    Per layer: ``Σ_ll = sum_i sigma_i^2 p_i p_i^T``; along ``p_i`` (other layers fixed) the loss is
    exactly ``L_0 + g_i s + k_i s^2 / 2`` with ``k_i = p_i^T H_ll p_i``, ``g_i = p_i^T ∇_l L``;
    ``F_i = 2 sqrt(g_i^2 + 2 k_i (factor - 1) L_0) / k_i``; fit ``log F_i = a - psi log sigma_i``.

    References
    ----------
    Feng & Tu, PNAS 118 (2021) e2015617118; Gross, Raulf & Räth, Phys. Rev. Research 6, 033103
    (2024), arXiv:2311.14120.

    Examples
    --------
    A single layer at its minimum (``g = 0``, so ``F ∝ k^{-1/2}``): a covariance equal to ``H``
    puts the variance along sharp directions (``k_i = sigma_i^2``, ``psi = +1``); one equal to
    ``H^{-1}`` puts it along flat ones (``psi = -1``):

    >>> import numpy as np
    >>> from sgdfluct import networks
    >>> from sgdfluct.landscape import ivfr_analysis
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((200, 4)) * np.array([0.5, 1.0, 1.5, 2.0])
    >>> y = x @ rng.standard_normal((4, 1)) + 0.5 * rng.standard_normal((200, 1))
    >>> theta = networks.least_squares(x, y).ravel()
    >>> h = networks.hessian(theta, [(1, 4)], x, y)
    >>> res = ivfr_analysis(h, theta, [(1, 4)], x, y, bootstrap=100, rng=0)[1]
    >>> print(f"{res.psi:.3f} {res.spearman:.1f} {res.spearman_curvature:.1f}", res.ivfr_holds)
    1.000 -1.0 1.0 True
    >>> res = ivfr_analysis(np.linalg.inv(h), theta, [(1, 4)], x, y, bootstrap=100, rng=0)[1]
    >>> print(f"{res.psi:.3f}", res.ivfr_holds)
    -1.000 False
    """
    cov = _check_square("cov", cov)
    theta_ref = np.asarray(theta_ref, dtype=float)
    n = networks.n_params(shapes)
    if cov.shape != (n, n) or theta_ref.shape != (n,):
        raise ValueError(
            f"cov {cov.shape} and theta_ref {theta_ref.shape} must match d = {n} parameters "
            f"of shapes {list(shapes)}"
        )
    layer_idx = networks.layer_index(shapes)
    all_layers = list(range(1, len(shapes) + 1))
    chosen = all_layers if layers is None else [int(v) for v in layers]
    for v in chosen:
        if v not in all_layers:
            raise ValueError(f"layers contains {v}: expected values in {all_layers}")
    gen = np.random.default_rng(rng)
    loss0 = networks.loss(theta_ref, shapes, inputs, targets)
    grad = networks.gradient(theta_ref, shapes, inputs, targets)
    hess = networks.hessian(theta_ref, shapes, inputs, targets)
    out = {}
    for v in chosen:
        idx = _layer_positions(layer_idx, v)
        out[v] = _layer_analysis(
            cov,
            layer_idx,
            v,
            (loss0, grad[idx], hess[np.ix_(idx, idx)]),
            factor=factor,
            window_covs=window_covs,
            bootstrap=bootstrap,
            rng=gen,
            rel_threshold=rel_threshold,
            confidence=confidence,
        )
    return out


def _json_float(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def ivfr_summary(results: Mapping[int, IVFRResult]) -> dict[str, Any]:
    """The ``summary.json`` block of an IVFR analysis.

    Returns
    -------
    dict
        ``{"ivfr": {"layer_1": {"psi", "psi_ci": [lo, hi], "estimator", "spearman",
        "spearman_curvature", "n_directions", ...}, ...}}``; undefined (NaN) values become
        ``None`` (JSON null). With >= 4 windows ``psi``, ``psi_ci`` and ``psi_stderr`` are the
        calibrated estimate (``estimator = "split_eiv"``, details under ``"calibrated"``; ``None``
        when ψ is not identified, with the reason in ``calibrated.note``), ``spearman`` is that
        of the calibrated directions, and the PCA fit moves to ``psi_pca``, ``psi_pca_ci``,
        ``psi_pca_stderr``, ``spearman_pca``; otherwise ``estimator = "pca"``.

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.landscape import ivfr_analysis, ivfr_summary
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((100, 3))
    >>> y = x @ np.ones((3, 1)) + rng.standard_normal((100, 1))
    >>> theta = np.linalg.lstsq(x, y, rcond=None)[0].ravel()
    >>> block = ivfr_summary(ivfr_analysis(np.diag([3.0, 2.0, 1.0]), theta, [(1, 3)], x, y,
    ...                                    bootstrap=10, rng=0))
    >>> sorted(block["ivfr"]["layer_1"])[:4]
    ['curvature_cv', 'estimator', 'hessian_cv', 'n_directions']
    """
    block: dict[str, Any] = {}
    for layer in sorted(results):
        r = results[layer]
        block[f"layer_{layer}"] = {
            "psi": _json_float(r.psi),
            "psi_ci": [_json_float(r.psi_ci[0]), _json_float(r.psi_ci[1])],
            "psi_stderr": _json_float(r.psi_stderr),
            "spearman": _json_float(r.spearman),
            "spearman_pvalue": _json_float(r.spearman_pvalue),
            "spearman_curvature": _json_float(r.spearman_curvature),
            "spearman_curvature_pvalue": _json_float(r.spearman_curvature_pvalue),
            "n_directions": int(r.n_directions),
            "n_dropped": int(r.n_dropped),
            "variance_curvature_slope": _json_float(r.variance_curvature_slope),
            "curvature_cv": _json_float(r.curvature_cv),
            "hessian_cv": _json_float(r.hessian_cv),
            "variance_span": _json_float(r.variance_span),
            "n_windows": int(r.n_windows),
            "estimator": "pca",
        }
        if r.calibrated is not None:
            entry = block[f"layer_{layer}"]
            cal = r.calibrated.to_json()
            entry.update(
                psi_pca=entry["psi"],
                psi_pca_ci=entry["psi_ci"],
                psi_pca_stderr=entry["psi_stderr"],
                spearman_pca=entry["spearman"],
                spearman_pca_pvalue=entry["spearman_pvalue"],
            )
            entry.update(
                psi=cal["psi"],
                psi_ci=cal["psi_ci"] or [None, None],
                psi_stderr=cal["psi_stderr"],
                spearman=cal["spearman"],
                spearman_pvalue=None,
                estimator=cal["estimator"],
                calibrated=cal,
            )
    return {"ivfr": block}
