"""Compare SGD step-kernel variants on the two reference problems (kernel only, no statistics).

Run: ``.venv/bin/python benchmarks/kernel_variants.py`` (about a minute). Prints replica-steps/s.
Variants: the NumPy engine (vectorized over replicas, one Python iteration per step), the generic
depth-L numba kernel with and without ``fastmath`` reassociation, the specialised depth-1 kernel,
each with numba's ``prange`` over replicas (parallel) and serial.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import numba
import numpy as np

from sgdfluct.bench import PROBLEMS, _problem
from sgdfluct.simulate import _kernels, _numba_kernels, batch_indices

FASTMATH = {"reassoc", "contract", "nsz"}
GENERIC = _numba_kernels._numba_chunk.py_func
SINGLE = _numba_kernels._numba_chunk_single.py_func
VARIANTS = {
    "numba generic, parallel, fastmath": numba.njit(parallel=True, fastmath=FASTMATH)(GENERIC),
    "numba generic, serial, fastmath": numba.njit(fastmath=FASTMATH)(GENERIC),
    "numba generic, serial, no fastmath": numba.njit()(GENERIC),
    "numba depth-1, parallel, fastmath": numba.njit(parallel=True, fastmath=FASTMATH)(SINGLE),
    "numba depth-1, serial, no fastmath": numba.njit()(SINGLE),
}


def _call(fn: Any, single: bool, args: tuple, theta: np.ndarray) -> None:
    x, y, idx, eta, rows, cols, off, snap, out = args
    if fn is None:
        _kernels.numpy_chunk(theta, x, y, idx, eta, rows, cols, off, snap, out)
    elif single:
        fn(theta, x, y, idx, eta, snap, out)
    else:
        fn(theta, x, y, idx, eta, rows, cols, off, snap, out)


def main() -> None:
    for spec in PROBLEMS:
        x, y, theta0 = _problem(spec)
        shapes = spec["shapes"]
        rows = np.array([r for r, _ in shapes], dtype=np.int64)
        cols = np.array([c for _, c in shapes], dtype=np.int64)
        off = np.concatenate([[0], np.cumsum(rows * cols)[:-1]]).astype(np.int64)
        flops = 4 * spec["batch_size"] * theta0.size
        for reps in (1, 8, 32):
            steps = int(2e9 / flops / reps) + 10
            idx = batch_indices(spec["n_samples"], spec["batch_size"], steps, replicas=reps)
            out = np.empty((reps, 1, theta0.size))
            for name, fn in [("numpy engine", None), *VARIANTS.items()]:
                if "depth-1" in name and len(shapes) > 1:
                    continue
                n = steps if fn is not None else max(10, steps // 30)
                theta = np.repeat(theta0[None], reps, axis=0)
                sub = np.ascontiguousarray(idx[:, :n])
                args = (x, y, sub, 0.01, rows, cols, off, np.array([n]), out)
                call = partial(_call, fn, "depth-1" in name, args)
                call(theta.copy())  # compile / warm up
                best = np.inf
                for _ in range(2):
                    t0 = time.perf_counter()
                    call(theta.copy())
                    best = min(best, time.perf_counter() - t0)
                rate = reps * n / best
                print(f"{spec['name']:36s} R={reps:3d} {name:38s} {rate:10.3g} replica-steps/s "
                      f"{rate * flops / 1e9:6.2f} GFLOP/s")  # fmt: skip


if __name__ == "__main__":
    main()
