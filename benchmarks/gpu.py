"""CUDA throughput of the torch engine against the CPU engine (one command, <= 5 minutes).

Run on a machine with a CUDA GPU::

    .venv/bin/python benchmarks/gpu.py --out gpu.json          # ~2-4 minutes
    .venv/bin/python benchmarks/gpu.py --cpu-smoke             # tiny sizes on the CPU (~20 s)

Problem: a wide two-layer linear net ``N_i = N_h = 512, N_o = 10``, ``P = 4096``, ``S = 64``,
``R = 512`` replicas (d = 267 264 weights), with-replacement sampling (the counter-based indices of
every engine). Measured, each as replica-steps/s:

* ``torch_cuda_{float64,float32}_kernel``: the torch stepper alone on pre-generated indices;
* ``torch_cuda_{float64,float32}_simulate``: a full ``simulate()`` call (index generation,
  snapshots to the host, divergence checks, subspace statistics every ``RECORD_EVERY`` steps);
* ``cpu_engine``: ``simulate(engine="auto")`` on the CPU (numba or NumPy) with fewer replicas.

The device's GEMM rate is measured with ``torch.matmul`` on 8192 x 8192 matrices (``2 n^3``
flops) in both dtypes; the useful flops per replica-step are the bench's ``4 S sum rows cols``
(forward + weight gradient). Prints a JSON summary (and writes it with ``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from sgdfluct import networks
from sgdfluct.bench import useful_flops
from sgdfluct.simulate import batch_indices, simulate
from sgdfluct.simulate._registry import Problem, layer_layout
from sgdfluct.simulate._torch import TorchStepper

FULL = {"n_in": 512, "n_hidden": 512, "n_out": 10, "n_samples": 4096, "batch": 64,
        "replicas": 512, "steps": 400, "cpu_replicas": 8, "cpu_steps": 100,
        "gemm": 8192}  # fmt: skip
SMOKE = {"n_in": 32, "n_hidden": 32, "n_out": 4, "n_samples": 256, "batch": 8,
         "replicas": 16, "steps": 60, "cpu_replicas": 4, "cpu_steps": 60, "gemm": 512}  # fmt: skip
RECORD_EVERY = 100
LEARNING_RATE = 1e-3


def _sync(torch: Any, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def gemm_rate(torch: Any, device: str, dtype: Any, n: int, repeats: int = 5) -> float:
    """Best GFLOP/s of an ``n x n`` matmul on ``device``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(torch, device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        _sync(torch, device)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best / 1e9


def _starts(shapes: list[tuple[int, int]], replicas: int) -> np.ndarray:
    """Gaussian starts ``W ~ N(0, 1 / fan_in)`` (R, d)."""
    rng = np.random.default_rng(1)
    return np.concatenate(
        [rng.standard_normal((replicas, r * c)) / np.sqrt(c) for r, c in shapes], axis=1
    )


def _data(cfg: dict[str, int]) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    rng = np.random.default_rng(0)
    shapes = [(cfg["n_hidden"], cfg["n_in"]), (cfg["n_out"], cfg["n_hidden"])]
    x = rng.standard_normal((cfg["n_samples"], cfg["n_in"]))
    y = x @ rng.standard_normal((cfg["n_in"], cfg["n_out"])) / np.sqrt(cfg["n_in"])
    return x, y, shapes


def kernel_rate(torch: Any, cfg: dict[str, int], device: str, dtype: str) -> float:
    """Replica-steps/s of the torch stepper alone."""
    x, y, shapes = _data(cfg)
    rows, cols, off = layer_layout(shapes)
    problem = Problem(x, y, tuple(shapes), rows, cols, off, LEARNING_RATE)
    theta0 = _starts(shapes, cfg["replicas"])
    stepper = TorchStepper(problem, theta0, device, dtype)
    idx = batch_indices(cfg["n_samples"], cfg["batch"], cfg["steps"] + 10,
                        replicas=cfg["replicas"], seed=0)  # fmt: skip
    stepper.advance(idx[:, :10], np.array([10]))
    _sync(torch, device)
    t = time.perf_counter()
    stepper.advance(idx[:, 10:], np.array([cfg["steps"]]))
    _sync(torch, device)
    return cfg["replicas"] * cfg["steps"] / (time.perf_counter() - t)


def simulate_rate(cfg: dict[str, int], replicas: int, steps: int, **engine: str) -> float:
    """Replica-steps/s of a full ``simulate()`` (subspace statistics above the memory budget)."""
    x, y, shapes = _data(cfg)
    theta0 = _starts(shapes, replicas)
    kw = dict(learning_rate=LEARNING_RATE, batch_size=cfg["batch"], burn_in=0,
              record_every=min(RECORD_EVERY, steps // 4), replicas=replicas, seed=0,
              n_batches=2, statistics="subspace", **engine)  # fmt: skip
    simulate(x, y, shapes, theta0, steps=2 * kw["record_every"], **kw)  # warm-up
    t = time.perf_counter()
    simulate(x, y, shapes, theta0, steps=steps, **kw)
    return replicas * steps / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--out", help="write the JSON summary here")
    args = parser.parse_args(argv)
    import torch

    cfg = SMOKE if args.cpu_smoke else FULL
    if args.cpu_smoke:
        device = "cpu"
    elif torch.cuda.is_available():
        device = "cuda"
    else:
        raise SystemExit("no CUDA device: run with --cpu-smoke (numbers then mean nothing)")
    t0 = time.perf_counter()
    _, _, shapes = _data(cfg)
    flops = useful_flops(shapes, cfg["batch"])
    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke test)",
        "problem": {**cfg, "d": networks.n_params(shapes), "useful_flops_per_replica_step": flops},
    }
    for dtype in ("float64", "float32"):
        tdt = torch.float64 if dtype == "float64" else torch.float32
        peak = gemm_rate(torch, device, tdt, cfg["gemm"])
        kern = kernel_rate(torch, cfg, device, dtype)
        full = simulate_rate(cfg, cfg["replicas"], cfg["steps"], engine="torch",
                             device=device, dtype=dtype)  # fmt: skip
        out[dtype] = {
            "gemm_gflops": peak,
            "kernel_replica_steps_per_s": kern,
            "simulate_replica_steps_per_s": full,
            "kernel_fraction_of_gemm": kern * flops / 1e9 / peak,
            "simulate_fraction_of_gemm": full * flops / 1e9 / peak,
        }
        print(dtype, json.dumps(out[dtype]), flush=True)
    cpu = simulate_rate(cfg, cfg["cpu_replicas"], cfg["cpu_steps"], engine="auto")
    out["cpu_engine_replica_steps_per_s"] = cpu
    for dtype in ("float64", "float32"):
        out[dtype]["speedup_vs_cpu_engine"] = out[dtype]["simulate_replica_steps_per_s"] / cpu
    out["seconds"] = time.perf_counter() - t0
    print(json.dumps(out, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
    return out


if __name__ == "__main__":
    main()
