"""Config validation: every bad value is rejected with a message naming the key and range."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sgdfluct.config import (
    ConfigError,
    ExperimentConfig,
    SGDConfig,
    config_from_dict,
    config_to_toml,
    load_config,
    with_overrides,
)

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.toml"))


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"data": {"n_in": 0}}, "data.n_in = 0"),
        ({"data": {"n_in": 2.5}}, "data.n_in = 2.5 has the wrong type"),
        ({"data": {"inputs": "uniform"}}, "data.inputs = 'uniform' is not allowed"),
        ({"data": {"label_noise": -1.0}}, "data.label_noise"),
        ({"data": {"colour": 1}}, "unknown key data.colour"),
        ({"model": {"depth": 0}}, "model.depth = 0 is out of range"),
        ({"sgd": {"learning_rate": 0.0}}, "sgd.learning_rate = 0.0 is out of range"),
        ({"sgd": {"learning_rate": "fast"}}, "sgd.learning_rate = 'fast' has the wrong type"),
        ({"sgd": {"batch_size": 500}, "data": {"n_samples": 100}}, "sgd.batch_size = 500"),
        ({"sgd": {"burn_in": 100, "steps": 100}}, "sgd.burn_in = 100 is out of range"),
        ({"sgd": {"sampling": "random"}}, "sgd.sampling = 'random'"),
        ({"sgd": {"replicas": True}}, "sgd.replicas = True has the wrong type"),
        ({"optimizer": {}}, "unknown section"),
    ],
)
def test_bad_values_name_the_key(raw, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        config_from_dict(raw)
    assert fragment in str(info.value)


def test_range_is_stated():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"sgd": {"batch_size": 500}, "data": {"n_samples": 100}})
    assert "[1, data.n_samples = 100]" in str(info.value)


def test_toml_round_trip(tmp_path):
    cfg = config_from_dict({"data": {"n_in": 7, "inputs": "powerlaw"}, "model": {"depth": 2}})
    path = tmp_path / "c.toml"
    path.write_text(config_to_toml(cfg, header="resolved"))
    assert load_config(path) == cfg


def test_frozen_and_overrides():
    cfg = ExperimentConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sgd.steps = 3  # type: ignore[misc]
    new = with_overrides(cfg, {"data.n_samples": 40, "sgd.learning_rate": 0.02})
    assert new.data.n_samples == 40 and new.sgd.learning_rate == 0.02
    assert cfg.data.n_samples == 100
    with pytest.raises(ConfigError, match=r"unknown key 'sgd\.lr'"):
        with_overrides(cfg, {"sgd.lr": 0.1})
    with pytest.raises(ConfigError, match=r"sgd\.batch_size"):
        with_overrides(cfg, {"data.n_samples": 5})


def test_direct_construction_validates():
    with pytest.raises(ConfigError, match=r"sgd\.record_every"):
        SGDConfig(steps=10, burn_in=5, record_every=6)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_are_valid(path):
    import tomllib

    from sgdfluct.experiments.sweep import load_sweep

    raw = tomllib.loads(path.read_text())
    if "base" in raw:
        load_sweep(path)  # a sweep file: its base and every cell are validated
    elif "probe" in raw:  # a `sgdfluct probe` config: its own schema
        from sgdfluct.probe._config import load_probe_config

        load_probe_config(path)
    else:
        load_config(path)


def test_min_records_is_what_the_engine_requires():
    """The config refuses exactly the runs the engine would: fewer records than its batches."""
    import inspect

    from sgdfluct.config import MIN_RECORDS
    from sgdfluct.simulate import simulate

    assert inspect.signature(simulate).parameters["n_batches"].default == MIN_RECORDS
    ok = SGDConfig(steps=1000 + MIN_RECORDS * 5, burn_in=1000, record_every=5)
    assert ok.n_records == MIN_RECORDS
    with pytest.raises(ConfigError, match=f"at least {MIN_RECORDS}"):
        SGDConfig(steps=1000 + (MIN_RECORDS - 1) * 5, burn_in=1000, record_every=5)


def test_memory_estimate_refused_with_estimate_and_limit(monkeypatch):
    from sgdfluct.config import MEMORY_LIMIT_ENV, check_resources, config_from_dict

    big = config_from_dict({"data": {"n_in": 100_000, "n_samples": 200_000}})
    assert big.memory_estimate() > 1e12  # ~80 float64 arrays of 1e5 x 1e5
    with pytest.raises(ConfigError, match=r"GiB of memory.*but the limit is"):
        check_resources(big)
    small = config_from_dict({})
    check_resources(small)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1000")
    with pytest.raises(ConfigError, match=r"limit is 9\.31e-07 GiB"):
        check_resources(small)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(ConfigError, match=MEMORY_LIMIT_ENV):
        check_resources(small)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x01binary", "binary file"),
        (b"[data]\nn_in = 3 # caf\xe9\n", "not UTF-8"),
        (b"[data\n", "invalid TOML"),
    ],
)
def test_unreadable_config_files_are_named(tmp_path, content, message):
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_memory_refusal_names_replicas_when_they_dominate(monkeypatch):
    from sgdfluct.config import MEMORY_LIMIT_ENV, check_resources, config_from_dict

    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1e9")
    many = config_from_dict({"sgd": {"replicas": 1_000_000}})  # 8 x 1e6 x 50 float64 = 3.2 GB
    with pytest.raises(ConfigError, match=r"sgd\.replicas = 1000000.*reduce sgd\.replicas"):
        check_resources(many)
