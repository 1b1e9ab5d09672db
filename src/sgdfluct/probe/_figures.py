"""Figures of a :class:`sgdfluct.probe.ProbeRun`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ._core import ProbeRun

__all__ = ["hessian_spectrum_figure", "probe_figures"]


def _axes(n: int) -> tuple[Any, np.ndarray]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * n, 3.6))
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
    return fig, axes


def _by_sharpness(
    ax: Any,
    x: np.ndarray,
    y: np.ndarray,
    ok: np.ndarray,
    sharp: np.ndarray,
    *labels: str,
    **style: Any,
) -> None:
    """Directions as markers: hollow for near-null / low curvature, filled for the sharp ones."""
    ax.plot(x[ok & ~sharp], y[ok & ~sharp], "o", mfc="none", label=labels[0], **style)
    ax.plot(x[ok & sharp], y[ok & sharp], "o", label=labels[1], **style)


def probe_figures(run: ProbeRun) -> dict[str, Any]:
    """``ivfr`` (flatness vs variance), ``temperature`` (T_i vs k_i), ``theory`` (subspace theory
    vs measured variances) per layer, ``train_loss`` with the window marked, and
    ``hessian_spectrum`` (the layers' Hessian spectral densities with the measured variances on
    the same curvature axis) when the spectra were computed."""
    figs: dict[str, Any] = {}
    n = len(run.layers)
    fig, axes = _axes(n)
    for ax, lr in zip(axes, run.layers, strict=True):
        ok = np.isfinite(lr.flatness)
        _by_sharpness(
            ax, lr.variances, lr.flatness, ok, lr.sharp, "near-null / low curvature", "sharp"
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
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
    if any(lr.hessian_spectrum is not None for lr in run.layers):
        figs["hessian_spectrum"] = hessian_spectrum_figure(run)
    return figs


def hessian_spectrum_figure(run: ProbeRun) -> Any:
    """Per layer: the SLQ spectral density of ``H_ll`` and, on the same curvature axis, the
    measured variance ``σ_i²`` of each probed direction at its curvature ``k_i = p_iᵀ H p_i``.

    Where the weight variance sits on the Hessian spectrum: the IVFR puts the large variances at
    the bulk near zero and the small ones at the outliers. Linear curvature axis, logarithmic
    density (the usual picture of a network's Hessian spectrum: a bulk at 0 and outliers).
    """
    from matplotlib.figure import Figure

    layers = [lr for lr in run.layers if lr.hessian_spectrum is not None]
    fig = Figure(figsize=(5.2 * len(layers), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(layers), squeeze=False)[0])
    twins = []
    for ax, lr in zip(axes, layers, strict=True):
        spec = lr.hessian_spectrum
        assert spec is not None
        top = float(spec.density.max())
        dens = np.maximum(spec.density, top * 1e-8)
        ax.fill_between(spec.grid, top * 1e-8, dens, color="C0", alpha=0.25, lw=0)
        ax.plot(spec.grid, dens, color="C0", lw=0.9, label=f"Hessian density ({spec.method})")
        ax.set_yscale("log")
        ax.set_ylim(top * 1e-6, top * 3)
        ax.set_xlabel("Hessian eigenvalue / curvature k")
        ax.set_ylabel("spectral density (1/d_l)", color="C0")
        tr = f"tr H = {spec.trace:.3g}"
        if spec.trace_se > 0:
            tr += f" ± {spec.trace_se:.2g}"
        ax.set_title(f"layer {lr.layer}: {tr}", fontsize=9)
        tw = ax.twinx()
        ok = np.isfinite(lr.curvature) & (lr.variances > 0)
        labels = ("variance σ_i² (near-null / low k)", "variance σ_i² (sharp)")
        _by_sharpness(tw, lr.curvature, lr.variances, ok, lr.sharp, *labels, color="C3", ms=4)
        if ok.any():
            tw.set_yscale("log")
        tw.set_ylabel("weight variance σ_i² at k_i", color="C3")
        twins.append(tw)
    h0, l0 = axes[0].get_legend_handles_labels()
    h1, l1 = twins[0].get_legend_handles_labels()
    twins[0].legend(h0 + h1, l0 + l1, fontsize=7, loc="upper right")
    return fig
