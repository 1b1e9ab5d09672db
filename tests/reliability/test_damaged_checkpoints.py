"""Checkpoints that detect their own damage (issue 22).

A run killed after its simulation stage leaves a checkpoint folder with every stage kind: the
folder's ``key`` file, the stored simulation stage (``.npz``) and the engine's checkpoint
(``.ckpt``, pickle framed by its SHA-256). Each is truncated, zeroed or has a byte flipped, as a
power cut or a full disk leaves it; the re-run warns in one line naming the damaged file, discards
and recomputes that stage only, and gives bitwise the numbers of an uninterrupted run. A damaged
finished sweep cell (a result, not a checkpoint) is refused by name with exit 2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from reliability_helpers import PROCESS_TIMEOUT_S, RUN_API, TINY, cli_command, run_numbers

from sgdfluct.cli import main
from sgdfluct.io import PAUSE_ENV, PAUSE_MARKER_ENV, load_stage, resumable, save_stage

#: the write step after which the simulation stage is stored (key, marker, stage)
AFTER_STAGE = 3
DAMAGES = ("truncate", "zero", "flip")
KINDS = ("npz", "ckpt", "key")


def _run(cfg: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUN_API, str(cfg), str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=PROCESS_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, tuple[dict, dict]]:
    """The config, a checkpoint folder left by a run killed after its simulation stage, and the
    numbers of an uninterrupted run."""
    root = tmp_path_factory.mktemp("damaged")
    cfg = root / "c.toml"
    cfg.write_text(TINY)
    assert _run(cfg, root / "reference").returncode == 0
    marker = root / "steps.log"
    env = {**os.environ, PAUSE_ENV: "0.5", PAUSE_MARKER_ENV: str(marker)}
    proc = subprocess.Popen([sys.executable, "-c", RUN_API, str(cfg), str(root / "out")], env=env)
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    # killed in the pause after the stage is written (the pause of the next write step)
    while len(marker.read_text().splitlines() if marker.exists() else []) <= AFTER_STAGE:
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before the step"
        time.sleep(0.02)
    proc.kill()
    proc.wait(timeout=PROCESS_TIMEOUT_S)
    resume = root / ".out.resume"
    names = sorted(p.suffix or p.name for p in resume.iterdir())
    assert names == [".ckpt", ".npz", "key"], names
    return cfg, resume, run_numbers(root / "reference")


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        data = data[: len(data) // 2]
    elif how == "zero":
        data = bytearray(len(data))
    else:
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_damaged_stage_is_discarded_and_recomputed(tmp_path, record, stages, kind, how):
    cfg, template, (ref_summary, ref_arrays) = stages
    resume = tmp_path / ".out.resume"
    shutil.copytree(template, resume)
    if kind == "ckpt":
        # without the stored stage the engine's checkpoint is what the re-run loads
        next(resume.glob("*.npz")).unlink()
    (target,) = [p for p in resume.iterdir() if (p.suffix or p.name) in (f".{kind}", kind)]
    _damage(target, how)
    result = _run(cfg, tmp_path / "out")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    record.update(
        exit=result.returncode,
        traceback="Traceback" in result.stderr,
        expected=0,
        message=warnings[0] if warnings else "",
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert len(warnings) == 1 and repr(str(target)) in warnings[0], result.stderr
    assert "is damaged" in warnings[0]
    summary, arrays = run_numbers(tmp_path / "out")
    assert summary == ref_summary
    assert arrays.keys() == ref_arrays.keys()
    for name, array in arrays.items():
        np.testing.assert_array_equal(array, ref_arrays[name], err_msg=name)
    assert not resume.exists()  # the finished run removed its checkpoints


def test_intact_stages_are_reused_after_a_damaged_key(tmp_path, stages):
    """A damaged key file is rewritten; the intact simulation stage (its checksum covers the
    key) is reused, not recomputed: the engine checkpoint is never read."""
    cfg, template, _ = stages
    resume = tmp_path / ".out.resume"
    shutil.copytree(template, resume)
    _damage(resume / "key", "flip")
    (ckpt,) = resume.glob("*.ckpt")
    _damage(ckpt, "zero")  # would warn if the simulation were recomputed from it
    result = _run(cfg, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "key" in warnings[0], result.stderr


@dataclass(frozen=True)
class _Stage:
    values: np.ndarray


def test_stage_of_another_computation_is_discarded(tmp_path, capsys):
    """With its key file damaged, a folder may hold stages of another computation: their checksum
    covers that computation's key, so they are discarded (with the warning), never reused."""
    folder = tmp_path / "ckpts"
    with pytest.raises(KeyboardInterrupt), resumable(folder, "computation a"):
        save_stage("stage", _Stage(values=np.arange(3.0)))
        raise KeyboardInterrupt  # interrupted: the folder is kept
    with pytest.raises(SystemExit), resumable(folder, "computation a"):
        assert np.array_equal(load_stage("stage", _Stage).values, np.arange(3.0))
        raise SystemExit  # interrupted again: kept
    _damage(folder / "key", "flip")
    capsys.readouterr()
    with resumable(folder, "computation b"):
        assert load_stage("stage", _Stage) is None
        assert not (folder / "stage.npz").exists()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "key" in err[0] and "stage.npz" in err[1], err


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-cell sweep of the tiny run."""
    root = tmp_path_factory.mktemp("sweep")
    (root / "base.toml").write_text(TINY)
    (root / "sweep.toml").write_text('base = "base.toml"\n[grid]\n"data.seed" = [0]\n')
    done = subprocess.run(
        [*cli_command("sweep", str(root / "sweep.toml"), "--out", str(root / "out"), "-q"),
         "--workers", "1"], capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return root


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_finished_cell_is_refused_by_name(tmp_path, record, finished_sweep, how):
    """A finished cell is a result, not a checkpoint: a damaged summary.json (invalid UTF-8
    included: before, a raw UnicodeDecodeError traceback) is refused by name, exit 2, with what
    to do."""
    shutil.copytree(finished_sweep, tmp_path / "s")
    cell = tmp_path / "s" / "out" / "cells" / "data.seed=0__rep=0"
    _damage(cell / "summary.json", how)
    result = CliRunner().invoke(
        main, ["sweep", str(tmp_path / "s" / "sweep.toml"), "--out", str(tmp_path / "s" / "out"),
               "-q", "--workers", "1"],
    )  # fmt: skip
    record.update(exit=result.exit_code, expected=2, traceback=result.exit_code == 1,
                  message=result.output.strip()[:200])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"cell folder {str(cell)!r} exists but has no readable summary.json" in result.output
