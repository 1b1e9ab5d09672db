"""Claim 7a: the IVFR for several output dimensions N_o (docs/theory.md §10.7)."""

from __future__ import annotations

from ._base import GATE_CHANGE as _GATE_CHANGE
from ._base import SEED_CHANGE as _SEED_CHANGE
from ._base import ClaimSpec, SweepDef
from ._base import change as _change
from ._deep import _DEEP_METRICS
from ._ivfr import (
    _IVFR_METRICS,
    _RULE_IVFR,
    _figure_ivfr,
    _measure_ivfr,
)
from ._sweeps import _WIDE, _merge, length_factor

__all__ = ["CLAIM", "sweeps"]


def sweeps(scale: str) -> tuple[SweepDef, ...]:
    """This claim's sweeps at ``scale`` ("quick", "full"; "smoke" shrinks them later)."""
    full = scale == "full"
    k = length_factor(scale)
    return (
        SweepDef(
            name="two_layer_outputs",
            base=_merge(_WIDE, sgd={"steps": 300_000 * k}),
            grid={"data.n_out": (1, 2, 3)},
            replicates=8 if full else 5,
        ),
    )


CLAIM = ClaimSpec(
    id="7a_ivfr_outputs",
    statement="Beyond the paper: IVFR in the two-layer network for several output "
    "dimensions N_o, including N_o = 1.",
    expected="psi > 0 for every N_o",
    sweep="two_layer_outputs",
    measure=_measure_ivfr,
    figure=_figure_ivfr,
    metrics=(*_DEEP_METRICS, *_IVFR_METRICS),
    rule=_RULE_IVFR,
    rule_history=(
        _SEED_CHANGE,
        _GATE_CHANGE,
        _change("N_o = 1 added; the tested layer is the last with a psi fit."),
    ),
)
