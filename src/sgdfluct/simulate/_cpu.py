"""The CPU engines ``numpy`` and ``numba`` (float64, weights in a host array advanced in place)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from sgdfluct.errors import ConfigError
from sgdfluct.simulate import _kernels
from sgdfluct.simulate._registry import Problem, cpu_float64_only, register_engine

__all__ = ["KernelEngine", "KernelStepper"]

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]
Kernel = Callable[..., None]


class KernelStepper:
    """Weights (R, d) float64 in host memory, advanced in place by a chunk kernel."""

    device = "cpu"
    dtype = "float64"

    def __init__(self, kernel: Kernel, problem: Problem, theta0: Array) -> None:
        self.kernel = kernel
        self.p = problem
        self.theta = np.array(theta0, dtype=np.float64, order="C")

    def advance(self, idx: IntArray, snap_at: IntArray) -> Array:
        p = self.p
        out = np.empty((self.theta.shape[0], snap_at.size, self.theta.shape[1]))
        self.kernel(self.theta, p.inputs, p.targets, idx, p.learning_rate, p.rows, p.cols,
                    p.off, snap_at, out)  # fmt: skip
        return out

    def weights(self) -> Array:
        return self.theta.copy()


class KernelEngine:
    """A CPU float64 engine around a chunk kernel of :mod:`sgdfluct.simulate._kernels`."""

    def __init__(self, name: str, kernel: Kernel, needs_numba: bool = False) -> None:
        self.name = name
        self.kernel = kernel
        self.needs_numba = needs_numba

    def check(self, device: str, dtype: str) -> None:
        if self.needs_numba and not _kernels.HAVE_NUMBA:
            raise ConfigError(
                f"engine = {self.name!r} is not available: numba is not importable (or "
                "SGDFLUCT_DISABLE_NUMBA is set); use engine = 'numpy' or 'auto'"
            )
        cpu_float64_only(self.name, device, dtype)

    def start(self, problem: Problem, theta0: Array, device: str, dtype: str) -> KernelStepper:
        return KernelStepper(self.kernel, problem, theta0)


register_engine("numba", KernelEngine("numba", _kernels.numba_chunk, needs_numba=True))
register_engine("numpy", KernelEngine("numpy", _kernels.numpy_chunk))
