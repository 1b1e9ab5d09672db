"""Figures for the single layer: spectra with their random-matrix laws, theory vs simulation.

Every function takes ``ax=None`` (a new figure is made then), returns the Axes and never saves.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from numpy.typing import ArrayLike

from sgdfluct.theory.spectra import generalized_mp_density, marchenko_pastur_density

__all__ = [
    "plot_covariance_comparison",
    "plot_covariance_spectrum",
    "plot_hessian_noise_spectra",
]


def _axes(ax: Axes | None) -> Axes:
    if ax is None:
        _, ax = plt.subplots()
    return ax


def plot_hessian_noise_spectra(
    hessian_eigs: ArrayLike,
    noise_eigs: ArrayLike,
    ratio: float,
    *,
    normalize: bool = True,
    bins: int = 60,
    ax: Axes | None = None,
) -> Axes:
    """Histograms of the spectra of ``H_x`` and ``C_0`` with the MP and generalized-MP curves.

    Parameters
    ----------
    hessian_eigs, noise_eigs : (N_i,) array_like
        Eigenvalues of ``H_x`` and ``C_0`` (N_o = 1).
    ratio : float
        ``q = N_i / P`` in (0, 1).
    normalize : bool
        Divide each spectrum by its mean eigenvalue (the laws are rescaled accordingly:
        MP with unit scale, the chi^2_1-weighted law with ``s = 1``).
    bins : int
    ax : Axes, optional
    """
    ax = _axes(ax)
    he = np.asarray(hessian_eigs, float)
    ce = np.asarray(noise_eigs, float)
    hs, cs = (he / he.mean(), ce / ce.mean()) if normalize else (he, ce)
    top = float(max(hs.max(), cs.max())) * 1.05
    edges = list(np.linspace(0, top, bins + 1))
    ax.hist(hs, bins=edges, density=True, alpha=0.45, color="C0", label="H eigenvalues")
    ax.hist(cs, bins=edges, density=True, alpha=0.45, color="C1", label="C eigenvalues")
    grid = np.linspace(top * 1e-4, top, 600)
    ax.plot(
        grid,
        marchenko_pastur_density(grid, ratio, scale=1.0 if normalize else float(he.mean())),
        color="C0",
        lw=1.5,
        label="Marchenko-Pastur",
    )
    s = 1.0 if normalize else float(ce.mean())
    ax.plot(
        grid,
        generalized_mp_density(grid, ratio, s),
        color="C1",
        lw=1.5,
        label=r"generalized MP ($\chi^2_1$ weights)",
    )
    ax.set_xlabel("eigenvalue / mean" if normalize else "eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(f"spectra of H and C, q = N_i/P = {ratio:.3g}")
    ax.legend(fontsize="small")
    return ax


def plot_covariance_comparison(
    simulated: ArrayLike,
    theory: ArrayLike,
    *,
    simulated_stderr: ArrayLike | None = None,
    label: str = "theory",
    ax: Axes | None = None,
) -> Axes:
    """Scatter of simulated vs theoretical covariance entries (upper triangle) with ``y = x``.

    Parameters
    ----------
    simulated, theory : (d, d) array_like
    simulated_stderr : (d, d) array_like, optional
        Drawn as vertical error bars.
    label : str
        Name of the theory (legend).
    ax : Axes, optional
    """
    ax = _axes(ax)
    sim = np.asarray(simulated, float)
    th = np.asarray(theory, float)
    iu = np.triu_indices_from(sim)
    yerr = None if simulated_stderr is None else np.asarray(simulated_stderr, float)[iu]
    ax.errorbar(th[iu], sim[iu], yerr=yerr, fmt="o", ms=3, alpha=0.7, label=label)
    lo = float(min(th[iu].min(), sim[iu].min()))
    hi = float(max(th[iu].max(), sim[iu].max()))
    ax.plot([lo, hi], [lo, hi], color="k", lw=1, label="y = x")
    ax.set_xlabel("theory covariance entry")
    ax.set_ylabel("simulated covariance entry")
    ax.legend(fontsize="small")
    return ax


def plot_covariance_spectrum(
    cov_eigs: ArrayLike,
    *,
    reference_eigs: ArrayLike | None = None,
    labels: tuple[str, str] = ("Σ", "reference"),
    ax: Axes | None = None,
) -> Axes:
    """Rank plot of the eigenvalues of ``Σ`` (descending, log scale), optionally with a second one.

    Parameters
    ----------
    cov_eigs : (d,) array_like
    reference_eigs : (d',) array_like, optional
        E.g. the simulated spectrum, or the continuum theory.
    labels : (str, str)
    ax : Axes, optional
    """
    ax = _axes(ax)
    ev = np.sort(np.asarray(cov_eigs, float))[::-1]
    ax.semilogy(np.arange(1, ev.size + 1), ev, "o-", ms=3, label=labels[0])
    if reference_eigs is not None:
        rv = np.sort(np.asarray(reference_eigs, float))[::-1]
        ax.semilogy(np.arange(1, rv.size + 1), rv, "s--", ms=3, label=labels[1])
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue of the weight covariance")
    ax.legend(fontsize="small")
    return ax
