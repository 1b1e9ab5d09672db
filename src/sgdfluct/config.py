"""Experiment configuration: frozen, self-validating dataclasses with TOML in/out.

The schema is the one of ``docs/architecture.md``::

    [data]   n_in, n_out, n_samples, label_noise, inputs, seed (+ input-distribution options)
    [model]  depth, hidden
    [sgd]    learning_rate, batch_size, sampling, steps, burn_in, record_every, replicas, seed
    [analysis] (optional) options of the depth >= 2 measurement and of the IVFR analysis

Every value is checked when the object is built. A bad value raises :class:`ConfigError` whose
message
names the key (``section.field``), the value and the allowed range. Constraints are declared as data
(:data:`_FIELDS`), not scattered through code.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgdfluct.errors import ConfigError

__all__ = [
    "ENGINES",
    "INIT_KINDS",
    "INPUT_KINDS",
    "MIN_RECORDS",
    "SAMPLING_MODES",
    "AnalysisConfig",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "InitConfig",
    "ModelConfig",
    "SGDConfig",
    "check_resources",
    "config_from_dict",
    "config_to_dict",
    "config_to_toml",
    "load_config",
    "memory_limit",
    "read_toml",
    "with_overrides",
]

#: the built-in input kinds (the live list, with user registrations: ``sgdfluct.data.INPUT_KINDS``)
INPUT_KINDS = ("gaussian", "powerlaw", "student_t", "correlated")
SAMPLING_MODES = ("with_replacement", "without_replacement", "epoch_shuffle")
#: SGD engines selectable from ``sgd.engine`` ("auto": numba if installed, else numpy)
ENGINES = ("auto", "numba", "numpy", "torch")
#: starting points (docs/theory.md §8b); "auto" = "random" at depth >= 2, "least_squares" at depth 1
INIT_KINDS = ("auto", "random", "least_squares", "balanced_minimum", "gradient_flow")

#: fewest records per replica a run may have: the engine cuts each replica's records into this many
#: contiguous batches for its batch-means standard errors (``sgdfluct.simulate.simulate``'s default
#: ``n_batches``, which rejects fewer records; tests/test_config.py checks the two agree)
MIN_RECORDS = 16
#: largest label noise accepted. The theory is homogeneous in sigma (covariances scale as sigma^2),
#: so larger values are a change of units; the statistics need fourth powers of the weights and
#: overflow float64 beyond about sigma ~ 1e60 (measured: sigma = 1e60 gave non-finite metrics,
#: 1e30 finite ones)
MAX_LABEL_NOISE = 1e20
#: bytes per float64 entry
_FLOAT_BYTES = 8
#: (d, d) float64 arrays alive at the peak of a run, d = number of weights: ~20 in the streaming
#: statistics (simulate/_stats.py), ~12 in the runner (H, C, covariances, errors, currents) and
#: the GMRES basis of the exact solver (restart 50 vectors of d^2, theory/discrete.py)
_PEAK_DD_ARRAYS = 82
#: length-d float64 vectors kept per replica (weights, start, snapshots, per-replica sums)
_PER_REPLICA_VECTORS = 8
#: environment variable overriding the memory limit (bytes; for tests and shared machines)
MEMORY_LIMIT_ENV = "SGDFLUCT_MEMORY_LIMIT"


@dataclass(frozen=True)
class _Rule:
    """Declared constraint of one field: type, bounds (inclusive unless ``open_*``), choices."""

    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    #: allowed strings; a callable is asked at validation time (a registry's current names)
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None

    def options(self) -> tuple[str, ...] | None:
        return self.choices() if callable(self.choices) else self.choices

    def describe(self) -> str:
        options = self.options()
        if options is not None:
            return "one of " + ", ".join(repr(c) for c in options)
        name = {int: "an integer", float: "a number", bool: "true/false", str: "a string"}[
            self.kind
        ]
        if self.low is None and self.high is None:
            return name
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        left = "(" if self.open_low else "["
        right = ")" if self.high is None else "]"
        return f"{name} in {left}{lo}, {hi}{right}"


def _check(section: str, name: str, value: Any, rule: _Rule) -> Any:
    key = f"{section}.{name}"
    if rule.kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} = {value!r} has the wrong type: expected {rule.describe()}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key} = {value!r} is not finite: expected {rule.describe()}")
    elif rule.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} = {value!r} has the wrong type: expected {rule.describe()}")
    elif not isinstance(value, rule.kind):
        raise ConfigError(f"{key} = {value!r} has the wrong type: expected {rule.describe()}")
    options = rule.options()
    if options is not None and value not in options:
        raise ConfigError(f"{key} = {value!r} is not allowed: expected {rule.describe()}")
    if rule.low is not None and (value < rule.low or (rule.open_low and value == rule.low)):
        raise ConfigError(f"{key} = {value!r} is out of range: expected {rule.describe()}")
    if rule.high is not None and value > rule.high:
        raise ConfigError(f"{key} = {value!r} is out of range: expected {rule.describe()}")
    return value


_FIELDS: dict[str, dict[str, _Rule]] = {
    "data": {
        "n_in": _Rule(int, 1, 100_000),
        "n_out": _Rule(int, 1, 10_000),
        "n_samples": _Rule(int, 1, 10_000_000),
        "label_noise": _Rule(float, 0.0, MAX_LABEL_NOISE),
        "inputs": _Rule(str, choices=lambda: _registered_input_kinds()),
        "powerlaw_exponent": _Rule(float, 0.0, 10.0),
        "student_t_dof": _Rule(float, 2.0, None, open_low=True),
        "correlation": _Rule(float, 0.0, 0.99),
        "seed": _Rule(int, 0, None),
    },
    "model": {
        "depth": _Rule(int, 1, 16),
        "hidden": _Rule(int, 1, 10_000),
    },
    "sgd": {
        "learning_rate": _Rule(float, 0.0, None, open_low=True),
        "batch_size": _Rule(int, 1, None),
        "sampling": _Rule(str, choices=SAMPLING_MODES),
        "steps": _Rule(int, 1, None),
        "burn_in": _Rule(int, 0, None),
        "record_every": _Rule(int, 1, None),
        "replicas": _Rule(int, 1, 1_000_000),
        "seed": _Rule(int, 0, None),
        "engine": _Rule(str, choices=lambda: _registered_engines()),
        "device": _Rule(str, choices=("auto", "cpu", "cuda")),
        "dtype": _Rule(str, choices=("float64", "float32")),
    },
    "init": {
        "kind": _Rule(str, choices=INIT_KINDS),
        "scale": _Rule(float, 0.0, 100.0, open_low=True),
        "seed": _Rule(int, 0, None),
    },
    "analysis": {
        "window_factor": _Rule(float, 1.0, 1e6),
        "flatness_factor": _Rule(float, 1.0, None, open_low=True),
        "bootstrap": _Rule(int, 10, 1_000_000),
        "theory_method": _Rule(str, choices=("auto", "dense", "krylov", "fixed_point")),
    },
}


def _registered_input_kinds() -> tuple[str, ...]:
    """Names of the input kinds registered in :data:`sgdfluct.data.INPUT_KINDS` (loaded lazily:
    :mod:`sgdfluct.data` imports this module)."""
    from sgdfluct.data import INPUT_KINDS as registry

    return registry.names()


def _registered_engines() -> tuple[str, ...]:
    """``"auto"`` and the engines registered in :data:`sgdfluct.simulate.ENGINES` (loaded
    lazily, like the input kinds)."""
    from sgdfluct.simulate._registry import ENGINES as registry

    return ("auto", *registry.names())


def _validate(obj: Any, section: str) -> None:
    for f in dataclasses.fields(obj):
        value = _check(section, f.name, getattr(obj, f.name), _FIELDS[section][f.name])
        object.__setattr__(obj, f.name, value)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Teacher-student data set (docs/theory.md §1).

    Attributes
    ----------
    n_in, n_out, n_samples : int
        ``N_i``, ``N_o`` and the number of samples ``P``.
    label_noise : float
        Standard deviation ``sigma`` of the label noise.
    inputs : str
        ``"gaussian"`` (whitened, ``Λ = I``), ``"powerlaw"`` (``Λ_kk ∝ k^(-powerlaw_exponent)``,
        normalized to mean 1), ``"student_t"`` (i.i.d. Student-t entries with ``student_t_dof``
        degrees of freedom, scaled to unit variance), ``"correlated"`` (Gaussian with
        ``Λ_kl = correlation^|k-l|``).
    seed : int
        Seed of the data set and teacher.
    """

    n_in: int = 50
    n_out: int = 1
    n_samples: int = 100
    label_noise: float = 1.0
    inputs: str = "gaussian"
    powerlaw_exponent: float = 1.0
    student_t_dof: float = 5.0
    correlation: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        _validate(self, "data")

    @property
    def alpha(self) -> float:
        """Samples per input dimension ``alpha = P / N_i``."""
        return self.n_samples / self.n_in


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Depth-L linear network ``f(x) = W_L ... W_1 x`` (docs/theory.md §2); ``hidden``: N_h."""

    depth: int = 1
    hidden: int = 20

    def __post_init__(self) -> None:
        _validate(self, "model")


@dataclass(frozen=True, kw_only=True)
class SGDConfig:
    """Mini-batch SGD (docs/theory.md §3).

    ``steps`` counts all SGD steps including the ``burn_in`` ones; statistics are taken every
    ``record_every`` steps after burn-in, over ``replicas`` independent chains.
    """

    learning_rate: float = 0.05
    batch_size: int = 10
    sampling: str = "with_replacement"
    steps: int = 100_000
    burn_in: int = 10_000
    record_every: int = 10
    replicas: int = 32
    seed: int = 1
    engine: str = "auto"
    device: str = "auto"
    dtype: str = "float64"

    def __post_init__(self) -> None:
        _validate(self, "sgd")
        if self.dtype == "float32" and self.engine != "torch":
            raise ConfigError(
                f"sgd.dtype = 'float32' is not allowed with sgd.engine = {self.engine!r}: "
                "float32 needs sgd.engine = 'torch'"
            )
        if self.device == "cuda" and self.engine != "torch":
            raise ConfigError(
                f"sgd.device = 'cuda' is not allowed with sgd.engine = {self.engine!r}: "
                "the CUDA device needs sgd.engine = 'torch'"
            )
        if self.burn_in >= self.steps:
            raise ConfigError(
                f"sgd.burn_in = {self.burn_in} is out of range: expected an integer in "
                f"[0, sgd.steps - 1 = {self.steps - 1}]"
            )
        if self.record_every > self.steps - self.burn_in:
            raise ConfigError(
                f"sgd.record_every = {self.record_every} is out of range: expected an integer in "
                f"[1, sgd.steps - sgd.burn_in = {self.steps - self.burn_in}]"
            )
        if self.n_records < MIN_RECORDS:
            longest = (self.steps - self.burn_in - 1) // (MIN_RECORDS - 1)
            raise ConfigError(
                f"sgd.record_every = {self.record_every} leaves {self.n_records} records per "
                f"replica (sgd.steps = {self.steps}, sgd.burn_in = {self.burn_in}); the standard "
                f"errors need at least {MIN_RECORDS}: expected sgd.record_every in [1, "
                f"{max(longest, 1)}] or sgd.steps >= "
                f"{self.burn_in + (MIN_RECORDS - 1) * self.record_every + 1}"
            )

    @property
    def n_records(self) -> int:
        """Records per replica: steps ``burn_in, burn_in + record_every, ... < steps``."""
        return len(range(self.burn_in, self.steps, self.record_every))


@dataclass(frozen=True, kw_only=True)
class InitConfig:
    """Starting point of every replica (docs/theory.md §8b).

    kind : ``"auto"`` (``"random"`` at depth >= 2, ``"least_squares"`` at depth 1),
        ``"random"`` (``W_l ~ N(0, scale^2 / fan_in)``, one draw per replica),
        ``"least_squares"`` (depth 1 only), ``"balanced_minimum"`` (docs/theory.md §8a,
        zero-padded surplus units) or ``"gradient_flow"`` (gradient flow from a random start).
    scale : standard deviation factor of the random start.
    seed : its own seed, independent of ``[data]`` and ``[sgd]``.
    """

    kind: str = "auto"
    scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        _validate(self, "init")


@dataclass(frozen=True, kw_only=True)
class AnalysisConfig:
    """Options of the analysis (all optional in the TOML file).

    window_factor : quasi-stationary window length ``T_w = window_factor / (eta h_min)`` steps of
        the depth >= 2 measurement (docs/theory.md §8a: ``T_w >~ 100 / (eta h_min)``; ``h_min``
        the smallest
        non-zero eigenvalue of ``H_theta``).
    flatness_factor : the loss level ``factor * L_0`` that defines the flatness (Feng & Tu use e).
    bootstrap : bootstrap resamples for confidence intervals.
    theory_method : solver of the exact discrete-time equation (``"auto"`` is ``"krylov"``).
    """

    window_factor: float = 100.0
    flatness_factor: float = math.e
    bootstrap: int = 1000
    theory_method: str = "auto"

    def __post_init__(self) -> None:
        _validate(self, "analysis")


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """One experiment: data, model, SGD and analysis settings."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sgd: SGDConfig = field(default_factory=SGDConfig)
    init: InitConfig = field(default_factory=InitConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

    def __post_init__(self) -> None:
        if self.init.kind == "least_squares" and self.model.depth != 1:
            raise ConfigError(
                f"init.kind = 'least_squares' is not allowed at model.depth = {self.model.depth}: "
                "expected one of 'auto', 'random', 'balanced_minimum', 'gradient_flow'"
            )
        if self.sgd.batch_size > self.data.n_samples:
            raise ConfigError(
                f"sgd.batch_size = {self.sgd.batch_size} is out of range: expected an integer in "
                f"[1, data.n_samples = {self.data.n_samples}]"
            )
        if self.sgd.batch_size == self.data.n_samples and self.sgd.sampling != "with_replacement":
            raise ConfigError(
                f"sgd.batch_size = {self.sgd.batch_size} equals data.n_samples with sgd.sampling "
                f"= {self.sgd.sampling!r}: every step sees the whole data set (gradient descent, "
                "no SGD noise, nothing to measure); expected sgd.batch_size in "
                f"[1, data.n_samples - 1 = {self.data.n_samples - 1}] or sgd.sampling = "
                "'with_replacement'"
            )
        if self.model.depth >= 2 and self.data.n_samples <= self.data.n_in:
            raise ConfigError(
                f"data.n_samples = {self.data.n_samples} is out of range at model.depth = "
                f"{self.model.depth}: with n_samples <= data.n_in = {self.data.n_in} the network "
                "interpolates the data, so SGD has no noise at the minimum and the depth >= 2 "
                f"measurement has nothing to measure; expected data.n_samples > {self.data.n_in}"
            )
        if self.model.depth >= 2 and self.data.label_noise == 0:
            raise ConfigError(
                f"data.label_noise = 0 is out of range at model.depth = {self.model.depth}: a "
                "noiseless linear teacher is interpolated, so SGD has no noise at the minimum "
                "and the depth >= 2 measurement has nothing to measure; expected "
                f"data.label_noise in (0, {MAX_LABEL_NOISE:g}]"
            )

    @property
    def n_params(self) -> int:
        """Number of weights ``d`` (all layers)."""
        return sum(rows * cols for rows, cols in self.layer_shapes())

    def memory_estimate(self) -> int:
        """Rough peak memory of a run in bytes (the dominant terms; see :func:`check_resources`).

        ``_PEAK_DD_ARRAYS`` float64 ``(d, d)`` arrays (statistics, theory, runner), the data and
        test set, the per-sample gradients used for the noise covariance (``P x d``) and
        ``_PER_REPLICA_VECTORS`` vectors of length d per replica.
        """
        d = self.n_params
        n_test = 2000  # sgdfluct.runner.N_TEST: the independent test set
        rows = self.data.n_samples + n_test
        dd = _PEAK_DD_ARRAYS * d * d
        data = rows * (self.data.n_in + self.data.n_out)
        gradients = 2 * self.data.n_samples * d
        replicas = _PER_REPLICA_VECTORS * self.sgd.replicas * d
        return int(_FLOAT_BYTES * (dd + data + gradients + replicas))

    @property
    def init_kind(self) -> str:
        """The resolved start kind (``"auto"`` replaced by its meaning at this depth)."""
        if self.init.kind != "auto":
            return self.init.kind
        return "least_squares" if self.model.depth == 1 else "random"

    def layer_shapes(self) -> list[tuple[int, int]]:
        """Shapes ``(rows, cols)`` of ``W_1 ... W_L`` in forward order."""
        d, m = self.data, self.model
        if m.depth == 1:
            return [(d.n_out, d.n_in)]
        dims = [d.n_in] + [m.hidden] * (m.depth - 1) + [d.n_out]
        return [(dims[i + 1], dims[i]) for i in range(m.depth)]


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "sgd": SGDConfig,
    "init": InitConfig,
    "analysis": AnalysisConfig,
}


def config_from_dict(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from a nested mapping (parsed TOML).

    Missing sections or keys take their defaults; unknown ones raise :class:`ConfigError`.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config must be a table of sections, got {type(raw).__name__}")
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ConfigError(
            f"unknown section(s) {sorted(unknown)}: allowed sections are {sorted(_SECTIONS)}"
        )
    parts: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        section = raw.get(name, {})
        if not isinstance(section, Mapping):
            raise ConfigError(f"[{name}] must be a table, got {section!r}")
        allowed = {f.name for f in dataclasses.fields(cls)}
        for key in section:
            if key not in allowed:
                raise ConfigError(
                    f"unknown key {name}.{key}: allowed keys of [{name}] are {sorted(allowed)}"
                )
        parts[name] = cls(**dict(section))
    return ExperimentConfig(**parts)


def config_to_dict(config: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """Nested plain dict of every field (defaults included)."""
    return {name: dataclasses.asdict(getattr(config, name)) for name in _SECTIONS}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {value!r} to TOML")


def config_to_toml(config: ExperimentConfig, *, header: str = "") -> str:
    """TOML text of the fully resolved config; ``header`` lines are written as comments."""
    lines = [f"# {line}" for line in header.splitlines()]
    for name, values in config_to_dict(config).items():
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
    return "\n".join(lines) + "\n"


def read_toml(path: str | Path, what: str = "config file") -> tuple[dict[str, Any], str]:
    """Parse a TOML file; every way it can be unreadable is a :class:`ConfigError` naming it.

    Parameters
    ----------
    path : str or Path
    what : str
        How the message calls the file (``"config file"``, ``"sweep file"``).

    Returns
    -------
    (dict, str)
        The parsed table and the file's text.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {str(path)!r} is a folder: expected a TOML file") from None
    except PermissionError:
        raise ConfigError(f"{what} {str(path)!r} cannot be read (permission denied)") from None
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    if b"\x00" in data:
        raise ConfigError(f"{what} {str(path)!r} is a binary file: expected a TOML text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start}): expected a TOML file "
            "saved as UTF-8"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return raw, text


def memory_limit() -> int:
    """Memory a run may use, in bytes: ``$SGDFLUCT_MEMORY_LIMIT`` if set, else the smaller of
    the physical memory and the cgroup limit (containers)."""
    env = os.environ.get(MEMORY_LIMIT_ENV)
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise ConfigError(f"{MEMORY_LIMIT_ENV} = {env!r} is not a number of bytes") from None
    limits: list[int] = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        pass
    for cgroup in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(cgroup).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else 2**63 - 1


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_resources(config: ExperimentConfig) -> None:
    """Refuse, before any computing, a run whose memory estimate exceeds the machine's limit.

    Raises
    ------
    ConfigError
        Naming the fields that set the size, the estimate and the limit.
    """
    need = config.memory_estimate()
    limit = memory_limit()
    if need > limit:
        d = config.n_params
        per_replica = _FLOAT_BYTES * _PER_REPLICA_VECTORS * config.sgd.replicas * d
        if per_replica > need / 2:
            cause = (
                f"{_PER_REPLICA_VECTORS} weight vectors of d = {d} for each of sgd.replicas = "
                f"{config.sgd.replicas}"
            )
            fix = "reduce sgd.replicas"
        else:
            cause = (
                f"{_PEAK_DD_ARRAYS} float64 arrays of d x d with d = {d} weights from data.n_in "
                f"= {config.data.n_in}, data.n_out = {config.data.n_out}, model.depth = "
                f"{config.model.depth}, model.hidden = {config.model.hidden}"
            )
            fix = "reduce data.n_in (or model.hidden)"
        raise ConfigError(
            f"the run needs about {_gib(need)} of memory ({cause}) but the limit is "
            f"{_gib(limit)}: {fix}, or raise {MEMORY_LIMIT_ENV}"
        )


def load_config(path: str | Path, *, check_memory: bool = True) -> ExperimentConfig:
    """Read and validate a TOML experiment config.

    Parameters
    ----------
    path : str or Path
    check_memory : bool
        Also refuse a config whose memory estimate exceeds this machine's limit
        (:func:`check_resources`).

    Raises
    ------
    ConfigError
        Unreadable, binary or non-UTF-8 files, invalid TOML, unknown keys, bad values, and runs
        that cannot fit in memory.
    """
    raw, _ = read_toml(path, "config file")
    config = config_from_dict(raw)
    if check_memory:
        check_resources(config)
    return config


def with_overrides(config: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """Copy of ``config`` with dotted-key overrides, e.g. ``{"data.n_samples": 40}``; validated."""
    raw = config_to_dict(config)
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section not in raw or name not in raw[section]:
            raise ConfigError(f"unknown key {key!r}: expected 'section.field' of the run config")
        raw[section][name] = value
    return config_from_dict(raw)
