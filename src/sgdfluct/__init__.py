"""sgdfluct: weight fluctuations of (deep) linear networks under SGD.

Simulate multi-replica SGD (:func:`simulate`), solve the stationary theory exactly
(:func:`stationary_covariance`, :func:`layered_covariance`), measure and fit the inverse
variance-flatness relation (:func:`ivfr_analysis`), run experiments and sweeps
(:func:`run_experiment`, :func:`run_sweep`) and reproduce arXiv 2311.14120 (:func:`reproduce`).
See the README for the command line.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sgdfluct")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

from sgdfluct.analysis import MeasuredCovariance, measure_layered_covariance
from sgdfluct.config import (
    AnalysisConfig,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    SGDConfig,
    config_from_dict,
    config_to_toml,
    load_config,
    with_overrides,
)
from sgdfluct.data import Dataset, make_dataset
from sgdfluct.experiments.reproduce import reproduce
from sgdfluct.experiments.sweep import (
    SweepIncomplete,
    SweepSpec,
    collect_sweep,
    load_sweep,
    run_sweep,
)
from sgdfluct.landscape import IVFRResult, fit_ivfr, fluctuation_directions, ivfr_analysis
from sgdfluct.report import ClaimResult, write_report
from sgdfluct.runner import run_experiment
from sgdfluct.simulate import DivergenceError, SimulationResult, simulate
from sgdfluct.theory import (
    LayeredCovariance,
    StationaryCovariance,
    UnstableError,
    continuum_covariance,
    detailed_balance,
    layered_covariance,
    stationary_covariance,
)

__all__ = [
    "AnalysisConfig",
    "ClaimResult",
    "ConfigError",
    "DataConfig",
    "Dataset",
    "DivergenceError",
    "ExperimentConfig",
    "IVFRResult",
    "LayeredCovariance",
    "MeasuredCovariance",
    "ModelConfig",
    "SGDConfig",
    "SimulationResult",
    "StationaryCovariance",
    "SweepIncomplete",
    "SweepSpec",
    "UnstableError",
    "__version__",
    "collect_sweep",
    "config_from_dict",
    "config_to_toml",
    "continuum_covariance",
    "detailed_balance",
    "fit_ivfr",
    "fluctuation_directions",
    "ivfr_analysis",
    "layered_covariance",
    "load_config",
    "load_sweep",
    "make_dataset",
    "measure_layered_covariance",
    "reproduce",
    "run_experiment",
    "run_sweep",
    "simulate",
    "stationary_covariance",
    "with_overrides",
    "write_report",
]
