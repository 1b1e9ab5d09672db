"""Adding a claim is one module plus one registration line (sgdfluct.experiments.claims)."""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import pytest

import sgdfluct.experiments.claims as claims
from sgdfluct.errors import ConfigError
from sgdfluct.experiments.claims import REGISTRY, ClaimRegistry

#: a complete claim module, as a contributor would write it in claims/claim9_toy.py: its sweep,
#: its rule constant, its measurement, its figure and its spec
TOY_MODULE = """
import numpy as np
from matplotlib.figure import Figure

from sgdfluct.experiments.claims import ClaimSpec, Measurement, SweepDef
from sgdfluct.experiments.verdicts import interval_verdict, seed_interval

#: the exact theory's relative error must stay below this (toy rule)
TOY_MAX_ERROR = 10.0


def sweeps(scale):
    base = {
        "data": {"n_in": 4, "n_out": 1, "n_samples": 12, "label_noise": 1.0, "seed": 0},
        "model": {"depth": 1},
        "sgd": {"learning_rate": 0.05, "batch_size": 4, "steps": 2_000, "burn_in": 500,
                "record_every": 5, "replicas": 2, "seed": 1},
        "analysis": {"bootstrap": 20},
    }
    return (SweepDef(name="toy_sweep", base=base, replicates=2),)


def measure(ds):
    r = seed_interval(np.asarray(ds["rel_error_discrete"].values, dtype=float).ravel())
    return Measurement(
        measured={"rel_error": r.to_json()},
        verdict=interval_verdict(r.lo, r.hi, below=TOY_MAX_ERROR),
    )


def figure(ds):
    fig = Figure()
    fig.subplots().plot(ds["rel_error_discrete"].values.ravel(), "o")
    return fig


CLAIM = ClaimSpec(
    id="9_toy",
    statement="Toy: the exact theory is within a factor of the simulation.",
    expected=f"relative error < {TOY_MAX_ERROR}",
    sweep="toy_sweep",
    measure=measure,
    figure=figure,
    metrics=("rel_error_discrete",),
    rule=f"holds if the seed interval of the relative error lies below {TOY_MAX_ERROR}",
)
"""


def _toy_module(tmp_path):
    path = tmp_path / "claim9_toy.py"
    path.write_text(TOY_MODULE)
    spec = importlib.util.spec_from_file_location("claim9_toy", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["claim9_toy"] = module
    spec.loader.exec_module(module)
    return module


def test_a_toy_claim_registers_and_runs_end_to_end(tmp_path, monkeypatch):
    from sgdfluct.experiments.reproduce import claim_ids, reproduce

    toy = _toy_module(tmp_path)
    registry = REGISTRY.with_module(toy)  # the one registration line
    monkeypatch.setattr(claims, "REGISTRY", registry)
    # sweep claims in registration order, then the standalone ones (claim 8)
    assert claim_ids() == [*(c.id for c in REGISTRY.claims), "9_toy", "8_probe_ivfr"]
    assert "toy_sweep" in registry.sweep_defs("smoke")
    (result,) = reproduce(tmp_path / "rep", scale="smoke", only=["9"], workers=1)
    assert result.id == "9_toy" and result.verdict == "holds", result.measured
    (record,) = json.loads((tmp_path / "rep" / "claims.json").read_text())
    assert record["id"] == "9_toy" and record["verdict"] == "holds"
    assert (tmp_path / "rep" / "figures" / "9_toy.png").is_file()


def test_registry_refuses_inconsistent_modules(tmp_path):
    toy = _toy_module(tmp_path)
    with pytest.raises(ConfigError, match="registered more than once"):
        REGISTRY.with_module(toy).with_module(toy)
    with pytest.raises(ConfigError, match="CLAIM must be"):
        REGISTRY.with_module(types.SimpleNamespace(CLAIM=None))
    orphan = types.SimpleNamespace(CLAIM=toy.CLAIM)  # its sweep is defined by no module
    with pytest.raises(ConfigError, match="read a sweep that no claim module defines"):
        ClaimRegistry((*REGISTRY.modules, orphan))
    from sgdfluct.experiments.claims import claim1_spectra, claim8_probe

    standalone = claims.StandaloneClaim(
        id="9_twin", statement="", expected="", run=claim8_probe.run_claim8
    )
    twin = types.SimpleNamespace(CLAIM=standalone, sweeps=claim1_spectra.sweeps)
    with pytest.raises(ConfigError, match="defined by two claim modules"):
        REGISTRY.with_module(twin)


def test_every_registered_module_is_a_claim_file():
    # one file per claim: every claim module of the package is registered, and vice versa
    import pkgutil

    files = {m.name for m in pkgutil.iter_modules(claims.__path__) if m.name.startswith("claim")}
    registered = {m.__name__.rsplit(".", 1)[-1] for m in REGISTRY.modules}
    assert files == registered
    assert len(REGISTRY.ids()) == len(REGISTRY.modules)


def test_seed_plan_table_gives_every_claim_its_full_seeds():
    from sgdfluct.experiments.claims import FULL_SEED_CAP, seed_plan_table, sweep_defs
    from sgdfluct.experiments.verdicts import seeds_for_half_width

    rows = {r["claim"]: r for r in seed_plan_table()}
    assert set(rows) == set(REGISTRY.ids())
    full = sweep_defs("full")
    for claim in REGISTRY.claims:
        row = rows[claim.id]
        if claim.seed_plan is None:
            assert row["note"] and row["full_seeds"] == full[claim.sweep].replicates
            continue
        p = claim.seed_plan
        assert row["full_seeds"] == seeds_for_half_width(
            p.quick_sd, p.target_half_width, minimum=p.minimum, cap=FULL_SEED_CAP
        )
        # the sweep runs at least the seeds its claims plan, never fewer
        assert full[claim.sweep].replicates >= row["full_seeds"]
        assert row["capped"] == (row["reached_half_width"] > p.target_half_width)


def test_projected_cost_adds_up_and_refuses_bad_input():
    from sgdfluct.experiments.reproduce import projected_cost

    quick, full = projected_cost("quick"), projected_cost("full", workers=2)
    assert full["total_core_seconds"] > quick["total_core_seconds"] > 0
    assert full["wall_seconds"] >= full["total_core_seconds"] / 2
    assert sum(r["cells"] for r in full["sweeps"].values()) > 0
    with pytest.raises(ConfigError, match="workers"):
        projected_cost("full", workers=0)
    with pytest.raises(ConfigError, match="scale"):
        projected_cost("huge")
