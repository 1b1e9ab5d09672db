"""sgdfluct: weight fluctuations of (deep) linear networks under SGD.

See the README for the command line; the public library API is re-exported here.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sgdfluct")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

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

__all__ = [
    "AnalysisConfig",
    "ConfigError",
    "DataConfig",
    "Dataset",
    "ExperimentConfig",
    "ModelConfig",
    "SGDConfig",
    "__version__",
    "config_from_dict",
    "config_to_toml",
    "load_config",
    "make_dataset",
    "with_overrides",
]
