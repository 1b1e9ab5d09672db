"""Every claim's rule can say `fails` and `inconclusive` (docs/theory.md §10).

Each claim is fed synthetic sweep metrics: a baseline that must give `holds` (so the rule is not
vacuous), perturbations that must give `fails`, and others that must give `inconclusive`. The
synthetic numbers are chosen far from the thresholds (or exactly straddling them), so the tests do
not depend on random noise.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import xarray as xr

from sgdfluct.errors import MeasurementError
from sgdfluct.experiments.claims import CLAIMS, require_metrics
from sgdfluct.experiments.verdicts import (
    equivalence_power,
    equivalence_verdict,
    seed_interval,
)

SPEC = {c.id: c for c in CLAIMS}


def make_ds(
    grid: Mapping[str, list[Any]],
    replicates: int,
    metrics: Mapping[str, Any],
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """A sweep.nc-like Dataset: dims = grid axes + replicate, one variable per metric."""
    dims = [*grid, "replicate"]
    shape = (*tuple(len(v) for v in grid.values()), replicates)
    ids = np.array([f"c{i}" for i in range(int(np.prod(shape)))], dtype=object).reshape(shape)
    data = {
        name: (dims, np.broadcast_to(np.asarray(value, dtype=float), shape).copy())
        for name, value in metrics.items()
    }
    coords: dict[str, Any] = {k: list(v) for k, v in grid.items()}
    coords["replicate"] = np.arange(replicates)
    coords["cell_id"] = (dims, ids)
    return xr.Dataset(data, coords=coords, attrs=dict(attrs or {}))


def verdict(claim: str, grid, replicates, metrics, attrs=None) -> str:
    ds = make_ds(grid, replicates, metrics, attrs)
    spec = SPEC[claim]
    require_metrics(ds, spec.metrics, claim)
    return spec.measure(ds).verdict


def with_(base: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(base)
    out.update({k.replace("__", "."): v for k, v in changes.items()})
    return out


# ----------------------------------------------------------------------------- claim 1, 2
ALPHA_GRID = {"data.n_samples": [105, 150, 200, 400, 1000, 4000]}
ALPHA = np.array(ALPHA_GRID["data.n_samples"], float)[:, None] / 100
SEED_JITTER = np.array([[1.0, 1.02, 0.98]])


def test_claim1_spectra_rule():
    cid = "1_noise_vs_hessian_spectrum"
    good = {"spectral_distance": 0.5 * ALPHA**-0.5 * SEED_JITTER}
    assert verdict(cid, ALPHA_GRID, 3, good, {"n_in": 100}) == "holds"
    rising = {"spectral_distance": 0.5 * ALPHA**0.5 * SEED_JITTER}
    assert verdict(cid, ALPHA_GRID, 3, rising, {"n_in": 100}) == "fails"
    mixed = {"spectral_distance": ALPHA ** np.array([[-0.5, 0.5, -0.1]])}
    assert verdict(cid, ALPHA_GRID, 3, mixed, {"n_in": 100}) == "inconclusive"


def test_claim2_balance_rule_does_not_count_entropy_production():
    cid = "2_detailed_balance_broken"
    good = {"commutator": 0.3 * ALPHA**-0.7 * SEED_JITTER, "entropy_production": ALPHA**-2.4}
    assert verdict(cid, ALPHA_GRID, 3, good, {"n_in": 100}) == "holds"
    # commutating H and C (round-off commutator): detailed balance holds -> the claim fails,
    # although the entropy production stays positive
    balanced = with_(good, commutator=1e-15 * SEED_JITTER)
    assert verdict(cid, ALPHA_GRID, 3, balanced, {"n_in": 100}) == "fails"
    growing = with_(good, entropy_production=ALPHA**1.0 * SEED_JITTER)
    assert verdict(cid, ALPHA_GRID, 3, growing, {"n_in": 100}) == "fails"
    # at the largest alpha the commutator straddles the threshold across seeds
    straddle = 0.3 * ALPHA**-0.7 * SEED_JITTER
    straddle[-1] = [5e-4, 2e-3, 1e-3]
    assert (
        verdict(cid, ALPHA_GRID, 3, with_(good, commutator=straddle), {"n_in": 100})
        == "inconclusive"
    )


# ----------------------------------------------------------------------------- claim 3
def _isotropy(psi: np.ndarray) -> dict[str, Any]:
    return {
        "cov_anisotropy": 0.8,
        "curvature_cv": 0.3,
        "hessian_cv": 1.0,
        "ivfr.layer_1.psi": psi,
        "ivfr.layer_1.psi_stderr": 0.05,
        "ivfr.layer_1.spearman": -0.1,
        "ivfr_theory.layer_1.spearman": -0.1,
    }


def test_claim3_equivalence_rule():
    cid = "3_single_layer_isotropic_loss"
    n = 10
    tiny = np.linspace(-0.01, 0.01, n)
    assert verdict(cid, {}, n, _isotropy(tiny)) == "holds"
    assert verdict(cid, {}, n, _isotropy(0.3 + tiny)) == "fails"  # interval beyond +delta
    assert verdict(cid, {}, n, _isotropy(0.1 + 5 * tiny)) == "inconclusive"  # straddles delta
    isotropic = with_(_isotropy(tiny), cov_anisotropy=0.01)
    assert verdict(cid, {}, n, isotropic) == "fails"
    curved = with_(_isotropy(tiny), curvature_cv=0.9)
    assert verdict(cid, {}, n, curved) == "fails"


def test_claim3_design_has_the_planned_power():
    from sgdfluct.experiments.claims import (
        CLAIM3_PILOT_SD,
        CLAIM3_SEEDS,
        IVFR_EQUIVALENCE_DELTA,
    )

    power = equivalence_power(CLAIM3_PILOT_SD, CLAIM3_SEEDS, IVFR_EQUIVALENCE_DELTA)
    # Monte Carlo error of the default 200k draws is ~0.001
    assert power >= 0.8


# ----------------------------------------------------------------------------- claim 4
ETA_GRID = {
    "sgd.learning_rate": [0.005, 0.01, 0.02, 0.04, 0.08],
    "sgd.sampling": ["with_replacement", "without_replacement"],
}
ETA = np.array(ETA_GRID["sgd.learning_rate"])[:, None, None]


def _eta_metrics(ratio: float, slope: float = 1.0) -> dict[str, Any]:
    return {
        "rel_error_discrete": 0.01 * ratio,
        "rel_error_discrete_noise_floor": 0.01,
        "rel_error_continuum": 0.1 * ETA / 0.005,
        "rel_diff_continuum_vs_discrete": 0.1 * (ETA / 0.005) ** slope,
        "rel_error_current": 0.01,
        "rel_error_current_noise_floor": 0.01,
    }


def test_claim4_exact_theory_rule():
    cid = "4_exact_theory_vs_simulation"
    assert verdict(cid, ETA_GRID, 1, _eta_metrics(1.0)) == "holds"
    assert verdict(cid, ETA_GRID, 1, _eta_metrics(5.0)) == "fails"
    assert verdict(cid, ETA_GRID, 1, _eta_metrics(1.0, slope=2.0)) == "fails"
    assert verdict(cid, ETA_GRID, 1, _eta_metrics(3.0)) == "inconclusive"


# ----------------------------------------------------------------------------- deep claims
def _null(prefix: str, found: float = 12, expected: float = 12) -> dict[str, Any]:
    return {
        f"{prefix}.null_dim_hessian": found,
        f"{prefix}.null_dim_noise": found,
        f"{prefix}.expected_dim": expected,
        f"{prefix}.symmetry_dim": 9,
        f"{prefix}.symmetry_rank": 9,
        f"{prefix}.symmetry_in_null_hessian": 1e-14,
    }


def _layers(n_layers: int, best: float = 0.02, cont: Any = 0.08, floor: float = 0.01) -> dict:
    out: dict[str, Any] = {}
    for l in range(1, n_layers + 1):
        key = f"layers.layer_{l}"
        out |= {
            f"{key}.rel_error_continuum": cont,
            f"{key}.rel_error_discrete": best,
            f"{key}.rel_error_multiplicative": best,
            f"{key}.rel_error_renormalized": best,
            f"{key}.noise_floor": floor,
        }
    return out


def _deep(n_layers: int = 2, **kw: Any) -> dict[str, Any]:
    return {
        **_layers(n_layers, **kw),
        **_null("null_space"),
        **_null("null_space_constructed"),
        "saturation.saturated": 1.0,
        "saturation.step": 10_000,
        "dead_hidden_units": 1,
        "surplus_units.n_surplus": 1,
        "surplus_units.death_step": 9_000,
        "equilibrium.rel_error": 0.07,
    }


SMALL_GRID = {"sgd.learning_rate": [0.05, 0.1]}


def test_claim5_rule():
    cid = "5_two_layer_linearized_theory"
    assert verdict(cid, SMALL_GRID, 1, _deep()) == "holds"
    assert verdict(cid, SMALL_GRID, 1, _deep(best=0.2)) == "fails"
    assert verdict(cid, SMALL_GRID, 1, _deep() | _null("null_space", found=11)) == "fails"
    assert (
        verdict(cid, SMALL_GRID, 1, _deep() | _null("null_space_constructed", found=13)) == "fails"
    )
    assert verdict(cid, SMALL_GRID, 1, _deep(best=0.035, floor=0.01)) == "inconclusive"
    unsaturated = with_(_deep(), saturation__saturated=0.0)
    assert verdict(cid, SMALL_GRID, 1, unsaturated) == "inconclusive"


def test_claim5b_rule():
    cid = "5b_null_space_widths"
    grid = {"model.hidden": [3, 5, 8]}
    assert verdict(cid, grid, 2, _deep()) == "holds"
    wrong = _deep() | _null("null_space", found=np.array([[12, 12], [12, 12], [12, 13]]))
    assert verdict(cid, grid, 2, wrong) == "fails"
    assert verdict(cid, grid, 2, with_(_deep(), saturation__saturated=0.0)) == "inconclusive"


def _ivfr(layers: int, psi: Mapping[int, Any], single: Any = 0.0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prefix in ("ivfr", "ivfr_theory", "ivfr_continuum"):
        for l in range(1, layers + 1):
            out |= {
                f"{prefix}.layer_{l}.psi": psi[l],
                f"{prefix}.layer_{l}.psi_stderr": 0.02,
                f"{prefix}.layer_{l}.spearman": -0.3,
                f"{prefix}.layer_{l}.n_directions": 20,
            }
    out["ivfr_single_layer_same_data.layer_1.psi"] = single
    out["ivfr_single_layer_same_data.layer_1.psi_stderr"] = 0.02
    return out


SEEDS5 = np.array([-0.01, -0.005, 0.0, 0.005, 0.01])


def test_claim6_rule():
    cid = "6_two_layer_ivfr"
    grid = {"model.hidden": [3, 5, 8]}
    good = _deep() | _ivfr(2, {1: 0.05 + SEEDS5, 2: 0.2 + SEEDS5})
    assert verdict(cid, grid, 5, good) == "holds"
    assert verdict(cid, grid, 5, good | _ivfr(2, {1: 0.05 + SEEDS5, 2: -0.2 + SEEDS5})) == "fails"
    # not stronger than in the single layer on the same data
    assert verdict(cid, grid, 5, good | _ivfr(2, {1: 0.05, 2: 0.2 + SEEDS5}, single=0.4)) == "fails"
    straddle = good | _ivfr(2, {1: 0.05, 2: 0.2 + SEEDS5}, single=0.2 + 10 * SEEDS5[::-1])
    assert verdict(cid, grid, 5, straddle) == "inconclusive"
    assert verdict(cid, grid, 5, with_(good, saturation__saturated=0.0)) == "inconclusive"


@pytest.mark.parametrize(
    ("cid", "grid"),
    [
        ("7a_ivfr_outputs", {"data.n_out": [1, 2, 3]}),
        ("7b_ivfr_widths", {"model.hidden": [3, 5, 8]}),
        ("7c_7d_ivfr_inputs", {"data.inputs": ["powerlaw", "student_t"]}),
    ],
)
def test_ivfr_rules(cid, grid):
    n = len(next(iter(grid.values())))
    good = _deep() | _ivfr(2, {1: 0.05 + SEEDS5, 2: 0.2 + SEEDS5})
    assert verdict(cid, grid, 5, good) == "holds"
    negative = np.full((n, 5), 0.2) + SEEDS5
    negative[-1] = -0.2 + SEEDS5
    assert verdict(cid, grid, 5, good | _ivfr(2, {1: 0.05, 2: negative})) == "fails"
    straddle = np.full((n, 5), 0.2) + SEEDS5
    straddle[0] = 10 * SEEDS5
    assert verdict(cid, grid, 5, good | _ivfr(2, {1: 0.05, 2: straddle})) == "inconclusive"
    # a cell where layer 2 has no fit is tested in layer 1
    no_fit = np.full((n, 5), 0.2) + SEEDS5
    no_fit[0] = np.nan
    first = np.full((n, 5), 0.05) + SEEDS5
    first[0] = -0.3 + SEEDS5
    assert verdict(cid, grid, 5, good | _ivfr(2, {1: first, 2: no_fit})) == "fails"


def test_claim7e_rule_on_intervals():
    cid = "7e_finite_learning_rate"
    grows = np.array([[0.05], [0.10]])
    assert verdict(cid, SMALL_GRID, 1, _deep(best=0.01, cont=grows, floor=0.005)) == "holds"
    assert verdict(cid, SMALL_GRID, 1, _deep(best=0.2, cont=grows, floor=0.005)) == "fails"
    shrinks = np.array([[0.10], [0.05]])
    assert verdict(cid, SMALL_GRID, 1, _deep(best=0.01, cont=shrinks, floor=0.005)) == "fails"
    # the gap at eta = 0.05 is within its noise: inconclusive (the case that was rewritten)
    close = np.array([[0.018], [0.10]])
    assert verdict(cid, SMALL_GRID, 1, _deep(best=0.01, cont=close, floor=0.005)) == (
        "inconclusive"
    )


def test_claim7f_rule():
    cid = "7f_depth_three"
    seeds3 = np.array([-0.01, 0.0, 0.01])
    good = (
        _deep(3)
        | _null("null_space", 50, 50)
        | _null("null_space_constructed", 50, 50)
        | _ivfr(3, {1: 0.05 + seeds3, 2: 0.1 + seeds3, 3: 0.2 + seeds3})
    )
    assert verdict(cid, {}, 3, good) == "holds"
    assert verdict(cid, {}, 3, good | _null("null_space", 52, 50)) == "fails"
    assert verdict(cid, {}, 3, good | _ivfr(3, {1: 0.05, 2: 0.1, 3: -0.2 + seeds3})) == "fails"
    straddle = good | _ivfr(3, {1: 0.05, 2: 0.1, 3: 10 * seeds3})
    assert verdict(cid, {}, 3, straddle) == "inconclusive"


# ----------------------------------------------------------------------------- claim 7g
TL_GRID = {"data.n_samples": [25, 40, 60, 75, 100, 150, 250, 500]}
TL_ALPHA = np.array(TL_GRID["data.n_samples"], float)[:, None] / 50


def _test_loss(ratio: Any = 1.0) -> dict[str, Any]:
    test = 1.0 / (np.abs(TL_ALPHA - 1.0) + 0.1) + 0.0 * SEED_JITTER
    fluct = np.where(TL_ALPHA < 1, 0.0, 0.05 * test)
    return {
        "test_loss_ref": test,
        "test_loss_sgd": test + fluct * ratio,
        "test_loss_fluctuation_theory": fluct,
        "test_loss_fluctuation_sim": fluct * ratio,
    }


def test_claim7g_rule():
    cid = "7g_test_loss_double_descent"
    attrs = {"n_in": 50}
    assert verdict(cid, TL_GRID, 3, _test_loss(1.0 + 0.01 * (SEED_JITTER - 1)), attrs) == "holds"
    assert verdict(cid, TL_GRID, 3, _test_loss(2.0 * SEED_JITTER), attrs) == "fails"
    spread = 1.0 + np.array([[-0.2, 0.0, 0.2]])
    assert verdict(cid, TL_GRID, 3, _test_loss(spread), attrs) == "inconclusive"
    # the peak far from alpha = 1
    moved = _test_loss(1.0)
    moved["test_loss_ref"] = 1.0 / (np.abs(TL_ALPHA - 5.0) + 0.1) + 0.0 * SEED_JITTER
    assert verdict(cid, TL_GRID, 3, moved, attrs) == "fails"


# ----------------------------------------------------------------------------- contract
def test_every_claim_declares_rule_history_and_metrics():
    for claim in CLAIMS:
        assert claim.rule, claim.id
        assert claim.metrics, claim.id
        for change in claim.rule_history:
            assert set(change) == {"date", "change", "after_seeing_data"}, claim.id
            assert isinstance(change["after_seeing_data"], bool)


def test_every_claim_has_a_fails_test():
    """Each claim id appears in a test of this module that asserts `fails`."""
    import inspect
    import sys

    source = inspect.getsource(sys.modules[__name__])
    for claim in CLAIMS:
        assert claim.id in source or claim.id[:2] in source, claim.id


def test_missing_metric_raises():
    spec = SPEC["6_two_layer_ivfr"]
    ds = make_ds({"model.hidden": [5]}, 2, {"ivfr.layer_2.psi": 0.1, "saturation.saturated": 1})
    with pytest.raises(MeasurementError, match="ivfr_single_layer_same_data"):
        require_metrics(ds, spec.metrics, spec.id)
    with pytest.raises(MeasurementError):
        spec.measure(ds)


# ----------------------------------------------------------------------------- verdict helpers
def test_seed_interval_is_a_t_interval():
    r = seed_interval([1.0, 2.0, 3.0])
    # t_{0.975, 2} = 4.3027; sd = 1; half = 4.3027 / sqrt(3)
    assert r.hi - r.mean == pytest.approx(4.302652729911275 / np.sqrt(3))
    assert seed_interval([1.0]).hi == np.inf
    het = seed_interval([0.0, 1.0, 2.0], [0.01, 0.01, 0.01]).heterogeneity
    assert het["i2"] > 0.99  # scatter far beyond the per-seed errors
    het = seed_interval([0.0, 0.01, 0.02], [1.0, 1.0, 1.0]).heterogeneity
    assert het["i2"] == 0.0


def test_equivalence_verdict_and_power():
    assert equivalence_verdict(-0.05, 0.05, delta=0.1) == "holds"
    assert equivalence_verdict(0.15, 0.3, delta=0.1) == "fails"
    assert equivalence_verdict(0.05, 0.15, delta=0.1) == "inconclusive"
    # power grows with the number of seeds and is ~0 when the interval cannot fit in ±delta
    powers = [equivalence_power(0.1, n, 0.1, draws=20_000) for n in (3, 10, 30)]
    assert powers[0] < powers[1] < powers[2]
    assert equivalence_power(1.0, 3, 0.01, draws=20_000) < 0.01
    for a, b in itertools.pairwise(powers):
        assert b > a


def test_claim7g2_start_dependence_rule():
    cid = "7g2_interpolation_start_dependence"
    grid = {"data.n_samples": [25, 40]}
    base = {
        "test_loss_end_theory": 2.6,
        "test_loss_end_sim": 2.6 * (1 + 1e-12),
        "test_loss_ref": 2.5,
        "end_point_rel_error": 1e-12,
    }
    attrs = {"n_in": 50}
    assert verdict(cid, grid, 3, base, attrs) == "holds"
    assert verdict(cid, grid, 3, with_(base, test_loss_end_sim=2.7), attrs) == "fails"
    assert verdict(cid, grid, 3, with_(base, test_loss_end_sim=2.6 * (1 + 1e-4)), attrs) == (
        "inconclusive"
    )
