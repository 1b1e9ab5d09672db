"""Claim 5: two layers, null space and the linearized theory per layer (docs/theory.md §10.5)."""

from __future__ import annotations

import xarray as xr

from ._base import GATE_CHANGE as _GATE_CHANGE
from ._base import ClaimSpec, Measurement, SweepDef
from ._base import change as _change
from ._deep import (
    _DEEP_METRICS,
    _LAYER_METRICS,
    _NULL_METRICS,
    _figure_layers,
    _layers_measurement,
)
from ._shared import (
    FAIL_MULTIPLE,
    LAYER_ERROR_TARGET,
    MATCH_MULTIPLE,
)
from ._sweeps import _TWO, _merge, length_factor

__all__ = ["CLAIM", "sweeps"]


def _measure_layers_small_eta(ds: xr.Dataset) -> Measurement:
    return _layers_measurement(ds, (0.05,))


def sweeps(scale: str) -> tuple[SweepDef, ...]:
    """This claim's sweeps at ``scale`` ("quick", "full"; "smoke" shrinks them later)."""
    k = length_factor(scale)
    return (
        SweepDef(
            name="two_layer_small",
            base=_merge(_TWO, sgd={"steps": 200_000 * k}),
            grid={"sgd.learning_rate": (0.05, 0.1)},
        ),
    )


CLAIM = ClaimSpec(
    seed_note=(
        "one data seed per cell: decided by each cell's within-run noise floor and exact "
        "null-space dimensions"
    ),
    id="5_two_layer_linearized_theory",
    statement="Two layers: null space of dimension N_h^2, drift along the symmetry orbit "
    "then saturation; linearized theory vs simulation per layer.",
    expected=f"null dim = closed form (N_h^2, or N_h(N_i+N_o) - N_iN_o with surplus units); "
    f"best theory within max({LAYER_ERROR_TARGET:.0%}, {MATCH_MULTIPLE} noise floors) per "
    "layer; saturated",
    sweep="two_layer_small",
    measure=_measure_layers_small_eta,
    figure=_figure_layers,
    metrics=(*_DEEP_METRICS, *_LAYER_METRICS, *_NULL_METRICS),
    rule=f"holds if the best theory's error is within max({LAYER_ERROR_TARGET:.0%}, "
    f"{MATCH_MULTIPLE} floors) in every layer (fails beyond max({LAYER_ERROR_TARGET:.0%}, "
    f"{FAIL_MULTIPLE} floors)), dim null(H) = closed form = dim null(C) with the symmetry "
    "directions inside at the reached minimum and, separately, at the constructed balanced "
    "minimum (fails otherwise), and every cell saturated (else at most inconclusive)",
    rule_history=(
        _change(
            "Null space tested at an exact minimum (the balanced one) instead of the window "
            "mean, which is only near a minimum.",
            date="2026-11-28 11:48",
        ),
        _GATE_CHANGE,
        _change(
            "Null space: equality with the closed-form dimension at the minimum reached from "
            "the random start, and separately at the constructed point (formerly only '>=' at "
            "the constructed point)."
        ),
    ),
)
