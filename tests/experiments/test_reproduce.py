"""`sgdfluct reproduce` end to end at smoke scale (single-layer claims): files and contract."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sgdfluct.cli import main
from sgdfluct.experiments.claims import CLAIMS, sweep_defs
from sgdfluct.experiments.verdicts import combine, interval_verdict, loglog_slope, mean_interval

VERDICTS = {"holds", "fails", "inconclusive"}
#: the fields claims.json adds per claim for the design of its test
DESIGN_KEYS = {
    "scale",
    "evidence",
    "seeds",
    "rule_hash",
    "rule_frozen",
    "rule_last_changed",
    "rule_changed_after_data",
    "seed_plan",
}


def test_reproduce_smoke_writes_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out, as in `make reproduce`
    out = tmp_path / "rep"
    args = ["reproduce", "--smoke", "--out", "rep", "--workers", "2", "-q"]
    for claim in ("1", "2", "3", "7g"):
        args += ["--only", claim]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    claims = json.loads((out / "claims.json").read_text())
    # "7g" matches 7g (double descent) and 7g2 (start dependence below alpha = 1)
    assert [c["id"][:3] for c in claims] == ["1_n", "2_d", "3_s", "7g_", "7g2"]
    for claim in claims:
        # the contract's keys, then the design of the test (issue 18: added, never renamed)
        assert set(claim) == {
            "id",
            "statement",
            "measured",
            "expected",
            "verdict",
            "rule",
            "rule_history",
            *DESIGN_KEYS,
        }
        assert claim["scale"] == "smoke" and claim["evidence"] == "pipeline check"
        assert claim["rule_changed_after_data"] is False and claim["seeds"]["data"]
        assert claim["rule"]
        assert claim["verdict"] in VERDICTS
        assert "error" not in claim["measured"], claim["measured"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert (out / "report.md").is_file()
    # each claim's design is shown, not only written to claims.json
    md = (out / "report.md").read_text()
    assert md.count("**Design.** pipeline check (smoke scale); seeds: data ") == len(claims)
    assert "rule " + claims[0]["rule_hash"] + ", frozen " in md
    assert len(list((out / "figures").glob("*.png"))) == 5
    # resuming: a second call recomputes nothing and gives the same claims
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0
    assert json.loads((out / "claims.json").read_text()) == claims


def test_every_claim_has_a_sweep_at_every_scale():
    for scale in ("quick", "full", "smoke"):
        defs = sweep_defs(scale)
        assert {c.sweep for c in CLAIMS} <= set(defs)
    ids = [c.id for c in CLAIMS]
    assert len(ids) == len(set(ids))
    for prefix in ("1_", "2_", "3_", "4_", "5_", "6_", "7a", "7b", "7c", "7e", "7f", "7g"):
        assert any(i.startswith(prefix) for i in ids), prefix


def test_verdict_rules():
    assert interval_verdict(0.1, 0.3, above=0.0) == "holds"
    assert interval_verdict(-0.3, -0.1, above=0.0) == "fails"
    assert interval_verdict(-0.1, 0.3, above=0.0) == "inconclusive"
    assert interval_verdict(float("-inf"), 1.0, above=0.0) == "inconclusive"
    assert interval_verdict(0.1, 0.3, below=0.5) == "holds"
    assert combine(["holds", "holds"]) == "holds"
    assert combine(["holds", "inconclusive"]) == "inconclusive"
    assert combine(["holds", "fails", "inconclusive"]) == "fails"
    slope, lo, hi = loglog_slope([1, 2, 4, 8], [1, 2.1, 3.9, 8.2])
    assert lo < 1.0 < hi and abs(slope - 1) < 0.05
    m, lo, hi = mean_interval([1.0, 1.2, 0.8])
    assert lo < m < hi and m == 1.0


def _fake_claim8(scale, seeds, *, workers=None):
    from sgdfluct.experiments.claims.claim8_probe import RULE, RULE_HISTORY, claim8_verdict

    def layer(mean, lo, hi):
        t = {"n": seeds, "mean": mean, "ci": [lo, hi], "sd": 0.1}
        return {"psi": t, "psi_sharp": t, "spearman_T_k": t, "sign": "+" if lo > 0 else "0"}

    mlp = {"layer_1": layer(-0.1, -0.2, 0.0), "layer_2": layer(-0.3, -0.5, -0.1)}
    return {
        "verdict": claim8_verdict(mlp),
        "rule": RULE,
        "rule_history": list(RULE_HISTORY),
        "mlp": {"layers": mlp, "seeds_ok": seeds},
        "linear": {"layers": mlp, "seeds_ok": seeds},
        "carrying_layers": [],
        "pattern_mlp": ["0", "-"],
        "pattern_linear": ["0", "-"],
        "explanation": "undetermined",
        "seconds": 1.0,
    }


def _patch_claim8(monkeypatch) -> list[str]:
    """Replace claim 8's measurement by :func:`_fake_claim8`; the list records each call's scale."""
    import pytest

    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from sgdfluct.experiments.claims import claim8_probe

    calls: list[str] = []

    def fake(scale, seeds, *, workers=None):
        calls.append(scale)
        return _fake_claim8(scale, seeds, workers=workers)

    monkeypatch.setattr(claim8_probe, "measure_claim8", fake)
    return calls


def test_claim8_is_wired_into_the_reproduction(tmp_path, monkeypatch):
    calls = _patch_claim8(monkeypatch)
    args = ["reproduce", "--quick", "--out", str(tmp_path / "rep"), "--only", "8", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (claim,) = json.loads((tmp_path / "rep" / "claims.json").read_text())
    assert claim["id"] == "8_probe_ivfr"
    assert claim["verdict"] == "fails"  # every layer's interval below +0.1: the rule says fails
    assert claim["rule"].startswith("Digits MLP") and claim["rule_history"]
    assert (tmp_path / "rep" / "figures" / "8_probe_ivfr.png").is_file()
    assert calls == ["quick"]


def test_claim8_measurement_is_kept_for_a_resumed_reproduction(tmp_path, monkeypatch):
    from sgdfluct.experiments.reproduce import reproduce

    calls = _patch_claim8(monkeypatch)
    first = reproduce(tmp_path, scale="quick", only=["8"])
    second = reproduce(tmp_path, scale="quick", only=["8"])
    assert calls == ["quick"] and first[0].measured == second[0].measured


def test_sweeps_share_one_pool_and_report_failed_cells_per_sweep(tmp_path, monkeypatch):
    # a sweep with failed cells is gathered with gaps and an error text; the other is complete
    import functools

    from sgdfluct.experiments import reproduce
    from sgdfluct.experiments._cells import failing_cell

    defs = sweep_defs("smoke")
    broken, whole = defs["single_layer_test_loss"], defs["single_layer_eta"]
    n_fail = broken.grid["data.n_samples"][0]
    fn = functools.partial(failing_cell, n_samples=n_fail)
    monkeypatch.setattr(reproduce, "run_experiment_without_figures", fn)
    results = reproduce._run([broken, whole], tmp_path, workers=2, progress=False)
    ds, error = results[broken.name]
    assert "cell(s) failed" in error and f"data.n_samples={n_fail}" in error
    assert ds is not None and "missing_cells" in ds.attrs
    ds, error = results[whole.name]
    assert error == "" and ds is not None and "missing_cells" not in ds.attrs
    assert (tmp_path / "sweeps" / whole.name / "sweep.nc").is_file()


def test_full_scale_runs_on_fresh_seeds_with_the_planned_replicates():
    from sgdfluct.experiments.claims import CLAIMS
    from sgdfluct.experiments.reproduce import _seeds_of

    quick, full = sweep_defs("quick"), sweep_defs("full")
    for name, sweep in full.items():
        q, f = _seeds_of(quick[name]), _seeds_of(sweep)
        assert not set(q["data"]) & set(f["data"]), name
        assert not set(q["sgd"]) & set(f["sgd"]), name
        plans = [c.seed_plan.full_seeds() for c in CLAIMS if c.sweep == name and c.seed_plan]
        if plans:  # the power calculation sets the confirmatory replicates
            assert sweep.replicates == max(plans), name
            # one data set per replicate, shared by the grid points (paired comparisons)
            assert len(f["data"]) == sweep.replicates, name
    # claim 8 (the probe) too
    from sgdfluct.experiments.claims.claim8_probe import CLAIM as CLAIM8

    assert CLAIM8.seeds is not None
    assert not set(CLAIM8.seeds("quick")) & set(CLAIM8.seeds("full"))


@pytest.mark.slow
def test_a_rule_changed_after_its_data_is_flagged(tmp_path, monkeypatch):
    import dataclasses

    import sgdfluct.experiments.claims as claims
    from sgdfluct.experiments.reproduce import RULES_FROZEN_FILE, reproduce

    first = reproduce(tmp_path, scale="smoke", only=["3"], workers=1)
    record = json.loads((tmp_path / "claims.json").read_text())[0]
    assert record["rule_changed_after_data"] is False
    assert json.loads((tmp_path / RULES_FROZEN_FILE).read_text())["smoke"][first[0].id]
    # the same folder (its data already computed), the rule edited: flagged, in the details too
    spec = next(c for c in claims.CLAIMS if c.id == first[0].id)
    edited = dataclasses.replace(spec, rule=spec.rule + " (edited)")
    module = type("M", (), {"CLAIM": edited, "sweeps": claims.claim3_isotropy.sweeps})
    monkeypatch.setattr(claims, "REGISTRY", claims.ClaimRegistry((module,)))
    (again,) = reproduce(tmp_path, scale="smoke", only=["3"], workers=1)
    record = json.loads((tmp_path / "claims.json").read_text())[0]
    assert record["rule_changed_after_data"] is True
    assert again.details.startswith("**Rule changed after its this run's data were seen**")
    md = (tmp_path / "report.md").read_text()
    assert "**inconclusive** (rule changed after data)" in md or "(rule changed after data) |" in md
    assert "**Design.** RULE CHANGED AFTER THIS RUN'S DATA WERE SEEN (not confirmatory)" in md
    assert (
        record["rule_hash"]
        != json.loads((tmp_path / RULES_FROZEN_FILE).read_text())["smoke"][first[0].id]["rule_hash"]
    )
