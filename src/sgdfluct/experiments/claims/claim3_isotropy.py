"""Claim 3: single layer, anisotropic Σ with nearly constant curvature, no IVFR.

docs/theory.md §10.3.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from sgdfluct.experiments.verdicts import (
    combine,
    equivalence_power,
    equivalence_verdict,
    interval_verdict,
    seed_interval,
)

from ._base import SEED_CHANGE as _SEED_CHANGE
from ._base import ClaimSpec, Measurement, SeedPlan, SweepDef
from ._base import change as _change
from ._shared import (
    _new_figure,
    _seeds,
    _values,
)
from ._sweeps import _SINGLE, _merge, length_factor

__all__ = [
    "ANISOTROPY_MIN",
    "CLAIM",
    "CLAIM3_PILOT_SD",
    "CLAIM3_SEEDS",
    "CURVATURE_CV_FRACTION",
    "IVFR_EQUIVALENCE_DELTA",
    "RHO_EQUIVALENCE_DELTA",
    "sweeps",
]

#: claim 3: "nearly constant" curvature along Σ's eigenvectors := its coefficient of variation is
#: below this fraction of the coefficient of variation of H's eigenvalues
CURVATURE_CV_FRACTION = 0.5


#: claim 3: "anisotropic" Σ := coefficient of variation of its eigenvalues above this value
ANISOTROPY_MIN = 0.1


#: claim 3: "no IVFR" := the seed interval of psi lies inside (-delta, delta). Chosen before the
#: claim-3 measurement from a pilot on independent data seeds 100-104 (same config): per-seed psi
#: 0.144, 0.073, 0.062, 0.269, 0.086, between-seed SD 0.085. With CLAIM3_SEEDS = 10 seeds a true
#: psi = 0 is declared `holds` with probability 0.82 (equivalence_power(0.085, 10, 0.1)); delta =
#: 0.05 would need about 35 seeds for 80 %. The pilot already showed psi ≈ 0.13 > delta: the
#: margin was not tuned to make the claim hold.
IVFR_EQUIVALENCE_DELTA = 0.1


CLAIM3_SEEDS = 10


CLAIM3_PILOT_SD = 0.085


#: claim 3 (issue 18): "no IVFR" := the seed interval of the Spearman rank correlation between
#: the variances sigma_i and the flatnesses F_i along Σ's eigenvectors lies inside ±this. Unlike
#: psi, a rank correlation does not shrink with the spread of the curvature: psi is at most
#: |r| sd(log F) / sd(log sigma), so a nearly constant curvature makes psi small whatever the
#: relation is, while rho is free to be anything. 0.3 is the conventional bound of a "medium"
#: correlation (Cohen 1988) and 1.3 x the SD of a rank correlation over 20 unrelated directions
#: (1/sqrt(19) = 0.23); with CLAIM3_SEEDS = 10 seeds a true rho = 0 gives `holds` with
#: probability 0.91 (equivalence_power(1/sqrt(19), 10, 0.3)). Set after the quick data had been
#: seen.
RHO_EQUIVALENCE_DELTA = 0.3
#: the planning SD of one seed's rank correlation under no relation (20 directions)
RHO_NULL_SD = 1.0 / np.sqrt(19.0)


def _measure_isotropy(ds: xr.Dataset) -> Measurement:
    aniso = _seeds(ds, "cov_anisotropy")
    ratio = seed_interval((_values(ds, "curvature_cv") / _values(ds, "hessian_cv")).ravel())
    psi = _seeds(ds, "ivfr.layer_1.psi", "ivfr.layer_1.psi_stderr")
    rho_t = _seeds(ds, "ivfr_theory.layer_1.spearman")
    rho_s = _seeds(ds, "ivfr.layer_1.spearman")
    no_ivfr = equivalence_verdict(rho_s.lo, rho_s.hi, delta=RHO_EQUIVALENCE_DELTA)
    verdict = combine(
        [
            interval_verdict(aniso.lo, aniso.hi, above=ANISOTROPY_MIN),
            interval_verdict(ratio.lo, ratio.hi, below=CURVATURE_CV_FRACTION),
            no_ivfr,
        ]
    )
    observed_power = (
        equivalence_power(rho_s.sd, rho_s.n, RHO_EQUIVALENCE_DELTA, draws=50_000)
        if np.isfinite(rho_s.sd)
        else None
    )
    return Measurement(
        measured={
            "cov_anisotropy_cv": aniso.to_json(),
            "curvature_cv_over_hessian_cv": ratio.to_json(),
            "ivfr_spearman_simulation": rho_s.to_json(),
            "no_ivfr_equivalence_test": no_ivfr,
            "equivalence_design": {
                "quantity": "Spearman(sigma_i, F_i), simulation",
                "delta": RHO_EQUIVALENCE_DELTA,
                "n_seeds_planned": CLAIM3_SEEDS,
                "planning_sd": RHO_NULL_SD,
                "power_at_planning_sd": equivalence_power(
                    RHO_NULL_SD, CLAIM3_SEEDS, RHO_EQUIVALENCE_DELTA, draws=50_000
                ),
                "power_at_observed_sd": observed_power,
            },
            "ivfr_psi_simulation (reported, not counted: bounded by the curvature part)": (
                psi.to_json()
            ),
            f"psi inside ±{IVFR_EQUIVALENCE_DELTA} (the former test, reported)": (
                equivalence_verdict(psi.lo, psi.hi, delta=IVFR_EQUIVALENCE_DELTA)
            ),
            "ivfr_spearman_theory": rho_t.to_json(),
        },
        verdict=verdict,
        details=(
            f"Single layer, N_i = 20, P = 40, {aniso.n} data seeds (t-intervals over seeds). "
            f"Holds if Σ is anisotropic (CV of its eigenvalues above {ANISOTROPY_MIN}), the "
            f"curvature p_i^T H p_i along its eigenvectors is nearly constant (its CV below "
            f"{CURVATURE_CV_FRACTION} x the CV of H's eigenvalues) and there is no IVFR, tested "
            "independently of the curvature's spread: the interval of the Spearman rank "
            "correlation between the variance and the flatness along Σ's eigenvectors lies "
            f"inside ±{RHO_EQUIVALENCE_DELTA} (equivalence test; fails if it lies entirely "
            "outside). psi is reported, not counted: |psi| <= |r| sd(log F) / sd(log sigma), so "
            "a nearly constant curvature makes it small whatever the relation is."
        ),
    )


def _figure_isotropy(ds: xr.Dataset) -> Figure:
    fig, (ax,) = _new_figure()
    names = ["cov_anisotropy", "hessian_cv", "curvature_cv"]
    labels = ["CV of Σ eigenvalues", "CV of H eigenvalues", "CV of curvature along Σ PCs"]
    vals = [_seeds(ds, n) for n in names]
    ax.bar(
        labels,
        [v.mean for v in vals],
        yerr=[[v.mean - v.lo for v in vals], [v.hi - v.mean for v in vals]],
        capsize=4,
        color=["C0", "C1", "C2"],
    )
    ax.set_ylabel("coefficient of variation")
    ax.set_title("single layer: anisotropic Σ, isotropic curvature")
    ax.tick_params(axis="x", labelrotation=12)
    return fig


def sweeps(scale: str) -> tuple[SweepDef, ...]:
    """This claim's sweeps at ``scale`` ("quick", "full"; "smoke" shrinks them later)."""
    full = scale == "full"
    k = length_factor(scale)
    return (
        SweepDef(
            name="single_layer_isotropy",
            base=_merge(
                _SINGLE,
                data={"n_in": 20, "n_samples": 40},
                sgd={"learning_rate": 0.05, "batch_size": 4, "steps": 100_000 * k},
            ),
            replicates=2 * CLAIM3_SEEDS if full else CLAIM3_SEEDS,
        ),
    )


#: the power calculation of the full scale's seeds (issue 18; docs/theory.md §10, "Exploratory
#: and confirmatory scales")
SEED_PLAN = SeedPlan(
    quantity="Spearman(sigma_i, F_i), simulation",
    quick_sd=0.2516,
    quick_seeds=10,
    target_half_width=0.063,
    source="reproduce --quick --only 3, 2026-12-02 (rho = -0.174 [-0.354, 0.006])",
    reason="half the distance of the quick rho -0.174 from the margin -0.3",
)


CLAIM = ClaimSpec(
    seed_plan=SEED_PLAN,
    id="3_single_layer_isotropic_loss",
    statement="Single layer: the weight covariance is anisotropic, yet the curvature along "
    "its eigenvectors is nearly constant (no IVFR).",
    expected=f"CV(Σ) > {ANISOTROPY_MIN}; CV(curvature) < {CURVATURE_CV_FRACTION} CV(H); "
    f"|Spearman(sigma, F)| < {RHO_EQUIVALENCE_DELTA}",
    sweep="single_layer_isotropy",
    measure=_measure_isotropy,
    figure=_figure_isotropy,
    metrics=(
        "cov_anisotropy",
        "curvature_cv",
        "hessian_cv",
        "ivfr.layer_1.psi",
        "ivfr.layer_1.psi_stderr",
        "ivfr.layer_1.spearman",
        "ivfr_theory.layer_1.spearman",
    ),
    rule=f"holds if the seed intervals of CV(Σ eigenvalues) lie above {ANISOTROPY_MIN}, of "
    f"CV(curvature along Σ's PCs) / CV(H eigenvalues) below {CURVATURE_CV_FRACTION}, and of "
    "the Spearman rank correlation between variance and flatness along Σ's PCs inside "
    f"±{RHO_EQUIVALENCE_DELTA} (equivalence; {CLAIM3_SEEDS} seeds, power 0.91 for rho = 0 at "
    "the null SD 1/sqrt(19)); fails if any interval lies entirely on the other side; psi is "
    "reported, not counted",
    rule_history=(
        _SEED_CHANGE,
        _change(
            f"'No IVFR' tested by equivalence: psi's interval inside ±{IVFR_EQUIVALENCE_DELTA}"
            f"; delta and {CLAIM3_SEEDS} seeds fixed from a pilot on independent data seeds "
            "100-104 (which already showed psi ≈ 0.13) before the claim's own measurement."
        ),
        _change(
            "'No IVFR' tested independently of the curvature part (issue 18): psi's interval "
            "inside ±0.1 followed almost automatically from a nearly constant curvature (|psi| "
            "<= |r| sd(log F) / sd(log sigma)); replaced by the Spearman rank correlation "
            f"between variance and flatness inside ±{RHO_EQUIVALENCE_DELTA}, whose size the "
            "curvature's spread does not bound; psi is reported, not counted. Made after the "
            "quick data (psi = 0.049 [-0.019, 0.116], Spearman reported) had been seen.",
            date="2026-12-02",
        ),
    ),
)
