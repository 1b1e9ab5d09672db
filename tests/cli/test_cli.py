"""Every CLI command at small size: help, version, errors without tracebacks, outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgdfluct import __version__
from sgdfluct.cli import main

CONFIGS = Path(__file__).parents[2] / "configs"

SMALL = """
[data]
n_in = 4
n_out = 1
n_samples = 16
[model]
depth = 1
[sgd]
learning_rate = {eta}
batch_size = 4
steps = 4000
burn_in = 1000
record_every = 5
replicas = 2
[analysis]
bootstrap = 30
"""


def test_version_and_help():
    runner = CliRunner()
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    for command in ([], ["run"], ["sweep"], ["reproduce"], ["bench"]):
        result = runner.invoke(main, [*command, "--help"])
        assert result.exit_code == 0, command
        assert "Usage" in result.output


def test_run_small(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(SMALL.format(eta=0.05))
    result = CliRunner().invoke(main, ["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output == ""
    for name in ("config.toml", "summary.json", "result.nc"):
        assert (tmp_path / "out" / name).is_file()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["depth"] == 1


def test_bad_config_is_one_line_without_traceback(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(SMALL.format(eta=0.05).replace("batch_size = 4", "batch_size = 40"))
    proc = subprocess.run(
        [sys.executable, "-m", "sgdfluct.cli", "run", str(cfg), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "sgd.batch_size = 40" in proc.stderr and "data.n_samples = 16" in proc.stderr


def test_too_short_two_layer_run_is_a_config_error(tmp_path):
    cfg = tmp_path / "c.toml"
    text = SMALL.format(eta=0.05).replace("depth = 1", "depth = 2\nhidden = 2")
    cfg.write_text(text.replace("n_out = 1", "n_out = 2"))
    result = CliRunner().invoke(main, ["run", str(cfg), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "sgd.steps = 4000 is too short" in result.output


def test_missing_config_file(tmp_path):
    result = CliRunner().invoke(main, ["run", str(tmp_path / "nope.toml"), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_divergence_states_the_stability_bound(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(SMALL.format(eta=3.0))
    result = CliRunner().invoke(main, ["run", str(cfg), "--out", str(tmp_path / "o")])
    assert result.exit_code == 3, result.output
    assert "2/" in result.output or "stability" in result.output.lower()
    assert not (tmp_path / "o" / "summary.json").exists()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_run_at_small_size(tmp_path, path):
    """Each shipped config, with its simulation shortened, runs through the CLI."""
    import tomllib

    raw = tomllib.loads(path.read_text())
    if "base" in raw:  # a sweep file: covered by the sweep tests
        pytest.skip("sweep file")
    if "probe" in raw:  # a `sgdfluct probe` config: covered by tests/probe
        pytest.skip("probe config")
    deep = raw.get("model", {}).get("depth", 1) >= 2
    # depth >= 2 needs a saturated imbalance, then two windows of ~100 / (eta h_min) steps
    raw["sgd"].update(steps=120_000 if deep else 6000, burn_in=5000 if deep else 2000)
    raw["sgd"]["replicas"] = 4 if deep else 2
    if deep:  # a small two-layer problem whose measurement fits with margin in 120k steps
        raw["data"].update(n_in=6, n_out=2, n_samples=60)
        raw["model"]["hidden"] = 3
    else:
        raw["data"]["n_samples"] = min(raw["data"]["n_samples"], 4 * raw["data"]["n_in"])
    raw.setdefault("analysis", {})["bootstrap"] = 30
    lines = []
    for section, values in raw.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in values.items())
    small = tmp_path / path.name
    small.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["run", str(small), "--out", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 0, result.output
