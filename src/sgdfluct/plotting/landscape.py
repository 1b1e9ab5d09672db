"""Figures of the loss landscape along fluctuation directions and of the IVFR (docs/theory.md §9).

Every function takes ``ax=None`` (a new figure is made when missing), returns the Axes and never
saves; saving is the caller's job (:func:`sgdfluct.io.atomic_save_figure`).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from sgdfluct.landscape import IVFRResult

__all__ = ["plot_curvature_variance", "plot_loss_profiles", "plot_variance_flatness"]

_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def _axes(ax: Axes | None) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.5))
    return ax


def _label(result: IVFRResult, label: str | None) -> str:
    base = label if label is not None else f"layer {result.layer}"
    lo, hi = result.psi_ci
    return f"{base}: ψ = {result.psi:.2f} [{lo:.2f}, {hi:.2f}], ρ_s = {result.spearman:.2f}"


def plot_variance_flatness(
    result: IVFRResult,
    ax: Axes | None = None,
    *,
    label: str | None = None,
    others: Sequence[tuple[IVFRResult, str]] = (),
) -> Axes:
    """Flatness ``F_i`` against variance ``sigma_i^2`` (log-log) with the fitted power law.

    Parameters
    ----------
    result : IVFRResult
        Main data set (e.g. one layer of the two-layer network).
    ax : matplotlib Axes, optional
    label : str, optional
        Legend label of ``result`` (default ``"layer L"``).
    others : sequence of (IVFRResult, label)
        Further data sets drawn in other colours (e.g. the single-layer comparison).

    Returns
    -------
    Axes

    Notes
    -----
    The line is ``F = exp(a) sigma^{-psi}`` of the PCA fit; ``psi > 0`` (falling line) is the
    paper's IVFR. Where the calibrated estimate exists (``result.calibrated``) its slope is drawn
    dashed through the centre of the points, or the legend says it is not identified.
    """
    ax = _axes(ax)
    for colour, (res, lab) in zip(_COLOURS, [(result, label), *others], strict=False):
        ax.scatter(
            res.variances, res.flatness, s=14, color=colour, alpha=0.8, label=_label(res, lab)
        )
        grid = np.geomspace(res.variances.min(), res.variances.max(), 50)
        ax.plot(grid, np.exp(res.intercept) * np.sqrt(grid) ** (-res.psi), color=colour, lw=1.2)
        _draw_calibrated(ax, res, grid, colour)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"variance $\sigma_i^2$")
    ax.set_ylabel(r"flatness $F_i$")
    ax.legend(fontsize="x-small")
    return ax


def _draw_calibrated(ax: Axes, res: IVFRResult, grid: np.ndarray, colour: str) -> None:
    """The calibrated ψ (docs/theory.md §9) as a dashed line of its slope through the centre of
    the points, or a legend entry saying why it is not identified."""
    cal = getattr(res, "calibrated", None)
    if cal is None:
        return
    if cal.psi is None or cal.psi_ci is None:
        ax.plot([], [], ls="none", label="calibrated ψ: not identified")
        return
    x0 = float(np.exp(np.mean(np.log(res.variances))))
    y0 = float(np.exp(np.mean(np.log(res.flatness))))
    lo, hi = cal.psi_ci
    ax.plot(
        grid,
        y0 * np.sqrt(grid / x0) ** (-cal.psi),
        color=colour,
        lw=1.2,
        ls="--",
        label=f"calibrated ψ = {cal.psi:.2f} [{lo:.2f}, {hi:.2f}] (dashed)",
    )


def plot_loss_profiles(
    result: IVFRResult,
    ax: Axes | None = None,
    *,
    n_profiles: int = 4,
    n_points: int = 201,
) -> Axes:
    """Loss profiles ``L_i(s) = L_0 + g_i s + k_i s^2 / 2`` along a few fluctuation directions.

    Draws the directions of largest, smallest and intermediate variance, and marks the level
    ``factor * L_0`` that defines the flatness.

    Parameters
    ----------
    result : IVFRResult
    ax : matplotlib Axes, optional
    n_profiles : int
        Number of directions drawn (>= 1), spread evenly over the variance ranking.
    n_points : int
        Grid points per profile.

    Returns
    -------
    Axes
    """
    if n_profiles < 1:
        raise ValueError(f"n_profiles = {n_profiles} is out of range: expected an integer >= 1")
    ax = _axes(ax)
    n = result.n_directions
    picks = np.unique(np.round(np.linspace(0, n - 1, min(n_profiles, n))).astype(int))
    half = 0.75 * float(result.flatness[picks].max())
    s = np.linspace(-half, half, n_points)
    for i in picks:
        curve = result.loss0 + result.slopes[i] * s + 0.5 * result.curvatures[i] * s**2
        ax.plot(
            s,
            curve,
            lw=1.2,
            label=rf"$\sigma^2$={result.variances[i]:.2g}, k={result.curvatures[i]:.2g}",
        )
    ax.axhline(
        result.factor * result.loss0, color="k", ls="--", lw=0.8, label=f"{result.factor:.3g} L_0"
    )
    ax.axhline(result.loss0, color="grey", ls=":", lw=0.8)
    ax.set_ylim(0.0, 1.3 * result.factor * result.loss0)
    ax.set_xlabel("displacement s along $p_i$")
    ax.set_ylabel(r"$L_i(s)$")
    ax.set_title(f"layer {result.layer}", fontsize="small")
    ax.legend(fontsize="x-small")
    return ax


def plot_curvature_variance(
    result: IVFRResult,
    ax: Axes | None = None,
    *,
    label: str | None = None,
    others: Sequence[tuple[IVFRResult, str]] = (),
) -> Axes:
    """Curvature ``k_i`` against variance ``sigma_i^2`` (log-log) for one or more data sets.

    Parameters
    ----------
    result : IVFRResult
    ax : matplotlib Axes, optional
    label : str, optional
    others : sequence of (IVFRResult, label)
        Further data sets in other colours.

    Returns
    -------
    Axes
    """
    ax = _axes(ax)
    for colour, (res, lab) in zip(_COLOURS, [(result, label), *others], strict=False):
        base = lab if lab is not None else f"layer {res.layer}"
        ax.scatter(
            res.variances,
            res.curvatures,
            s=14,
            color=colour,
            alpha=0.8,
            label=f"{base}: ρ_s = {res.spearman_curvature:.2f}, CV(k) = {res.curvature_cv:.2f}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"variance $\sigma_i^2$")
    ax.set_ylabel(r"curvature $k_i = p_i^T H p_i$")
    ax.legend(fontsize="x-small")
    return ax
