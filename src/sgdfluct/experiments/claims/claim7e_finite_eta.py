"""Claim 7e: the continuum linearization at finite learning rates (docs/theory.md §10.7).

Reads the sweep of claim 5 (``two_layer_small``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from sgdfluct.experiments.verdicts import (
    combine,
    interval_verdict,
    loglog_slope,
)

from ._base import GATE_CHANGE as _GATE_CHANGE
from ._base import ClaimSpec, Measurement
from ._base import change as _change
from ._deep import (
    _DEEP_METRICS,
    _LAYER_METRICS,
    _figure_layers,
    _layer_errors,
    _layer_names,
)
from ._shared import (
    _grid_points,
    _mean,
    _saturation_gate,
)

__all__ = ["CLAIM", "GAP_METRICS", "Z_FLOOR"]

#: claim 7e: two-sided 95 % normal quantile for the paired standard errors (delta method over
#: the windows, tens of windows per cell; the name is kept from when it multiplied noise floors)
Z_FLOOR = 1.959963984540054

#: the per-layer metrics of the paired comparison (docs/theory.md §8a; sgdfluct.analysis.paired)
GAP_METRICS = (
    "layers.layer_*.gap_continuum_minus_renormalized",
    "layers.layer_*.gap_continuum_minus_renormalized_stderr",
    "layers.layer_*.rel_error_continuum_stderr",
)


def _measure_finite_eta(ds: xr.Dataset) -> Measurement:
    rows: list[dict[str, Any]] = []
    parts: list[str] = []
    points = _grid_points(ds)
    etas = ds["sgd.learning_rate"].values.astype(float)
    errors = [_layer_errors(sub) for _, sub in points]
    layers = _layer_names(ds)
    for (label, sub), err in zip(points, errors, strict=True):
        row: dict[str, Any] = {"cell": label, **err}
        for layer in layers:
            key = f"layers.{layer}"
            # continuum error - best theory's error, both against the same simulated Σ: the
            # paired standard error (most of the simulation's noise cancels in the difference)
            gap = _mean(sub, f"{key}.gap_continuum_minus_renormalized")
            half = Z_FLOOR * _mean(sub, f"{key}.gap_continuum_minus_renormalized_stderr")
            parts.append(interval_verdict(gap - half, gap + half, above=0.0))
            row[f"{layer}_gap_continuum_minus_best"] = {
                "value": gap,
                "ci": [gap - half, gap + half],
                "noise_floor (former half-width / 1.96)": err[layer]["noise_floor"],
            }
        rows.append(row)
    for layer in layers:
        cont = np.array([e[layer]["continuum"] for e in errors])
        se = np.array(
            [_mean(sub, f"layers.{layer}.rel_error_continuum_stderr") for _, sub in points]
        )
        # growth with eta: the continuum error at the largest eta minus that at the smallest;
        # two independent simulations, so their standard errors add in quadrature
        growth = cont[-1] - cont[0]
        half = Z_FLOOR * float(np.hypot(se[-1], se[0]))
        parts.append(interval_verdict(growth - half, growth + half, above=0.0))
        exponent, *_ = loglog_slope(etas, cont)
        rows.append(
            {
                "cell": f"{layer}: continuum error growth from eta = {etas[0]:g} to {etas[-1]:g}",
                "growth": {"value": growth, "ci": [growth - half, growth + half]},
                "log-log slope": exponent,
            }
        )
    verdict, gate = _saturation_gate(ds, combine(parts))
    return Measurement(
        measured={"cells": rows, "saturation": gate},
        verdict=verdict,
        details=(
            "Two-layer network at several learning rates, one data seed. Holds if in every layer "
            "and at every eta the gap (continuum error - best discrete-time theory's error) has "
            f"its interval gap ± {Z_FLOOR:.2f} paired standard errors above 0, and the continuum "
            "error grows from the smallest to the largest eta (interval of the difference, the "
            "two simulations' standard errors combined, above 0); fails if an interval lies "
            "below 0. Both errors of a gap are measured against the same simulated covariance, "
            "so its standard error is the paired one: the difference linearized in the "
            "simulated covariance, its scatter over the quasi-stationary windows "
            "(sgdfluct.analysis.paired); a single error's noise floor, used before, counts the "
            "shared noise twice instead of letting it cancel."
        ),
    )


CLAIM = ClaimSpec(
    seed_note="one data seed per cell: decided by the paired within-run standard errors",
    id="7e_finite_learning_rate",
    statement="Beyond the paper: at finite learning rates the paper's continuum linearization "
    "misses the simulation increasingly with eta; the discrete-time theory stays closer.",
    expected="continuum error - best error > 0 (± 1.96 paired standard errors) at every eta; "
    "continuum error grows from the smallest to the largest eta",
    sweep="two_layer_small",
    measure=_measure_finite_eta,
    figure=_figure_layers,
    metrics=(*_DEEP_METRICS, *_LAYER_METRICS, *GAP_METRICS),
    rule="holds if in every layer and at every eta the interval gap ± 1.96 paired standard "
    "errors of (continuum error - best theory's error, both against the same simulated Σ) lies "
    "above 0, and the interval of the continuum error's growth from the smallest to the "
    "largest eta (the two simulations' standard errors in quadrature) lies above 0, and every "
    "cell saturated; fails if any interval lies below 0",
    rule_history=(
        _change(
            "Rewritten after it failed at eta = 0.05: from 'the continuum error exceeds the "
            "best theory's by > 2 noise floors at every eta and grows with eta' to point "
            "comparisons (continuum > 2 floors at the largest eta, errors ordered).",
            date="2026-11-28 11:55",
        ),
        _change(
            "Put back on intervals (issue 11): the gap at every eta and the growth, each with "
            "its interval from the noise floors."
        ),
        _GATE_CHANGE,
        _change(
            "Paired standard errors (issue 18): the gap's interval used a single error's noise "
            "floor as the standard error of a difference of two errors measured against the "
            "same simulated Σ (0.030 [-0.0003, 0.060] at eta = 0.05, layer 1); now the delta "
            "method over the windows gives the paired standard error, and the growth uses each "
            "continuum error's own standard error instead of its floor. Made after the quick "
            "data had been seen.",
            date="2026-12-02",
        ),
    ),
)
