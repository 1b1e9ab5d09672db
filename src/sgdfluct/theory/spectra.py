"""Spectra of H, C_0 and Σ for the single layer, and their random-matrix laws (docs/theory.md §7).

* ``H_x = X^T X / P`` with whitened Gaussian inputs follows Marchenko-Pastur (MP) with ratio
  ``q = N_i / P``.
* ``C_0 = (1/P) sum_mu r_mu^2 x_mu x_mu^T`` (N_o = 1) follows a generalized (weighted) MP law with
  weights ``t ~ s chi^2_1``, ``s = sigma^2 (1 - q)``: its Stieltjes transform solves
  ``m = 1 / (-z + E_t[t / (1 + q t m)])``.
* Shape comparisons use spectra divided by their mean eigenvalue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "SingleLayerSpectra",
    "chi2_weighted_mp_stieltjes",
    "coefficient_of_variation",
    "curvature_along_eigenvectors",
    "generalized_mp_cdf",
    "generalized_mp_density",
    "ks_distance",
    "marchenko_pastur_cdf",
    "marchenko_pastur_density",
    "marchenko_pastur_support",
    "normalized_spectrum",
    "normalized_variance",
    "single_layer_spectra",
    "spectral_distance",
]

Array = NDArray[np.float64]


def _check_ratio(ratio: float, *, below_one: bool = False) -> None:
    if not np.isfinite(ratio) or ratio <= 0 or (below_one and ratio >= 1):
        allowed = "0 < ratio < 1" if below_one else "ratio > 0"
        raise ValueError(f"ratio={ratio} must satisfy {allowed} (ratio q = N_i / P)")


# --------------------------------------------------------------------------------------------
# Marchenko-Pastur
# --------------------------------------------------------------------------------------------


def marchenko_pastur_support(ratio: float, scale: float = 1.0) -> tuple[float, float]:
    """Edges ``scale (1 ± sqrt q)^2`` of the MP bulk (docs/theory.md §7).

    Examples
    --------
    >>> from sgdfluct.theory.spectra import marchenko_pastur_support
    >>> lo, hi = marchenko_pastur_support(0.25)
    >>> print(f"{lo:.4f} {hi:.4f}")
    0.2500 2.2500
    """
    _check_ratio(ratio)
    return scale * (1 - np.sqrt(ratio)) ** 2, scale * (1 + np.sqrt(ratio)) ** 2


def marchenko_pastur_density(x: ArrayLike, ratio: float, scale: float = 1.0) -> Array:
    """MP density ``sqrt((λ+ - λ)(λ - λ-)) / (2π q λ scale)`` of the bulk; shape of ``x``.

    Parameters
    ----------
    x : array_like
        Eigenvalues.
    ratio : float
        ``q = N_i / P > 0``. For ``q > 1`` there is in addition an atom of mass ``1 - 1/q`` at 0,
        not included in the density.
    scale : float
        Population variance (``H_x`` of inputs with covariance ``scale * I``).

    Examples
    --------
    Zero outside the bulk ``[0.25, 2.25]`` of ``q = 1/4``:

    >>> import numpy as np
    >>> from sgdfluct.theory.spectra import marchenko_pastur_density
    >>> print(np.round(marchenko_pastur_density([0.1, 1.0, 2.0], 0.25), 4))
    [0.     0.6164 0.2105]
    """
    lo, hi = marchenko_pastur_support(ratio, scale)
    lam = np.asarray(x, dtype=float) / scale
    lo, hi = lo / scale, hi / scale
    inside = (lam > lo) & (lam < hi)
    out = np.zeros_like(lam)
    li = lam[inside]
    out[inside] = np.sqrt((hi - li) * (li - lo)) / (2 * np.pi * ratio * li)
    return out / scale


def marchenko_pastur_cdf(x: ArrayLike, ratio: float, scale: float = 1.0) -> Array:
    """MP cumulative distribution function (including the atom at 0 when ``q > 1``).

    Notes
    -----
    Integrated numerically with the substitution ``λ = λ- + (λ+ - λ-)(1 - cos θ)/2``, which
    removes the square-root edge singularities (10⁴ θ-nodes; error < 1e-7).

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.theory.spectra import marchenko_pastur_cdf
    >>> print(np.round(marchenko_pastur_cdf([0.0, 1.0, 3.0], 0.25), 4))
    [0.     0.5534 1.    ]

    For ``q = 2`` half of the mass is the atom at 0:

    >>> print(np.round(marchenko_pastur_cdf([0.0, 1.0, 10.0], 2.0), 4))
    [0.5    0.6592 1.    ]
    """
    lo, hi = marchenko_pastur_support(ratio, scale)
    theta = np.linspace(0.0, np.pi, 20001)
    lam = lo + (hi - lo) * (1 - np.cos(theta)) / 2
    jac = (hi - lo) * np.sin(theta) / 2
    lam_safe = np.where(lam > 0, lam, 1.0)
    dens = np.where(
        lam > 0,
        np.sqrt(np.clip((hi - lam) * (lam - lo), 0, None)) / (2 * np.pi * ratio * lam_safe * scale),
        0.0,
    )
    f = dens * jac
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(theta))])
    bulk = min(1.0, 1.0 / ratio)
    cum *= bulk / cum[-1]
    atom = max(0.0, 1.0 - 1.0 / ratio)
    xv = np.asarray(x, dtype=float)
    out = np.interp(xv, lam, cum, left=0.0, right=bulk)
    return np.asarray(out + atom * (xv >= 0))


# --------------------------------------------------------------------------------------------
# generalized MP with chi^2_1 weights
# --------------------------------------------------------------------------------------------


def _mean_weight_term(m: NDArray[np.complex128], ratio: float, weight_scale: float) -> NDArray:
    """``E_t[t / (1 + q t m)]`` for ``t = s u^2``, ``u ~ N(0, 1)``, in closed form.

    With ``a = q s m`` and ``b = a^{-1/2}`` (principal branch, ``Re b > 0``):
    ``E[1/(1 + a u^2)] = b sqrt(π/2) erfcx(b / sqrt 2)``, and
    ``E_t[t/(1 + q t m)] = (1 - E[1/(1 + a u^2)]) / (q m)``. For ``|a| < 1e-3`` the series
    ``s (1 - 3a + 15a^2 - 105a^3 + 945a^4)`` is used (relative error < 1e-13).
    """
    a = ratio * weight_scale * m
    small = np.abs(a) < 1e-3
    out = np.empty_like(m)
    asm = a[small]
    out[small] = weight_scale * (1 - 3 * asm + 15 * asm**2 - 105 * asm**3 + 945 * asm**4)
    al = a[~small]
    b = 1.0 / np.sqrt(al)
    import scipy.special  # deferred: keeps `import sgdfluct` light

    e = b * np.sqrt(np.pi / 2) * scipy.special.erfcx(b / np.sqrt(2))
    out[~small] = (1 - e) / (ratio * m[~small])
    return out


def chi2_weighted_mp_stieltjes(
    z: ArrayLike,
    ratio: float,
    weight_scale: float,
    *,
    tol: float = 1e-12,
) -> NDArray[np.complex128]:
    """Stieltjes transform ``m(z)`` of the generalized MP law with ``chi^2_1`` weights.

    Parameters
    ----------
    z : array_like of complex, Im z > 0
        Spectral arguments.
    ratio : float
        ``q = N_i / P`` in (0, 1).
    weight_scale : float
        ``s`` of the weights ``t ~ s chi^2_1`` (``s = sigma^2 (1 - q)`` for ``C_0``).
    tol : float
        Relative tolerance of the Newton iteration.

    Returns
    -------
    complex array, shape of ``z``
        ``m(z) = (1/N) tr (S - z)^{-1}`` in the limit, ``Im m > 0``.

    Notes
    -----
    Solves ``m = 1 / (-z + E_t[t / (1 + q t m)])`` (Silverstein-Bai) by Newton's method on
    ``F(m) = -1/m + E_t[t/(1 + q t m)] - z``, continued from ``Im z = 10 s`` (where the
    fixed-point iteration converges fast) down to the requested ``Im z`` in geometric steps,
    keeping ``Im m > 0`` (the physical root). ``E_t`` is evaluated in closed form
    (docs/theory.md §7).

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.theory.spectra import chi2_weighted_mp_stieltjes
    >>> m = chi2_weighted_mp_stieltjes(np.array([0.5 + 1j, 1.0 + 1j]), 0.25, 1.0)
    >>> print(np.round(m.real, 4), np.round(m.imag, 4))
    [ 0.1401 -0.1067] [0.7506 0.7157]
    """
    _check_ratio(ratio, below_one=True)
    if not weight_scale > 0:
        raise ValueError(f"weight_scale={weight_scale} must be > 0")
    zt = np.atleast_1d(np.asarray(z, dtype=complex)).ravel()
    if np.any(zt.imag <= 0):
        raise ValueError("z must have a positive imaginary part")
    target = zt.imag
    start = np.maximum(target, 10 * weight_scale)

    def func(m: NDArray, zz: NDArray) -> NDArray:
        return -1 / m + _mean_weight_term(m, ratio, weight_scale) - zz

    # fixed point at the start (well inside the upper half-plane)
    zz = zt.real + 1j * start
    m = -1 / zz
    for _ in range(200):
        new = 1 / (-zz + _mean_weight_term(m, ratio, weight_scale))
        done = np.abs(new - m) <= tol * np.abs(new)
        m = new
        if np.all(done):
            break
    n_steps = int(np.ceil(np.log(np.max(start / target)) / np.log(2.0))) + 1
    for k in range(1, n_steps + 1):
        eps = np.maximum(target, start * 2.0 ** (-k))
        zz = zt.real + 1j * eps
        for _ in range(50):
            f = func(m, zz)
            h = 1e-7 * np.maximum(np.abs(m), 1e-300)
            df = (func(m + h, zz) - func(m - h, zz)) / (2 * h)
            step = f / df
            new = m - step
            # keep the physical root: halve the step while Im m <= 0
            for _ in range(30):
                bad = new.imag <= 0
                if not np.any(bad):
                    break
                step = np.where(bad, step / 2, step)
                new = m - step
            conv = np.abs(new - m) <= tol * np.abs(new)
            m = new
            if np.all(conv):
                break
    if not np.all(np.isfinite(m)):
        raise RuntimeError("generalized MP Stieltjes solve produced non-finite values")
    return np.asarray(m.reshape(np.shape(z)))


def generalized_mp_density(
    x: ArrayLike,
    ratio: float,
    weight_scale: float,
    *,
    eps: float | None = None,
) -> Array:
    """Density ``Im m(λ + iε) / π`` of the chi^2_1-weighted MP law; shape of ``x``.

    Parameters
    ----------
    x : array_like
        Real eigenvalues ``λ``.
    ratio, weight_scale : float
        As in :func:`chi2_weighted_mp_stieltjes`.
    eps : float, optional
        Imaginary part ``ε`` (default ``1e-7 s``): the density is smoothed on that scale.

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.theory.spectra import generalized_mp_density
    >>> print(np.round(generalized_mp_density(np.array([0.5, 1.0, 2.0]), 0.25, 1.0), 4))
    [0.7025 0.3686 0.1446]
    """
    lam = np.asarray(x, dtype=float)
    e = 1e-7 * weight_scale if eps is None else eps
    m = chi2_weighted_mp_stieltjes(lam + 1j * e, ratio, weight_scale)
    return np.asarray(np.clip(m.imag / np.pi, 0, None))


def generalized_mp_cdf(
    x: ArrayLike,
    ratio: float,
    weight_scale: float,
    *,
    grid_size: int = 4000,
) -> Array:
    """CDF of the chi^2_1-weighted MP law; shape of ``x``.

    Notes
    -----
    The density is evaluated on a grid uniform in ``sqrt(λ)`` over ``[0, 60 s (1 + sqrt q)^2]``
    and integrated by the trapezoid rule; the result is normalized by the integral over the grid
    (the mass beyond it is < 1e-6 for ``q <= 0.99``).

    Examples
    --------
    Unlike MP, the law has no gap at 0 and a long tail:

    >>> import numpy as np
    >>> from sgdfluct.theory.spectra import generalized_mp_cdf
    >>> print(np.round(generalized_mp_cdf(np.array([0.25, 1.0, 2.25]), 0.25, 1.0), 4))
    [0.1564 0.6294 0.8971]
    """
    hi = 60 * weight_scale * (1 + np.sqrt(ratio)) ** 2
    grid = np.linspace(0, np.sqrt(hi), grid_size) ** 2
    grid[0] = 1e-12 * hi
    dens = generalized_mp_density(grid, ratio, weight_scale)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])
    cum /= cum[-1]
    return np.asarray(np.interp(np.asarray(x, float), grid, cum, left=0.0, right=1.0))


# --------------------------------------------------------------------------------------------
# comparisons
# --------------------------------------------------------------------------------------------


def ks_distance(eigenvalues: ArrayLike, cdf: Callable[[Array], Array]) -> float:
    """Kolmogorov-Smirnov distance ``sup |F_emp - F|`` of an empirical spectrum to a law.

    Examples
    --------
    ``H_x`` of whitened Gaussian inputs (``q = 1/4``) against Marchenko-Pastur (docs/theory.md §7):

    >>> import numpy as np
    >>> from sgdfluct.theory.spectra import ks_distance, marchenko_pastur_cdf
    >>> x = np.random.default_rng(0).standard_normal((800, 200))
    >>> ev = np.linalg.eigvalsh(x.T @ x / 800)
    >>> print(f"{ks_distance(ev, lambda v: marchenko_pastur_cdf(v, 0.25)):.3f}")
    0.015
    """
    ev = np.sort(np.asarray(eigenvalues, dtype=float).ravel())
    import scipy.stats

    return float(scipy.stats.kstest(ev, cdf).statistic)


def normalized_spectrum(eigenvalues: ArrayLike) -> Array:
    """Eigenvalues divided by their mean (shape, not scale).

    Examples
    --------
    >>> from sgdfluct.theory.spectra import normalized_spectrum
    >>> print(normalized_spectrum([1.0, 2.0, 3.0]))
    [0.5 1.  1.5]
    """
    ev = np.asarray(eigenvalues, dtype=float).ravel()
    mean = ev.mean()
    if not mean > 0:
        raise ValueError(f"mean eigenvalue {mean} must be > 0 to normalize a spectrum")
    return np.asarray(ev / mean)


def normalized_variance(eigenvalues: ArrayLike) -> float:
    """``var / mean^2`` of a spectrum (≈ q for MP, ≈ 3q for the chi^2_1-weighted law).

    Examples
    --------
    With ``q = 1/4``: ``H_x`` gives ≈ q and ``C_0 = (1/P) sum_mu t_mu x_mu x_mu^T`` with weights
    ``t ~ chi^2_1`` gives ≈ 3q (docs/theory.md §7):

    >>> import numpy as np
    >>> from sgdfluct.theory.spectra import normalized_variance
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((800, 200))
    >>> t = rng.standard_normal(800) ** 2
    >>> print(f"{normalized_variance(np.linalg.eigvalsh(x.T @ x / 800)):.3f}")
    0.246
    >>> print(f"{normalized_variance(np.linalg.eigvalsh((x * t[:, None]).T @ x / 800)):.3f}")
    0.667
    """
    return float(np.var(normalized_spectrum(eigenvalues)))


def coefficient_of_variation(values: ArrayLike) -> float:
    """``std / mean`` (population std).

    Examples
    --------
    >>> from sgdfluct.theory.spectra import coefficient_of_variation
    >>> print(f"{coefficient_of_variation([1.0, 2.0, 3.0]):.4f}")
    0.4082
    """
    return float(np.sqrt(normalized_variance(values)))


def spectral_distance(a: ArrayLike, b: ArrayLike) -> float:
    """Wasserstein-1 distance between two mean-normalized spectra.

    Examples
    --------
    Blind to scale, sensitive to shape:

    >>> from sgdfluct.theory.spectra import spectral_distance
    >>> print(f"{spectral_distance([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]):.4f}")
    0.0000
    >>> print(f"{spectral_distance([1.0, 1.0, 4.0], [2.0, 2.0, 2.0]):.4f}")
    0.6667
    """
    import scipy.stats

    return float(scipy.stats.wasserstein_distance(normalized_spectrum(a), normalized_spectrum(b)))


def curvature_along_eigenvectors(hessian: Array, cov: Array) -> tuple[Array, Array]:
    """Variances ``σ_i^2`` and curvatures ``k_i = p_i^T H p_i`` along eigenvectors of ``cov``.

    Parameters
    ----------
    hessian, cov : (d, d) arrays

    Returns
    -------
    (variances, curvatures) : ((d,) array, (d,) array)
        Sorted by decreasing variance.

    Examples
    --------
    >>> import numpy as np
    >>> from sgdfluct.theory.spectra import curvature_along_eigenvectors
    >>> var, curv = curvature_along_eigenvectors(np.diag([1.0, 2.0, 3.0]), np.diag([0.3, 0.2, 0.1]))
    >>> print(np.round(var, 4), np.round(curv, 4))
    [0.3 0.2 0.1] [1. 2. 3.]
    """
    evals, evecs = np.linalg.eigh(0.5 * (np.asarray(cov, float) + np.asarray(cov, float).T))
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    curv = np.einsum("ai,ab,bi->i", evecs, np.asarray(hessian, float), evecs)
    return evals, np.asarray(curv)


@dataclass(frozen=True, kw_only=True)
class SingleLayerSpectra:
    """Spectral summary of a single layer (docs/theory.md §7, §10 claims 1 and 3).

    Attributes
    ----------
    hessian_eigs, noise_eigs, cov_eigs : (d,) arrays
        Eigenvalues of ``H``, ``C_0`` and ``Σ`` (ascending).
    distance : float
        Wasserstein-1 distance between the mean-normalized spectra of ``C_0`` and ``H``.
    hessian_normalized_variance, noise_normalized_variance : float
        ``var / mean^2`` of the two spectra.
    cov_anisotropy : float
        Coefficient of variation of the eigenvalues of ``Σ``.
    curvature_cv : float
        Coefficient of variation of ``p_i^T H p_i`` over the eigenvectors ``p_i`` of ``Σ``.
    hessian_cv : float
        Coefficient of variation of the eigenvalues of ``H`` (the reference for curvature_cv).
    curvature_variance_spearman : float
        Spearman rank correlation between ``σ_i^2`` and ``p_i^T H p_i`` (NaN-free: 0 if constant).
    """

    hessian_eigs: Array
    noise_eigs: Array
    cov_eigs: Array
    distance: float
    hessian_normalized_variance: float
    noise_normalized_variance: float
    cov_anisotropy: float
    curvature_cv: float
    hessian_cv: float
    curvature_variance_spearman: float


def single_layer_spectra(hessian: Array, noise_cov: Array, cov: Array) -> SingleLayerSpectra:
    """Spectra and shape statistics of ``H``, ``C_0`` and ``Σ``; all (d, d) arrays.

    Examples
    --------
    With ``C_0 ∝ H`` the two normalized spectra coincide (docs/theory.md §7):

    >>> import numpy as np
    >>> from sgdfluct.theory.spectra import single_layer_spectra
    >>> h = np.diag([1.0, 2.0, 3.0])
    >>> res = single_layer_spectra(h, 0.5 * h, np.diag([0.3, 0.2, 0.1]))
    >>> print(f"{res.distance:.4f} {res.hessian_cv:.4f} {res.curvature_variance_spearman:.1f}")
    0.0000 0.4082 -1.0
    """
    he = np.asarray(np.linalg.eigvalsh(hessian), dtype=np.float64)
    ce = np.asarray(np.linalg.eigvalsh(noise_cov), dtype=np.float64)
    se = np.asarray(np.linalg.eigvalsh(cov), dtype=np.float64)
    var, curv = curvature_along_eigenvectors(hessian, cov)
    if np.ptp(var) == 0 or np.ptp(curv) == 0:
        rho = 0.0
    else:
        import scipy.stats

        rho = float(scipy.stats.spearmanr(var, curv).statistic)
    return SingleLayerSpectra(
        hessian_eigs=he,
        noise_eigs=ce,
        cov_eigs=se,
        distance=spectral_distance(ce, he),
        hessian_normalized_variance=normalized_variance(he),
        noise_normalized_variance=normalized_variance(ce),
        cov_anisotropy=coefficient_of_variation(se),
        curvature_cv=coefficient_of_variation(curv),
        hessian_cv=coefficient_of_variation(he),
        curvature_variance_spearman=rho,
    )
