"""Configuration of ``sgdfluct probe`` (docs/architecture.md, "sgdfluct probe"): frozen, validated.

Every key is checked here, once; a wrong value raises :class:`sgdfluct.errors.ConfigError` naming
the key and its allowed range.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sgdfluct.config import SAMPLING_MODES, _check, _Rule, read_toml
from sgdfluct.errors import ConfigError

__all__ = [
    "DIGITS_SAMPLES",
    "ProbeConfig",
    "ProbeDataConfig",
    "ProbeInitConfig",
    "ProbeModelConfig",
    "ProbeSGDConfig",
    "ProbeSettings",
    "load_probe_config",
    "probe_config_from_dict",
    "probe_config_to_toml",
]

#: samples in scikit-learn's bundled digits data set (load_digits: 1797 images, 10 classes)
DIGITS_SAMPLES = 1797
#: the digits test set must keep at least one sample per class
_DIGITS_CLASSES = 10
_SAMPLING = SAMPLING_MODES
#: teacher-student keys shared with `run` ([data] of sgdfluct.config.DataConfig)
_TS_KEYS = (
    "n_in",
    "n_out",
    "n_samples",
    "label_noise",
    "inputs",
    "powerlaw_exponent",
    "student_t_dof",
    "correlation",
    "n_test",
)


def _num(
    key: str,
    value: Any,
    kind: type,
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
) -> Any:
    """Check a number with the run config's declared-rule checker (one message format)."""
    section, _, name = key.partition(".")
    return _check(section, name, value, _Rule(kind, low, high, open_low=open_low))


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    section, _, name = key.partition(".")
    return str(_check(section, name, value, _Rule(str, choices=choices)))


def _bool(key: str, value: Any) -> bool:
    section, _, name = key.partition(".")
    return bool(_check(section, name, value, _Rule(bool)))


@dataclass(frozen=True, kw_only=True)
class ProbeDataConfig:
    """``[data]``: scikit-learn digits or the teacher-student data of ``run``.

    ``standardize = None`` means the default: yes for digits, no for teacher-student (so the
    linear control sees exactly the data of ``run``).
    """

    dataset: str = "digits"
    n_train: int = 1000
    standardize: bool | None = None
    seed: int = 0
    # teacher-student only (the [data] keys of `run`)
    n_in: int = 50
    n_out: int = 1
    n_samples: int = 100
    label_noise: float = 1.0
    inputs: str = "gaussian"
    powerlaw_exponent: float = 1.0
    student_t_dof: float = 5.0
    correlation: float = 0.5
    n_test: int = 1000

    def __post_init__(self) -> None:
        _choice("data.dataset", self.dataset, ("digits", "teacher_student"))
        _num(
            "data.n_train", self.n_train, int, _DIGITS_CLASSES * 2, DIGITS_SAMPLES - _DIGITS_CLASSES
        )
        if self.standardize is not None:
            _bool("data.standardize", self.standardize)
        _num("data.seed", self.seed, int, 0)
        _num("data.n_test", self.n_test, int, 0, 10_000_000)

    @property
    def standardized(self) -> bool:
        if self.standardize is None:
            return self.dataset == "digits"
        return self.standardize

    def run_data_config(self) -> Any:
        """The :class:`sgdfluct.config.DataConfig` of the teacher-student keys (validated there)."""
        from sgdfluct.config import DataConfig

        return DataConfig(
            n_in=self.n_in,
            n_out=self.n_out,
            n_samples=self.n_samples,
            label_noise=self.label_noise,
            inputs=self.inputs,
            powerlaw_exponent=self.powerlaw_exponent,
            student_t_dof=self.student_t_dof,
            correlation=self.correlation,
            seed=self.seed,
        )


#: ``model.factory``: dotted module path, a colon, a dotted attribute path
_FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True, kw_only=True)
class ProbeModelConfig:
    """``[model]``: MLP (ReLU/tanh) or deep linear network; ``hidden = []`` is one layer.

    ``bias = None`` means the default: biases for ``mlp``, none for ``linear`` (as ``run``).

    ``factory = "package.module:function"`` replaces the built-in models and data by the user's:
    the function (imported with the config file's folder first on ``sys.path``) is called with
    no arguments and returns ``(model, (x, y))`` or ``(model, (x, y), (x_test, y_test))``;
    ``[data]`` and the other ``[model]`` keys but ``loss`` are then not allowed.
    """

    kind: str = "mlp"
    hidden: tuple[int, ...] = (32, 32)
    activation: str = "relu"
    bias: bool | None = None
    loss: str = "cross_entropy"
    factory: str | None = None

    def __post_init__(self) -> None:
        if self.factory is not None:
            if not isinstance(self.factory, str) or not _FACTORY.fullmatch(self.factory):
                raise ConfigError(
                    f"model.factory = {self.factory!r} is not allowed: expected "
                    "'package.module:function' (an importable module and a callable in it)"
                )
        _choice("model.kind", self.kind, ("mlp", "linear"))
        if not isinstance(self.hidden, list | tuple):
            raise ConfigError(
                f"model.hidden = {self.hidden!r} has the wrong type: expected a list of integers "
                "in [1, 100000]"
            )
        for i, h in enumerate(self.hidden):
            _num(f"model.hidden[{i}]", h, int, 1, 100_000)
        object.__setattr__(self, "hidden", tuple(self.hidden))
        _choice("model.activation", self.activation, ("relu", "tanh"))
        if self.bias is not None:
            _bool("model.bias", self.bias)
        _choice("model.loss", self.loss, ("cross_entropy", "mse"))

    @property
    def has_bias(self) -> bool:
        return (self.kind == "mlp") if self.bias is None else self.bias


@dataclass(frozen=True, kw_only=True)
class ProbeInitConfig:
    """``[init]``: ``W ~ N(0, scale^2 / fan_in)``, biases zero; its own seed."""

    scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        _num("init.scale", self.scale, float, 0.0, 1e6, open_low=True)
        _num("init.seed", self.seed, int, 0)


@dataclass(frozen=True, kw_only=True)
class ProbeSGDConfig:
    """``[sgd]``: plain SGD (no momentum); ``weight_decay`` adds ``wd/2 ||w||^2`` to the loss."""

    learning_rate: float = 0.1
    batch_size: int = 32
    sampling: str = "with_replacement"
    weight_decay: float = 0.0
    steps: int = 20_000
    record_every: int = 10
    seed: int = 1

    def __post_init__(self) -> None:
        _num("sgd.learning_rate", self.learning_rate, float, 0.0, None, open_low=True)
        _num("sgd.batch_size", self.batch_size, int, 1)
        _choice("sgd.sampling", self.sampling, _SAMPLING)
        _num("sgd.weight_decay", self.weight_decay, float, 0.0)
        _num("sgd.steps", self.steps, int, 1)
        _num("sgd.record_every", self.record_every, int, 1)
        _num("sgd.seed", self.seed, int, 0)


def _layer_entry(key: str, value: Any, *, nested: bool = False) -> Any:
    """One entry of ``probe.layers``: a layer number, a name or glob, or a group (a list)."""
    if isinstance(value, str):
        if not value:
            raise ConfigError(f"{key} = '' is not allowed: expected a module or parameter name")
        return value
    if isinstance(value, list | tuple) and not nested:
        if not value:
            raise ConfigError(f"{key} = [] is not allowed: expected a non-empty group")
        return tuple(_layer_entry(f"{key}[{j}]", v, nested=True) for j, v in enumerate(value))
    return _num(key, value, int, 1)


@dataclass(frozen=True, kw_only=True)
class ProbeSettings:
    """``[probe]``: directions, window and analysis settings (docs/theory.md §11).

    ``plateau_block`` (steps; default ``window // 4``), ``sketch_size`` (columns of the
    streaming Nyström sketch; default ``max(2 top_k + 20, 256)``), ``bootstrap`` and
    ``near_null_rtol`` (the near-null cut of the drift share and the range projection,
    ``|θ| <= near_null_rtol · λ_max``) and ``hessian_spectrum`` ("auto" | true | false: the
    per-layer Hessian trace and spectral density) are extensions of docs/architecture.md.
    """

    directions: str = "pca"
    top_k: int = 50
    window: int = 5000
    #: "all", or layer numbers (1-based), module / parameter names or globs, and groups (lists)
    layers: str | tuple[Any, ...] = "all"
    flatness_factor: float = math.e
    device: str = "auto"
    plateau_block: int | None = None
    sketch_size: int | None = None
    bootstrap: int = 1000
    near_null_rtol: float = 1e-3
    #: when the recording window opens: "plateau" (the plateau test) or a fixed step (Feng &
    #: Tu's protocol: cross-entropy without weight decay has no plateau)
    start: str | int = "plateau"
    #: per-layer Hessian trace (Hutch++) and spectral density (SLQ), probe._spectrum: "auto"
    #: (models up to 10⁵ parameters), true or false
    hessian_spectrum: bool | str = "auto"

    def __post_init__(self) -> None:
        _choice("probe.directions", self.directions, ("pca", "hessian"))
        if isinstance(self.hessian_spectrum, str):
            _choice("probe.hessian_spectrum", self.hessian_spectrum, ("auto",))
        else:
            _bool("probe.hessian_spectrum", self.hessian_spectrum)
        if isinstance(self.start, str):
            _choice("probe.start", self.start, ("plateau",))
        else:
            _num("probe.start", self.start, int, 1)
        _num("probe.top_k", self.top_k, int, 3, 100_000)
        _num("probe.window", self.window, int, 1)
        if isinstance(self.layers, str):
            _choice("probe.layers", self.layers, ("all",))
        elif isinstance(self.layers, list | tuple) and self.layers:
            object.__setattr__(
                self,
                "layers",
                tuple(_layer_entry(f"probe.layers[{i}]", v) for i, v in enumerate(self.layers)),
            )
        else:
            raise ConfigError(
                f"probe.layers = {self.layers!r} is not allowed: expected 'all' or a non-empty "
                "list of layer numbers (1-based), module or parameter names or globs ('fc*', "
                "'*.weight'), or lists of these (one layer each)"
            )
        _num("probe.flatness_factor", self.flatness_factor, float, 1.0, None, open_low=True)
        _choice("probe.device", self.device, ("auto", "cpu", "cuda"))
        if self.plateau_block is not None:
            _num("probe.plateau_block", self.plateau_block, int, 1)
        if self.sketch_size is not None:
            _num("probe.sketch_size", self.sketch_size, int, self.top_k)
        _num("probe.bootstrap", self.bootstrap, int, 10, 1_000_000)
        _num("probe.near_null_rtol", self.near_null_rtol, float, 0.0, 1.0, open_low=True)
        if self.near_null_rtol == 1.0:  # the probe's cut |θ| <= rtol λ_max needs rtol < 1
            raise ConfigError(
                "probe.near_null_rtol = 1.0 is out of range: expected a number in (0, 1) (a cut "
                "at lambda_max would call every direction near-null)"
            )


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """The whole ``sgdfluct probe`` configuration (one TOML file)."""

    data: ProbeDataConfig = field(default_factory=ProbeDataConfig)
    model: ProbeModelConfig = field(default_factory=ProbeModelConfig)
    init: ProbeInitConfig = field(default_factory=ProbeInitConfig)
    sgd: ProbeSGDConfig = field(default_factory=ProbeSGDConfig)
    probe: ProbeSettings = field(default_factory=ProbeSettings)

    def __post_init__(self) -> None:
        d, m, s, p = self.data, self.model, self.sgd, self.probe
        if d.dataset == "teacher_student" and m.loss == "cross_entropy":
            raise ConfigError(
                "model.loss = 'cross_entropy' is not allowed with data.dataset = "
                "'teacher_student' (real-valued targets): expected 'mse'"
            )
        n_train = d.n_train if d.dataset == "digits" else d.n_samples
        if s.sampling != "with_replacement" and s.batch_size > n_train:
            raise ConfigError(
                f"sgd.batch_size = {s.batch_size} is out of range: expected an integer in "
                f"[1, {n_train}] (the training set size) for sampling = {s.sampling!r}"
            )
        if not isinstance(p.start, str) and p.start + p.window > s.steps:
            raise ConfigError(
                f"probe.start = {p.start} is out of range: expected an integer in "
                f"[1, {s.steps - p.window}] (probe.start + probe.window <= sgd.steps)"
            )
        if p.window >= s.steps:
            raise ConfigError(
                f"probe.window = {p.window} is out of range: expected an integer in "
                f"[1, {s.steps - 1}] (below sgd.steps; the plateau must come first)"
            )
        records = p.window // s.record_every
        if records < MIN_WINDOW_RECORDS:
            raise ConfigError(
                f"probe.window = {p.window} is out of range: with sgd.record_every = "
                f"{s.record_every} the window holds {records} records, expected >= "
                f"{MIN_WINDOW_RECORDS} (window >= {MIN_WINDOW_RECORDS * s.record_every})"
            )
        block = p.plateau_block if p.plateau_block is not None else p.window // 4
        if block // s.record_every < MIN_PLATEAU_RECORDS:
            raise ConfigError(
                f"probe.plateau_block = {block} is out of range: expected >= "
                f"{MIN_PLATEAU_RECORDS * s.record_every} steps ({MIN_PLATEAU_RECORDS} records of "
                f"sgd.record_every = {s.record_every})"
            )


#: fewest records in the window: the PCA needs many more snapshots than directions
MIN_WINDOW_RECORDS = 40
#: fewest loss records per plateau block (10 sub-blocks of >= 2 records, see plateau_test)
MIN_PLATEAU_RECORDS = 20

_SECTIONS: dict[str, type] = {
    "data": ProbeDataConfig,
    "model": ProbeModelConfig,
    "init": ProbeInitConfig,
    "sgd": ProbeSGDConfig,
    "probe": ProbeSettings,
}


def probe_config_from_dict(raw: Mapping[str, Any]) -> ProbeConfig:
    """Build and validate a :class:`ProbeConfig` from a parsed TOML mapping.

    Raises
    ------
    ConfigError
        Unknown section or key, wrong type, out-of-range value (the message names the key).
    """
    parts: dict[str, Any] = {}
    for section, value in raw.items():
        if section not in _SECTIONS:
            raise ConfigError(
                f"unknown section [{section}]: expected one of {', '.join(_SECTIONS)}"
            )
        if not isinstance(value, Mapping):
            raise ConfigError(f"[{section}] must be a table, got {value!r}")
        cls = _SECTIONS[section]
        known = {f.name for f in fields(cls)}
        for key in value:
            if key not in known:
                raise ConfigError(
                    f"unknown key {section}.{key}: expected one of {', '.join(sorted(known))}"
                )
        if section == "data" and value.get("dataset", "digits") == "digits":
            bad = sorted(set(value) & set(_TS_KEYS))
            if bad:
                raise ConfigError(
                    f"data.{bad[0]} is only allowed with data.dataset = 'teacher_student'"
                )
        if section == "data" and value.get("dataset") == "teacher_student" and "n_train" in value:
            raise ConfigError(
                "data.n_train is only allowed with data.dataset = 'digits' (teacher_student "
                "uses data.n_samples)"
            )
        parts[section] = cls(**dict(value))
    factory = raw.get("model", {}).get("factory") if isinstance(raw.get("model"), Mapping) else None
    if factory is not None:
        extra = sorted(k for k in raw.get("model", {}) if k not in ("factory", "loss"))
        if extra or "data" in raw:
            what = f"model.{extra[0]}" if extra else "the [data] section"
            raise ConfigError(
                f"{what} is not allowed with model.factory: the factory returns the model and "
                "its data (keep only model.factory and model.loss)"
            )
    config = ProbeConfig(**parts)
    if config.data.dataset == "teacher_student":
        config.data.run_data_config()  # validates the keys shared with `run`
    return config


def load_probe_config(path: str | Path) -> ProbeConfig:
    """Read and validate a probe TOML file (:class:`ConfigError` on any problem)."""
    raw, _ = read_toml(path, "config file")  # missing, binary, non-UTF-8, link loops: named
    return probe_config_from_dict(raw)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def probe_config_to_toml(config: ProbeConfig) -> str:
    """The resolved configuration as TOML (``None`` defaults are written resolved or omitted)."""
    lines: list[str] = []
    for section in _SECTIONS:
        values = asdict(getattr(config, section))
        if section == "data" and config.data.dataset == "digits":
            values = {k: v for k, v in values.items() if k not in _TS_KEYS}
        if section == "data" and config.data.dataset == "teacher_student":
            values.pop("n_train")
        if config.model.factory is not None:  # the factory returns the model and its data
            if section == "data":
                continue
            if section == "model":
                values = {"factory": config.model.factory, "loss": config.model.loss}
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is None:
                continue
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)
