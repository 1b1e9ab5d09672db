"""Performance figures of the SGD engine (``sgdfluct bench``).

Two reference problems (see ``benchmarks/README.md``): a single layer ``N_i = 100, N_o = 1,
P = 200, S = 10`` and a two-layer net ``N_i = N_h = 50, N_o = 5, P = 500, S = 20``. For each, the
engine's replica-steps per second (best replica count of a small scan) are compared with a naive
PyTorch loop (one ``optimizer.step()`` per Python iteration) and with the machine's float64 GEMM
rate. Useful flops per replica-step: ``4 S sum_l rows_l cols_l`` (forward matmul plus weight
gradient, 2 flops per multiply-add each; back-propagation of the error and the update are not
counted).
"""

from __future__ import annotations

import os
import platform
import time
import tracemalloc
from typing import Any

import numpy as np

from sgdfluct import networks
from sgdfluct.simulate import simulate
from sgdfluct.simulate._engine import _auto_engine

__all__ = ["gemm_peak_gflops", "naive_torch_steps_per_s", "run_benchmarks"]

PROBLEMS: list[dict[str, Any]] = [
    {"name": "single_layer_Ni100_No1_P200_S10", "shapes": [(1, 100)], "n_samples": 200,
     "batch_size": 10, "learning_rate": 0.01},
    {"name": "two_layer_Ni50_Nh50_No5_P500_S20", "shapes": [(50, 50), (5, 50)], "n_samples": 500,
     "batch_size": 20, "learning_rate": 0.01},
]  # fmt: skip


#: Recording interval of the throughput runs (the d x d statistics cost 2 R d^2 per record).
RECORD_EVERY = 1000
#: Useful flops per timed engine run in quick mode (amortizes the O(d^2) statistics set-up).
WORK_FLOPS = 1.5e10


def useful_flops(shapes: list[tuple[int, int]], batch_size: int) -> int:
    """``4 S sum_l rows_l cols_l`` flops per replica-step (forward + weight gradient)."""
    return 4 * batch_size * networks.n_params(shapes)


def gemm_peak_gflops(size: int = 2048, repeats: int = 3) -> float:
    """Best float64 GEMM rate of NumPy's BLAS, ``2 n^3`` flops per ``n x n`` product."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size))
    b = rng.standard_normal((size, size))
    a @ b  # warm-up (threads, pages)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * size**3 / best / 1e9


def _problem(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    shapes = spec["shapes"]
    x = rng.standard_normal((spec["n_samples"], shapes[0][1]))
    y = x @ rng.standard_normal((shapes[0][1], shapes[-1][0])) / np.sqrt(shapes[0][1])
    y += 0.5 * rng.standard_normal(y.shape)
    theta0 = networks.balanced_minimum(x, y, shapes)
    return x, y, theta0


def naive_torch_steps_per_s(spec: dict[str, Any], steps: int) -> float | None:
    """Steps/s of the textbook PyTorch loop (``None`` without torch)."""
    try:
        import torch
    except ImportError:
        return None
    x_np, y_np, theta0 = _problem(spec)
    x = torch.from_numpy(x_np)
    y = torch.from_numpy(y_np)
    layers = []
    for w in networks.unflatten(theta0, spec["shapes"]):
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.copy()))
        layers.append(lin)
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=spec["learning_rate"])
    gen = torch.Generator().manual_seed(0)
    s, p = spec["batch_size"], spec["n_samples"]

    def run(n: int) -> None:
        for _ in range(n):
            b = torch.randint(0, p, (s,), generator=gen)
            opt.zero_grad()
            loss = 0.5 * ((model(x[b]) - y[b]) ** 2).sum() / s
            loss.backward()
            opt.step()

    # best of torch's default thread count and one thread (small matmuls on a shared machine
    # can be much slower multi-threaded): the baseline is the faster of the two
    default_threads = torch.get_num_threads()
    best = 0.0
    try:
        for threads in dict.fromkeys((default_threads, 1)):
            torch.set_num_threads(threads)
            run(max(10, steps // 20))
            t = time.perf_counter()
            run(steps)
            best = max(best, steps / (time.perf_counter() - t))
    finally:
        torch.set_num_threads(default_threads)
    return best


def _engine_rate(
    spec: dict[str, Any], replicas: int, steps: int, engine: str, record_every: int
) -> float:
    """Replica-steps/s of a full ``simulate`` call (index generation and statistics included)."""
    x, y, theta0 = _problem(spec)
    record_every = max(1, min(record_every, steps // 8))
    kw = dict(learning_rate=spec["learning_rate"], batch_size=spec["batch_size"],
              burn_in=0, record_every=record_every, replicas=replicas, seed=0, n_batches=4,
              engine=engine)  # fmt: skip
    simulate(x, y, spec["shapes"], theta0, steps=4 * record_every, **kw)
    t = time.perf_counter()
    simulate(x, y, spec["shapes"], theta0, steps=steps, **kw)
    return replicas * steps / (time.perf_counter() - t)


def _kernel_rate(spec: dict[str, Any], replicas: int, steps: int) -> float:
    """Replica-steps/s of the step kernel alone (indices pre-generated, no statistics)."""
    from sgdfluct.simulate import _kernels, batch_indices

    x, y, theta0 = _problem(spec)
    shapes = spec["shapes"]
    rows = np.array([r for r, _ in shapes], dtype=np.int64)
    cols = np.array([c for _, c in shapes], dtype=np.int64)
    off = np.concatenate([[0], np.cumsum(rows * cols)[:-1]]).astype(np.int64)
    kernel = (
        _kernels.numba_chunk if _auto_engine(shapes, replicas) == "numba" else _kernels.numpy_chunk
    )
    idx = batch_indices(spec["n_samples"], spec["batch_size"], steps, replicas=replicas, seed=0)
    theta = np.repeat(theta0[None], replicas, axis=0)
    snap = np.array([steps], dtype=np.int64)
    out = np.empty((replicas, 1, theta0.size))
    kernel(theta.copy(), x, y, idx[:, :10].copy(), spec["learning_rate"], rows, cols, off,
           np.array([10], dtype=np.int64), out)  # fmt: skip
    t = time.perf_counter()
    kernel(theta, x, y, idx, spec["learning_rate"], rows, cols, off, snap, out)
    return replicas * steps / (time.perf_counter() - t)


def _peak_memory(spec: dict[str, Any], steps: int) -> int:
    x, y, theta0 = _problem(spec)
    tracemalloc.start()
    simulate(x, y, spec["shapes"], theta0, learning_rate=spec["learning_rate"],
             batch_size=spec["batch_size"], steps=steps, burn_in=0, record_every=10,
             replicas=8, seed=0, n_batches=4)  # fmt: skip
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return int(peak)


def run_benchmarks(quick: bool = True, progress: bool = False) -> dict[str, Any]:
    """Measure the engine against a naive PyTorch loop and the GEMM peak.

    Parameters
    ----------
    quick : bool
        Short timings (well under 3 minutes in total); otherwise ~5x longer and a wider scan.
    progress : bool
        Print one line per measurement.

    Returns
    -------
    dict
        ``{"problems": [{"name", "engine_replica_steps_per_s", "naive_torch_steps_per_s",
        "speedup", "engine_gflops", "fraction_of_peak", ...}], "gemm_peak_gflops", "memory",
        "machine"}``; torch-derived keys are ``None`` when torch is absent.
    """
    scale = 1 if quick else 5
    say = print if progress else (lambda *_a, **_k: None)
    engine = "auto"
    peak = gemm_peak_gflops()
    say(f"GEMM peak: {peak:.1f} GFLOP/s")
    problems = []
    for spec in PROBLEMS:
        flops = useful_flops(spec["shapes"], spec["batch_size"])
        # replica-steps per timed run ~ fixed work per problem
        work = int(scale * WORK_FLOPS / flops)
        scan = {}
        for reps in (1, 8, 32) if quick else (1, 2, 4, 8, 16, 32, 64):
            steps = max(200, work // reps)
            scan[reps] = _engine_rate(spec, reps, steps, engine, record_every=RECORD_EVERY)
            say(f"{spec['name']}: R={reps}: {scan[reps]:.3g} replica-steps/s")
        best_r = max(scan, key=lambda r: scan[r])
        rate = scan[best_r]
        numpy_rate = _engine_rate(
            spec, best_r, max(200, work // (4 * best_r)), "numpy", record_every=RECORD_EVERY
        )
        kernel_rate = _kernel_rate(spec, best_r, max(200, work // best_r))
        naive = naive_torch_steps_per_s(spec, steps=scale * 1500)
        gflops = rate * flops / 1e9
        problems.append(
            {
                "name": spec["name"],
                "shapes": spec["shapes"],
                "n_samples": spec["n_samples"],
                "batch_size": spec["batch_size"],
                "engine": _auto_engine(spec["shapes"], best_r),
                "replicas": best_r,
                "replica_scan": {str(k): v for k, v in scan.items()},
                "record_every": RECORD_EVERY,
                "engine_replica_steps_per_s": rate,
                "numpy_engine_replica_steps_per_s": numpy_rate,
                "kernel_only_replica_steps_per_s": kernel_rate,
                "naive_torch_steps_per_s": naive,
                "speedup": None if naive is None else rate / naive,
                "numpy_speedup": None if naive is None else numpy_rate / naive,
                "useful_flops_per_replica_step": flops,
                "engine_gflops": gflops,
                "fraction_of_peak": gflops / peak,
            }
        )
        say(f"{spec['name']}: best R={best_r}, {rate:.3g}/s, numpy {numpy_rate:.3g}/s, "
            f"naive torch {naive}, {gflops:.2f} GFLOP/s = {gflops / peak:.1%} of peak")  # fmt: skip
    short = 2000 * scale
    mem = {
        "problem": PROBLEMS[0]["name"],
        "replicas": 8,
        "short_steps": short,
        "long_steps": 10 * short,
        "short_peak_bytes": _peak_memory(PROBLEMS[0], short),
        "long_peak_bytes": _peak_memory(PROBLEMS[0], 10 * short),
        "method": "tracemalloc peak of Python/NumPy allocations during simulate()",
    }
    say(f"memory: {mem}")
    # the exact discrete-time solver against one continuum Lyapunov solve of the same size
    # (issue target: at most 10x at N_i = 200, N_o = 1, P = 400)
    from sgdfluct.theory.discrete import benchmark_exact_solver

    solver = benchmark_exact_solver(n_in=200, n_samples=400)
    say(f"exact solver: {solver}")
    try:
        import numba

        threads: int | None = numba.get_num_threads()
    except ImportError:  # pragma: no cover
        threads = None
    return {
        "problems": problems,
        "gemm_peak_gflops": peak,
        "memory": mem,
        "exact_solver": solver,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "numba_threads": threads,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "quick": quick,
        },
    }
