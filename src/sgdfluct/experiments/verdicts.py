"""Turning measurements with uncertainties into verdicts ("holds" / "fails" / "inconclusive").

Every rule compares a confidence interval with a threshold stated in the claim's spec (its
``rule``; whether a threshold was set or changed after a look at the data is recorded in the
claim's ``rule_history``); nothing here knows which answer is expected. The data seed is the
replication unit: :func:`seed_interval` is the one aggregation over seeds (docs/theory.md §10).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "FAILS",
    "HOLDS",
    "INCONCLUSIVE",
    "Z95",
    "SeedInterval",
    "combine",
    "equivalence_power",
    "equivalence_verdict",
    "holm",
    "interval_verdict",
    "loglog_slope",
    "mean_interval",
    "seed_interval",
    "seeds_for_half_width",
    "t_pvalue_below",
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


# ----------------------------------------------------------------------------------------------
# Replication over data seeds and equivalence tests (docs/theory.md §10)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeedInterval:
    """Mean over data seeds (the replication unit) with its t-interval and heterogeneity.

    Attributes
    ----------
    mean, lo, hi : float
        Mean of the per-seed values and its two-sided t-interval (``n - 1`` degrees of freedom);
        infinite with fewer than two seeds.
    n : int
        Number of seeds with a finite value.
    sd : float
        Standard deviation between seeds (NaN for n < 2).
    heterogeneity : dict
        ``i2`` (share of the between-seed scatter not explained by the per-seed standard
        errors, Higgins' I²), ``q`` (Cochran's Q) and ``p`` (its chi² p-value); all None when
        no per-seed standard errors were given.
    """

    mean: float
    lo: float
    hi: float
    n: int
    sd: float
    heterogeneity: dict[str, float | None]

    def to_json(self) -> dict[str, Any]:
        """``{"value", "ci", "n_seeds", "sd_between_seeds", "heterogeneity"}``."""

        def f(x: float) -> float | None:
            return float(x) if np.isfinite(x) else None

        return {
            "value": f(self.mean),
            "ci": [f(self.lo), f(self.hi)],
            "n_seeds": self.n,
            "sd_between_seeds": f(self.sd),
            "heterogeneity": self.heterogeneity,
        }


def seed_interval(
    values: Sequence[float] | np.ndarray,
    stderr: Sequence[float] | np.ndarray | None = None,
    *,
    level: float = 0.95,
) -> SeedInterval:
    """One aggregation over data seeds for every claim: t-interval of the per-seed values.

    Parameters
    ----------
    values : array
        One value per data seed (non-finite values are dropped, with their standard errors).
    stderr : array, optional
        Per-seed standard errors (e.g. bootstrap); used only for the heterogeneity statistics,
        never for the interval (the seeds' scatter already contains the within-seed noise).
    level : float
        Two-sided confidence level.

    Returns
    -------
    SeedInterval

    Examples
    --------
    >>> r = seed_interval([1.0, 2.0, 3.0])
    >>> round(r.mean, 3), round(r.hi - r.mean, 3), r.n
    (2.0, 2.484, 3)
    """
    v = np.asarray(values, dtype=float).ravel()
    se = None if stderr is None else np.asarray(stderr, dtype=float).ravel()
    if se is not None and se.shape != v.shape:
        raise ValueError(f"stderr has shape {se.shape}, values {v.shape}")
    keep = np.isfinite(v)
    v = v[keep]
    se = None if se is None else se[keep]
    n = int(v.size)
    het: dict[str, float | None] = {"i2": None, "q": None, "p": None}
    if n == 0:
        return SeedInterval(float("nan"), float("-inf"), float("inf"), 0, float("nan"), het)
    mean = float(v.mean())
    if n < 2:
        return SeedInterval(mean, float("-inf"), float("inf"), 1, float("nan"), het)
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n))
    if se is not None and np.all(np.isfinite(se)) and np.all(se > 0):
        w = 1.0 / se**2
        pooled = float(np.sum(w * v) / np.sum(w))
        q = float(np.sum(w * (v - pooled) ** 2))
        het = {
            "i2": float(max(0.0, (q - (n - 1)) / q)) if q > 0 else 0.0,
            "q": q,
            "p": float(stats.chi2.sf(q, n - 1)),
        }
    return SeedInterval(mean, mean - half, mean + half, n, sd, het)


def equivalence_verdict(lo: float, hi: float, *, delta: float) -> str:
    """Verdict of "the quantity is within ``±delta`` of 0" from its interval (TOST-style).

    ``holds`` if the interval lies inside ``(-delta, delta)``, ``fails`` if it lies entirely
    outside (above ``delta`` or below ``-delta``), ``inconclusive`` otherwise.
    """
    if not delta > 0:
        raise ValueError(f"delta = {delta!r}: expected a number > 0")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return INCONCLUSIVE
    if -delta < lo and hi < delta:
        return HOLDS
    if lo >= delta or hi <= -delta:
        return FAILS
    return INCONCLUSIVE


def equivalence_power(
    sd: float,
    n: int,
    delta: float,
    *,
    true_value: float = 0.0,
    level: float = 0.95,
    draws: int = 200_000,
    seed: int = 0,
) -> float:
    """Probability that :func:`equivalence_verdict` on a :func:`seed_interval` says ``holds``.

    The per-seed values are modelled as ``N(true_value, sd^2)``; the probability is estimated
    from ``draws`` simulated experiments of ``n`` seeds (Monte Carlo error below 0.002 for the
    default). Used to size claim 3's equivalence test before measuring it.
    """
    if n < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    mean = rng.normal(true_value, sd / np.sqrt(n), size=draws)
    s = sd * np.sqrt(rng.chisquare(n - 1, size=draws) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * s / np.sqrt(n)
    return float(np.mean((mean - half > -delta) & (mean + half < delta)))


# ----------------------------------------------------------------------------------------------
# Multiplicity and planning (docs/theory.md §10: exploratory and confirmatory scales)
# ----------------------------------------------------------------------------------------------
def t_pvalue_below(values: Sequence[float] | np.ndarray, bound: float) -> float:
    """One-sided p-value of ``H0: mean >= bound`` against ``mean < bound`` (one-sample t-test).

    The per-seed ``values`` (non-finite ones dropped) are the replication unit, as in
    :func:`seed_interval`; with fewer than two values (or zero spread) no test can be made and
    the p-value is 1 (zero spread with every value below ``bound``: 0).

    Examples
    --------
    >>> round(t_pvalue_below([-0.02, -0.01, 0.0, -0.015, -0.005], 0.05), 6)
    3.5e-05
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size < 2:
        return 1.0
    sd = float(v.std(ddof=1))
    if sd == 0.0:
        return 0.0 if float(v.mean()) < bound else 1.0
    t = (float(v.mean()) - bound) / (sd / np.sqrt(v.size))
    return float(stats.t.cdf(t, v.size - 1))


def holm(pvalues: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down procedure: which of ``m`` hypotheses are rejected at family-wise level
    ``alpha`` (Holm 1979, Scand. J. Statist. 6, 65-70).

    The ``k``-th smallest p-value (``k = 1..m``) is rejected if it and every smaller one satisfy
    ``p_(j) <= alpha / (m - j + 1)``. "Some hypothesis rejected" is the same event as for
    Bonferroni (``min p <= alpha / m``); Holm rejects more of the others.

    Examples
    --------
    >>> holm([0.001, 0.04, 0.03], alpha=0.05)
    [True, False, False]
    >>> holm([0.001, 0.02, 0.024], alpha=0.05)
    [True, True, True]
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha = {alpha!r}: expected a number in (0, 1)")
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    reject = [False] * m
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        if not p[i] <= alpha / (m - rank):
            break
        reject[int(i)] = True
    return reject


def seeds_for_half_width(
    sd: float, half_width: float, *, level: float = 0.95, minimum: int = 3, cap: int = 40
) -> int:
    """Seeds needed for a :func:`seed_interval` of half-width at most ``half_width``.

    The smallest ``n`` in ``[minimum, cap]`` with ``t_{(1+level)/2, n-1} sd / sqrt(n) <=
    half_width``, planning on the between-seed standard deviation ``sd`` of an exploratory run;
    ``cap`` when even ``cap`` seeds are not enough (the interval then stays wider than asked: the
    caller reports the half-width it will reach).

    Examples
    --------
    >>> seeds_for_half_width(0.1, 0.05)
    18
    >>> seeds_for_half_width(1.0, 0.01, cap=40)
    40
    """
    if not (np.isfinite(sd) and sd >= 0):
        raise ValueError(f"sd = {sd!r}: expected a finite number >= 0")
    if not half_width > 0:
        raise ValueError(f"half_width = {half_width!r}: expected a number > 0")
    if not 2 <= minimum <= cap:
        raise ValueError(f"minimum = {minimum!r}, cap = {cap!r}: expected 2 <= minimum <= cap")
    for n in range(minimum, cap + 1):
        if stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n) <= half_width:
            return n
    return cap
