"""Claim 1: the normalized spectrum of C_0 against that of H (docs/theory.md §10.1)."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from sgdfluct.experiments.verdicts import (
    interval_verdict,
    seed_interval,
)

from ._base import SEED_CHANGE as _SEED_CHANGE
from ._base import ClaimSpec, Measurement, SeedPlan, SweepDef
from ._shared import (
    _errorbar,
    _new_figure,
    _per_axis,
    _per_seed_slopes,
    _q,
    _values,
)
from ._sweeps import _SINGLE, _merge

__all__ = ["CLAIM", "SEED_PLAN", "sweeps"]


def _measure_spectra(ds: xr.Dataset) -> Measurement:
    dist = _values(ds, "spectral_distance")  # (alpha, seed)
    slopes = _per_seed_slopes(_q(ds), dist)
    r = seed_interval(slopes)
    return Measurement(
        measured={
            "slope_distance_vs_q": r.to_json(),
            "slope_per_seed": slopes.tolist(),
            "distance_by_n_samples": _per_axis(ds, "data.n_samples", "spectral_distance"),
            "n_in": int(ds.attrs.get("n_in", 0)),
        },
        verdict=interval_verdict(r.lo, r.hi, above=0.0),
        details=(
            "Wasserstein-1 distance between the mean-normalized spectra of H and C_0 at the "
            "least-squares minimum, for alpha = P/N_i in the grid. Per data seed the log-log "
            "slope of the distance against q = 1/alpha; the t-interval over seeds decides. The "
            "slope is compared with the sqrt(q) expectation (0.5)."
        ),
    )


def _figure_spectra(ds: xr.Dataset) -> Figure:
    fig, (ax,) = _new_figure()
    _errorbar(ax, ds, "data.n_samples", "spectral_distance", x=1.0 / _q(ds), label="W1(C, H)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("alpha = P / N_i")
    ax.set_ylabel("distance of normalized spectra")
    q = _q(ds)
    d0 = np.nanmean(_values(ds, "spectral_distance")[-1])
    ax.plot(1.0 / q, d0 * np.sqrt(q / q[-1]), "k--", lw=1, label="∝ sqrt(q)")
    ax.legend()
    return fig


def sweeps(scale: str) -> tuple[SweepDef, ...]:
    """This claim's sweeps at ``scale`` ("quick", "full"; "smoke" shrinks them later)."""
    full = scale == "full"
    n_alpha_in = 400 if full else 100
    alphas = (1.05, 1.5, 2.0, 4.0, 10.0, 40.0)
    return (
        SweepDef(
            name="single_layer_alpha",
            base=_merge(
                _SINGLE,
                data={"n_in": n_alpha_in},
                sgd={
                    "learning_rate": 0.01,
                    "batch_size": 10,
                    "steps": 2_000,
                    "burn_in": 1_000,
                    "record_every": 10,
                    "replicas": 2,
                },
            ),
            grid={"data.n_samples": tuple(round(a * n_alpha_in) for a in alphas)},
            replicates=5 if full else 3,
        ),
    )


#: the power calculation of the full scale's seeds (issue 18; docs/theory.md §10, "Exploratory
#: and confirmatory scales")
SEED_PLAN = SeedPlan(
    quantity="per-seed log-log slope of the spectral distance vs q",
    quick_sd=0.0306,
    quick_seeds=3,
    target_half_width=0.21,
    source=(
        "reproduce --quick --only 1 --only 2 --only 7g, 2026-12-02 (slope 0.427 [0.351, 0.503])"
    ),
    reason="half the distance of the quick slope 0.427 from the threshold 0",
)


CLAIM = ClaimSpec(
    seed_plan=SEED_PLAN,
    id="1_noise_vs_hessian_spectrum",
    statement="Single layer: the normalized spectrum of C_0 deviates from that of H most "
    "near alpha -> 1 and converges to it as alpha -> infinity.",
    expected="distance falls with alpha, roughly like sqrt(q) (log-log slope vs q ≈ 0.5)",
    sweep="single_layer_alpha",
    measure=_measure_spectra,
    figure=_figure_spectra,
    metrics=("spectral_distance",),
    rule="holds if the t-interval over data seeds of the per-seed log-log slope of the "
    "spectral distance against q = 1/alpha lies above 0; fails if it lies at or below 0",
    rule_history=(_SEED_CHANGE,),
)
