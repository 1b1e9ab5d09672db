"""Claim 7a: the IVFR in layer 2 for several output dimensions N_o (docs/theory.md §10.7).

Design (2026-12-02): N_h = 6 and N_o = 3, 4, 6, so that layer 2 keeps N_o^2 >= 9 live directions
after any surplus units die (N_o = 6: none). The earlier grid N_o = 1, 2, 3 at N_h = 5 could not
test layer 2: from a random start the surplus units die and with N_o = 1 layer 2 keeps one live
direction, so the rule silently tested layer 1 there.
"""

from __future__ import annotations

from ._base import GATE_CHANGE as _GATE_CHANGE
from ._base import SEED_CHANGE as _SEED_CHANGE
from ._base import ClaimSpec, SeedPlan, SweepDef
from ._base import change as _change
from ._deep import _DEEP_METRICS
from ._ivfr import (
    _IVFR_METRICS,
    IVFR_PRACTICAL_MARGIN,
    _figure_ivfr,
    _measure_ivfr_margin,
    _rule_ivfr_margin,
)
from ._sweeps import _WIDE, _merge, length_factor

__all__ = ["CLAIM", "OUTPUTS_HIDDEN", "OUTPUT_DIMS", "SEED_PLAN", "sweeps"]

#: claim 7a: hidden width of the design and the output dimensions of its grid (layer 2 keeps
#: N_o^2 live directions: 9, 16, 36)
OUTPUTS_HIDDEN = 6
OUTPUT_DIMS = (3, 4, 6)


def sweeps(scale: str) -> tuple[SweepDef, ...]:
    """This claim's sweeps at ``scale`` ("quick", "full"; "smoke" shrinks them later)."""
    full = scale == "full"
    k = length_factor(scale, seed_limited=True)
    return (
        SweepDef(
            name="two_layer_outputs",
            base=_merge(_WIDE, model={"hidden": OUTPUTS_HIDDEN}, sgd={"steps": 300_000 * k}),
            grid={"data.n_out": OUTPUT_DIMS},
            replicates=8 if full else 5,
        ),
    )


#: the power calculation of the full scale's seeds (issue 18; docs/theory.md §10, "Exploratory
#: and confirmatory scales")
SEED_PLAN = SeedPlan(
    quantity="per-seed psi_2 at N_o = 4 (the point that needs the most seeds)",
    quick_sd=0.0778,
    quick_seeds=5,
    target_half_width=0.047,
    source=(
        "reproduce --quick --only 7a --only 7b, 2026-12-02 (new design; N_o = 4: 0.094 "
        "[-0.003, 0.190])"
    ),
    reason="half the distance of the quick psi_2 = 0.094 at N_o = 4 from the threshold 0",
)


CLAIM = ClaimSpec(
    seed_plan=SEED_PLAN,
    id="7a_ivfr_outputs",
    statement=f"Beyond the paper: IVFR in layer 2 of the two-layer network (N_i = 20, N_h = "
    f"{OUTPUTS_HIDDEN}) for several output dimensions N_o = "
    f"{', '.join(map(str, OUTPUT_DIMS))} (layer 2 keeps N_o^2 >= 9 live directions). N_o = 1 "
    "cannot be tested in layer 2: after the surplus units die it keeps one live direction.",
    expected=f"psi_2 > 0 for every N_o (no grid point shown below {IVFR_PRACTICAL_MARGIN})",
    sweep="two_layer_outputs",
    measure=_measure_ivfr_margin,  # layer 2
    figure=_figure_ivfr,
    metrics=(*_DEEP_METRICS, *_IVFR_METRICS, "ivfr.layer_2.psi"),
    rule=_rule_ivfr_margin("layer 2"),
    rule_history=(
        _SEED_CHANGE,
        _GATE_CHANGE,
        _change("N_o = 1 added; the tested layer is the last with a psi fit."),
        _change(
            "Redesigned (issue 18): with N_o = 1 layer 2 keeps one live direction once the "
            "surplus units die, so the rule had silently tested layer 1. Now N_h = "
            f"{OUTPUTS_HIDDEN}, N_o = {', '.join(map(str, OUTPUT_DIMS))} (N_o^2 >= 9 live "
            "directions in layer 2), always layer 2 (no fit: inconclusive), and the rule of 7b: "
            f"a practical-size margin {IVFR_PRACTICAL_MARGIN} for `fails` with Holm's "
            "correction over the grid points. Made after the quick data of the old design had "
            "been seen; the new cells had not been run.",
            date="2026-12-02",
        ),
    ),
)
