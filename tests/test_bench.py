"""``run_benchmarks`` returns the documented structure (tiny problems; timings are not tested)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from sgdfluct import bench

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_JAX = importlib.util.find_spec("jax") is not None


@pytest.fixture
def tiny_benchmarks(monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(
        bench,
        "PROBLEMS",
        [
            {"name": "tiny1", "shapes": [(1, 6)], "n_samples": 12, "batch_size": 3,
             "learning_rate": 0.05},
            {"name": "tiny2", "shapes": [(4, 5), (2, 4)], "n_samples": 15, "batch_size": 3,
             "learning_rate": 0.02},
        ],
    )  # fmt: skip
    monkeypatch.setattr(bench, "WORK_FLOPS", 2e6)
    monkeypatch.setattr(bench, "RECORD_EVERY", 20)
    monkeypatch.setattr(bench, "PEER_SECONDS", 0.02)
    monkeypatch.setattr(bench, "QUICK_REPLICAS", (1, 4))
    peak = bench.gemm_peak_gflops
    monkeypatch.setattr(bench, "gemm_peak_gflops", lambda: peak(size=128, repeats=2))
    return bench.run_benchmarks(quick=True)


def test_benchmark_structure(tiny_benchmarks: dict) -> None:
    res = tiny_benchmarks
    json.dumps(res)  # plain JSON types only
    assert set(res) >= {"problems", "gemm_peak_gflops", "memory"}
    assert res["gemm_peak_gflops"] > 0
    assert [p["name"] for p in res["problems"]] == ["tiny1", "tiny2"]
    for p in res["problems"]:
        for key in ("engine_replica_steps_per_s", "engine_gflops", "fraction_of_peak"):
            assert np.isfinite(p[key]) and p[key] > 0, key
        assert p["engine_gflops"] == pytest.approx(
            p["engine_replica_steps_per_s"] * p["useful_flops_per_replica_step"] / 1e9
        )
        assert p["fraction_of_peak"] == pytest.approx(p["engine_gflops"] / res["gemm_peak_gflops"])
        if HAVE_TORCH:
            assert p["naive_torch_steps_per_s"] > 0
            assert p["speedup"] == pytest.approx(
                p["engine_replica_steps_per_s"] / p["naive_torch_steps_per_s"]
            )
        else:
            assert p["naive_torch_steps_per_s"] is None and p["speedup"] is None
        peers = p["peers"]
        assert set(peers) == {"naive_torch", "batched_torch", "jax"}
        assert (peers["naive_torch"] is not None) == HAVE_TORCH
        assert (peers["batched_torch"] is not None) == HAVE_TORCH
        assert (peers["jax"] is not None) == HAVE_JAX
        measured = [v for v in peers.values() if v is not None]
        if measured:
            assert all(v > 0 for v in measured)
            assert p["speedup_vs_best_peer"] == pytest.approx(
                p["engine_replica_steps_per_s"] / max(measured)
            )
            assert peers[p["best_peer"]] == max(measured)
        else:
            assert p["speedup_vs_best_peer"] is None
        assert 0.0 <= p["non_kernel_share"] <= 1.0 and p["stderr_seconds"] >= 0.0
    mem = res["memory"]
    assert mem["long_steps"] == 10 * mem["short_steps"]
    assert mem["short_peak_bytes"] > 0 and mem["long_peak_bytes"] > 0


def test_useful_flops_counts_forward_and_weight_gradient() -> None:
    # single layer N_i = 100, N_o = 1, S = 10: 2 x 10 x 100 (forward) + 2 x 10 x 100 (gradient)
    assert bench.useful_flops([(1, 100)], 10) == 4000
    assert bench.useful_flops([(50, 50), (5, 50)], 20) == 4 * 20 * 2750
