"""sgdfluct: weight fluctuations of (deep) linear networks under SGD.

Simulate multi-replica SGD (:func:`simulate`), solve the stationary theory exactly
(:func:`stationary_covariance`, :func:`layered_covariance`), measure and fit the inverse
variance-flatness relation (:func:`ivfr_analysis`), run experiments and sweeps
(:func:`run_experiment`, :func:`run_sweep`) and reproduce arXiv 2311.14120 (:func:`reproduce`).
See the README for the command line and ``docs/`` for the science and the architecture.

``import sgdfluct`` loads nothing but the version and the error family; every public name loads
its module when first used (:pep:`562` module ``__getattr__``). The numerical core (config, data,
networks, simulate, theory, landscape, analysis) never imports matplotlib, xarray, dask or torch;
the runner, sweeps, reproduction, report and plotting do, and load only when asked for.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from sgdfluct._version import __version__
from sgdfluct.errors import (
    ConfigError,
    DivergenceError,
    MeasurementError,
    OutputError,
    SgdfluctError,
    UnstableError,
)

#: every public name -> the module that defines it; a module loads when one of its names is
#: first used, so ``import sgdfluct`` (and ``sgdfluct --version``) costs almost nothing
_LAZY: dict[str, str] = {
    **dict.fromkeys(("MeasuredCovariance", "measure_layered_covariance"), "sgdfluct.analysis"),
    **dict.fromkeys(
        (
            "AnalysisConfig",
            "DataConfig",
            "ExperimentConfig",
            "InitConfig",
            "ModelConfig",
            "SGDConfig",
            "config_from_dict",
            "config_to_toml",
            "load_config",
            "with_overrides",
        ),
        "sgdfluct.config",
    ),
    **dict.fromkeys(("Dataset", "make_dataset"), "sgdfluct.data"),
    **dict.fromkeys(
        ("IVFRResult", "fit_ivfr", "fluctuation_directions", "ivfr_analysis"), "sgdfluct.landscape"
    ),
    **dict.fromkeys(("SimulationResult", "simulate"), "sgdfluct.simulate"),
    **dict.fromkeys(
        (
            "LayeredCovariance",
            "StationaryCovariance",
            "continuum_covariance",
            "detailed_balance",
            "layered_covariance",
            "stationary_covariance",
        ),
        "sgdfluct.theory",
    ),
    **dict.fromkeys(("ClaimResult", "write_report"), "sgdfluct.report"),
    "reproduce": "sgdfluct.experiments.reproduce",
    **dict.fromkeys(
        ("SweepIncomplete", "SweepSpec", "collect_sweep", "load_sweep", "run_sweep"),
        "sgdfluct.experiments.sweep",
    ),
    "run_experiment": "sgdfluct.runner",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sgdfluct' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


#: public functions named like a subpackage: importing ``sgdfluct.simulate`` must not replace the
#: function ``sgdfluct.simulate`` by the subpackage (the import system sets the parent's attribute)
_SHADOWED = frozenset(name for name, module in _LAZY.items() if module == f"sgdfluct.{name}")


class _Root(types.ModuleType):
    """The root module: keeps :data:`_SHADOWED` names bound to the public objects."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Root


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AnalysisConfig",
    "ClaimResult",
    "ConfigError",
    "DataConfig",
    "Dataset",
    "DivergenceError",
    "ExperimentConfig",
    "IVFRResult",
    "InitConfig",
    "LayeredCovariance",
    "MeasuredCovariance",
    "MeasurementError",
    "ModelConfig",
    "OutputError",
    "SGDConfig",
    "SgdfluctError",
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
