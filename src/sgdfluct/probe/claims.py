"""Claim 8 of the reproduction (docs/theory.md §11): kept here as an import path.

The claim lives in :mod:`sgdfluct.experiments.claims.claim8_probe` (one module per claim, like the
others); this module re-exports its public names.
"""

from __future__ import annotations

from sgdfluct.experiments.claims.claim8_probe import (
    CONFIDENCE,
    MIN_SEEDS,
    PSI_EQUIV,
    RULE,
    RULE_HISTORY,
    claim8_config,
    claim8_verdict,
    measure_claim8,
    t_interval,
)

__all__ = [
    "CONFIDENCE",
    "MIN_SEEDS",
    "PSI_EQUIV",
    "RULE",
    "RULE_HISTORY",
    "claim8_config",
    "claim8_verdict",
    "measure_claim8",
    "t_interval",
]
