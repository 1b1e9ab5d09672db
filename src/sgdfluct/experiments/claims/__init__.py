"""Declarative specs of the claims of docs/theory.md §10: what to sweep, measure and decide.

One module per claim (``claim1_spectra`` … ``claim8_probe``): its sweep definitions
(``sweeps(scale)``), its measurement, its rule constants, its rule in words, its ``rule_history``
and its figure, gathered in its ``CLAIM``. Shared pieces live in private modules: the types and
the registry (:mod:`._base`), the sweeps' base configs and scales (:mod:`._sweeps`), reading
metrics, aggregation over data seeds, the saturation gate and figure helpers (:mod:`._shared`),
the depth >= 2 layer and null-space pieces (:mod:`._deep`) and the IVFR pieces (:mod:`._ivfr`).

Each :class:`ClaimSpec` names a sweep (a base config and a grid, run through
:func:`sgdfluct.experiments.sweep.run_sweep` with the ordinary ``run`` pipeline in every cell), the
metrics it reads (``metrics``: a missing one raises :class:`~sgdfluct.errors.MeasurementError`,
never a silent NaN), a ``measure`` function that returns the measured numbers with their
uncertainties and the verdict, a ``figure`` function, its decision ``rule`` in words and the
``rule_history``: every change of a rule, with whether it was made after a look at the data.
Claim 8 (the probe on a nonlinear network) is a :class:`StandaloneClaim`: it measures itself.

Not every threshold here was fixed before any measurement: the rules of claims 5, 6, 7e and 7g were
changed after earlier reproductions had been seen, and every rule was revised once more for the
science issue (seed t-intervals, saturation gate, equivalence test, null space at the reached
minimum); ``rule_history`` records each change. Verdicts come from :mod:`.verdicts`; the data seed
is the replication unit (:func:`~sgdfluct.experiments.verdicts.seed_interval` for every claim).
Depth >= 2 claims are gated by the saturation detector: a cell that did not reach the
quasi-stationary phase turns a ``holds`` into ``inconclusive``.

Sweeps are shared between claims where the same cells serve several claims; a sweep's cells are
computed once (and resumed after an interruption).

Adding a claim: write ``claimN_name.py`` with a ``CLAIM`` (and ``sweeps(scale)`` if it needs a
sweep of its own), then add it to ``_MODULES`` below (one line).
"""

from __future__ import annotations

import importlib
from typing import Any

from ._base import (
    FULL_SEED_CAP,
    ClaimRegistry,
    ClaimSpec,
    Measurement,
    SeedPlan,
    StandaloneClaim,
    SweepDef,
    require_metrics,
)
from ._deep import NULL_SPACE_ATOL
from ._shared import FAIL_MULTIPLE, LAYER_ERROR_TARGET, MATCH_MULTIPLE, tidy_log_axes
from ._sweeps import SCALES
from .claim2_balance import COMMUTATOR_MIN
from .claim3_isotropy import (
    ANISOTROPY_MIN,
    CLAIM3_PILOT_SD,
    CLAIM3_SEEDS,
    CURVATURE_CV_FRACTION,
    IVFR_EQUIVALENCE_DELTA,
)
from .claim4_exact_theory import ETA_SLOPE_RANGE
from .claim6_ivfr import PAPER_WIDTH
from .claim7e_finite_eta import Z_FLOOR
from .claim7g2_interpolation import END_POINT_FAIL, END_POINT_RTOL
from .claim7g_double_descent import TEST_LOSS_FLUCTUATION_MARGIN

__all__ = [
    "ANISOTROPY_MIN",
    "CLAIM3_PILOT_SD",
    "CLAIM3_SEEDS",
    "CLAIMS",
    "COMMUTATOR_MIN",
    "CURVATURE_CV_FRACTION",
    "END_POINT_FAIL",
    "END_POINT_RTOL",
    "ETA_SLOPE_RANGE",
    "FAIL_MULTIPLE",
    "FULL_SEED_CAP",
    "IVFR_EQUIVALENCE_DELTA",
    "LAYER_ERROR_TARGET",
    "MATCH_MULTIPLE",
    "NULL_SPACE_ATOL",
    "PAPER_WIDTH",
    "REGISTRY",
    "SCALES",
    "STANDALONE_CLAIMS",
    "TEST_LOSS_FLUCTUATION_MARGIN",
    "Z_FLOOR",
    "ClaimRegistry",
    "ClaimSpec",
    "Measurement",
    "SeedPlan",
    "StandaloneClaim",
    "SweepDef",
    "require_metrics",
    "seed_plan_table",
    "sweep_defs",
    "tidy_log_axes",
]

#: the claim modules in report order: adding a claim is one line here
_MODULES = (
    "claim1_spectra",
    "claim2_balance",
    "claim3_isotropy",
    "claim4_exact_theory",
    "claim5_linearized",
    "claim5b_null_widths",
    "claim6_ivfr",
    "claim7a_ivfr_outputs",
    "claim7b_ivfr_widths",
    "claim7cd_ivfr_inputs",
    "claim7e_finite_eta",
    "claim7f_depth_three",
    "claim7g_double_descent",
    "claim7g2_interpolation",
    "claim8_probe",
)

#: every claim of the reproduction
REGISTRY = ClaimRegistry(tuple(importlib.import_module(f"{__name__}.{m}") for m in _MODULES))
#: the sweep claims, in report order
CLAIMS: tuple[ClaimSpec, ...] = REGISTRY.claims
#: the claims that measure themselves (claim 8)
STANDALONE_CLAIMS: tuple[StandaloneClaim, ...] = REGISTRY.standalone


def sweep_defs(scale: str = "quick") -> dict[str, SweepDef]:
    """All sweeps of the reproduction at ``scale``.

    ``"quick"`` (minutes on 2 cores), ``"full"`` (10x longer simulations, N_i = 400 spectra, more
    seeds) or ``"smoke"`` (tiny sizes for the test suite: exercises the pipeline, its verdicts
    carry no weight).
    """
    return REGISTRY.sweep_defs(scale)


def seed_plan_table(registry: ClaimRegistry | None = None) -> list[dict[str, Any]]:
    """The power calculation of every claim: the seeds the full (confirmatory) scale gets.

    One row per claim: ``claim``, ``quantity``, ``quick_sd``, ``quick_seeds``,
    ``target_half_width``, ``full_seeds`` (:meth:`SeedPlan.full_seeds`, capped at
    :data:`FULL_SEED_CAP`), ``reached_half_width``, ``capped``, ``source``, ``reason``; for a claim
    without a plan the seeds its sweep runs at full scale and ``note`` (why seeds do not decide it).
    """
    reg = REGISTRY if registry is None else registry
    defs = reg.sweep_defs("full")
    rows: list[dict[str, Any]] = []
    every: list[ClaimSpec | StandaloneClaim] = [*reg.claims, *reg.standalone]
    for claim in every:
        plan = claim.seed_plan
        if plan is None:
            full = (
                defs[claim.sweep].replicates
                if isinstance(claim, ClaimSpec)
                else len(claim.seeds("full"))
                if claim.seeds
                else None
            )
            rows.append({"claim": claim.id, "full_seeds": full, "note": claim.seed_note})
            continue
        n = plan.full_seeds()
        rows.append(
            {
                "claim": claim.id,
                "quantity": plan.quantity,
                "quick_sd": plan.quick_sd,
                "quick_seeds": plan.quick_seeds,
                "target_half_width": plan.target_half_width,
                "full_seeds": n,
                "reached_half_width": plan.reached_half_width(),
                "capped": n == FULL_SEED_CAP and plan.reached_half_width() > plan.target_half_width,
                "source": plan.source,
                "reason": plan.reason,
            }
        )
    return rows
