"""The engine registry: what an SGD engine must provide, and where engines are registered.

An engine advances ``R`` replicas of a depth-L linear network by SGD steps on batch indices it is
given (the driver :func:`sgdfluct.simulate.simulate` generates the counter-based indices, checks
divergence and accumulates the statistics in float64, whatever the engine). Adding an engine is one
module plus one registration line::

    from sgdfluct.simulate import register_engine

    class MyEngine:
        def check(self, device, dtype): ...        # raise ConfigError if it cannot run
        def start(self, problem, theta0, device, dtype): ...   # -> a Stepper

    register_engine("mine", MyEngine())

after which ``simulate(..., engine="mine")`` (and ``sgd.engine = "mine"``) runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from sgdfluct.errors import ConfigError
from sgdfluct.registry import Registry

__all__ = [
    "DEVICES",
    "DTYPES",
    "ENGINES",
    "Engine",
    "Problem",
    "Stepper",
    "get_engine",
    "register_engine",
]

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: values of ``device`` and ``dtype`` the driver accepts (an engine may support fewer)
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class Problem:
    """The fixed data of one run, as every engine receives it.

    Attributes
    ----------
    inputs : ndarray (P, N_i) float64, C-contiguous
    targets : ndarray (P, N_o) float64, C-contiguous
    shapes : tuple of (rows, cols)
        Shapes of ``W_1 .. W_L``; layer ``l`` is ``theta[off[l] : off[l] + rows[l] * cols[l]]``
        (row-major ``vec(W_l)``).
    rows, cols, off : ndarray of int64 (L,)
    learning_rate : float
        eta; one step is ``theta -= (eta / S) sum_{mu in B} grad l_mu(theta)`` (docs/theory.md §3).
    """

    inputs: Array
    targets: Array
    shapes: tuple[tuple[int, int], ...]
    rows: IntArray
    cols: IntArray
    off: IntArray
    learning_rate: float

    @property
    def n_params(self) -> int:
        """d, the number of weights."""
        return int(np.sum(self.rows * self.cols))


@runtime_checkable
class Stepper(Protocol):
    """A running engine: holds the weights of R replicas (on its device, in its dtype)."""

    #: the device that runs, e.g. ``"cpu"`` or ``"cuda:0"``
    device: str
    #: ``"float64"`` or ``"float32"``
    dtype: str

    def advance(self, idx: IntArray, snap_at: IntArray) -> Array:
        """Advance ``n = idx.shape[1]`` steps with batches ``idx`` (R, n, S).

        Returns the weights after ``snap_at[i]`` steps of this call (``snap_at`` sorted, values in
        ``[0, n]``) as a host float64 array (R, len(snap_at), d).
        """
        ...

    def weights(self) -> Array:
        """The current weights as a host float64 array (R, d) (a copy)."""
        ...


@runtime_checkable
class Engine(Protocol):
    """A registered SGD engine (see the module docstring)."""

    def check(self, device: str, dtype: str) -> None:
        """Raise :class:`~sgdfluct.errors.ConfigError` if this engine cannot run on ``device``
        (``"auto" | "cpu" | "cuda"``) in ``dtype`` (``"float64" | "float32"``), naming the field
        and the allowed values."""
        ...

    def start(self, problem: Problem, theta0: Array, device: str, dtype: str) -> Stepper:
        """A stepper holding a copy of ``theta0`` (R, d) float64."""
        ...


#: the registered engines, by name (``sgd.engine``; ``"auto"`` is resolved by the driver)
ENGINES: Registry[Engine] = Registry("sgd.engine")


def register_engine(name: str, engine: Engine) -> Engine:
    """Register ``engine`` as ``name`` (replacing an earlier one of that name); returns it."""
    if name == "auto":
        raise ValueError("'auto' is reserved (the driver's choice among the registered engines)")
    if not (callable(getattr(engine, "check", None)) and callable(getattr(engine, "start", None))):
        raise TypeError(f"engine {name!r} must have check(device, dtype) and start(...) methods")
    ENGINES.register(name, engine)
    return engine


def get_engine(name: str) -> Engine:
    """The engine registered as ``name``; :class:`ConfigError` naming the choices otherwise."""
    if name not in ENGINES:
        raise ConfigError(
            f"engine = {name!r} is not allowed: expected one of "
            + ", ".join(repr(n) for n in ("auto", *ENGINES.names()))
        )
    return ENGINES.get(name)


def cpu_float64_only(name: str, device: str, dtype: str) -> None:
    """The ``check`` of a CPU-only float64 engine."""
    if device not in ("auto", "cpu"):
        raise ConfigError(
            f"device = {device!r} is not allowed with engine = {name!r}: expected 'auto' or "
            "'cpu' (the CUDA device needs engine = 'torch')"
        )
    if dtype != "float64":
        raise ConfigError(
            f"dtype = {dtype!r} is not allowed with engine = {name!r}: expected 'float64' "
            "(float32 needs engine = 'torch')"
        )


def layer_layout(shapes: Sequence[tuple[int, int]]) -> tuple[IntArray, IntArray, IntArray]:
    """``rows``, ``cols`` and flat offsets ``off`` of the layers."""
    rows = np.array([r for r, _ in shapes], dtype=np.int64)
    cols = np.array([c for _, c in shapes], dtype=np.int64)
    off = np.concatenate([[0], np.cumsum(rows * cols)[:-1]]).astype(np.int64)
    return rows, cols, off
