"""Claim 5b: the Hessian null space at several hidden widths (docs/theory.md §10.5)."""

from __future__ import annotations

import xarray as xr

from sgdfluct.experiments.verdicts import combine

from ._base import ClaimSpec, Measurement, SweepDef
from ._base import change as _change
from ._deep import (
    _DEEP_METRICS,
    _NULL_METRICS,
    _figure_null_space,
    _null_space_part,
)
from ._shared import (
    _grid_points,
    _mean,
    _saturation_gate,
)
from ._sweeps import _WIDE, _merge, length_factor

__all__ = ["CLAIM", "sweeps"]


def _measure_null_space_widths(ds: xr.Dataset) -> Measurement:
    rows, parts = [], []
    for label, sub in _grid_points(ds):
        reached, v_reached = _null_space_part(sub, "null_space")
        built, v_built = _null_space_part(sub, "null_space_constructed")
        parts += [v_reached, v_built]
        rows.append(
            {
                "cell": label,
                "reached_minimum": {**reached, "verdict": v_reached},
                "constructed_point": {**built, "verdict": v_built},
                "surplus_units": {
                    "n_surplus": _mean(sub, "surplus_units.n_surplus"),
                    "death_step_mean": _mean(sub, "surplus_units.death_step")
                    if "surplus_units.death_step" in sub
                    else None,
                    "dead_hidden_units_mean": _mean(sub, "dead_hidden_units"),
                },
            }
        )
    verdict, gate = _saturation_gate(ds, combine(parts))
    return Measurement(
        measured={"cells": rows, "saturation": gate},
        verdict=verdict,
        details=(
            "N_i = 20, N_o = 5, N_h = 3, 5 (null space = N_h^2 exactly: the widths equal the "
            "product's rank) and N_h = 8 (surplus units: N_h (N_i + N_o) - N_i N_o = 100, an "
            "excess of 36 over N_h^2), every data seed, from the paper's random start. Holds if "
            "in every cell dim null(H) equals the closed form and dim null(C), with the symmetry "
            "directions inside, both at the minimum SGD reached and at the constructed balanced "
            "minimum, and every cell saturated. Whether the surplus units die, and when, is "
            "reported (death: Gram eigenvalue below 1 % of the largest)."
        ),
    )


def sweeps(scale: str) -> tuple[SweepDef, ...]:
    """This claim's sweeps at ``scale`` ("quick", "full"; "smoke" shrinks them later)."""
    full = scale == "full"
    k = length_factor(scale, seed_limited=True)
    return (
        SweepDef(
            name="two_layer_wide",
            base=_merge(_WIDE, sgd={"steps": 300_000 * k}),
            grid={"model.hidden": (3, 5, 8)},
            replicates=8 if full else 5,
        ),
    )


CLAIM = ClaimSpec(
    seed_note=(
        "exact integer dimensions in every cell; its sweep runs the seeds that claims 6 and 7b plan"
    ),
    id="5b_null_space_widths",
    statement="Two layers (N_i = 20, N_o = 5): the Hessian null space has dimension N_h^2 "
    "exactly at the minima SGD reaches when N_h equals the product's rank, and the predicted "
    "excess when N_h exceeds it (surplus units); the same at constructed points.",
    expected="N_h = 3, 5: 9, 25; N_h = 8: 100 (= 64 + 36)",
    sweep="two_layer_wide",
    measure=_measure_null_space_widths,
    figure=_figure_null_space,
    metrics=(*_DEEP_METRICS, *_NULL_METRICS, "dead_hidden_units", "surplus_units.n_surplus"),
    rule="holds if in every cell (width, data seed) dim null(H) equals the closed form and "
    "dim null(C), with the symmetry directions inside, at the reached and at the constructed "
    "minimum, and every cell saturated; fails if any cell differs",
    rule_history=(
        _change(
            "New claim, written after the 6-3-2 null space (12 = the closed form) had been "
            "seen; no cell of its own sweep had been run."
        ),
    ),
)
