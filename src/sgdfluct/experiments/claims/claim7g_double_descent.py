"""Claim 7g: the test loss against alpha and its SGD fluctuation part (docs/theory.md §10.7)."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from sgdfluct.experiments.verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    combine,
    equivalence_verdict,
    seed_interval,
)

from ._base import ClaimSpec, Measurement, SeedPlan, SweepDef
from ._base import change as _change
from ._shared import (
    _errorbar,
    _new_figure,
    _per_axis,
    _values,
)
from ._sweeps import _SINGLE, _merge, length_factor

__all__ = ["CLAIM", "SEED_PLAN", "TEST_LOSS_FLUCTUATION_MARGIN", "sweeps"]

#: claim 7g: above alpha = 1 the simulated fluctuation part of the test loss must equal the theory
#: within this relative margin (seed interval of sim/theory - 1 inside (-margin, margin))
TEST_LOSS_FLUCTUATION_MARGIN = 0.1


def _measure_test_loss(ds: xr.Dataset) -> Measurement:
    p = ds["data.n_samples"].values.astype(float)
    n_in = float(ds.attrs.get("n_in", np.nan))
    alpha = p / n_in
    test = _values(ds, "test_loss_ref")  # (alpha, seed)
    fluct = _values(ds, "test_loss_fluctuation_theory")
    fluct_sim = _values(ds, "test_loss_fluctuation_sim")
    peak = int(np.nanargmax(np.nanmean(test, axis=1)))
    # double descent: the seed-averaged test loss peaks at one of the two grid points that
    # bracket alpha = 1, and in every seed that peak exceeds both ends of the alpha range
    below, above = np.flatnonzero(alpha < 1), np.flatnonzero(alpha > 1)
    bracket = {int(below[-1]), int(above[0])} if below.size and above.size else set()
    ends = np.maximum(test[0], test[-1])
    peak_verdict = (
        INCONCLUSIVE
        if not bracket or not np.isfinite(test[peak]).all()
        else HOLDS
        if peak in bracket and np.all(test[peak] > ends)
        else FAILS
        if peak not in bracket
        else INCONCLUSIVE
    )
    # above alpha = 1: simulated fluctuation part of the stationary SGD test loss vs theory
    fluct_rows, fluct_parts = [], []
    for i in np.flatnonzero(alpha > 1):
        with np.errstate(divide="ignore", invalid="ignore"):
            r = seed_interval(fluct_sim[i] / fluct[i] - 1.0)
        v = equivalence_verdict(r.lo, r.hi, delta=TEST_LOSS_FLUCTUATION_MARGIN)
        fluct_parts.append(v)
        fluct_rows.append(
            {"alpha": float(alpha[i]), "sim_over_theory_minus_1": r.to_json(), "verdict": v}
        )
    # below alpha = 1 the fluctuation part is zero by construction (no SGD noise at an
    # interpolating minimum): reported as a fact, not counted
    over = alpha < 1
    zero_fact = float(np.nanmax(np.abs(fluct[over]))) if over.any() else None
    verdict = combine([peak_verdict, combine(fluct_parts) if fluct_parts else INCONCLUSIVE])
    return Measurement(
        measured={
            "alpha": alpha.tolist(),
            "test_loss": _per_axis(ds, "data.n_samples", "test_loss_ref"),
            "test_loss_sgd_sim": _per_axis(ds, "data.n_samples", "test_loss_sgd"),
            "fluctuation_contribution_theory": _per_axis(
                ds, "data.n_samples", "test_loss_fluctuation_theory"
            ),
            "fluctuation_contribution_sim": _per_axis(
                ds, "data.n_samples", "test_loss_fluctuation_sim"
            ),
            "alpha_at_peak": float(alpha[peak]),
            "peak_verdict": peak_verdict,
            "fluctuation_sim_vs_theory_above_alpha_1": fluct_rows,
            "fluctuation_part_below_alpha_1 (zero by construction, not counted)": zero_fact,
            "max_fluctuation_fraction": float(np.nanmax(np.nanmean(fluct / test, axis=1))),
        },
        verdict=verdict,
        details=(
            "Test loss (independent test set) of the least-squares solution (minimum norm for "
            "alpha < 1) against alpha, and the fluctuation part ½ tr(H_test Σ) of the stationary "
            "SGD test loss, simulated (Σ from the simulation) and predicted (exact discrete-time "
            "Σ). Double descent holds if the seed-averaged test loss peaks at one of the two grid "
            "points bracketing alpha = 1 and, in every seed, exceeds the values at both ends of "
            "the alpha range (fails if the peak is elsewhere). Above alpha = 1 the simulated "
            "fluctuation part must equal the theory: per seed sim/theory - 1, its t-interval "
            f"over seeds inside ±{TEST_LOSS_FLUCTUATION_MARGIN} at every alpha (fails if "
            "entirely outside). Below alpha = 1 the start is the minimum-norm interpolating "
            "solution, where every per-sample gradient vanishes: the fluctuation part is zero by "
            "construction and is reported, not counted."
        ),
    )


def _figure_test_loss(ds: xr.Dataset) -> Figure:
    fig, (ax,) = _new_figure()
    n_in = float(ds.attrs.get("n_in", np.nan))
    alpha = ds["data.n_samples"].values.astype(float) / n_in
    _errorbar(ax, ds, "data.n_samples", "test_loss_ref", x=alpha, label="test loss at W*")
    _errorbar(ax, ds, "data.n_samples", "test_loss_sgd", x=alpha, label="test loss, SGD (sim)")
    _errorbar(
        ax,
        ds,
        "data.n_samples",
        "test_loss_fluctuation_theory",
        x=alpha,
        label="fluctuation part (theory)",
    )
    ax.axvline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("alpha = P / N_i")
    ax.set_ylabel("loss")
    ax.legend(fontsize="small")
    return fig


def sweeps(scale: str) -> tuple[SweepDef, ...]:
    """This claim's sweeps at ``scale`` ("quick", "full"; "smoke" shrinks them later)."""
    full = scale == "full"
    k = length_factor(scale)
    return (
        SweepDef(
            name="single_layer_test_loss",
            base=_merge(
                _SINGLE,
                data={"n_in": 50},
                sgd={
                    "learning_rate": 0.02,
                    "batch_size": 10,
                    "steps": 20_000 * k,
                    "burn_in": 2_000,
                    "replicas": 8,
                },
            ),
            grid={"data.n_samples": (25, 40, 60, 75, 100, 150, 250, 500)},
            replicates=5 if full else 3,
        ),
    )


#: the power calculation of the full scale's seeds (issue 18; docs/theory.md §10, "Exploratory
#: and confirmatory scales")
SEED_PLAN = SeedPlan(
    quantity="per-seed simulated / predicted fluctuation part - 1 at the noisiest alpha > 1",
    quick_sd=0.0173,
    quick_seeds=3,
    target_half_width=0.043,
    source=(
        "reproduce --quick --only 1 --only 2 --only 7g, 2026-12-02 (alpha = 1.2: -0.014 "
        "[-0.057, 0.029])"
    ),
    reason="half the distance of the quick -0.014 (alpha = 1.2) from the margin -0.1",
)


CLAIM = ClaimSpec(
    seed_plan=SEED_PLAN,
    id="7g_test_loss_double_descent",
    statement="Beyond the paper: the test loss vs alpha (double descent) and its SGD "
    "fluctuation contribution, simulated and predicted.",
    expected="test loss peaks at alpha ≈ 1; simulated fluctuation part = theory within "
    f"±{TEST_LOSS_FLUCTUATION_MARGIN:.0%} above alpha = 1",
    sweep="single_layer_test_loss",
    measure=_measure_test_loss,
    figure=_figure_test_loss,
    metrics=(
        "test_loss_ref",
        "test_loss_sgd",
        "test_loss_fluctuation_theory",
        "test_loss_fluctuation_sim",
    ),
    rule="holds if the seed-averaged test loss peaks at a grid point bracketing alpha = 1 and "
    "exceeds both ends in every seed (fails if the peak is elsewhere), and above alpha = 1 "
    "the seed interval of (simulated / predicted fluctuation part - 1) lies inside "
    f"±{TEST_LOSS_FLUCTUATION_MARGIN} at every alpha (fails if entirely outside); the zero "
    "fluctuation part below alpha = 1 is reported, not counted",
    rule_history=(
        _change(
            "Peak rule relaxed from 'at the grid point closest to alpha = 1 in the mean and "
            "in every seed' to 'at one of the two grid points bracketing alpha = 1, above "
            "both ends in every seed'.",
            date="2026-11-28 11:48",
        ),
        _change(
            "The zero fluctuation part below alpha = 1 (zero by construction) is no longer "
            "counted; above alpha = 1 the simulated fluctuation part is compared with the "
            "theory by an equivalence interval."
        ),
    ),
)
