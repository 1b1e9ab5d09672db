"""Declarative specs of the claims of docs/theory.md §10: what to sweep, measure and decide.

Each :class:`ClaimSpec` names a sweep (a base config and a grid, run through
:func:`sgdfluct.experiments.sweep.run_sweep` with the ordinary ``run`` pipeline in every cell), the
metrics it reads (``metrics``: a missing one raises :class:`~sgdfluct.errors.MeasurementError`,
never a silent NaN), a ``measure`` function that returns the measured numbers with their
uncertainties and the verdict, a ``figure`` function, its decision ``rule`` in words and the
``rule_history``: every change of a rule, with whether it was made after a look at the data.

Not every threshold here was fixed before any measurement: the rules of claims 5, 6, 7e and 7g were
changed after earlier reproductions had been seen, and every rule was revised once more for the
science issue (seed t-intervals, saturation gate, equivalence test, null space at the reached
minimum); ``rule_history`` records each change. Verdicts come from :mod:`.verdicts`; the data seed
is the replication unit (:func:`~sgdfluct.experiments.verdicts.seed_interval` for every claim).
Depth >= 2 claims are gated by the saturation detector: a cell that did not reach the
quasi-stationary phase turns a ``holds`` into ``inconclusive``.

Sweeps are shared between claims where the same cells serve several claims; a sweep's cells are
computed once (and resumed after an interruption).
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from sgdfluct.errors import MeasurementError
from sgdfluct.experiments.verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    combine,
    equivalence_power,
    equivalence_verdict,
    interval_verdict,
    loglog_slope,
    seed_interval,
)

__all__ = [
    "CLAIMS",
    "ClaimSpec",
    "Measurement",
    "SweepDef",
    "require_metrics",
    "sweep_defs",
]

# ----------------------------------------------------------------------------- thresholds
#: claim 2: detailed balance "broken" := relative commutator ||[H, C]|| / (||H|| ||C||) above this
#: at every alpha (round-off gives ~1e-15; 1e-3 is far above it and far below the values of
#: order 0.1 that break the balance visibly)
COMMUTATOR_MIN = 1e-3
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
#: claims 4, 5: a theory "matches within statistical error" when its relative Frobenius error is
#: at most this multiple of the noise floor (the error an exact theory shows given the sampling
#: noise); it "fails" beyond FAIL_MULTIPLE noise floors
MATCH_MULTIPLE = 2.0
FAIL_MULTIPLE = 4.0
#: claims 5, 7f (issue): the best layer-wise theory should reach 3 % per layer
LAYER_ERROR_TARGET = 0.03
#: claim 7e: the noise floor of a relative error is taken as its standard error; two-sided 95 %
Z_FLOOR = 1.959963984540054
#: claim 4: the continuum-vs-exact deviation should scale like eta^1
ETA_SLOPE_RANGE = (0.8, 1.2)
#: claims 5, 5b: symmetry directions count as inside the null space of H below this (relative)
#: residual
NULL_SPACE_ATOL = 1e-8
#: claim 7g2: below alpha = 1 SGD converges to the start-dependent end point W* + W_0 (I - X^+ X);
#: "matches" := simulated and predicted test losses agree to this relative precision in every
#: cell (deterministic convergence, e^-28 after the burn-in of the sweep; round-off ~1e-12),
#: "fails" beyond END_POINT_FAIL
END_POINT_RTOL = 1e-6
END_POINT_FAIL = 1e-3
#: claim 7g: above alpha = 1 the simulated fluctuation part of the test loss must equal the theory
#: within this relative margin (seed interval of sim/theory - 1 inside (-margin, margin))
TEST_LOSS_FLUCTUATION_MARGIN = 0.1

TODAY = "2026-11-28"


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """Measured numbers (with uncertainties), the verdict and a few words of method."""

    measured: dict[str, Any]
    verdict: str
    details: str = ""


@dataclass(frozen=True, kw_only=True)
class SweepDef:
    """A named sweep: nested base config (TOML-like dict), grid of dotted keys, replicates."""

    name: str
    base: Mapping[str, Mapping[str, Any]]
    grid: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    replicates: int = 1


@dataclass(frozen=True, kw_only=True)
class ClaimSpec:
    """One claim of docs/theory.md §10.

    ``metrics`` are the sweep variables ``measure`` reads (``fnmatch`` patterns, each must match
    at least one variable); ``rule`` is the decision rule in words; ``rule_history`` lists every
    change of the rule as ``{"date", "change", "after_seeing_data"}``.
    """

    id: str
    statement: str
    expected: str
    sweep: str
    measure: Callable[[xr.Dataset], Measurement]
    figure: Callable[[xr.Dataset], Figure]
    metrics: tuple[str, ...] = ()
    rule: str = ""
    rule_history: tuple[Mapping[str, Any], ...] = ()


def require_metrics(ds: xr.Dataset, patterns: Sequence[str], claim: str = "") -> None:
    """Raise :class:`MeasurementError` naming every declared metric the sweep lacks."""
    names = [str(v) for v in ds.data_vars]
    missing = [p for p in patterns if not fnmatch.filter(names, p)]
    if missing:
        raise MeasurementError(
            f"claim {claim or '?'}: the sweep has no metric {missing} (declared in its spec); "
            "the runner's summary.json must provide it"
        )


# ----------------------------------------------------------------------------- sweeps

_SINGLE: dict[str, dict[str, Any]] = {
    "data": {"n_in": 10, "n_out": 1, "n_samples": 20, "label_noise": 1.0, "seed": 0},
    "model": {"depth": 1},
    "sgd": {
        "learning_rate": 0.05,
        "batch_size": 4,
        "sampling": "with_replacement",
        "steps": 100_000,
        "burn_in": 5_000,
        "record_every": 5,
        "replicas": 32,
        "seed": 1,
    },
    "analysis": {"bootstrap": 300},
}
# depth >= 2 sweeps start from the paper's random start (init.kind = "auto" -> "random")
_TWO: dict[str, dict[str, Any]] = {
    "data": {"n_in": 6, "n_out": 2, "n_samples": 60, "label_noise": 1.0, "seed": 0},
    "model": {"depth": 2, "hidden": 3},
    "sgd": {
        "learning_rate": 0.05,
        "batch_size": 10,
        "sampling": "with_replacement",
        "steps": 200_000,
        "burn_in": 20_000,
        "record_every": 10,
        "replicas": 8,
        "seed": 1,
    },
    "init": {"kind": "auto", "scale": 1.0, "seed": 0},
    "analysis": {"bootstrap": 300},
}
_WIDE: dict[str, dict[str, Any]] = {
    "data": {"n_in": 20, "n_out": 5, "n_samples": 200, "label_noise": 1.0, "seed": 0},
    "model": {"depth": 2, "hidden": 5},
    "sgd": {
        "learning_rate": 0.05,
        "batch_size": 10,
        "sampling": "with_replacement",
        "steps": 300_000,
        "burn_in": 30_000,
        "record_every": 10,
        "replicas": 8,
        "seed": 1,
    },
    "init": {"kind": "auto", "scale": 1.0, "seed": 0},
    "analysis": {"bootstrap": 300},
}


def _merge(base: Mapping[str, Mapping[str, Any]], **sections: Mapping[str, Any]) -> dict:
    out = copy.deepcopy({k: dict(v) for k, v in base.items()})
    for name, values in sections.items():
        out.setdefault(name, {}).update(values)
    return out


def sweep_defs(scale: str = "quick") -> dict[str, SweepDef]:
    """All sweeps of the reproduction at ``scale``.

    ``"quick"`` (minutes on 2 cores), ``"full"`` (10x longer simulations, N_i = 400 spectra, more
    seeds) or ``"smoke"`` (tiny sizes for the test suite: exercises the pipeline, its verdicts
    carry no weight).
    """
    full = scale == "full"
    k = 10 if full else 1  # simulation length multiplier
    n_alpha_in = 400 if full else 100
    alphas = (1.05, 1.5, 2.0, 4.0, 10.0, 40.0)
    defs = [
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
        SweepDef(
            name="single_layer_isotropy",
            base=_merge(
                _SINGLE,
                data={"n_in": 20, "n_samples": 40},
                sgd={"learning_rate": 0.05, "batch_size": 4, "steps": 100_000 * k},
            ),
            replicates=2 * CLAIM3_SEEDS if full else CLAIM3_SEEDS,
        ),
        SweepDef(
            name="single_layer_eta",
            base=_merge(_SINGLE, sgd={"steps": 200_000 * k, "burn_in": 20_000}),
            grid={
                "sgd.learning_rate": (0.005, 0.01, 0.02, 0.04, 0.08),
                "sgd.sampling": ("with_replacement", "without_replacement"),
            },
        ),
        SweepDef(
            name="two_layer_small",
            base=_merge(_TWO, sgd={"steps": 200_000 * k}),
            grid={"sgd.learning_rate": (0.05, 0.1)},
        ),
        SweepDef(
            name="two_layer_wide",
            base=_merge(_WIDE, sgd={"steps": 300_000 * k}),
            grid={"model.hidden": (3, 5, 8)},
            replicates=8 if full else 5,
        ),
        SweepDef(
            name="two_layer_outputs",
            base=_merge(_WIDE, sgd={"steps": 300_000 * k}),
            grid={"data.n_out": (1, 2, 3)},
            replicates=8 if full else 5,
        ),
        SweepDef(
            name="two_layer_inputs",
            base=_merge(_WIDE, sgd={"steps": 300_000 * k}),
            grid={"data.inputs": ("powerlaw", "student_t")},
            replicates=8 if full else 5,
        ),
        SweepDef(
            name="depth_three",
            base=_merge(_WIDE, model={"depth": 3, "hidden": 5}, sgd={"steps": 300_000 * k}),
            replicates=5 if full else 3,
        ),
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
        SweepDef(
            name="single_layer_interpolation",
            base=_merge(
                _SINGLE,
                data={"n_in": 50},
                sgd={
                    "learning_rate": 0.02,
                    "batch_size": 10,
                    "steps": 100_000,
                    "burn_in": 80_000,
                    "replicas": 8,
                },
                init={"kind": "random", "scale": 1.0, "seed": 0},
            ),
            grid={"data.n_samples": (25, 40)},
            replicates=5 if full else 3,
        ),
    ]
    if scale == "smoke":
        defs = [_shrink(d) for d in defs]
    return {d.name: d for d in defs}


def _shrink(sweep: SweepDef) -> SweepDef:
    """Smoke-test version of a sweep: short simulations, few cells (two values per axis)."""
    deep = sweep.base["model"].get("depth", 1) >= 2
    sgd = (
        {"steps": 60_000, "burn_in": 5_000, "replicas": 2}
        if deep
        else {"steps": 3_000, "burn_in": 500, "replicas": 2, "record_every": 5}
    )
    base = _merge(sweep.base, sgd=sgd, analysis={"bootstrap": 20})
    if not deep:
        base["data"]["n_in"] = min(base["data"]["n_in"], 20)
    grid = {k: (v[0], v[-1]) if len(v) > 2 else v for k, v in sweep.grid.items()}
    if "data.n_samples" in grid and not deep:
        # keep alpha = P / N_i: the grid was built for the unshrunk N_i
        ratio = base["data"]["n_in"] / sweep.base["data"]["n_in"]
        grid["data.n_samples"] = tuple(max(2, round(p * ratio)) for p in grid["data.n_samples"])
    return SweepDef(name=sweep.name, base=base, grid=grid, replicates=min(sweep.replicates, 2))


# ----------------------------------------------------------------------------- helpers


def _values(ds: xr.Dataset, name: str) -> np.ndarray:
    """A metric as floats; a missing metric raises (claims declare what they read)."""
    if name not in ds:
        raise MeasurementError(f"the sweep has no metric {name!r}")
    return np.asarray(ds[name].values, dtype=float)


def _optional(ds: xr.Dataset, name: str) -> np.ndarray:
    """A metric that is legitimately absent in some sweeps (e.g. a layer IVFR that no cell could
    fit): NaN everywhere when absent. Only for metrics a rule treats as `inconclusive` when NaN."""
    if name not in ds:
        return np.full(ds["cell_id"].shape, np.nan)
    return np.asarray(ds[name].values, dtype=float)


def _nanmean(values: np.ndarray) -> float:
    v = np.asarray(values, dtype=float)
    return float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else float("nan")


def _fmt(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _seeds(sub: xr.Dataset, name: str, stderr: str | None = None) -> Any:
    """Seed interval (:func:`seed_interval`) of a metric over the replicates of one grid point."""
    se = None if stderr is None else _optional(sub, stderr).ravel()
    return seed_interval(_values(sub, name).ravel(), se)


def _per_axis(ds: xr.Dataset, axis: str, name: str) -> list[dict[str, Any]]:
    """Seed mean and 95 % t-interval of a metric for each value of a grid axis."""
    rows = []
    for value in ds[axis].values:
        r = seed_interval(_values(ds.sel({axis: value}), name).ravel())
        rows.append(
            {
                axis: value.item() if hasattr(value, "item") else value,
                "value": _fmt(r.mean),
                "ci": [_fmt(r.lo), _fmt(r.hi)],
                "n_seeds": r.n,
            }
        )
    return rows


def _per_seed_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """OLS log-log slope of ``y`` on ``x`` along axis 0, one per replicate (axis 1)."""
    out = []
    for r in range(y.shape[1]):
        slope, *_ = loglog_slope(x, y[:, r])
        out.append(slope)
    return np.asarray(out, dtype=float)


def _saturation_gate(ds: xr.Dataset, verdict: str) -> tuple[str, dict[str, Any]]:
    """Depth >= 2: a cell that did not saturate cannot support `holds` (docs/theory.md §8b)."""
    sat = _values(ds, "saturation.saturated").ravel()
    done = sat[np.isfinite(sat)]
    n_bad = int(np.sum(done < 0.5))
    info = {"cells": int(done.size), "not_saturated": n_bad}
    if verdict == HOLDS and (n_bad or done.size == 0):
        verdict = INCONCLUSIVE
    return verdict, info


def tidy_log_axes(fig: Figure) -> None:
    """Drop the crowded minor tick labels of logarithmic axes (major decades stay labelled)."""
    from matplotlib.ticker import NullFormatter

    for ax in fig.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale == "log":
                axis.set_minor_formatter(NullFormatter())


def _new_figure(ncols: int = 1, width: float = 5.5) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * ncols, 4))
    axes = fig.subplots(1, ncols, squeeze=False)
    return fig, axes[0]


def _errorbar(
    ax: Any, ds: xr.Dataset, axis: str, name: str, x: np.ndarray | None = None, **kwargs: Any
) -> None:
    rows = _per_axis(ds, axis, name)
    xs = np.asarray([r[axis] for r in rows], dtype=float) if x is None else x
    mean = np.asarray([np.nan if r["value"] is None else r["value"] for r in rows])
    lo = np.asarray([np.nan if r["ci"][0] is None else r["ci"][0] for r in rows])
    hi = np.asarray([np.nan if r["ci"][1] is None else r["ci"][1] for r in rows])
    yerr = np.vstack([np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)])
    ax.errorbar(xs, mean, yerr=yerr, marker="o", capsize=3, **kwargs)


# ----------------------------------------------------------------------------- claim 1


def _q(ds: xr.Dataset) -> np.ndarray:
    n_in = float(ds.attrs.get("n_in", np.nan))
    return n_in / ds["data.n_samples"].values.astype(float)


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


# ----------------------------------------------------------------------------- claim 2


def _measure_balance(ds: xr.Dataset) -> Measurement:
    alpha = 1.0 / _q(ds)
    comm = _values(ds, "commutator")  # (alpha, seed)
    ep = _values(ds, "entropy_production")
    s_comm = seed_interval(_per_seed_slopes(alpha, comm))
    s_ep = seed_interval(_per_seed_slopes(alpha, ep))
    comm_rows = _per_axis(ds, "data.n_samples", "commutator")
    comm_parts = [
        INCONCLUSIVE
        if row["ci"][0] is None or row["ci"][1] is None
        else interval_verdict(row["ci"][0], row["ci"][1], above=COMMUTATOR_MIN)
        for row in comm_rows
    ]
    verdict = combine(
        [
            combine(comm_parts),
            interval_verdict(s_comm.lo, s_comm.hi, below=0.0),
            interval_verdict(s_ep.lo, s_ep.hi, below=0.0),
        ]
    )
    ep_min = float(np.nanmin(ep)) if np.isfinite(ep).any() else float("nan")
    return Measurement(
        measured={
            "commutator_by_n_samples": comm_rows,
            "entropy_production_by_n_samples": _per_axis(
                ds, "data.n_samples", "entropy_production"
            ),
            "slope_commutator_vs_alpha": s_comm.to_json(),
            "slope_entropy_production_vs_alpha": s_ep.to_json(),
            "entropy_production_min (reported, not counted: >= 0 is a theorem)": ep_min,
        },
        verdict=verdict,
        details=(
            "Relative commutator ||[H, C_0]|| / (||H|| ||C_0||) and entropy production "
            "tr(H D^-1 H Σ) - tr H of the continuum OU process at the least-squares minimum. "
            f"Holds if the commutator's seed interval lies above {COMMUTATOR_MIN:g} at every "
            "alpha (detailed balance broken) and the per-seed log-log slopes of the commutator "
            "and of the entropy production against alpha have seed intervals below 0. The entropy "
            "production is >= 0 by construction (a theorem), so it is reported, not counted. The "
            "simulated probability current is compared with theory in claim 4."
        ),
    )


def _figure_balance(ds: xr.Dataset) -> Figure:
    fig, axes = _new_figure(2)
    alpha = 1.0 / _q(ds)
    _errorbar(axes[0], ds, "data.n_samples", "commutator", x=alpha)
    axes[0].set_ylabel("relative commutator ||[H, C]||")
    _errorbar(axes[1], ds, "data.n_samples", "entropy_production", x=alpha, color="C1")
    axes[1].set_ylabel("entropy production rate")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("alpha = P / N_i")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- claim 3


def _measure_isotropy(ds: xr.Dataset) -> Measurement:
    aniso = _seeds(ds, "cov_anisotropy")
    ratio = seed_interval((_values(ds, "curvature_cv") / _values(ds, "hessian_cv")).ravel())
    psi = _seeds(ds, "ivfr.layer_1.psi", "ivfr.layer_1.psi_stderr")
    rho_t = _seeds(ds, "ivfr_theory.layer_1.spearman")
    rho_s = _seeds(ds, "ivfr.layer_1.spearman")
    no_ivfr = equivalence_verdict(psi.lo, psi.hi, delta=IVFR_EQUIVALENCE_DELTA)
    verdict = combine(
        [
            interval_verdict(aniso.lo, aniso.hi, above=ANISOTROPY_MIN),
            interval_verdict(ratio.lo, ratio.hi, below=CURVATURE_CV_FRACTION),
            no_ivfr,
        ]
    )
    observed_power = (
        equivalence_power(psi.sd, psi.n, IVFR_EQUIVALENCE_DELTA, draws=50_000)
        if np.isfinite(psi.sd)
        else None
    )
    return Measurement(
        measured={
            "cov_anisotropy_cv": aniso.to_json(),
            "curvature_cv_over_hessian_cv": ratio.to_json(),
            "ivfr_psi_simulation": psi.to_json(),
            "no_ivfr_equivalence_test": no_ivfr,
            "equivalence_design": {
                "delta": IVFR_EQUIVALENCE_DELTA,
                "n_seeds_planned": CLAIM3_SEEDS,
                "pilot_sd": CLAIM3_PILOT_SD,
                "power_at_pilot_sd": equivalence_power(
                    CLAIM3_PILOT_SD, CLAIM3_SEEDS, IVFR_EQUIVALENCE_DELTA, draws=50_000
                ),
                "power_at_observed_sd": observed_power,
            },
            "ivfr_spearman_theory": rho_t.to_json(),
            "ivfr_spearman_simulation": rho_s.to_json(),
        },
        verdict=verdict,
        details=(
            f"Single layer, N_i = 20, P = 40, {CLAIM3_SEEDS} data seeds (t-intervals over seeds). "
            f"Holds if Σ is anisotropic (CV of its eigenvalues above {ANISOTROPY_MIN}), the "
            f"curvature p_i^T H p_i along its eigenvectors is nearly constant (its CV below "
            f"{CURVATURE_CV_FRACTION} x the CV of H's eigenvalues) and there is no IVFR: the "
            f"interval of psi lies inside ±{IVFR_EQUIVALENCE_DELTA} (equivalence test; fails if "
            "it lies entirely outside). delta and the number of seeds were fixed before this "
            "measurement from a pilot on independent data seeds (power 0.82 for a true psi = 0)."
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


# ----------------------------------------------------------------------------- claim 4


def _measure_eta(ds: xr.Dataset) -> Measurement:
    eta = ds["sgd.learning_rate"].values.astype(float)
    rows = []
    parts = []
    for sampling in ds["sgd.sampling"].values:
        sub = ds.sel({"sgd.sampling": sampling, "replicate": 0})
        err = _values(sub, "rel_error_discrete")
        floor = _values(sub, "rel_error_discrete_noise_floor")
        ratio = err / floor
        parts.append(
            HOLDS
            if np.all(ratio <= MATCH_MULTIPLE)
            else FAILS
            if np.any(ratio > FAIL_MULTIPLE)
            else INCONCLUSIVE
        )
        slope, *_ = loglog_slope(eta, _values(sub, "rel_diff_continuum_vs_discrete"))
        parts.append(HOLDS if ETA_SLOPE_RANGE[0] <= slope <= ETA_SLOPE_RANGE[1] else FAILS)
        # the probability current: simulated (lag-1 antisymmetric part) vs ½[H, M]
        current = _values(sub, "rel_error_current") / _values(sub, "rel_error_current_noise_floor")
        parts.append(
            HOLDS
            if np.all(current <= MATCH_MULTIPLE)
            else FAILS
            if np.any(current > FAIL_MULTIPLE)
            else INCONCLUSIVE
        )
        rows.append(
            {
                "sampling": str(sampling),
                "learning_rates": eta.tolist(),
                "rel_error_exact": err.tolist(),
                "noise_floor": floor.tolist(),
                "rel_error_continuum": _values(sub, "rel_error_continuum").tolist(),
                "rel_diff_continuum_vs_exact": _values(
                    sub, "rel_diff_continuum_vs_discrete"
                ).tolist(),
                "slope_continuum_deviation_vs_eta": slope,
                "rel_error_current": _values(sub, "rel_error_current").tolist(),
                "current_noise_floor": _values(sub, "rel_error_current_noise_floor").tolist(),
            }
        )
    return Measurement(
        measured={"by_sampling": rows},
        verdict=combine(parts),
        details=(
            f"Single layer N_i = 10, P = 20, S = 4. Holds if, in both sampling modes, the exact "
            f"discrete-time covariance matches the simulation within {MATCH_MULTIPLE} noise "
            f"floors at every learning rate (fails beyond {FAIL_MULTIPLE}), and the relative "
            f"deviation of the continuum Lyapunov solution from the exact one scales like eta "
            f"(log-log slope in {list(ETA_SLOPE_RANGE)}), and the simulated probability current "
            "(lag-1 estimator, docs/theory.md §6) matches ½[H, M] within the same noise-floor "
            "rule. The "
            "noise floor is the relative Frobenius error an exact theory shows given the "
            "simulation's standard errors."
        ),
    )


def _figure_eta(ds: xr.Dataset) -> Figure:
    fig, axes = _new_figure(2)
    eta = ds["sgd.learning_rate"].values.astype(float)
    for i, sampling in enumerate(ds["sgd.sampling"].values):
        sub = ds.sel({"sgd.sampling": sampling, "replicate": 0})
        axes[i].plot(eta, _values(sub, "rel_error_discrete"), "o-", label="sim vs exact")
        axes[i].plot(eta, _values(sub, "rel_error_continuum"), "s-", label="sim vs continuum")
        axes[i].plot(
            eta, _values(sub, "rel_diff_continuum_vs_discrete"), "k--", label="continuum vs exact"
        )
        axes[i].plot(
            eta,
            _values(sub, "rel_error_discrete_noise_floor"),
            ":",
            color="grey",
            label="noise floor",
        )
        axes[i].set_xscale("log")
        axes[i].set_yscale("log")
        axes[i].set_xlabel("learning rate eta")
        axes[i].set_title(str(sampling))
    axes[0].set_ylabel("relative Frobenius error")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- claims 5, 5b, 7e, 7f


def _layer_names(ds: xr.Dataset) -> list[str]:
    return sorted(
        {str(v).split(".")[1] for v in ds.data_vars if str(v).startswith("layers.layer_")}
    )


def _grid_points(ds: xr.Dataset) -> list[tuple[str, xr.Dataset]]:
    """(label, sub-dataset over replicates) for every grid point of a sweep."""
    dims = [d for d in ds["cell_id"].dims if d != "replicate"]
    if not dims:
        return [("base config", ds)]
    stacked = ds.stack(point=dims)
    out = []
    for i in range(stacked.sizes["point"]):
        sub = stacked.isel(point=i)
        label = ", ".join(f"{d} = {sub[d].item()}" for d in dims)
        out.append((label, sub))
    return out


def _mean(ds: xr.Dataset, name: str) -> float:
    return _nanmean(_values(ds, name))


_METHODS = ("continuum", "discrete", "multiplicative", "renormalized")


def _layer_errors(sub: xr.Dataset) -> dict[str, dict[str, float]]:
    out = {}
    for layer in _layer_names(sub):
        key = f"layers.{layer}"
        row = {m: _mean(sub, f"{key}.rel_error_{m}") for m in _METHODS}
        row["noise_floor"] = _mean(sub, f"{key}.noise_floor")
        out[layer] = row
    return out


def _null_space_part(sub: xr.Dataset, key: str) -> tuple[dict[str, Any], str]:
    """Null space of H at a minimum against its closed-form dimension, cell by cell.

    ``fails`` if in any cell ``dim null(H)`` differs from the closed form (``expected_dim``;
    where none exists, if it is below the symmetry dimension sum N_h^2), or differs from
    ``dim null(C)``, or the symmetry directions are not inside ``null(H)``.
    """
    found_h = _values(sub, f"{key}.null_dim_hessian").ravel()
    found_c = _values(sub, f"{key}.null_dim_noise").ravel()
    expected = _values(sub, f"{key}.expected_dim").ravel()
    sym_dim = _values(sub, f"{key}.symmetry_dim").ravel()
    sym_rank = _values(sub, f"{key}.symmetry_rank").ravel()
    inside = _values(sub, f"{key}.symmetry_in_null_hessian").ravel()
    ok = np.isfinite(found_h) & np.isfinite(found_c)
    if not ok.any():
        return {"cells": 0}, INCONCLUSIVE
    fh, fc, ex, sd, sr, ins = (
        a[ok] for a in (found_h, found_c, expected, sym_dim, sym_rank, inside)
    )
    dim_ok = np.where(np.isfinite(ex), fh == ex, fh >= sd)
    good = dim_ok & (fh == fc) & (ins < NULL_SPACE_ATOL)
    info = {
        "cells": int(ok.sum()),
        "null_dim_hessian": sorted({int(v) for v in fh}),
        "null_dim_noise": sorted({int(v) for v in fc}),
        "expected_dim": sorted({int(v) for v in ex if np.isfinite(v)}) or None,
        "sum_N_h_squared": sorted({int(v) for v in sd}),
        "excess_over_N_h_squared": sorted({int(v) for v in fh - sd}),
        "symmetry_rank": sorted({int(v) for v in sr}),
        "max_symmetry_outside_null": float(np.max(ins)),
        "cells_matching": int(good.sum()),
    }
    return info, HOLDS if bool(np.all(good)) else FAILS


def _theory_part(row: dict[str, float]) -> str:
    best, floor = row["renormalized"], row["noise_floor"]
    if not (np.isfinite(best) and np.isfinite(floor)):
        return INCONCLUSIVE
    if best <= max(LAYER_ERROR_TARGET, MATCH_MULTIPLE * floor):
        return HOLDS
    if best > max(LAYER_ERROR_TARGET, FAIL_MULTIPLE * floor):
        return FAILS
    return INCONCLUSIVE


def _layers_measurement(ds: xr.Dataset, learning_rates: tuple[float, ...] | None) -> Measurement:
    if learning_rates is not None and "sgd.learning_rate" in ds.dims:
        ds = ds.sel({"sgd.learning_rate": list(learning_rates)})
    rows: list[dict[str, Any]] = []
    parts: list[str] = []
    for label, sub in _grid_points(ds):
        errors = _layer_errors(sub)
        parts.extend(_theory_part(row) for row in errors.values())
        reached, v_reached = _null_space_part(sub, "null_space")
        built, v_built = _null_space_part(sub, "null_space_constructed")
        parts += [v_reached, v_built]
        row_out: dict[str, Any] = {
            "cell": label,
            **errors,
            "null_space_reached_minimum": {**reached, "verdict": v_reached},
            "null_space_constructed_point": {**built, "verdict": v_built},
            "saturation_step": _mean(sub, "saturation.step"),
            "dead_hidden_units": _mean(sub, "dead_hidden_units"),
        }
        if "equilibrium.rel_error" in sub:
            row_out["imbalance_rel_error_vs_noise_equilibrium"] = _mean(
                sub, "equilibrium.rel_error"
            )
        rows.append(row_out)
    verdict, gate = _saturation_gate(ds, combine(parts))
    return Measurement(
        measured={"cells": rows, "saturation": gate},
        verdict=verdict,
        details=(
            "Random start (docs/theory.md §8b), measured after the saturation gate. Per layer: "
            "relative Frobenius error of each linearized theory (continuum = the paper's; "
            "discrete; + multiplicative noise; self-consistent renormalized = the best) against "
            "the aligned, range-projected, pooled simulated covariance (§8a), and the noise "
            f"floor. Holds if the best theory is within max({LAYER_ERROR_TARGET:.0%}, "
            f"{MATCH_MULTIPLE} noise floors) in every layer (fails beyond max("
            f"{LAYER_ERROR_TARGET:.0%}, {FAIL_MULTIPLE} floors)); if at the minimum SGD reached "
            "(gradient flow from the window mean) dim null(H) equals the closed form (sum N_h^2 "
            "when the widths equal the product's rank; N_h (N_i + N_o) - N_i N_o for surplus "
            "units at depth 2) and dim null(C), with the symmetry directions inside; the same, "
            "separately, at the constructed balanced minimum (zero-padded surplus units: the "
            "excess over N_h^2); and every cell saturated (else at most inconclusive). The "
            "imbalance at the end is compared with the noise-equilibrium prediction (reported)."
        ),
    )


def _measure_layers(ds: xr.Dataset) -> Measurement:
    return _layers_measurement(ds, None)


def _measure_layers_small_eta(ds: xr.Dataset) -> Measurement:
    return _layers_measurement(ds, (0.05,))


def _measure_null_space_widths(ds: xr.Dataset) -> Measurement:
    rows, parts = [], []
    for label, sub in _grid_points(ds):
        reached, v_reached = _null_space_part(sub, "null_space")
        built, v_built = _null_space_part(sub, "null_space_constructed")
        parts += [v_reached, v_built]
        rows.append(
            {
                "cell": label,
                "reached_minimum": {**reached, "verdict": v_reached},
                "constructed_point": {**built, "verdict": v_built},
                "surplus_units": {
                    "n_surplus": _mean(sub, "surplus_units.n_surplus"),
                    "death_step_mean": _mean(sub, "surplus_units.death_step")
                    if "surplus_units.death_step" in sub
                    else None,
                    "dead_hidden_units_mean": _mean(sub, "dead_hidden_units"),
                },
            }
        )
    verdict, gate = _saturation_gate(ds, combine(parts))
    return Measurement(
        measured={"cells": rows, "saturation": gate},
        verdict=verdict,
        details=(
            "N_i = 20, N_o = 5, N_h = 3, 5 (null space = N_h^2 exactly: the widths equal the "
            "product's rank) and N_h = 8 (surplus units: N_h (N_i + N_o) - N_i N_o = 100, an "
            "excess of 36 over N_h^2), every data seed, from the paper's random start. Holds if "
            "in every cell dim null(H) equals the closed form and dim null(C), with the symmetry "
            "directions inside, both at the minimum SGD reached and at the constructed balanced "
            "minimum, and every cell saturated. Whether the surplus units die, and when, is "
            "reported (death: Gram eigenvalue below 1 % of the largest)."
        ),
    )


def _measure_finite_eta(ds: xr.Dataset) -> Measurement:
    rows: list[dict[str, Any]] = []
    parts: list[str] = []
    points = _grid_points(ds)
    etas = ds["sgd.learning_rate"].values.astype(float)
    errors = [_layer_errors(sub) for _, sub in points]
    for (label, _), err in zip(points, errors, strict=True):
        row: dict[str, Any] = {"cell": label, **err}
        for layer, e in err.items():
            # the continuum theory misses by more than the best one: gap ± Z95 noise floors
            gap, half = e["continuum"] - e["renormalized"], Z_FLOOR * e["noise_floor"]
            parts.append(interval_verdict(gap - half, gap + half, above=0.0))
            row[f"{layer}_gap_continuum_minus_best"] = {
                "value": gap,
                "ci": [gap - half, gap + half],
            }
        rows.append(row)
    for layer in _layer_names(ds):
        cont = np.array([e[layer]["continuum"] for e in errors])
        floors = np.array([e[layer]["noise_floor"] for e in errors])
        # growth with eta: the continuum error at the largest eta minus that at the smallest
        growth = cont[-1] - cont[0]
        half = Z_FLOOR * float(np.hypot(floors[-1], floors[0]))
        parts.append(interval_verdict(growth - half, growth + half, above=0.0))
        exponent, *_ = loglog_slope(etas, cont)
        rows.append(
            {
                "cell": f"{layer}: continuum error growth from eta = {etas[0]:g} to {etas[-1]:g}",
                "growth": {"value": growth, "ci": [growth - half, growth + half]},
                "log-log slope": exponent,
            }
        )
    verdict, gate = _saturation_gate(ds, combine(parts))
    return Measurement(
        measured={"cells": rows, "saturation": gate},
        verdict=verdict,
        details=(
            "Two-layer network at several learning rates, one data seed. A relative error's noise "
            "floor is taken as its standard error. Holds if in every layer and at every eta the "
            "gap (continuum error - best discrete-time theory's error) has its interval gap ± "
            f"{Z_FLOOR:.2f} floors above 0, and the continuum error grows from the smallest to "
            "the largest eta (interval of the difference, floors combined, above 0); fails if an "
            "interval lies below 0."
        ),
    )


def _figure_layers(ds: xr.Dataset) -> Figure:
    layers = _layer_names(ds)
    points = _grid_points(ds)
    fig, axes = _new_figure(len(layers))
    width = 0.8 / (len(_METHODS) + 1)
    x = np.arange(len(points))
    for ax, layer in zip(axes, layers, strict=True):
        errors = [_layer_errors(sub)[layer] for _, sub in points]
        for j, m in enumerate(_METHODS):
            ax.bar(x + j * width, [e[m] for e in errors], width, label=m)
        ax.bar(
            x + len(_METHODS) * width,
            [e["noise_floor"] for e in errors],
            width,
            color="grey",
            label="noise floor",
        )
        ax.axhline(LAYER_ERROR_TARGET, color="k", lw=0.8, ls=":")
        ax.set_xticks(x + 0.4, [label for label, _ in points], fontsize=7, rotation=10)
        ax.set_yscale("log")
        ax.set_title(layer)
        ax.set_ylabel("relative Frobenius error vs simulation")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def _figure_null_space(ds: xr.Dataset) -> Figure:
    fig, (ax,) = _new_figure()
    points = _grid_points(ds)
    x = np.arange(len(points))
    for j, (key, label) in enumerate(
        (("null_space", "reached minimum"), ("null_space_constructed", "constructed point"))
    ):
        ax.bar(
            x + 0.3 * j,
            [_mean(sub, f"{key}.null_dim_hessian") for _, sub in points],
            0.3,
            label=f"dim null(H), {label}",
        )
    ax.plot(
        x + 0.15,
        [_mean(sub, "null_space.symmetry_dim") for _, sub in points],
        "k_",
        ms=30,
        label="N_h^2",
    )
    ax.set_xticks(x + 0.15, [label for label, _ in points], fontsize=7)
    ax.set_ylabel("dimension")
    ax.legend(fontsize="small")
    return fig


# ----------------------------------------------------------------------------- claims 6, 7a-d, 7f


def _ivfr_entry(sub: xr.Dataset, key: str) -> dict[str, Any] | None:
    """psi of one layer over the data seeds of a grid point (seed t-interval), or None when no
    seed has a fit."""
    psi = _optional(sub, f"{key}.psi").ravel()
    if not np.isfinite(psi).any():
        return None
    r = seed_interval(psi, _optional(sub, f"{key}.psi_stderr").ravel())
    return {
        "psi": r.mean,
        "psi_ci": [r.lo, r.hi],
        "psi_per_seed": [float(v) for v in psi],
        "n_seeds": r.n,
        "sd_between_seeds": r.sd,
        "heterogeneity": r.heterogeneity,
        "spearman": _nanmean(_optional(sub, f"{key}.spearman")),
        "n_directions": _nanmean(_optional(sub, f"{key}.n_directions")),
    }


def _ivfr_layers(ds: xr.Dataset) -> list[str]:
    return sorted(
        {
            str(v).split(".")[1]
            for v in ds.data_vars
            if str(v).startswith("ivfr.layer_") and str(v).endswith(".psi")
        }
    )


def _ivfr_rows(ds: xr.Dataset, prefix: str) -> list[dict[str, Any]]:
    rows = []
    for label, sub in _grid_points(ds):
        row: dict[str, Any] = {"cell": label}
        for layer in _ivfr_layers(ds):
            row[layer] = _ivfr_entry(sub, f"{prefix}.{layer}")
        rows.append(row)
    return rows


def _tested_layer(row: Mapping[str, Any], layers: Sequence[str]) -> str | None:
    """The last layer with a psi fit in this cell (layer 2 unless it has too few directions,
    e.g. N_o = 1 after the surplus units died)."""
    for layer in reversed(layers):
        if row.get(layer) is not None:
            return layer
    return None


def _ivfr_verdict(entry: Mapping[str, Any] | None) -> str:
    return INCONCLUSIVE if entry is None else interval_verdict(*entry["psi_ci"], above=0.0)


def _measure_ivfr(ds: xr.Dataset) -> Measurement:
    sim = _ivfr_rows(ds, "ivfr")
    layers = _ivfr_layers(ds)
    parts = []
    for row in sim:
        tested = _tested_layer(row, layers)
        row["tested_layer"] = tested
        parts.append(_ivfr_verdict(row.get(tested) if tested else None))
        row["verdict"] = parts[-1]
    verdict, gate = _saturation_gate(ds, combine(parts))
    return Measurement(
        measured={
            "simulation": sim,
            "theory_best": _ivfr_rows(ds, "ivfr_theory"),
            "theory_continuum": _ivfr_rows(ds, "ivfr_continuum"),
            "saturation": gate,
        },
        verdict=verdict,
        details=(
            "IVFR exponent psi from F_i ∝ sigma_i^-psi along the eigenvectors of each layer's "
            "covariance (simulation: aligned, projected and pooled windows, §8a; theory: the "
            "best layer-wise theory and the paper's continuum one), from the paper's random "
            "start. Each data seed gives one psi; the t-interval over seeds (95 %) decides, "
            "heterogeneity (I², Cochran's Q with the per-seed bootstrap errors) is reported. "
            "Holds if psi > 0 (interval above 0) in the last layer with a fit (layer 2; layer 1 "
            "where layer 2 has too few live directions) at every grid point and every cell "
            "saturated; fails if an interval lies below 0."
        ),
    )


#: claim 6 is the paper's configuration (N_i = 20, N_h = N_o = 5); 7b reports every width
PAPER_WIDTH = 5


def _paired(sub: xr.Dataset, a: str, b: str) -> Any:
    """Seed interval of the per-seed difference ``a - b`` (paired by data seed)."""
    return seed_interval((_values(sub, a) - _values(sub, b)).ravel())


def _measure_ivfr_paper_width(ds: xr.Dataset) -> Measurement:
    if PAPER_WIDTH not in ds["model.hidden"].values:
        raise MeasurementError(f"claim 6 needs model.hidden = {PAPER_WIDTH} in the sweep's grid")
    sub = ds.sel({"model.hidden": [PAPER_WIDTH]})
    base = _measure_ivfr(sub)
    (row,) = base.measured["simulation"]
    single = _paired(sub, "ivfr.layer_2.psi", "ivfr_single_layer_same_data.layer_1.psi")
    layer_gap = _paired(sub, "ivfr.layer_2.psi", "ivfr.layer_1.psi")
    single_psi = _ivfr_entry(sub, "ivfr_single_layer_same_data.layer_1")
    measured = {
        **base.measured,
        "psi_layer2_minus_layer1": layer_gap.to_json(),
        "psi_single_layer_same_data": single_psi,
        "psi_layer2_minus_single_layer": single.to_json(),
    }
    parts = [
        _ivfr_verdict(row.get("layer_2")),
        interval_verdict(layer_gap.lo, layer_gap.hi, above=0.0),
        interval_verdict(single.lo, single.hi, above=0.0),
    ]
    verdict, _ = _saturation_gate(sub, combine(parts))
    return Measurement(
        measured=measured,
        verdict=verdict,
        details=base.details
        + " Claim 6 (N_h = 5): psi_2 > 0; strongest in layer 2 (per-seed psi_2 - psi_1 above 0); "
        "and larger than in a single layer trained on the same data (per-seed psi_2 - "
        "psi_single above 0; the single layer's covariance from the exact discrete-time theory "
        "at W*). All three by t-intervals over data seeds.",
    )


def _measure_depth_three(ds: xr.Dataset) -> Measurement:
    layers_part = _layers_measurement(ds, None)
    ivfr_part = _measure_ivfr(ds)
    verdict, gate = _saturation_gate(ds, combine([layers_part.verdict, ivfr_part.verdict]))
    return Measurement(
        measured={
            **layers_part.measured,
            "ivfr_simulation": ivfr_part.measured["simulation"],
            "ivfr_theory_best": ivfr_part.measured["theory_best"],
            "saturation": gate,
        },
        verdict=verdict,
        details=layers_part.details
        + " IVFR per layer as claim 6; holds only if psi > 0 in the last layer too.",
    )


def _figure_ivfr(ds: xr.Dataset) -> Figure:
    layers = _ivfr_layers(ds)
    fig, axes = _new_figure(max(len(layers), 1))
    for ax, layer in zip(axes, layers, strict=False):
        for j, (prefix, label) in enumerate(
            (
                ("ivfr", "simulation"),
                ("ivfr_theory", "best theory"),
                ("ivfr_continuum", "continuum theory"),
            )
        ):
            rows = _ivfr_rows(ds, prefix)
            for i, row in enumerate(rows):
                entry = row.get(layer)
                if entry is None:
                    continue
                lo, hi = (v if np.isfinite(v) else entry["psi"] for v in entry["psi_ci"])
                ax.errorbar(
                    [i + 0.2 * j],
                    [entry["psi"]],
                    yerr=[[entry["psi"] - lo], [hi - entry["psi"]]],
                    fmt="o",
                    capsize=3,
                    color=f"C{j}",
                    label=label if i == 0 else None,
                )
        labels = [row["cell"] for row in _ivfr_rows(ds, "ivfr")]
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(labels)) + 0.2, labels, fontsize=7, rotation=10)
        ax.set_ylabel("IVFR exponent psi (F ∝ sigma^-psi)")
        ax.set_title(layer)
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def _figure_depth_three(ds: xr.Dataset) -> Figure:
    return _figure_layers(ds)


# ----------------------------------------------------------------------------- claim 7g


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


def _measure_interpolation_start(ds: xr.Dataset) -> Measurement:
    sim = _values(ds, "test_loss_end_sim")
    theory = _values(ds, "test_loss_end_theory")
    min_norm = _values(ds, "test_loss_ref")
    rel = np.abs(sim - theory) / np.abs(theory)
    worst = float(np.nanmax(rel)) if np.isfinite(rel).any() else float("nan")
    verdict = (
        INCONCLUSIVE
        if not np.isfinite(rel).all()
        else HOLDS
        if worst < END_POINT_RTOL
        else FAILS
        if worst > END_POINT_FAIL
        else INCONCLUSIVE
    )
    return Measurement(
        measured={
            "max_rel_diff_test_loss_sim_vs_start_theory": worst,
            "max_end_point_rel_error": float(np.nanmax(_values(ds, "end_point_rel_error"))),
            "test_loss_end_sim": _per_axis(ds, "data.n_samples", "test_loss_end_sim"),
            "test_loss_min_norm": _per_axis(ds, "data.n_samples", "test_loss_ref"),
            "excess_over_min_norm (start dependence)": seed_interval(
                ((sim - min_norm) / min_norm).ravel()
            ).to_json(),
        },
        verdict=verdict,
        details=(
            "Below alpha = 1 (N_i = 50, P = 25 and 40) from a random start per replica: SGD "
            "keeps the start's component outside the row space of X and converges to W* + "
            "W_0 (I - X^+ X) (no fluctuations at the end: every per-sample gradient vanishes). "
            f"Holds if the simulated test loss at the end equals the one predicted for that start "
            f"within a relative {END_POINT_RTOL:g} in every cell (fails beyond "
            f"{END_POINT_FAIL:g}); the excess over the minimum-norm solution's test loss shows "
            "how much the end point depends on the start."
        ),
    )


def _figure_interpolation_start(ds: xr.Dataset) -> Figure:
    fig, (ax,) = _new_figure()
    n_in = float(ds.attrs.get("n_in", np.nan))
    alpha = ds["data.n_samples"].values.astype(float) / n_in
    _errorbar(ax, ds, "data.n_samples", "test_loss_end_sim", x=alpha, label="SGD end (sim)")
    _errorbar(ax, ds, "data.n_samples", "test_loss_end_theory", x=alpha, label="predicted end")
    _errorbar(ax, ds, "data.n_samples", "test_loss_ref", x=alpha, label="minimum norm")
    ax.set_xlabel("alpha = P / N_i")
    ax.set_ylabel("test loss")
    ax.legend(fontsize="small")
    return fig


# ----------------------------------------------------------------------------- the claims


def _change(change: str, after_seeing_data: bool = True, date: str = TODAY) -> dict[str, Any]:
    return {"date": date, "change": change, "after_seeing_data": after_seeing_data}


#: the revision for the science issue (seed t-intervals, saturation gate, rules that can fail);
#: made after earlier quick reproductions had been seen
_SEED_CHANGE = _change(
    "Aggregation over data seeds: per-seed values with a t-interval over seeds (the replication "
    "unit) instead of pooling all points / inverse-variance fixed effect with z = 1.96."
)
_GATE_CHANGE = _change(
    "Runs start from the paper's random start; a cell that did not saturate (loss, imbalance, "
    "dying units, live range dimension, second-half drift) turns holds into inconclusive."
)
_DEEP_METRICS = ("saturation.saturated",)
_LAYER_METRICS = (
    "layers.layer_*.rel_error_continuum",
    "layers.layer_*.rel_error_discrete",
    "layers.layer_*.rel_error_multiplicative",
    "layers.layer_*.rel_error_renormalized",
    "layers.layer_*.noise_floor",
)
_NULL_METRICS = tuple(
    f"{key}.{name}"
    for key in ("null_space", "null_space_constructed")
    for name in (
        "null_dim_hessian",
        "null_dim_noise",
        "expected_dim",
        "symmetry_dim",
        "symmetry_rank",
        "symmetry_in_null_hessian",
    )
)
_IVFR_METRICS = ("ivfr.layer_*.psi", "ivfr_theory.layer_*.psi", "ivfr_continuum.layer_*.psi")

_RULE_IVFR = (
    "holds if, at every grid point, the t-interval over data seeds of psi in the last layer with "
    "a fit lies above 0 and every cell saturated; fails if an interval lies below 0; "
    "inconclusive otherwise"
)

CLAIMS: tuple[ClaimSpec, ...] = (
    ClaimSpec(
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
    ),
    ClaimSpec(
        id="2_detailed_balance_broken",
        statement="Single layer: detailed balance is broken (commutator, current, entropy "
        "production > 0), decreasingly so as alpha grows.",
        expected=f"relative commutator > {COMMUTATOR_MIN:g} at every alpha; commutator and "
        "entropy production decrease with alpha",
        sweep="single_layer_alpha",
        measure=_measure_balance,
        figure=_figure_balance,
        metrics=("commutator", "entropy_production"),
        rule=f"holds if the seed interval of the relative commutator lies above {COMMUTATOR_MIN:g} "
        "at every alpha and the seed intervals of the per-seed log-log slopes of the commutator "
        "and of the entropy production against alpha lie below 0; fails if any interval lies on "
        "the other side; entropy production > 0 is reported, not counted (a theorem)",
        rule_history=(
            _SEED_CHANGE,
            _change(
                "Entropy production > 0 no longer counted (it is >= 0 by construction); "
                f"replaced by the commutator above {COMMUTATOR_MIN:g} at every alpha."
            ),
        ),
    ),
    ClaimSpec(
        id="3_single_layer_isotropic_loss",
        statement="Single layer: the weight covariance is anisotropic, yet the curvature along "
        "its eigenvectors is nearly constant (no IVFR).",
        expected=f"CV(Σ) > {ANISOTROPY_MIN}; CV(curvature) < {CURVATURE_CV_FRACTION} CV(H); "
        f"|psi| < {IVFR_EQUIVALENCE_DELTA}",
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
        f"psi inside ±{IVFR_EQUIVALENCE_DELTA} (equivalence; {CLAIM3_SEEDS} seeds, power 0.82 "
        "for psi = 0 at the pilot's SD 0.085); fails if any interval lies entirely on the other "
        "side",
        rule_history=(
            _SEED_CHANGE,
            _change(
                f"'No IVFR' tested by equivalence: psi's interval inside ±{IVFR_EQUIVALENCE_DELTA}"
                f"; delta and {CLAIM3_SEEDS} seeds fixed from a pilot on independent data seeds "
                "100-104 (which already showed psi ≈ 0.13) before the claim's own measurement."
            ),
        ),
    ),
    ClaimSpec(
        id="4_exact_theory_vs_simulation",
        statement="Simulation vs theory: the exact discrete-time equation matches simulated "
        "covariances within statistical error; the continuum Lyapunov solution deviates by "
        "O(eta).",
        expected=f"error ≤ {MATCH_MULTIPLE} noise floors; continuum deviation slope in "
        f"{list(ETA_SLOPE_RANGE)}",
        sweep="single_layer_eta",
        measure=_measure_eta,
        figure=_figure_eta,
        metrics=(
            "rel_error_discrete",
            "rel_error_discrete_noise_floor",
            "rel_error_continuum",
            "rel_diff_continuum_vs_discrete",
            "rel_error_current",
            "rel_error_current_noise_floor",
        ),
        rule=f"holds if in both sampling modes the exact theory's error is within "
        f"{MATCH_MULTIPLE} noise floors at every eta (fails beyond {FAIL_MULTIPLE}), the "
        f"continuum-vs-exact deviation's log-log slope in eta lies in {list(ETA_SLOPE_RANGE)} "
        "(fails outside), and the simulated current matches ½[H, M] by the same floor rule",
        rule_history=(),
    ),
    ClaimSpec(
        id="5_two_layer_linearized_theory",
        statement="Two layers: null space of dimension N_h^2, drift along the symmetry orbit "
        "then saturation; linearized theory vs simulation per layer.",
        expected=f"null dim = closed form (N_h^2, or N_h(N_i+N_o) - N_iN_o with surplus units); "
        f"best theory within max({LAYER_ERROR_TARGET:.0%}, {MATCH_MULTIPLE} noise floors) per "
        "layer; saturated",
        sweep="two_layer_small",
        measure=_measure_layers_small_eta,
        figure=_figure_layers,
        metrics=(*_DEEP_METRICS, *_LAYER_METRICS, *_NULL_METRICS),
        rule=f"holds if the best theory's error is within max({LAYER_ERROR_TARGET:.0%}, "
        f"{MATCH_MULTIPLE} floors) in every layer (fails beyond max({LAYER_ERROR_TARGET:.0%}, "
        f"{FAIL_MULTIPLE} floors)), dim null(H) = closed form = dim null(C) with the symmetry "
        "directions inside at the reached minimum and, separately, at the constructed balanced "
        "minimum (fails otherwise), and every cell saturated (else at most inconclusive)",
        rule_history=(
            _change(
                "Null space tested at an exact minimum (the balanced one) instead of the window "
                "mean, which is only near a minimum.",
                date="2026-11-28 11:48",
            ),
            _GATE_CHANGE,
            _change(
                "Null space: equality with the closed-form dimension at the minimum reached from "
                "the random start, and separately at the constructed point (formerly only '>=' at "
                "the constructed point)."
            ),
        ),
    ),
    ClaimSpec(
        id="5b_null_space_widths",
        statement="Two layers (N_i = 20, N_o = 5): the Hessian null space has dimension N_h^2 "
        "exactly at the minima SGD reaches when N_h equals the product's rank, and the predicted "
        "excess when N_h exceeds it (surplus units); the same at constructed points.",
        expected="N_h = 3, 5: 9, 25; N_h = 8: 100 (= 64 + 36)",
        sweep="two_layer_wide",
        measure=_measure_null_space_widths,
        figure=_figure_null_space,
        metrics=(*_DEEP_METRICS, *_NULL_METRICS, "dead_hidden_units", "surplus_units.n_surplus"),
        rule="holds if in every cell (width, data seed) dim null(H) equals the closed form and "
        "dim null(C), with the symmetry directions inside, at the reached and at the constructed "
        "minimum, and every cell saturated; fails if any cell differs",
        rule_history=(
            _change(
                "New claim, written after the 6-3-2 null space (12 = the closed form) had been "
                "seen; no cell of its own sweep had been run."
            ),
        ),
    ),
    ClaimSpec(
        id="6_two_layer_ivfr",
        statement="Two layers: anisotropic fluctuations from the inter-layer coupling and the "
        "IVFR (psi > 0), strongest in layer 2, unlike a single layer on the same data.",
        expected="psi_2 > 0; psi_2 > psi_1; psi_2 > psi of the single layer on the same data",
        sweep="two_layer_wide",
        measure=_measure_ivfr_paper_width,
        figure=_figure_ivfr,
        metrics=(
            *_DEEP_METRICS,
            *_IVFR_METRICS,
            "ivfr.layer_1.psi",
            "ivfr.layer_2.psi",
            "ivfr_single_layer_same_data.layer_1.psi",
        ),
        rule="at N_h = 5: holds if the seed intervals of psi_2, of the per-seed psi_2 - psi_1 and "
        "of the per-seed psi_2 - psi(single layer, same data) all lie above 0 and every cell "
        "saturated; fails if any lies below 0",
        rule_history=(
            _change(
                "Restricted to the paper's width N_h = 5 and 'strongest in layer 2' (psi_2 - "
                "psi_1 > 0) added.",
                date="2026-11-28 11:55",
            ),
            _SEED_CHANGE,
            _GATE_CHANGE,
            _change(
                "Contrast with a single layer trained on the same data added (docs/theory.md "
                "§10.6)."
            ),
        ),
    ),
    ClaimSpec(
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
    ),
    ClaimSpec(
        id="7b_ivfr_widths",
        statement="Beyond the paper: IVFR for several hidden widths N_h (incl. N_h > N_o, "
        "surplus units from a random start).",
        expected="psi > 0 in layer 2 for every N_h",
        sweep="two_layer_wide",
        measure=_measure_ivfr,
        figure=_figure_ivfr,
        metrics=(*_DEEP_METRICS, *_IVFR_METRICS),
        rule=_RULE_IVFR,
        rule_history=(_SEED_CHANGE, _GATE_CHANGE),
    ),
    ClaimSpec(
        id="7c_7d_ivfr_inputs",
        statement="Beyond the paper: IVFR with non-whitened (power-law spectrum) and "
        "non-Gaussian (Student-t) inputs.",
        expected="psi > 0 in layer 2 for both input distributions",
        sweep="two_layer_inputs",
        measure=_measure_ivfr,
        figure=_figure_ivfr,
        metrics=(*_DEEP_METRICS, *_IVFR_METRICS),
        rule=_RULE_IVFR,
        rule_history=(
            _SEED_CHANGE,
            _GATE_CHANGE,
            _change(
                "The gate's live-range test counts the Gauss-Newton matrix's range instead of the "
                "full Hessian's, after all 5 power-law cells of a quick reproduction were refused "
                "because the full-Hessian count flickered (98-100) with the noise; the student-t "
                "cells (interval straddling 0) keep the verdict inconclusive either way."
            ),
        ),
    ),
    ClaimSpec(
        id="7e_finite_learning_rate",
        statement="Beyond the paper: at finite learning rates the paper's continuum linearization "
        "misses the simulation increasingly with eta; the discrete-time theory stays closer.",
        expected="continuum error - best error > 0 (± 1.96 floors) at every eta; continuum error "
        "grows from the smallest to the largest eta",
        sweep="two_layer_small",
        measure=_measure_finite_eta,
        figure=_figure_layers,
        metrics=(*_DEEP_METRICS, *_LAYER_METRICS),
        rule="holds if in every layer and at every eta the interval gap ± 1.96 noise floors of "
        "(continuum error - best theory's error) lies above 0, and the interval of the continuum "
        "error's growth from the smallest to the largest eta (floors combined) lies above 0, and "
        "every cell saturated; fails if any interval lies below 0",
        rule_history=(
            _change(
                "Rewritten after it failed at eta = 0.05: from 'the continuum error exceeds the "
                "best theory's by > 2 noise floors at every eta and grows with eta' to point "
                "comparisons (continuum > 2 floors at the largest eta, errors ordered).",
                date="2026-11-28 11:55",
            ),
            _change(
                "Put back on intervals (issue 11): the gap at every eta and the growth, each with "
                "its interval from the noise floors."
            ),
            _GATE_CHANGE,
        ),
    ),
    ClaimSpec(
        id="7f_depth_three",
        statement="Beyond the paper: a depth-3 linear network (20-5-5-5) — null space of N_h^2 "
        "per hidden layer, linearized theory vs simulation per layer, and the IVFR.",
        expected="null dim = 2 N_h^2 = 50; best theory within the error target per layer; psi > "
        "0 in the last layer",
        sweep="depth_three",
        measure=_measure_depth_three,
        figure=_figure_depth_three,
        metrics=(*_DEEP_METRICS, *_LAYER_METRICS, *_NULL_METRICS, *_IVFR_METRICS),
        rule="holds if the claim-5 rule holds in every cell and the seed interval of psi in the "
        "last layer lies above 0; fails if any part fails",
        rule_history=(
            _GATE_CHANGE,
            _change("Widths 20-5-5-5 (enough directions per layer) and the IVFR part added."),
        ),
    ),
    ClaimSpec(
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
    ),
    ClaimSpec(
        id="7g2_interpolation_start_dependence",
        statement="Beyond the paper: below alpha = 1 the SGD end point depends on the start; "
        "from a fixed random start SGD reaches the predicted interpolating solution and its "
        "test loss.",
        expected=f"simulated = predicted end-point test loss within {END_POINT_RTOL:g} (relative)",
        sweep="single_layer_interpolation",
        measure=_measure_interpolation_start,
        figure=_figure_interpolation_start,
        metrics=(
            "test_loss_end_sim",
            "test_loss_end_theory",
            "test_loss_ref",
            "end_point_rel_error",
        ),
        rule=f"holds if in every cell (alpha < 1, data seed) the simulated end-point test loss "
        f"equals the prediction W* + W_0 (I - X^+ X) for that start within {END_POINT_RTOL:g} "
        f"(relative); fails beyond {END_POINT_FAIL:g}; inconclusive between",
        rule_history=(
            _change(
                "New claim; its thresholds were set after one exploratory run (P = 40, data "
                "seed 0) had shown agreement to 7e-13."
            ),
        ),
    ),
)
