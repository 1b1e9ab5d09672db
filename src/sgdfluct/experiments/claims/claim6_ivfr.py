"""Claim 6: the IVFR of the two-layer network at the paper's width (docs/theory.md §10.6).

Reads the sweep of claim 5b (``two_layer_wide``).
"""

from __future__ import annotations

from typing import Any

import xarray as xr

from sgdfluct.errors import MeasurementError
from sgdfluct.experiments.verdicts import (
    combine,
    interval_verdict,
    seed_interval,
)

from ._base import GATE_CHANGE as _GATE_CHANGE
from ._base import SEED_CHANGE as _SEED_CHANGE
from ._base import ClaimSpec, Measurement, SeedPlan
from ._base import change as _change
from ._deep import _DEEP_METRICS
from ._ivfr import (
    _IVFR_METRICS,
    _figure_ivfr,
    _ivfr_entry,
    _ivfr_verdict,
    _measure_ivfr,
)
from ._shared import (
    _saturation_gate,
    _values,
)

__all__ = ["CLAIM", "PAPER_WIDTH", "SEED_PLAN"]

#: claim 6 is the paper's configuration (N_i = 20, N_h = N_o = 5); 7b reports every width
PAPER_WIDTH = 5


def _paired(sub: xr.Dataset, a: str, b: str) -> Any:
    """Seed interval of the per-seed difference ``a - b`` (paired by data seed)."""
    return seed_interval((_values(sub, a) - _values(sub, b)).ravel())


def _measure_ivfr_paper_width(ds: xr.Dataset) -> Measurement:
    if PAPER_WIDTH not in ds["model.hidden"].values:
        raise MeasurementError(f"claim 6 needs model.hidden = {PAPER_WIDTH} in the sweep's grid")
    sub = ds.sel({"model.hidden": [PAPER_WIDTH]})
    base = _measure_ivfr(sub)
    (row,) = base.measured["simulation"]
    single = _paired(sub, "ivfr.layer_2.psi", "ivfr_single_layer_same_data.layer_1.psi")
    layer_gap = _paired(sub, "ivfr.layer_2.psi", "ivfr.layer_1.psi")
    single_psi = _ivfr_entry(sub, "ivfr_single_layer_same_data.layer_1")
    measured = {
        **base.measured,
        "psi_layer2_minus_layer1": layer_gap.to_json(),
        "psi_single_layer_same_data": single_psi,
        "psi_layer2_minus_single_layer": single.to_json(),
    }
    parts = [
        _ivfr_verdict(row.get("layer_2")),
        interval_verdict(layer_gap.lo, layer_gap.hi, above=0.0),
        interval_verdict(single.lo, single.hi, above=0.0),
    ]
    verdict, _ = _saturation_gate(sub, combine(parts))
    return Measurement(
        measured=measured,
        verdict=verdict,
        details=base.details
        + " Claim 6 (N_h = 5): psi_2 > 0; strongest in layer 2 (per-seed psi_2 - psi_1 above 0); "
        "and larger than in a single layer trained on the same data (per-seed psi_2 - "
        "psi_single above 0; the single layer's covariance from the exact discrete-time theory "
        "at W*). All three by t-intervals over data seeds.",
    )


#: the power calculation of the full scale's seeds (issue 18; docs/theory.md §10, "Exploratory
#: and confirmatory scales")
SEED_PLAN = SeedPlan(
    quantity="per-seed psi_2 - psi_1 at N_h = 5 (the noisiest of its three intervals)",
    quick_sd=0.0474,
    quick_seeds=5,
    target_half_width=0.0425,
    source=(
        "reproduce --quick --only 7a --only 7b, 2026-12-02, claim 6's rule on its "
        "two_layer_wide sweep (0.085 [0.026, 0.144])"
    ),
    reason="half the distance of the quick psi_2 - psi_1 = 0.085 from the threshold 0",
)


CLAIM = ClaimSpec(
    seed_plan=SEED_PLAN,
    id="6_two_layer_ivfr",
    statement="Two layers: anisotropic fluctuations from the inter-layer coupling and the "
    "IVFR (psi > 0), strongest in layer 2, unlike a single layer on the same data.",
    expected="psi_2 > 0; psi_2 > psi_1; psi_2 > psi of the single layer on the same data",
    sweep="two_layer_wide",
    measure=_measure_ivfr_paper_width,
    figure=_figure_ivfr,
    metrics=(
        *_DEEP_METRICS,
        *_IVFR_METRICS,
        "ivfr.layer_1.psi",
        "ivfr.layer_2.psi",
        "ivfr_single_layer_same_data.layer_1.psi",
    ),
    rule="at N_h = 5: holds if the seed intervals of psi_2, of the per-seed psi_2 - psi_1 and "
    "of the per-seed psi_2 - psi(single layer, same data) all lie above 0 and every cell "
    "saturated; fails if any lies below 0",
    rule_history=(
        _change(
            "Restricted to the paper's width N_h = 5 and 'strongest in layer 2' (psi_2 - "
            "psi_1 > 0) added.",
            date="2026-11-28 11:55",
        ),
        _SEED_CHANGE,
        _GATE_CHANGE,
        _change(
            "Contrast with a single layer trained on the same data added (docs/theory.md §10.6)."
        ),
    ),
)
