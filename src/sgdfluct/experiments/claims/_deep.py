"""Shared pieces of the depth >= 2 claims (5, 5b, 7e, 7f): per-layer theory errors, the null space
at a minimum against its closed form, and their figures (docs/theory.md §8, §10.5).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from sgdfluct.experiments.verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    combine,
)

from ._base import Measurement
from ._shared import (
    FAIL_MULTIPLE,
    LAYER_ERROR_TARGET,
    MATCH_MULTIPLE,
    _grid_points,
    _mean,
    _new_figure,
    _saturation_gate,
    _values,
)

#: claims 5, 5b: symmetry directions count as inside the null space of H below this (relative)
#: residual
NULL_SPACE_ATOL = 1e-8


_DEEP_METRICS = ("saturation.saturated",)


_LAYER_METRICS = (
    "layers.layer_*.rel_error_continuum",
    "layers.layer_*.rel_error_discrete",
    "layers.layer_*.rel_error_multiplicative",
    "layers.layer_*.rel_error_renormalized",
    "layers.layer_*.noise_floor",
)


_NULL_METRICS = tuple(
    f"{key}.{name}"
    for key in ("null_space", "null_space_constructed")
    for name in (
        "null_dim_hessian",
        "null_dim_noise",
        "expected_dim",
        "symmetry_dim",
        "symmetry_rank",
        "symmetry_in_null_hessian",
    )
)


_METHODS = ("continuum", "discrete", "multiplicative", "renormalized")


def _layer_names(ds: xr.Dataset) -> list[str]:
    return sorted(
        {str(v).split(".")[1] for v in ds.data_vars if str(v).startswith("layers.layer_")}
    )


def _layer_errors(sub: xr.Dataset) -> dict[str, dict[str, float]]:
    out = {}
    for layer in _layer_names(sub):
        key = f"layers.{layer}"
        row = {m: _mean(sub, f"{key}.rel_error_{m}") for m in _METHODS}
        row["noise_floor"] = _mean(sub, f"{key}.noise_floor")
        out[layer] = row
    return out


def _null_space_part(sub: xr.Dataset, key: str) -> tuple[dict[str, Any], str]:
    """Null space of H at a minimum against its closed-form dimension, cell by cell.

    ``fails`` if in any cell ``dim null(H)`` differs from the closed form (``expected_dim``;
    where none exists, if it is below the symmetry dimension sum N_h^2), or differs from
    ``dim null(C)``, or the symmetry directions are not inside ``null(H)``.
    """
    found_h = _values(sub, f"{key}.null_dim_hessian").ravel()
    found_c = _values(sub, f"{key}.null_dim_noise").ravel()
    expected = _values(sub, f"{key}.expected_dim").ravel()
    sym_dim = _values(sub, f"{key}.symmetry_dim").ravel()
    sym_rank = _values(sub, f"{key}.symmetry_rank").ravel()
    inside = _values(sub, f"{key}.symmetry_in_null_hessian").ravel()
    ok = np.isfinite(found_h) & np.isfinite(found_c)
    if not ok.any():
        return {"cells": 0}, INCONCLUSIVE
    fh, fc, ex, sd, sr, ins = (
        a[ok] for a in (found_h, found_c, expected, sym_dim, sym_rank, inside)
    )
    dim_ok = np.where(np.isfinite(ex), fh == ex, fh >= sd)
    good = dim_ok & (fh == fc) & (ins < NULL_SPACE_ATOL)
    info = {
        "cells": int(ok.sum()),
        "null_dim_hessian": sorted({int(v) for v in fh}),
        "null_dim_noise": sorted({int(v) for v in fc}),
        "expected_dim": sorted({int(v) for v in ex if np.isfinite(v)}) or None,
        "sum_N_h_squared": sorted({int(v) for v in sd}),
        "excess_over_N_h_squared": sorted({int(v) for v in fh - sd}),
        "symmetry_rank": sorted({int(v) for v in sr}),
        "max_symmetry_outside_null": float(np.max(ins)),
        "cells_matching": int(good.sum()),
    }
    return info, HOLDS if bool(np.all(good)) else FAILS


def _theory_part(row: dict[str, float]) -> str:
    best, floor = row["renormalized"], row["noise_floor"]
    if not (np.isfinite(best) and np.isfinite(floor)):
        return INCONCLUSIVE
    if best <= max(LAYER_ERROR_TARGET, MATCH_MULTIPLE * floor):
        return HOLDS
    if best > max(LAYER_ERROR_TARGET, FAIL_MULTIPLE * floor):
        return FAILS
    return INCONCLUSIVE


def _layers_measurement(ds: xr.Dataset, learning_rates: tuple[float, ...] | None) -> Measurement:
    if learning_rates is not None and "sgd.learning_rate" in ds.dims:
        ds = ds.sel({"sgd.learning_rate": list(learning_rates)})
    rows: list[dict[str, Any]] = []
    parts: list[str] = []
    for label, sub in _grid_points(ds):
        errors = _layer_errors(sub)
        parts.extend(_theory_part(row) for row in errors.values())
        reached, v_reached = _null_space_part(sub, "null_space")
        built, v_built = _null_space_part(sub, "null_space_constructed")
        parts += [v_reached, v_built]
        row_out: dict[str, Any] = {
            "cell": label,
            **errors,
            "null_space_reached_minimum": {**reached, "verdict": v_reached},
            "null_space_constructed_point": {**built, "verdict": v_built},
            "saturation_step": _mean(sub, "saturation.step"),
            "dead_hidden_units": _mean(sub, "dead_hidden_units"),
        }
        if "equilibrium.rel_error" in sub:
            row_out["imbalance_rel_error_vs_noise_equilibrium"] = _mean(
                sub, "equilibrium.rel_error"
            )
        rows.append(row_out)
    verdict, gate = _saturation_gate(ds, combine(parts))
    return Measurement(
        measured={"cells": rows, "saturation": gate},
        verdict=verdict,
        details=(
            "Random start (docs/theory.md §8b), measured after the saturation gate. Per layer: "
            "relative Frobenius error of each linearized theory (continuum = the paper's; "
            "discrete; + multiplicative noise; self-consistent renormalized = the best) against "
            "the aligned, range-projected, pooled simulated covariance (§8a), and the noise "
            f"floor. Holds if the best theory is within max({LAYER_ERROR_TARGET:.0%}, "
            f"{MATCH_MULTIPLE} noise floors) in every layer (fails beyond max("
            f"{LAYER_ERROR_TARGET:.0%}, {FAIL_MULTIPLE} floors)); if at the minimum SGD reached "
            "(gradient flow from the window mean) dim null(H) equals the closed form (sum N_h^2 "
            "when the widths equal the product's rank; N_h (N_i + N_o) - N_i N_o for surplus "
            "units at depth 2) and dim null(C), with the symmetry directions inside; the same, "
            "separately, at the constructed balanced minimum (zero-padded surplus units: the "
            "excess over N_h^2); and every cell saturated (else at most inconclusive). The "
            "imbalance at the end is compared with the noise-equilibrium prediction (reported)."
        ),
    )


def _figure_layers(ds: xr.Dataset) -> Figure:
    layers = _layer_names(ds)
    points = _grid_points(ds)
    fig, axes = _new_figure(len(layers))
    width = 0.8 / (len(_METHODS) + 1)
    x = np.arange(len(points))
    for ax, layer in zip(axes, layers, strict=True):
        errors = [_layer_errors(sub)[layer] for _, sub in points]
        for j, m in enumerate(_METHODS):
            ax.bar(x + j * width, [e[m] for e in errors], width, label=m)
        ax.bar(
            x + len(_METHODS) * width,
            [e["noise_floor"] for e in errors],
            width,
            color="grey",
            label="noise floor",
        )
        ax.axhline(LAYER_ERROR_TARGET, color="k", lw=0.8, ls=":")
        ax.set_xticks(x + 0.4, [label for label, _ in points], fontsize=7, rotation=10)
        ax.set_yscale("log")
        ax.set_title(layer)
        ax.set_ylabel("relative Frobenius error vs simulation")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def _figure_null_space(ds: xr.Dataset) -> Figure:
    fig, (ax,) = _new_figure()
    points = _grid_points(ds)
    x = np.arange(len(points))
    for j, (key, label) in enumerate(
        (("null_space", "reached minimum"), ("null_space_constructed", "constructed point"))
    ):
        ax.bar(
            x + 0.3 * j,
            [_mean(sub, f"{key}.null_dim_hessian") for _, sub in points],
            0.3,
            label=f"dim null(H), {label}",
        )
    ax.plot(
        x + 0.15,
        [_mean(sub, "null_space.symmetry_dim") for _, sub in points],
        "k_",
        ms=30,
        label="N_h^2 (symmetry directions)",
    )
    if "null_space.expected_dim" in ds:  # the reference the rule compares with (issue 21)
        ax.plot(
            x + 0.15,
            [_mean(sub, "null_space.expected_dim") for _, sub in points],
            "D",
            color="C3",
            mfc="none",
            ms=9,
            label="closed form",
        )
    ax.set_xticks(x + 0.15, [label for label, _ in points], fontsize=7)
    ax.set_ylabel("dimension")
    ax.legend(fontsize="small")
    return fig
