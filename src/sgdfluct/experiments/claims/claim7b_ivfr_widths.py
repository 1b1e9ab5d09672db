"""Claim 7b: the IVFR for several hidden widths N_h (docs/theory.md §10.7).

Reads the sweep of claim 5b (``two_layer_wide``).
"""

from __future__ import annotations

from ._base import GATE_CHANGE as _GATE_CHANGE
from ._base import SEED_CHANGE as _SEED_CHANGE
from ._base import ClaimSpec
from ._deep import _DEEP_METRICS
from ._ivfr import (
    _IVFR_METRICS,
    _RULE_IVFR,
    _figure_ivfr,
    _measure_ivfr,
)

__all__ = ["CLAIM"]

CLAIM = ClaimSpec(
    id="7b_ivfr_widths",
    statement="Beyond the paper: IVFR for several hidden widths N_h (incl. N_h > N_o, "
    "surplus units from a random start).",
    expected="psi > 0 in layer 2 for every N_h",
    sweep="two_layer_wide",
    measure=_measure_ivfr,
    figure=_figure_ivfr,
    metrics=(*_DEEP_METRICS, *_IVFR_METRICS),
    rule=_RULE_IVFR,
    rule_history=(_SEED_CHANGE, _GATE_CHANGE),
)
