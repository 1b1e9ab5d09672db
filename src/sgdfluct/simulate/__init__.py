"""Multi-replica SGD on depth-L linear networks with streaming stationary statistics.

The engine never imports :mod:`sgdfluct.theory`: the agreement of simulation and theory is the
project's evidence only if the two are independent.
"""

from sgdfluct.simulate._engine import DivergenceError, SimulationResult, simulate
from sgdfluct.simulate._sampling import SAMPLING_MODES, batch_indices

__all__ = ["SAMPLING_MODES", "DivergenceError", "SimulationResult", "batch_indices", "simulate"]
