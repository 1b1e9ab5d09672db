"""Performance figures of the SGD engine (``sgdfluct bench``).

Reference problems (see ``benchmarks/README.md``): a single layer ``N_i = 100, N_o = 1, P = 200,
S = 10``, a two-layer net ``50-50-5`` (``P = 500, S = 20``), a wide one ``200-200-10`` and a deep
one (depth 4, ``50-50-50-50-5``). For each, the engine's replica-steps per second (a full
``simulate()`` with its statistics, best replica count of a small scan) are compared, in the same
run, dtype (float64) and machine, with three peers doing plain SGD steps (best of R = 1, 8, 32
and of one or the default number of threads):

* ``naive_torch``: the textbook loop, ``nn.Linear`` layers, one ``optimizer.step()`` per step and
  replica (its number is steps/s of one replica);
* ``batched_torch``: replicas as a batch dimension (``bmm``), autograd, one Python iteration per
  step;
* ``jax``: ``jit(vmap(lax.scan(step)))`` over replicas and steps.

A peer whose library is not installed is ``null`` (the ``bench`` extra brings jax). The engine is
also compared with the machine's float64 GEMM rate. Useful flops per replica-step:
``4 S sum_l rows_l cols_l`` (forward matmul plus weight gradient, 2 flops per multiply-add each;
back-propagation of the error and the update are not counted).
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
from sgdfluct.simulate._engine import auto_engine

__all__ = [
    "batched_torch_rate",
    "gemm_peak_gflops",
    "jax_rate",
    "naive_torch_steps_per_s",
    "run_benchmarks",
]

PROBLEMS: list[dict[str, Any]] = [
    {"name": "single_layer_Ni100_No1_P200_S10", "shapes": [(1, 100)], "n_samples": 200,
     "batch_size": 10, "learning_rate": 0.01},
    {"name": "two_layer_Ni50_Nh50_No5_P500_S20", "shapes": [(50, 50), (5, 50)], "n_samples": 500,
     "batch_size": 20, "learning_rate": 0.01},
    {"name": "wide_two_layer_Ni200_Nh200_No10_P1000_S20", "shapes": [(200, 200), (10, 200)],
     "n_samples": 1000, "batch_size": 20, "learning_rate": 0.002},
    {"name": "deep_depth4_50_50_50_50_5_P500_S20",
     "shapes": [(50, 50), (50, 50), (50, 50), (5, 50)], "n_samples": 500, "batch_size": 20,
     "learning_rate": 0.005},
]  # fmt: skip
#: replica counts of the scans (engine and peers)
QUICK_REPLICAS = (1, 8, 32)
#: seconds of one peer timing (after a warm-up)
PEER_SECONDS = 0.5


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


def naive_torch_steps_per_s(spec: dict[str, Any], seconds: float = PEER_SECONDS) -> float | None:
    """Steps/s of the textbook PyTorch loop, one replica (``None`` without torch)."""
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

    return _best_threads(lambda: _warm_timed(run, seconds, warm_up=10))


def _warm_timed(run: Any, min_seconds: float, *, warm_up: int) -> float:
    """:func:`_timed` after ``warm_up`` untimed steps (one-off allocations, autograd set-up)."""
    run(warm_up)
    return _timed(run, min_seconds)


def _timed(run: Any, min_seconds: float, first: int = 4) -> float:
    """Steps/s of ``run(n)``: ``n`` doubled from ``first`` until one call lasts ``min_seconds``."""
    n = first
    while True:
        t = time.perf_counter()
        run(n)
        dt = time.perf_counter() - t
        if dt >= min_seconds or n >= 1 << 22:
            return n / dt
        n *= 2 if dt > min_seconds / 8 else 8


def _best_threads(measure: Any) -> float:
    """Best of torch's default thread count and one thread (small matmuls on a shared machine can
    be much slower multi-threaded)."""
    import torch

    default_threads = torch.get_num_threads()
    best = 0.0
    try:
        for threads in dict.fromkeys((default_threads, 1)):
            torch.set_num_threads(threads)
            best = max(best, measure())
    finally:
        torch.set_num_threads(default_threads)
    return best


def batched_torch_rate(spec: dict[str, Any], replicas: int, seconds: float = PEER_SECONDS) -> float:
    """Replica-steps/s of SGD with replicas as a batch dimension (``bmm``, autograd), float64."""
    import torch

    x_np, y_np, theta0 = _problem(spec)
    x = torch.from_numpy(x_np)
    y = torch.from_numpy(y_np)
    ws = [
        torch.from_numpy(np.repeat(w[None], replicas, axis=0)).requires_grad_()
        for w in networks.unflatten(theta0, spec["shapes"])
    ]
    gen = torch.Generator().manual_seed(0)
    s, p, lr = spec["batch_size"], spec["n_samples"], spec["learning_rate"]

    def run(n: int) -> None:
        for _ in range(n):
            b = torch.randint(0, p, (replicas, s), generator=gen)
            a = x[b]
            for w in ws:
                a = torch.bmm(a, w.transpose(1, 2))
            loss = 0.5 * ((a - y[b]) ** 2).sum() / s  # replicas' losses add: separate gradients
            loss.backward()
            with torch.no_grad():
                for w in ws:
                    w -= lr * w.grad
                    w.grad = None

    return replicas * _best_threads(lambda: _warm_timed(run, seconds, warm_up=3))


def jax_rate(spec: dict[str, Any], replicas: int, seconds: float = PEER_SECONDS) -> float | None:
    """Replica-steps/s of ``jit(vmap(lax.scan(step)))``, float64 (``None`` without jax)."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    x_np, y_np, theta0 = _problem(spec)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    s, p, lr = spec["batch_size"], spec["n_samples"], spec["learning_rate"]

    def loss(ws: list[Any], xb: Any, yb: Any) -> Any:
        a = xb
        for w in ws:
            a = a @ w.T
        return 0.5 * jnp.sum((a - yb) ** 2) / s

    grad = jax.grad(loss)

    def step(ws: list[Any], key: Any) -> tuple[list[Any], None]:
        b = jax.random.randint(key, (s,), 0, p)
        g = grad(ws, x[b], y[b])
        return [w - lr * gw for w, gw in zip(ws, g, strict=True)], None

    chunk = 64

    @jax.jit
    def run_chunk(ws: list[Any], keys: Any) -> list[Any]:
        return jax.vmap(lambda w, k: jax.lax.scan(step, w, k)[0])(ws, keys)

    ws = [jnp.asarray(np.repeat(w[None], replicas, axis=0))
          for w in networks.unflatten(theta0, spec["shapes"])]  # fmt: skip
    key = jax.random.PRNGKey(0)
    keys = jax.random.split(key, replicas * chunk).reshape(replicas, chunk, -1)
    state = {"ws": run_chunk(ws, keys)}  # compile
    jax.block_until_ready(state["ws"])

    def run(n_chunks: int) -> None:
        w = state["ws"]
        for _ in range(n_chunks):
            w = run_chunk(w, keys)
        jax.block_until_ready(w)
        state["ws"] = w

    return replicas * chunk * _timed(run, seconds, first=1)


def _engine_rate(
    spec: dict[str, Any], replicas: int, steps: int, engine: str, record_every: int
) -> tuple[float, float]:
    """Replica-steps/s of a full ``simulate`` call with its estimates (index generation, the
    statistics and reading ``cov`` and ``lag1`` included), and the seconds that reading every
    standard error then adds."""
    x, y, theta0 = _problem(spec)
    record_every = max(1, min(record_every, steps // 8))
    kw = dict(learning_rate=spec["learning_rate"], batch_size=spec["batch_size"],
              burn_in=0, record_every=record_every, replicas=replicas, seed=0, n_batches=4,
              engine=engine)  # fmt: skip
    simulate(x, y, spec["shapes"], theta0, steps=4 * record_every, **kw)
    t = time.perf_counter()
    res = simulate(x, y, spec["shapes"], theta0, steps=steps, **kw)
    res.cov, res.lag1  # noqa: B018 - the estimates are part of the run
    dt = time.perf_counter() - t
    t = time.perf_counter()
    res.cov_stderr, res.lag1_stderr, res.lag1_antisym_stderr, res.mean_stderr  # noqa: B018
    return replicas * steps / dt, time.perf_counter() - t


def _kernel_rate(spec: dict[str, Any], replicas: int, steps: int) -> float:
    """Replica-steps/s of the step kernel alone (indices pre-generated, no statistics)."""
    from sgdfluct.simulate import _kernels, batch_indices

    x, y, theta0 = _problem(spec)
    shapes = spec["shapes"]
    rows = np.array([r for r, _ in shapes], dtype=np.int64)
    cols = np.array([c for _, c in shapes], dtype=np.int64)
    off = np.concatenate([[0], np.cumsum(rows * cols)[:-1]]).astype(np.int64)
    kernel = (
        _kernels.numba_chunk if auto_engine(shapes, replicas) == "numba" else _kernels.numpy_chunk
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
    """Measure the engine against its peers (naive and batched PyTorch, JAX) and the GEMM peak.

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
        "speedup", "peers": {"naive_torch", "batched_torch", "jax"}, "speedup_vs_best_peer",
        "engine_gflops", "fraction_of_peak", ...}], "gemm_peak_gflops", "memory", "machine"}``;
        a peer whose library is absent is ``None`` (and so are the keys derived from it).
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
        scan, stderr_s, scan_steps = {}, {}, {}
        for reps in QUICK_REPLICAS if quick else (1, 2, 4, 8, 16, 32, 64):
            scan_steps[reps] = max(200, work // reps)
            scan[reps], stderr_s[reps] = _engine_rate(
                spec, reps, scan_steps[reps], engine, record_every=RECORD_EVERY
            )
            say(f"{spec['name']}: R={reps}: {scan[reps]:.3g} replica-steps/s")
        best_r = max(scan, key=lambda r: scan[r])
        rate = scan[best_r]
        run_s = best_r * scan_steps[best_r] / rate
        numpy_rate, _ = _engine_rate(
            spec, best_r, max(200, work // (4 * best_r)), "numpy", record_every=RECORD_EVERY
        )
        kernel_rate = _kernel_rate(spec, best_r, max(200, work // best_r))
        peer_s = scale * PEER_SECONDS
        naive = naive_torch_steps_per_s(spec, peer_s)
        peers: dict[str, float | None] = {"naive_torch": naive, "batched_torch": None, "jax": None}
        peer_scan: dict[str, dict[str, float]] = {"batched_torch": {}, "jax": {}}
        for reps in QUICK_REPLICAS:
            if naive is not None:
                peer_scan["batched_torch"][str(reps)] = batched_torch_rate(spec, reps, peer_s)
            jx = jax_rate(spec, reps, peer_s)
            if jx is not None:
                peer_scan["jax"][str(reps)] = jx
        for name, rates in peer_scan.items():
            peers[name] = max(rates.values()) if rates else None
        measured = [v for v in peers.values() if v is not None]
        best_peer = max(measured) if measured else None
        say(f"{spec['name']}: peers {peers}")
        gflops = rate * flops / 1e9
        problems.append(
            {
                "name": spec["name"],
                "shapes": spec["shapes"],
                "n_samples": spec["n_samples"],
                "batch_size": spec["batch_size"],
                "engine": auto_engine(spec["shapes"], best_r),
                "replicas": best_r,
                "replica_scan": {str(k): v for k, v in scan.items()},
                "record_every": RECORD_EVERY,
                "engine_replica_steps_per_s": rate,
                "numpy_engine_replica_steps_per_s": numpy_rate,
                "kernel_only_replica_steps_per_s": kernel_rate,
                "naive_torch_steps_per_s": naive,
                "speedup": None if naive is None else rate / naive,
                "numpy_speedup": None if naive is None else numpy_rate / naive,
                "peers": peers,
                "peer_replica_scan": peer_scan,
                "best_peer": None
                if best_peer is None
                else max(
                    (k for k, v in peers.items() if v is not None), key=lambda k: peers[k] or 0.0
                ),
                "speedup_vs_best_peer": None if best_peer is None else rate / best_peer,
                "best_peer_fraction_of_peak": None
                if best_peer is None
                else best_peer * flops / 1e9 / peak,
                "steps": scan_steps[best_r],
                "run_seconds": run_s,
                "non_kernel_share": max(0.0, 1.0 - rate / kernel_rate),
                "stderr_seconds": stderr_s[best_r],
                "stderr_share_if_read": stderr_s[best_r] / (run_s + stderr_s[best_r]),
                "statistics_note": "engine rate = simulate() + reading cov and lag1; "
                "non_kernel_share = 1 - rate / kernel-only rate (indices, snapshots, statistics); "
                "stderr_seconds = reading every standard error afterwards (computed lazily)",
                "useful_flops_per_replica_step": flops,
                "engine_gflops": gflops,
                "fraction_of_peak": gflops / peak,
            }
        )
        say(f"{spec['name']}: best R={best_r}, {rate:.3g}/s, numpy {numpy_rate:.3g}/s, best "
            f"peer {best_peer}, {gflops:.2f} GFLOP/s = {gflops / peak:.1%} of peak")  # fmt: skip
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
