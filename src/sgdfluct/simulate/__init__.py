"""Multi-replica SGD on depth-L linear networks with streaming stationary statistics.

Engines are registered in :data:`ENGINES` (``numba``, ``numpy``, ``torch``; add one with
:func:`register_engine`, see :mod:`sgdfluct.simulate._registry`). Heavy dependencies (numba,
torch) load only when their engine first runs.

The engine never imports :mod:`sgdfluct.theory`: the agreement of simulation and theory is the
project's evidence only if the two are independent.
"""

from sgdfluct.simulate._engine import DivergenceError, SimulationResult, auto_engine, simulate
from sgdfluct.simulate._registry import (
    ENGINES,
    Engine,
    Problem,
    Stepper,
    get_engine,
    register_engine,
)
from sgdfluct.simulate._sampling import SAMPLING_MODES, batch_indices

__all__ = [
    "ENGINES",
    "SAMPLING_MODES",
    "DivergenceError",
    "Engine",
    "Problem",
    "SimulationResult",
    "Stepper",
    "auto_engine",
    "batch_indices",
    "get_engine",
    "register_engine",
    "simulate",
]
