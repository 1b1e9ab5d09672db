"""Property tests of the config parser: any input gives a valid config or a ConfigError naming a
key (never another exception), valid configs survive the TOML round trip, and any bytes given as a
config file are read or refused with a ConfigError."""

from __future__ import annotations

import dataclasses
import math
import tomllib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgdfluct.config import (
    AnalysisConfig,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    InitConfig,
    ModelConfig,
    SGDConfig,
    config_from_dict,
    config_to_toml,
    load_config,
    read_toml,
    with_overrides,
)

SECTIONS = {
    name: [f.name for f in dataclasses.fields(cls)]
    for name, cls in (
        ("data", DataConfig),
        ("model", ModelConfig),
        ("sgd", SGDConfig),
        ("init", InitConfig),
        ("analysis", AnalysisConfig),
    )
}

scalars = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.none(),
    st.lists(st.integers(0, 5), max_size=3),
    st.sampled_from(["gaussian", "with_replacement", "auto", "random", "numpy", "float64"]),
)


@st.composite
def raw_configs(draw):
    """Nested mappings with known or unknown sections and keys and arbitrary values."""
    raw: dict = {}
    for section, keys in SECTIONS.items():
        if draw(st.booleans()):
            chosen = draw(st.lists(st.sampled_from(keys), unique=True, max_size=4))
            raw[section] = {k: draw(scalars) for k in chosen}
    if draw(st.integers(0, 9)) == 0:
        raw[draw(st.text(min_size=1, max_size=6))] = draw(scalars)
    return raw


@settings(max_examples=300, deadline=None)
@given(raw_configs())
def test_any_mapping_gives_a_config_or_a_named_config_error(raw):
    try:
        config = config_from_dict(raw)
    except ConfigError as exc:
        text = str(exc)
        assert text and "\n" not in text
        return
    assert isinstance(config, ExperimentConfig)


valid = st.fixed_dictionaries(
    {
        "data": st.fixed_dictionaries(
            {
                "n_in": st.integers(1, 30),
                "n_out": st.integers(1, 4),
                "n_samples": st.integers(40, 400),
                "label_noise": st.floats(0.01, 1e3),
                "seed": st.integers(0, 2**32),
            }
        ),
        "model": st.fixed_dictionaries({"depth": st.integers(1, 4), "hidden": st.integers(1, 30)}),
        "sgd": st.fixed_dictionaries(
            {
                "learning_rate": st.floats(1e-6, 10.0),
                "batch_size": st.integers(1, 39),
                "steps": st.integers(2000, 10**7),
                "burn_in": st.integers(0, 1000),
                "record_every": st.integers(1, 60),
                "replicas": st.integers(1, 64),
                "seed": st.integers(0, 2**32),
            }
        ),
    }
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid)
def test_valid_configs_round_trip_through_toml(raw):
    config = config_from_dict(raw)
    again = config_from_dict(tomllib.loads(config_to_toml(config, header="round\ntrip")))
    assert again == config
    # an override by a key's own value changes nothing
    assert with_overrides(config, {"sgd.learning_rate": config.sgd.learning_rate}) == config
    assert config.sgd.n_records >= 16
    assert math.isfinite(config.memory_estimate())


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=200))
def test_any_bytes_as_a_config_file(tmp_path, data):
    path = tmp_path / "c.toml"
    path.write_bytes(data)
    try:
        raw, text = read_toml(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
        return
    assert isinstance(raw, dict) and isinstance(text, str)
    try:
        load_config(path)
    except ConfigError:
        pass
