"""The calibrated IVFR estimator: selection-free variances with their noise, an EIV fit.

docs/theory.md §9 ("Estimating ψ"). The PCA estimator (:func:`sgdfluct.landscape.fit_ivfr` on the
eigenvalues of one window's covariance) ranks directions by a noisy sample variance, and that noise
is largest along slow, flat directions: on a process with *no* variance–flatness relation it reads
ψ ≈ −0.6 to −1 (the bias grows with the window; ``sgdfluct.calibration``). This module removes the
sources of that bias:

1. **Selection.** Directions are fixed before the variances are measured: chosen on the first
   half of the window (PCA) or fixed at its start (Hessian eigenvectors, theory eigenvectors), and
   the variances are measured along them on the second half only.
2. **Noise that knows the autocorrelation.** Each direction's projected series is modelled as an
   AR(1) process (exact for an Ornstein–Uhlenbeck mode, the linear-Gaussian limit of SGD): its
   lag-1 autocorrelation ``ρ`` (bias-corrected) gives the effective sample size
   ``n_eff = N (1 − ρ)/(1 + ρ)``, the bias of the variance about the window mean, and the relative
   variance of the variance ``u = 2 (1 + ρ²) / (N (1 − ρ²))``. Directions with ``n_eff < 5``
   (windows shorter than ~10 relaxation times) are not resolved and left out; so are directions
   whose two window halves differ in mean by more than ``DRIFT_Z`` standard errors (a drift).
3. **Attenuation and log bias.** ``x_i = ½ log σ̂_i² + u_i/4`` (``E log σ̂² ≈ log σ² − u/2``) has
   noise variance ``m_i = u_i / 4``; the slope of ``log F`` on ``x`` is corrected for it (method of
   moments, Fuller 1987, §1.1): ``ψ = −S_xy / (S_xx − (1 − 1/n) Σ m_i)``, with a sandwich
   (influence-function, HC3 leverage-corrected) standard error over directions and a Student-t
   interval. When the
   measured spread of ``x`` is mostly noise (reliability ``1 − Σ m_i / S_xx < MIN_RELIABILITY``)
   ψ is not identified and reported as ``None`` with the reason: no relation can be read from
   variances that do not differ beyond their noise.
4. **Direction noise.** Directions estimated from ``N`` records mix eigenmodes by weights of
   order ``1/N``, and the curvature along a mixture is the mean of the mixed curvatures, so the
   relation along estimated directions is off by ``c/N``. A second set of directions, chosen on
   the first half of the selecting part (``N/2`` records) and measured on the same part, gives
   ``ψ(N/2)``; the reported ψ is ``2 ψ(N) − ψ(N/2)`` (:func:`richardson_fit`) with a conservative
   standard error.

The same fit serves ``sgdfluct run`` (per-window variances along directions fixed on the first
half of the windows, standard errors by batch means) and the probe (projected series of the second
half of its window); ``sgdfluct.calibration`` measures its bias and coverage on processes with a
known ψ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DRIFT_Z",
    "ESTIMATOR_NAME",
    "MIN_N_EFF",
    "MIN_OUT_OF_SAMPLE_RATIO",
    "MIN_RELIABILITY",
    "CalibratedFit",
    "DirectionVariances",
    "SeriesMoments",
    "fit_ivfr_calibrated",
    "out_of_sample_stable",
    "richardson_fit",
    "series_variances",
    "window_variances",
]

Array = NDArray[np.float64]

#: name reported in outputs for this estimator
ESTIMATOR_NAME = "split_eiv"
#: smallest effective sample size of a direction's series for its variance to count as measured
#: (``n_eff = N (1 - ρ)/(1 + ρ)`` ≈ window / (2 τ): 5 means a window of ~10 relaxation times)
MIN_N_EFF = 5.0
#: a direction whose two window halves differ in mean by more than this many standard errors is a
#: drift (two-sided p ≈ 5e-4 per direction for a stationary series: ~2 % of 50 directions)
DRIFT_Z = 3.5
#: smallest ratio of a PCA direction's variance on the measuring half to its eigenvalue on the
#: selecting half: below it the direction is mostly fitted to sampling noise (an isotropic bulk's
#: top eigenvalues exceed its variance by the Marchenko–Pastur factor (1 + sqrt(d/N))²)
MIN_OUT_OF_SAMPLE_RATIO = 0.5
#: smallest share of the spread of the measured log σ that is not noise for ψ to be reported
MIN_RELIABILITY = 0.5


@dataclass(frozen=True, kw_only=True)
class DirectionVariances:
    """Variances along fixed directions, with their noise.

    Attributes
    ----------
    variances : (k,) array
        Bias-corrected variances ``σ̂_i²`` (about the window mean).
    rel_var : (k,) array
        Estimated relative sampling variance ``u_i = Var(σ̂_i²)/σ_i⁴``.
    n_eff : (k,) array
        Effective sample sizes (``inf`` for batch means, which assume independent windows).
    drift_z : (k,) array
        Difference of the two halves' means in standard errors (NaN for batch means).
    resolved : (k,) bool array
        ``n_eff >= MIN_N_EFF`` and ``|drift_z| <= DRIFT_Z``.
    method : str
        ``"ar1_series"`` or ``"batch_means"``.
    """

    variances: Array
    rel_var: Array
    n_eff: Array
    drift_z: Array
    resolved: NDArray[np.bool_]
    method: str

    @property
    def stderr(self) -> Array:
        """Standard errors of the variances."""
        return self.variances * np.sqrt(self.rel_var)


def _ar1_var_factor(rho: Array, n: int) -> Array:
    """``g`` of ``Var(ȳ) = σ² g / N`` for an AR(1) series of length N (finite-N exact)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        one = 1.0 - rho
        g = (1.0 + rho) / one - 2.0 * rho * (1.0 - rho**n) / (n * one**2)
    return np.where(np.abs(one) < 1e-12, float(n), g)


class SeriesMoments:
    """Streaming moments of a k-dimensional series: what :func:`series_variances` needs.

    Memory is O(k · max_blocks), independent of the series length: sums, squares, lag-1 products,
    the first and last values, and block sums (adjacent blocks are merged pairwise when there are
    more than ``max_blocks``) from which the two halves' means are formed.

    Parameters
    ----------
    k : int
        Dimension.
    max_blocks : int
        Block sums kept (even, >= 2).
    """

    def __init__(self, k: int, max_blocks: int = 64) -> None:
        self.k = int(k)
        self.max_blocks = int(max_blocks)
        self.n = 0
        self.total = np.zeros(k)
        self.squares = np.zeros(k)
        self.lag1 = np.zeros(k)
        self.first = np.zeros(k)
        self.last = np.zeros(k)
        self._block_size = 1
        self._blocks: list[list[Any]] = []  # [count, sum]

    def extend(self, rows: Array) -> None:
        """Add rows (T, k) in order."""
        y = np.asarray(rows, dtype=float).reshape(-1, self.k)
        if y.shape[0] == 0:
            return
        if self.n == 0:
            self.first = y[0].copy()
        else:
            self.lag1 += self.last * y[0]
        self.lag1 += np.sum(y[1:] * y[:-1], axis=0)
        self.total += y.sum(axis=0)
        self.squares += np.sum(y * y, axis=0)
        self.last = y[-1].copy()
        self.n += y.shape[0]
        i = 0
        while i < y.shape[0]:
            if not self._blocks or self._blocks[-1][0] >= self._block_size:
                self._blocks.append([0, np.zeros(self.k)])
            blk = self._blocks[-1]
            take = min(self._block_size - blk[0], y.shape[0] - i)
            blk[0] += take
            blk[1] = blk[1] + y[i : i + take].sum(axis=0)
            i += take
            if len(self._blocks) > self.max_blocks:
                self._blocks = [
                    [a[0] + b[0], a[1] + b[1]]
                    for a, b in zip(self._blocks[0::2], self._blocks[1::2], strict=False)
                ] + ([self._blocks[-1]] if len(self._blocks) % 2 else [])
                self._block_size *= 2

    def update(self, row: Array) -> None:
        """Add one row (k,)."""
        self.extend(np.asarray(row, dtype=float)[None])

    def halves(self) -> tuple[tuple[int, Array], tuple[int, Array]]:
        """``((n_1, mean_1), (n_2, mean_2))``: the blocks split nearest the middle."""
        counts = np.array([b[0] for b in self._blocks])
        cut = int(np.argmin(np.abs(np.cumsum(counts) - self.n / 2.0))) + 1
        cut = min(max(cut, 1), len(self._blocks) - 1)
        n1 = int(counts[:cut].sum())
        s1 = np.sum([b[1] for b in self._blocks[:cut]], axis=0)
        return (n1, s1 / n1), (self.n - n1, (self.total - s1) / (self.n - n1))

    def nbytes(self) -> int:
        return 8 * self.k * (5 + len(self._blocks))


def series_variances(series: Array | SeriesMoments | list[SeriesMoments]) -> DirectionVariances:
    """Variances of projected series with AR(1) noise, bias and drift estimates.

    Parameters
    ----------
    series : (T, k) or (R, T, k) array, or SeriesMoments (or a list of them, one per replica)
        Projections of the recorded (thinned) weights on ``k`` fixed directions, ``R`` independent
        replicas of ``T >= 8`` records each.

    Returns
    -------
    DirectionVariances

    Notes
    -----
    Per replica and direction: ``m₂ = (1/T) Σ (y_t − ȳ)²``, the lag-1 autocorrelation ``r₁``,
    corrected for its ``−(1 + 4ρ)/T`` bias (Marriott & Pope 1954), clipped to ``[0, 1 − 1/T]``;
    ``σ̂² = m₂ / (1 − g/T)`` with ``g`` the AR(1) variance factor of the mean (the variance about
    the window mean is short by ``Var(ȳ)``); ``u = 2 (1 + ρ²) / (T (1 − ρ²))``. Replicas are
    averaged (``u / R``). The drift statistic compares the two halves' means with the standard
    error ``sqrt(σ̂² (g_1/T_1 + g_2/T_2))``.

    Examples
    --------
    An AR(1) series with ρ = 0.9 and unit variance, 20 000 records:

    >>> import numpy as np
    >>> from scipy.signal import lfilter
    >>> from sgdfluct.ivfr_estimator import series_variances
    >>> rng = np.random.default_rng(0)
    >>> y = lfilter([np.sqrt(1 - 0.81)], [1, -0.9], rng.standard_normal((20000, 1)), axis=0)
    >>> v = series_variances(y)
    >>> print(f"{v.variances[0]:.2f} ± {v.stderr[0]:.2f}, n_eff = {v.n_eff[0]:.0f}")
    1.03 ± 0.03, n_eff = 1011
    """
    if isinstance(series, SeriesMoments):
        reps = [series]
    elif isinstance(series, list):
        reps = list(series)
    else:
        y = np.asarray(series, dtype=float)
        if y.ndim == 2:
            y = y[None]
        if y.ndim != 3:
            raise ValueError(f"series must have shape (T, k) or (R, T, k), got {np.shape(series)}")
        if not np.all(np.isfinite(y)):
            raise ValueError("series contains non-finite values")
        reps = []
        for rep in y:
            mom = SeriesMoments(y.shape[2])
            mom.extend(rep - rep[0])  # shift: the moments are about the mean, round-off only
            reps.append(mom)
    per = [_replica_stats(m) for m in reps]
    var = np.array([p[0] for p in per])
    u = np.array([p[1] for p in per])
    n_eff = np.array([p[2] for p in per])
    z = np.array([p[3] for p in per])
    n_rep = len(per)
    variances = var.mean(axis=0)
    rel_var = np.sum((var**2) * u, axis=0) / (n_rep**2 * np.maximum(variances, 1e-300) ** 2)
    n_eff_tot = n_eff.sum(axis=0)
    z_tot = z.sum(axis=0) / math.sqrt(n_rep)
    resolved = (n_eff_tot >= MIN_N_EFF) & (np.abs(z_tot) <= DRIFT_Z) & (variances > 0)
    return DirectionVariances(
        variances=variances,
        rel_var=rel_var,
        n_eff=n_eff_tot,
        drift_z=z_tot,
        resolved=resolved,
        method="ar1_series",
    )


def _replica_stats(mom: SeriesMoments) -> tuple[Array, Array, Array, Array]:
    """(variance, u, n_eff, drift z) per direction of one replica's moments."""
    n = mom.n
    if n < 8:
        raise ValueError(f"series has {n} records: expected >= 8")
    mean = mom.total / n
    ss = mom.squares - n * mean**2  # Σ (y - ȳ)²
    c1 = mom.lag1 - mean * (2.0 * mom.total - mom.first - mom.last) + (n - 1) * mean**2
    with np.errstate(divide="ignore", invalid="ignore"):
        r1 = np.nan_to_num(np.where(ss > 0, c1 / ss, 0.0))
    rho = np.clip(r1 + (1.0 + 4.0 * r1) / n, 0.0, 1.0 - 1.0 / n)
    var = np.maximum(ss, 0.0) / n / np.maximum(1.0 - _ar1_var_factor(rho, n) / n, 1.0 / n)
    u = 2.0 * (1.0 + rho**2) / (n * (1.0 - rho**2))
    n_eff = n * (1.0 - rho) / (1.0 + rho)
    (n1, m1), (n2, m2) = mom.halves()
    se_diff = np.sqrt(var * (_ar1_var_factor(rho, n1) / n1 + _ar1_var_factor(rho, n2) / n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se_diff > 0, (m2 - m1) / se_diff, 0.0)
    return var, u, n_eff, z


def window_variances(per_window: Array) -> DirectionVariances:
    """Variances along fixed directions from per-window values, standard errors by batch means.

    Parameters
    ----------
    per_window : (W, k) array
        ``p_iᵀ Σ_w p_i`` for ``W >= 2`` consecutive windows (each window much longer than the
        relaxation times, as in ``sgdfluct run``'s window analysis, docs/theory.md §8a).

    Returns
    -------
    DirectionVariances
        ``n_eff`` is ``inf`` and ``drift_z`` NaN: the windows are treated as independent batches.

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.ivfr_estimator import window_variances
    >>> v = window_variances(np.array([[1.0, 4.0], [1.2, 3.6], [0.8, 4.4]]))
    >>> print(v.variances, np.round(v.stderr, 3))
    [1. 4.] [0.115 0.231]
    """
    vals = np.asarray(per_window, dtype=float)
    if vals.ndim != 2 or vals.shape[0] < 2:
        raise ValueError(f"per_window must have shape (W >= 2, k), got {vals.shape}")
    w = vals.shape[0]
    mean = vals.mean(axis=0)
    se2 = vals.var(axis=0, ddof=1) / w
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(mean > 0, se2 / mean**2, np.inf)
    return DirectionVariances(
        variances=mean,
        rel_var=rel,
        n_eff=np.full(mean.shape, np.inf),
        drift_z=np.full(mean.shape, np.nan),
        resolved=mean > 0,
        method="batch_means",
    )


def out_of_sample_stable(
    measured: DirectionVariances, selection_eigenvalues: Array, *, min_ratio: float | None = None
) -> DirectionVariances:
    """Mark PCA directions whose variance collapses out of sample as unresolved.

    Parameters
    ----------
    measured : DirectionVariances
        Variances along PCA directions, measured on the part of the window that did not choose
        them.
    selection_eigenvalues : (k,) array
        The directions' eigenvalues on the part that chose them.
    min_ratio : float, optional
        Default :data:`MIN_OUT_OF_SAMPLE_RATIO`.

    Returns
    -------
    DirectionVariances
        The same, with ``resolved`` also requiring ``variance / eigenvalue >= min_ratio``.

    Notes
    -----
    A top eigenvalue of a sample covariance overstates the variance along its eigenvector by the
    selection (for an isotropic bulk of ``d`` dimensions and ``N`` independent records by up to
    ``(1 + sqrt(d/N))²``); a direction that stands out from the bulk (a spike above the
    Baik–Ben Arous–Péché threshold) keeps most of its variance on fresh data. Directions that lose
    more than half are noise mixtures whose curvature and variance belong to no mode of the
    process; fitting them attenuates ψ (``sgdfluct.calibration``, equilibrium truth at d = 272).

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.ivfr_estimator import out_of_sample_stable, window_variances
    >>> v = window_variances(np.array([[4.0, 1.0], [4.2, 1.1], [3.8, 0.9]]))
    >>> print(out_of_sample_stable(v, np.array([4.4, 3.0])).resolved)
    [ True False]
    """
    ratio = MIN_OUT_OF_SAMPLE_RATIO if min_ratio is None else float(min_ratio)
    sel = np.asarray(selection_eigenvalues, dtype=float)
    if sel.shape != measured.variances.shape:
        raise ValueError(
            f"selection_eigenvalues has shape {sel.shape}, expected {measured.variances.shape}"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        stable = measured.variances >= ratio * sel
    return DirectionVariances(
        variances=measured.variances,
        rel_var=measured.rel_var,
        n_eff=measured.n_eff,
        drift_z=measured.drift_z,
        resolved=measured.resolved & stable,
        method=measured.method,
    )


@dataclass(frozen=True, kw_only=True)
class CalibratedFit:
    """Errors-in-variables fit of ``log F = a − ψ log σ`` on measured variances.

    Attributes
    ----------
    psi : float or None
        The exponent; ``None`` when not identified (see ``note``).
    psi_ci : (float, float) or None
        Student-t interval (``n − 2`` degrees of freedom) at ``confidence``.
    psi_stderr : float or None
        Sandwich standard error over directions.
    psi_naive : float or None
        The uncorrected OLS slope on the same (selection-free) variances, for comparison.
    reliability : float
        ``1 − (1 − 1/n) Σ m_i / S_xx``: the share of the spread of log σ that is not noise.
    n : int
        Directions used (resolved ones); ``n_unresolved`` were left out.
    n_unresolved : int
    log_sigma_span, log_flatness_span : float
        Ranges of the corrected ``log σ`` and of ``log F`` over the used directions.
    confidence : float
    estimator : str
    note : str
        Why ψ is ``None``, or empty.
    used : (n_all,) bool array
        Which directions entered the fit.
    """

    psi: float | None
    psi_ci: tuple[float, float] | None
    psi_stderr: float | None
    psi_naive: float | None
    reliability: float
    n: int
    n_unresolved: int
    log_sigma_span: float
    log_flatness_span: float
    confidence: float
    estimator: str = ESTIMATOR_NAME
    note: str = ""
    #: Spearman rank correlation of (σ̂², F) over the used directions (NaN below 3 or with ties)
    spearman: float = math.nan
    used: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def excludes_zero(self) -> int:
        """+1 / −1 when the interval lies above / below 0, 0 otherwise (or when ψ is None)."""
        if self.psi_ci is None:
            return 0
        return 1 if self.psi_ci[0] > 0 else (-1 if self.psi_ci[1] < 0 else 0)

    def to_json(self) -> dict[str, Any]:
        """The ``summary.json`` fields (NaN as null)."""

        def num(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else float(v)

        return {
            "estimator": self.estimator,
            "psi": num(self.psi),
            "psi_ci": None if self.psi_ci is None else [num(self.psi_ci[0]), num(self.psi_ci[1])],
            "psi_stderr": num(self.psi_stderr),
            "psi_uncorrected": num(self.psi_naive),
            "reliability": num(self.reliability),
            "spearman": num(self.spearman),
            "n_directions": int(self.n),
            "n_unresolved": int(self.n_unresolved),
            "log_sigma_span": num(self.log_sigma_span),
            "log_flatness_span": num(self.log_flatness_span),
            "note": self.note,
        }


def fit_ivfr_calibrated(
    variances: DirectionVariances,
    flatness: Array,
    *,
    confidence: float = 0.95,
    min_reliability: float = MIN_RELIABILITY,
) -> CalibratedFit:
    """Fit ψ on selection-free variances, corrected for their noise (module docstring).

    Parameters
    ----------
    variances : DirectionVariances
        Variances along fixed directions (:func:`series_variances` or :func:`window_variances`).
    flatness : (k,) array
        Flatness ``F_i`` along the same directions (non-finite or ``<= 0`` entries are left out).
    confidence : float
        Level of the interval, in (0, 1).
    min_reliability : float
        Below this reliability ψ is reported as ``None``.

    Returns
    -------
    CalibratedFit

    Examples
    --------
    Variances ``σ² = k`` (an IVFR with ψ = 1, since ``F ∝ k^{-1/2}``) measured with 5 % noise:

    >>> import numpy as np
    >>> from sgdfluct.ivfr_estimator import DirectionVariances, fit_ivfr_calibrated
    >>> rng = np.random.default_rng(0)
    >>> k = np.geomspace(0.05, 1.0, 30)
    >>> u = np.full(30, 0.05**2)
    >>> meas = DirectionVariances(variances=k * (1 + 0.05 * rng.standard_normal(30)), rel_var=u,
    ...     n_eff=np.full(30, 800.0), drift_z=np.zeros(30), resolved=np.ones(30, bool),
    ...     method="ar1_series")
    >>> fit = fit_ivfr_calibrated(meas, k**-0.5)
    >>> print(f"{fit.psi:.3f} [{fit.psi_ci[0]:.3f}, {fit.psi_ci[1]:.3f}]")
    1.002 [0.988, 1.017]
    """
    from scipy import stats  # deferred: keeps `import sgdfluct` light

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence = {confidence} is out of range: expected (0, 1)")
    var = np.asarray(variances.variances, dtype=float)
    flat = np.asarray(flatness, dtype=float)
    if flat.shape != var.shape:
        raise ValueError(f"flatness has shape {flat.shape}, expected {var.shape}")
    ok = variances.resolved & np.isfinite(flat) & (flat > 0) & (var > 0)
    ok &= np.isfinite(variances.rel_var)
    n = int(ok.sum())
    rho = math.nan
    if n >= 3 and np.ptp(var[ok]) > 0 and np.ptp(flat[ok]) > 0:
        rho = float(stats.spearmanr(var[ok], flat[ok]).statistic)
    empty = dict(
        psi=None,
        psi_ci=None,
        psi_stderr=None,
        psi_naive=None,
        confidence=confidence,
        n=n,
        n_unresolved=int((~variances.resolved).sum()),
        used=ok,
        spearman=rho,
    )
    if n < 4:
        return CalibratedFit(
            **empty,
            reliability=math.nan,
            log_sigma_span=math.nan,
            log_flatness_span=math.nan,
            note=f"{n} resolved direction(s) with finite flatness: the fit needs >= 4",
        )
    m = variances.rel_var[ok] / 4.0
    x = 0.5 * np.log(var[ok]) + m  # E[½ log σ̂²] ≈ ½ log σ² − u/4
    y = np.log(flat[ok])
    xc, yc = x - x.mean(), y - y.mean()
    sxx, sxy = float(xc @ xc), float(xc @ yc)
    noise = (1.0 - 1.0 / n) * float(m.sum())
    reliability = 1.0 - noise / sxx if sxx > 0 else -math.inf
    spans = dict(log_sigma_span=float(np.ptp(x)), log_flatness_span=float(np.ptp(y)))
    if not reliability >= min_reliability:
        return CalibratedFit(
            **empty,
            reliability=reliability,
            **spans,
            note=(
                f"the measured log σ spans no more than its sampling noise (reliability "
                f"{reliability:.2f} < {min_reliability}): ψ is not identified — no "
                "variance–flatness relation can be read from these variances"
            ),
        )
    denom = sxx - noise
    psi = -sxy / denom
    # influence of direction i on -S_xy/(S_xx - noise): a_i = xc_i yc_i, b_i = xc_i² - m_i(1-1/n)
    a = xc * yc
    b = xc**2 - (1.0 - 1.0 / n) * m
    lev = 1.0 / n + xc**2 / sxx  # leverage: the HC3 small-sample correction (MacKinnon & White)
    infl = (a + psi * b) / denom / np.maximum(1.0 - lev, 1.0 / n)
    se = float(math.sqrt(float(infl @ infl)))
    tq = float(stats.t.ppf(0.5 + 0.5 * confidence, n - 2))
    return CalibratedFit(
        psi=float(psi),
        psi_ci=(float(psi - tq * se), float(psi + tq * se)),
        psi_stderr=se,
        psi_naive=float(-sxy / sxx),
        reliability=float(reliability),
        n=n,
        n_unresolved=int((~variances.resolved).sum()),
        **spans,
        confidence=confidence,
        used=ok,
        spearman=rho,
    )


def richardson_fit(full: CalibratedFit, half: CalibratedFit) -> CalibratedFit:
    """Remove the direction-noise bias: ``ψ = 2 ψ(N) − ψ(N/2)``.

    Parameters
    ----------
    full : CalibratedFit
        Directions chosen on ``N`` records (the first half of the window).
    half : CalibratedFit
        Directions chosen on ``N/2`` records (its first half), variances measured on the same
        second half of the window.

    Returns
    -------
    CalibratedFit
        ``psi = 2 psi_full − psi_half`` with the conservative standard error
        ``sqrt(4 se_full² + se_half²)`` (the two estimates share the measuring half and are
        positively correlated, so the variance of the difference is smaller) and a Student-t
        interval on ``min(n_full, n_half) − 2`` degrees of freedom; ``None`` when either is.

    Notes
    -----
    Directions estimated from ``N`` records mix eigenmodes by weights of order ``1/N``, and the
    curvature along a mixture is the average of the mixed curvatures: the relation along estimated
    directions differs from the one along the process's eigenvectors by ``c/N + O(N⁻²)``
    (measured on ``sgdfluct.calibration``: ψ = −0.90 for a true −1 with d = 272 and 500 records).
    Two direction sets, from ``N`` and ``N/2`` records, cancel the first order (Richardson
    extrapolation; the jackknife's bias correction).

    Examples
    --------
    >>> from sgdfluct.ivfr_estimator import CalibratedFit, richardson_fit
    >>> base = dict(reliability=0.9, n=20, n_unresolved=0, log_sigma_span=1.0,
    ...             log_flatness_span=1.0, confidence=0.95, psi_naive=None)
    >>> a = CalibratedFit(psi=-0.90, psi_ci=(-0.97, -0.83), psi_stderr=0.033, **base)
    >>> b = CalibratedFit(psi=-0.87, psi_ci=(-0.94, -0.80), psi_stderr=0.035, **base)
    >>> r = richardson_fit(a, b)
    >>> print(f"{r.psi:.2f} ± {r.psi_stderr:.3f}")
    -0.93 ± 0.075
    """
    from scipy import stats  # deferred: keeps `import sgdfluct` light

    if full.psi is None or half.psi is None or full.psi_stderr is None or half.psi_stderr is None:
        which = full if full.psi is None else half
        note = which.note or "psi not identified"
        if which is half and full.psi is not None:
            note = f"directions from half the records: {note}"
        return replace(full, psi=None, psi_ci=None, psi_stderr=None, note=note)
    psi = 2.0 * full.psi - half.psi
    se = math.sqrt(4.0 * full.psi_stderr**2 + half.psi_stderr**2)
    dof = max(min(full.n, half.n) - 2, 1)
    tq = float(stats.t.ppf(0.5 + 0.5 * full.confidence, dof))
    return replace(
        full,
        psi=float(psi),
        psi_ci=(float(psi - tq * se), float(psi + tq * se)),
        psi_stderr=float(se),
        psi_naive=full.psi,
        reliability=min(full.reliability, half.reliability),
        n=min(full.n, half.n),
    )
