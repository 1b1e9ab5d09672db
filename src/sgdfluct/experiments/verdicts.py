"""Turning measurements with uncertainties into verdicts ("holds" / "fails" / "inconclusive").

Every rule compares a confidence interval with a threshold fixed in the claim's spec before the
measurement; nothing here knows which answer is expected.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = [
    "Z95",
    "combine",
    "interval_verdict",
    "loglog_slope",
    "mean_interval",
]

#: two-sided 95 % normal quantile
Z95 = 1.959963984540054

HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"


def interval_verdict(
    lo: float, hi: float, *, above: float | None = None, below: float | None = None
) -> str:
    """Verdict of "the quantity is above ``above``" (or below ``below``) from its interval.

    ``holds`` if the whole interval is on the claimed side, ``fails`` if the whole interval is on
    the other side, ``inconclusive`` otherwise (or if the interval is not finite).
    """
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return INCONCLUSIVE
    if (above is None) == (below is None):
        raise ValueError("give exactly one of above= or below=")
    if above is not None:
        return HOLDS if lo > above else FAILS if hi <= above else INCONCLUSIVE
    assert below is not None
    return HOLDS if hi < below else FAILS if lo >= below else INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """All parts hold -> holds; any part fails -> fails; otherwise inconclusive."""
    if any(v == FAILS for v in verdicts):
        return FAILS
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    return INCONCLUSIVE


def mean_interval(values: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """Mean and 95 % t-interval of independent replicate values (NaNs dropped).

    With a single value the interval is infinite (no error bar can be formed).
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("-inf"), float("inf")
    m = float(v.mean())
    if v.size < 2:
        return m, float("-inf"), float("inf")
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return m, m - half, m + half


def loglog_slope(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
) -> tuple[float, float, float]:
    """OLS slope of ``log y`` on ``log x`` with its 95 % t-interval (all points, NaNs dropped)."""
    lx = np.log(np.asarray(x, dtype=float).ravel())
    ly = np.log(np.asarray(y, dtype=float).ravel())
    keep = np.isfinite(lx) & np.isfinite(ly)
    lx, ly = lx[keep], ly[keep]
    if lx.size < 3 or np.ptp(lx) == 0:
        return float("nan"), float("-inf"), float("inf")
    fit = stats.linregress(lx, ly)
    half = float(stats.t.ppf(0.975, lx.size - 2) * fit.stderr)
    return float(fit.slope), float(fit.slope - half), float(fit.slope + half)
