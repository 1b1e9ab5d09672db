"""Figures of a :class:`sgdfluct.probe.ProbeRun`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ._core import ProbeRun

__all__ = ["probe_figures"]


def _axes(n: int) -> tuple[Any, np.ndarray]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * n, 3.6))
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
    return fig, axes


def probe_figures(run: ProbeRun) -> dict[str, Any]:
    """``ivfr`` (flatness vs variance), ``temperature`` (T_i vs k_i), ``theory`` (subspace theory
    vs measured variances) per layer, and ``train_loss`` with the window marked."""
    figs: dict[str, Any] = {}
    n = len(run.layers)
    fig, axes = _axes(n)
    for ax, lr in zip(axes, run.layers, strict=True):
        ok = np.isfinite(lr.flatness)
        ax.loglog(
            lr.variances[ok & ~lr.sharp],
            lr.flatness[ok & ~lr.sharp],
            "o",
            mfc="none",
            label="near-null / low curvature",
        )
        ax.loglog(lr.variances[ok & lr.sharp], lr.flatness[ok & lr.sharp], "o", label="sharp")
        psi = lr.ivfr_all.get("psi")
        ax.set_title(f"layer {lr.layer}" + (f": psi = {psi:.2f}" if psi is not None else ""))
        ax.set_xlabel("variance sigma_i^2")
        ax.set_ylabel("flatness F_i")
    axes[0].legend(fontsize=7)
    figs["ivfr"] = fig

    fig, axes = _axes(n)
    for ax, lr in zip(axes, run.layers, strict=True):
        ok = np.isfinite(lr.temperature) & (lr.curvature > 0)
        ax.loglog(lr.curvature[ok], lr.temperature[ok], "o")
        ax.set_title(f"layer {lr.layer}: rho(T, k) = {lr.spearman_temperature_curvature:.2f}")
        ax.set_xlabel("curvature k_i")
        ax.set_ylabel("T_i = f_S eta c_ii / (2 k_i)")
    figs["temperature"] = fig

    fig, axes = _axes(n)
    for ax, lr in zip(axes, run.layers, strict=True):
        th = np.diag(lr.weight_cov_theory)
        ok = np.isfinite(th) & (th > 0) & (lr.variances > 0)
        ax.loglog(lr.variances[ok], th[ok], "o")
        if ok.any():
            lo = min(lr.variances[ok].min(), th[ok].min())
            hi = max(lr.variances[ok].max(), th[ok].max())
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(f"layer {lr.layer}: rel. error {lr.theory_error:.2f}")
        ax.set_xlabel("measured variance")
        ax.set_ylabel("subspace theory")
    figs["theory"] = fig

    fig, axes = _axes(1)
    ax = axes[0]
    ax.semilogy(run.train_steps, run.train_loss, lw=0.8)
    ax.axvline(run.plateau_step, color="k", ls="--", lw=0.8, label="plateau: window starts")
    ax.axvspan(run.plateau_step, run.plateau_step + run.window, color="C1", alpha=0.15)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (with weight decay)")
    ax.legend(fontsize=7)
    figs["train_loss"] = fig
    return figs
