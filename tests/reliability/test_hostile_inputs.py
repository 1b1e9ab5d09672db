"""Hostile inputs through the CLI: every user mistake is one line naming the field or path and
a non-zero exit code, never a traceback, and nothing is written.

The cases fail while validating, before any computing, so they run in-process (CliRunner); the
subprocess cases in test_faults.py show the same mapping in a real process.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner
from reliability_helpers import TINY

from sgdfluct.cli import main

# (case id, replacement applied to TINY as (old, new) pairs or extra TOML, exit code, message part)
CONFIG_CASES = [
    ("n_in_string", [("n_in = 3", 'n_in = "3"')], 2, "data.n_in"),
    ("n_in_zero", [("n_in = 3", "n_in = 0")], 2, "data.n_in = 0"),
    ("n_in_float", [("n_in = 3", "n_in = 3.5")], 2, "data.n_in = 3.5"),
    ("n_in_bool", [("n_in = 3", "n_in = true")], 2, "data.n_in = True"),
    ("n_in_array", [("n_in = 3", "n_in = [3]")], 2, "data.n_in"),
    ("n_samples_negative", [("n_samples = 12", "n_samples = -1")], 2, "data.n_samples"),
    ("label_noise_nan", [("label_noise = 0.5", "label_noise = nan")], 2, "not finite"),
    ("label_noise_inf", [("label_noise = 0.5", "label_noise = inf")], 2, "not finite"),
    ("label_noise_negative", [("label_noise = 0.5", "label_noise = -1.0")], 2, "label_noise"),
    ("label_noise_overflow", [("label_noise = 0.5", "label_noise = 1e60")], 2, "label_noise"),
    ("learning_rate_zero", [("learning_rate = 0.05", "learning_rate = 0")], 2, "learning_rate"),
    ("learning_rate_negative", [("learning_rate = 0.05", "learning_rate = -0.1")], 2, "out of"),
    ("learning_rate_nan", [("learning_rate = 0.05", "learning_rate = nan")], 2, "not finite"),
    ("learning_rate_inf", [("learning_rate = 0.05", "learning_rate = -inf")], 2, "not finite"),
    ("learning_rate_string", [("learning_rate = 0.05", 'learning_rate = "fast"')], 2, "type"),
    ("batch_zero", [("batch_size = 3", "batch_size = 0")], 2, "sgd.batch_size"),
    ("batch_above_samples", [("batch_size = 3", "batch_size = 13")], 2, "data.n_samples = 12"),
    (
        "full_batch_without_replacement",
        [("batch_size = 3", 'batch_size = 12\nsampling = "without_replacement"')],
        2,
        "gradient descent",
    ),
    (
        "full_batch_epoch_shuffle",
        [("batch_size = 3", 'batch_size = 12\nsampling = "epoch_shuffle"')],
        2,
        "sgd.batch_size = 12",
    ),
    ("sampling_unknown", [("batch_size = 3", 'batch_size = 3\nsampling = "random"')], 2, "one of"),
    ("steps_zero", [("steps = 2000", "steps = 0")], 2, "sgd.steps"),
    ("burn_in_all_steps", [("burn_in = 200", "burn_in = 2000")], 2, "sgd.burn_in"),
    ("record_every_beyond_run", [("record_every = 5", "record_every = 5000")], 2, "record_every"),
    ("too_few_records", [("steps = 2000", "steps = 260")], 2, "at least 16"),
    ("replicas_zero", [("replicas = 2", "replicas = 0")], 2, "sgd.replicas"),
    ("seed_negative", [("seed = 1", "seed = -1")], 2, "sgd.seed"),
    ("engine_unknown", [("seed = 1", 'seed = 1\nengine = "cuda"')], 2, "sgd.engine"),
    ("float32_needs_torch", [("seed = 1", 'seed = 1\ndtype = "float32"')], 2, "float32"),
    ("depth_zero", [("depth = 1", "depth = 0")], 2, "model.depth"),
    ("depth_huge", [("depth = 1", "depth = 100")], 2, "model.depth"),
    ("hidden_zero", [("depth = 1", "depth = 2\nhidden = 0")], 2, "model.hidden"),
    (
        "deep_fewer_samples_than_inputs",
        [("n_in = 3", "n_in = 20"), ("depth = 1", "depth = 2\nhidden = 2")],
        2,
        "interpolates",
    ),
    (
        "deep_without_label_noise",
        [("label_noise = 0.5", "label_noise = 0.0"), ("depth = 1", "depth = 2\nhidden = 2")],
        2,
        "data.label_noise = 0",
    ),
    (
        "least_squares_init_deep",
        [("depth = 1", "depth = 2\n[init]\nkind = 'least_squares'")],
        2,
        "init.kind",
    ),
    ("bootstrap_too_small", [("bootstrap = 20", "bootstrap = 5")], 2, "analysis.bootstrap"),
    ("unknown_section", [("[model]", "[modle]")], 2, "unknown section"),
    ("unknown_key", [("n_in = 3", "n_in = 3\nn_inputs = 3")], 2, "data.n_inputs"),
    (
        "section_not_table",
        [("[model]\ndepth = 1", ""), ("[data]", "model = 1\n[data]")],
        2,
        "[model] must be a table",
    ),
    (
        "memory_n_in_100000",
        [("n_in = 3", "n_in = 100000"), ("n_samples = 12", "n_samples = 200000")],
        2,
        "GiB",
    ),
]


def _invoke(args: list[str], env: dict[str, str] | None = None):
    result = CliRunner().invoke(main, args, env=env)
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    return result, crashed


def _check(record: dict, result, crashed: bool, code: int, message: str) -> None:
    text = result.output  # stdout and stderr (click >= 8.2 mixes them)
    record.update(exit=result.exit_code, traceback=crashed, expected=code)
    assert not crashed, f"traceback: {result.exception!r}"
    assert result.exit_code == code, text
    assert message in text, text
    assert len(text.strip().splitlines()) == 1, text  # one line, naming the field


@pytest.mark.parametrize(
    ("edits", "code", "message"),
    [pytest.param(e, c, m, id=i) for i, e, c, m in CONFIG_CASES],
)
def test_bad_config_value(tmp_path, record, edits, code, message):
    text = TINY
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    out = tmp_path / "out"
    result, crashed = _invoke(["run", str(cfg), "--out", str(out), "-q"])
    _check(record, result, crashed, code, message)
    assert not out.exists()  # refused before claiming or computing


def test_memory_estimate_and_limit_named(tmp_path, record):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        TINY.replace("n_in = 3", "n_in = 400").replace("n_samples = 12", "n_samples = 800")
    )
    out = tmp_path / "out"
    # an explicit limit of 1 MB: the estimate (80+ float64 arrays of 400 x 400) exceeds it
    result, crashed = _invoke(
        ["run", str(cfg), "--out", str(out)], env={"SGDFLUCT_MEMORY_LIMIT": "1e6"}
    )
    _check(record, result, crashed, 2, "but the limit is")
    assert "data.n_in = 400" in result.output and "d = 400 weights" in result.output
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# malformed files
# ---------------------------------------------------------------------------------------------

BINARY = bytes(range(256)) * 4
LATIN1 = "[data]\nn_in = 3 # café\n".encode("latin-1")

FILE_CASES = [
    ("binary_config", "run", BINARY, "is a binary file"),
    ("latin1_config", "run", LATIN1, "is not UTF-8"),
    ("invalid_toml_config", "run", b"[data\nn_in = 3\n", "invalid TOML"),
    ("duplicate_key_config", "run", b"[data]\nn_in = 3\nn_in = 4\n", "invalid TOML"),
    ("binary_sweep", "sweep", BINARY, "is a binary file"),
    ("latin1_sweep", "sweep", LATIN1, "is not UTF-8"),
    ("invalid_toml_sweep", "sweep", b"base = \n", "invalid TOML"),
]


@pytest.mark.parametrize(
    ("command", "content", "message"), [pytest.param(c, b, m, id=i) for i, c, b, m in FILE_CASES]
)
def test_malformed_file(tmp_path, record, command, content, message):
    path = tmp_path / "in.toml"
    path.write_bytes(content)
    out = tmp_path / "out"
    result, crashed = _invoke([command, str(path), "--out", str(out), "-q"])
    _check(record, result, crashed, 2, message)
    assert str(path) in result.output
    assert not out.exists()


def test_config_is_a_folder(tmp_path, record):
    result, crashed = _invoke(["run", str(tmp_path), "--out", str(tmp_path / "o")])
    record.update(exit=result.exit_code, traceback=crashed, expected=2)
    assert not crashed and result.exit_code == 2  # click's own check: a usage error


def test_config_missing(tmp_path, record):
    result, crashed = _invoke(["run", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")])
    _check(record, result, crashed, 2, "does not exist")


SWEEP_CASES = [
    ("grid_not_table_number", 'base = "base.toml"\ngrid = 5\n', "is not a table"),
    ("grid_not_table_list", 'base = "base.toml"\ngrid = [1, 2]\n', "is not a table"),
    ("grid_values_not_list", 'base = "base.toml"\n[grid]\n"data.seed" = 3\n', "non-empty list"),
    ("grid_values_empty", 'base = "base.toml"\n[grid]\n"data.seed" = []\n', "non-empty list"),
    ("grid_key_unknown", 'base = "base.toml"\n[grid]\n"data.size" = [1]\n', "data.size"),
    ("grid_key_undotted", 'base = "base.toml"\n[grid]\nseed = [1]\n', "dotted"),
    ("grid_value_bad", 'base = "base.toml"\n[grid]\n"sgd.learning_rate" = [0.1, -1]\n', "-1"),
    ("grid_value_repeated", 'base = "base.toml"\n[grid]\n"data.seed" = [1, 1]\n', "repeated"),
    ("sweep_unknown_key", 'base = "base.toml"\nbases = 1\n', "unknown key"),
    ("sweep_base_missing", 'base = "nope.toml"\n', "does not exist"),
    ("sweep_base_not_string", "base = 3\n", "'base' must name"),
    ("replicates_zero", 'base = "base.toml"\nreplicates = 0\n', "replicates"),
    ("replicates_twice", 'base = "base.toml"\nreplicates = 2\n[grid]\nreplicates = 2\n', "twice"),
]


@pytest.mark.parametrize(("text", "message"), [pytest.param(t, m, id=i) for i, t, m in SWEEP_CASES])
def test_bad_sweep_file(tmp_path, record, text, message):
    (tmp_path / "base.toml").write_text(TINY)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(text)
    out = tmp_path / "out"
    result, crashed = _invoke(["sweep", str(sweep), "--out", str(out), "-q"])
    _check(record, result, crashed, 2, message)
    assert not out.exists()


def test_sweep_base_binary(tmp_path, record):
    (tmp_path / "base.toml").write_bytes(BINARY)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('base = "base.toml"\n')
    result, crashed = _invoke(["sweep", str(sweep), "--out", str(tmp_path / "out")])
    _check(record, result, crashed, 2, "is a binary file")


# ---------------------------------------------------------------------------------------------
# flag conflicts
# ---------------------------------------------------------------------------------------------

FLAG_CASES = [
    ("quick_full", ["reproduce", "--quick", "--full"], 2, "exclusive"),
    ("full_quick", ["reproduce", "--full", "--quick"], 2, "exclusive"),
    ("smoke_full", ["reproduce", "--smoke", "--full"], 2, "exclusive"),
    ("only_unknown", ["reproduce", "--smoke", "--only", "99_nope"], 2, "'99_nope'"),
    (
        "only_unknown_beside_known",
        ["reproduce", "--smoke", "--only", "1", "--only", "zz"],
        2,
        "'zz'",
    ),
    (
        "workers_and_scheduler",
        ["sweep", "S", "--workers", "2", "--scheduler", "tcp://x:1"],
        2,
        "exclusive",
    ),
    ("workers_zero", ["sweep", "S", "--workers", "0"], 2, "--workers"),
    ("run_without_out", ["run", "C"], 2, "--out"),
    ("unknown_option", ["run", "C", "--out", "o", "--fast"], 2, "--fast"),
]


@pytest.mark.parametrize(
    ("args", "code", "message"), [pytest.param(a, c, m, id=i) for i, a, c, m in FLAG_CASES]
)
def test_flag_conflict(tmp_path, record, args, code, message):
    (tmp_path / "S").write_text('base = "C"\n')
    (tmp_path / "C").write_text(TINY)
    args = [str(tmp_path / a) if a in ("S", "C") else a for a in args]
    out = tmp_path / "out"
    result, crashed = _invoke(
        [*args, "--out", str(out)] if "--out" not in args and args[0] != "run" else args
    )
    record.update(exit=result.exit_code, traceback=crashed, expected=code)
    assert not crashed, repr(result.exception)
    assert result.exit_code == code, result.output
    assert message in result.output, result.output
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# stability edges
# ---------------------------------------------------------------------------------------------


def _lambda_max() -> float:
    import tomllib

    from sgdfluct.config import config_from_dict
    from sgdfluct.data import make_dataset

    config = config_from_dict(tomllib.loads(TINY))
    x = make_dataset(config.data).inputs
    return float(np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1])


@pytest.mark.parametrize(
    "factor",
    [
        pytest.param(1.0, id="eta_exactly_2_over_lambda_max"),
        pytest.param(1.0 - 1e-15, id="eta_one_ulp_below_bound"),
        pytest.param(1.5, id="eta_beyond_bound"),
    ],
)
def test_learning_rate_at_the_stability_edge(tmp_path, record, factor):
    eta = 2.0 / _lambda_max() * factor
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY.replace("learning_rate = 0.05", f"learning_rate = {eta!r}"))
    out = tmp_path / "out"
    result, crashed = _invoke(["run", str(cfg), "--out", str(out), "-q"])
    _check(record, result, crashed, 3, "2/lambda_max")
    assert not out.exists()
    assert not math.isnan(eta)
