"""Kernel-only replica-steps/s of the numba engine (per-sample loops or, for wide layers, the BLAS
kernel) against the NumPy engine with threaded and single-threaded BLAS.

Run: ``.venv/bin/python benchmarks/engine_kernels.py`` (about a minute). Problems: the bench's
depth >= 2 problems and a small 20-5-5 net, R = 8 and 32.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from sgdfluct import bench
from sgdfluct.simulate import _kernels, batch_indices
from sgdfluct.simulate._registry import layer_layout

SMALL = {"name": "small_20_5_5", "shapes": [(5, 20), (5, 5)], "n_samples": 200, "batch_size": 10,
         "learning_rate": 0.01}  # fmt: skip
#: flops per timed kernel call
WORK = 3e9


def _numpy_one_thread(*args: Any) -> None:
    with threadpool_limits(1, user_api="blas"):
        _kernels.numpy_chunk(*args)


def main() -> None:
    kernels = {"numba": _kernels.numba_chunk, "numpy": _kernels.numpy_chunk,
               "numpy_1_blas_thread": _numpy_one_thread}  # fmt: skip
    for spec in [*bench.PROBLEMS[1:], SMALL]:
        x, y, theta0 = bench._problem(spec)
        rows, cols, off = layer_layout(spec["shapes"])
        flops = bench.useful_flops(spec["shapes"], spec["batch_size"])
        for replicas in (8, 32):
            steps = max(50, int(WORK / flops) // replicas)
            idx = batch_indices(spec["n_samples"], spec["batch_size"], steps, replicas=replicas)
            rates = {}
            for name, kernel in kernels.items():
                theta = np.repeat(theta0[None], replicas, axis=0)
                out = np.empty((replicas, 1, theta0.size))
                kernel(theta.copy(), x, y, idx[:, :5].copy(), spec["learning_rate"], rows, cols,
                       off, np.array([5]), out)  # fmt: skip
                t = time.perf_counter()
                kernel(theta, x, y, idx, spec["learning_rate"], rows, cols, off,
                       np.array([steps]), out)  # fmt: skip
                rates[name] = f"{replicas * steps / (time.perf_counter() - t):.3g}"
            print(spec["name"], f"R={replicas}", rates, flush=True)


if __name__ == "__main__":
    main()
