"""Claim 7f: a depth-3 linear network (docs/theory.md §10.7)."""

from __future__ import annotations

import xarray as xr
from matplotlib.figure import Figure

from sgdfluct.experiments.verdicts import combine

from ._base import GATE_CHANGE as _GATE_CHANGE
from ._base import ClaimSpec, Measurement, SeedPlan, SweepDef
from ._base import change as _change
from ._deep import (
    _DEEP_METRICS,
    _LAYER_METRICS,
    _NULL_METRICS,
    _figure_layers,
    _layers_measurement,
)
from ._ivfr import (
    _IVFR_METRICS,
    _measure_ivfr,
)
from ._shared import _saturation_gate
from ._sweeps import _WIDE, _merge, length_factor

__all__ = ["CLAIM", "SEED_PLAN", "sweeps"]


def _measure_depth_three(ds: xr.Dataset) -> Measurement:
    layers_part = _layers_measurement(ds, None)
    ivfr_part = _measure_ivfr(ds)
    verdict, gate = _saturation_gate(ds, combine([layers_part.verdict, ivfr_part.verdict]))
    return Measurement(
        measured={
            **layers_part.measured,
            "ivfr_simulation": ivfr_part.measured["simulation"],
            "ivfr_theory_best": ivfr_part.measured["theory_best"],
            "saturation": gate,
        },
        verdict=verdict,
        details=layers_part.details
        + " IVFR per layer as claim 6; holds only if psi > 0 in the last layer too.",
    )


def _figure_depth_three(ds: xr.Dataset) -> Figure:
    return _figure_layers(ds)


def sweeps(scale: str) -> tuple[SweepDef, ...]:
    """This claim's sweeps at ``scale`` ("quick", "full"; "smoke" shrinks them later)."""
    full = scale == "full"
    k = length_factor(scale)
    return (
        SweepDef(
            name="depth_three",
            base=_merge(_WIDE, model={"depth": 3, "hidden": 5}, sgd={"steps": 300_000 * k}),
            replicates=5 if full else 3,
        ),
    )


#: the power calculation of the full scale's seeds (issue 18; docs/theory.md §10, "Exploratory
#: and confirmatory scales")
SEED_PLAN = SeedPlan(
    quantity="per-seed psi_3 (last layer)",
    quick_sd=0.0479,
    quick_seeds=3,
    target_half_width=0.0485,
    source="README's quick table of 2026-11-28 (interval half-width -> sd; 2-digit rounding)",
    reason="half the distance of the quick psi_3 0.097 from the threshold 0",
)


CLAIM = ClaimSpec(
    seed_plan=SEED_PLAN,
    id="7f_depth_three",
    statement="Beyond the paper: a depth-3 linear network (20-5-5-5) — null space of N_h^2 "
    "per hidden layer, linearized theory vs simulation per layer, and the IVFR.",
    expected="null dim = 2 N_h^2 = 50; best theory within the error target per layer; psi > "
    "0 in the last layer",
    sweep="depth_three",
    measure=_measure_depth_three,
    figure=_figure_depth_three,
    metrics=(*_DEEP_METRICS, *_LAYER_METRICS, *_NULL_METRICS, *_IVFR_METRICS),
    rule="holds if the claim-5 rule holds in every cell and the seed interval of psi in the "
    "last layer lies above 0; fails if any part fails",
    rule_history=(
        _GATE_CHANGE,
        _change("Widths 20-5-5-5 (enough directions per layer) and the IVFR part added."),
    ),
)
