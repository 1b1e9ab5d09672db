"""Typed results: one object, two views; declared keys; no silent NaN; missing metrics raise."""

from __future__ import annotations

import numpy as np
import pytest

from sgdfluct.config import config_from_dict
from sgdfluct.errors import MeasurementError
from sgdfluct.results import SUMMARY_KEYS, MetricMissing, Noted, SingleLayerRun
from sgdfluct.runner import compute


def _tiny(depth: int = 1):
    sgd = {"steps": 20_000, "burn_in": 4_000} if depth == 1 else {"steps": 100_000}
    return config_from_dict(
        {
            "data": {"n_in": 5, "n_out": 2, "n_samples": 30, "seed": 3},
            "model": {"depth": depth, "hidden": 2},
            "sgd": {
                "learning_rate": 0.05,
                "batch_size": 5,
                "burn_in": 4_000,
                "record_every": 5,
                "replicas": 4,
                "seed": 2,
                **sgd,
            },
            "analysis": {"bootstrap": 50},
        }
    )


@pytest.fixture(scope="module")
def single_run() -> SingleLayerRun:
    result = compute(_tiny(1))
    assert isinstance(result, SingleLayerRun)
    return result


def _fake(metrics: dict) -> SingleLayerRun:
    cfg = _tiny(1)
    z = np.zeros(10)
    zz = np.zeros((10, 10))
    from sgdfluct.data import make_dataset

    return SingleLayerRun(
        config=cfg,
        data=make_dataset(cfg.data),
        theta_ref=z,
        mean_sim=z,
        cov_sim=zz,
        cov_sim_stderr=zz,
        hessian=zz,
        noise_cov=zz,
        cov_continuum=zz,
        cov_discrete=zz,
        metrics=metrics,
    )


def test_every_summary_key_is_declared_once(single_run):
    summary = single_run.to_summary()
    undeclared = {k for k in summary if k not in SUMMARY_KEYS and not k.endswith("_note")}
    assert not undeclared, f"declare these keys in sgdfluct.results.SUMMARY_KEYS: {undeclared}"


@pytest.mark.slow
def test_deep_summary_keys_are_declared():
    summary = compute(_tiny(2)).to_summary()
    undeclared = {k for k in summary if k not in SUMMARY_KEYS and not k.endswith("_note")}
    assert not undeclared, f"declare these keys in sgdfluct.results.SUMMARY_KEYS: {undeclared}"


def test_dataset_and_summary_are_views_of_the_same_object(single_run):
    ds = single_run.to_dataset()
    assert np.array_equal(ds["weight_cov_sim"].values, single_run.cov_sim)
    assert ds.attrs["result_kind"] == "single_layer"
    summary = single_run.to_summary()
    assert summary["rel_error_discrete"] == single_run.metric("rel_error_discrete")
    assert single_run.metric("discrete_solver.converged") is True


def test_missing_metric_raises_never_nan(single_run):
    with pytest.raises(MetricMissing, match="no_such_metric"):
        single_run.metric("no_such_metric")
    with pytest.raises(MetricMissing, match=r"discrete_solver\.nope"):
        single_run.metric("discrete_solver.nope")


def test_undefined_and_zero_by_symmetry_have_one_representation():
    run = _fake(
        {
            "rel_error_current": Noted(None, "the current is identically zero in 1-D"),
            "layers": {"layer_1": {"null_variance": Noted(0.0, "zero by symmetry")}},
        }
    )
    summary = run.to_summary()
    assert summary["rel_error_current"] is None
    assert summary["rel_error_current_note"].startswith("the current")
    assert summary["layers"]["layer_1"]["null_variance"] == 0.0
    assert summary["layers"]["layer_1"]["null_variance_note"] == "zero by symmetry"
    assert run.metric("rel_error_current") is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), np.float64("-inf")])
def test_non_finite_metric_is_an_error_not_a_null(bad):
    run = _fake({"layers": {"layer_1": {"anisotropy": bad}}})
    with pytest.raises(MeasurementError, match=r"layers\.layer_1\.anisotropy"):
        run.to_summary()


def test_theta_start_is_in_the_dataset_at_depth_one(single_run):
    ds = single_run.to_dataset()
    assert ds["theta_start"].dims == ("replica", "param")
    assert ds["theta_start"].shape == (single_run.config.sgd.replicas, single_run.theta_ref.size)


def test_interpolating_run_declares_its_keys():
    cfg = config_from_dict(
        {
            "data": {"n_in": 8, "n_out": 1, "n_samples": 5, "seed": 1},
            "sgd": {
                "learning_rate": 0.05,
                "batch_size": 2,
                "steps": 4_000,
                "burn_in": 1_000,
                "record_every": 5,
                "replicas": 2,
            },
            "init": {"kind": "random"},
        }
    )
    summary = compute(cfg).to_summary()
    undeclared = {k for k in summary if k not in SUMMARY_KEYS and not k.endswith("_note")}
    assert not undeclared, f"declare these keys in sgdfluct.results.SUMMARY_KEYS: {undeclared}"
