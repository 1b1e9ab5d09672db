"""Estimators on simulation output (never imports the engine; uses theory only for geometry).

Single layer: relative errors with noise floors, probability currents from lag-1 statistics.
Depth >= 2: the aligned, range-projected, pooled covariance measurement of docs/theory.md §8a.
"""

from sgdfluct.analysis.alignment import (
    MeasuredCovariance,
    align_snapshots,
    detect_saturation,
    measure_layered_covariance,
)
from sgdfluct.analysis.single_layer import (
    RelativeError,
    current_from_lag1,
    relative_frobenius_error,
)

__all__ = [
    "MeasuredCovariance",
    "RelativeError",
    "align_snapshots",
    "current_from_lag1",
    "detect_saturation",
    "measure_layered_covariance",
    "relative_frobenius_error",
]
