"""A `run` killed (SIGKILL) at random points and re-run gives the numbers of an uninterrupted run.

The kill points are the run's write steps (test hook ``SGDFLUCT_TEST_PAUSE_WRITES``): before the
computation, after the simulation checkpoint, and while the outputs are written. A re-run after
the checkpoint reuses the stored simulation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from reliability_helpers import PROCESS_TIMEOUT_S, RUN_API, TINY, run_numbers

from sgdfluct.io import PAUSE_ENV, PAUSE_MARKER_ENV

#: write steps of a run (resume key, marker, simulation checkpoint, config.toml, result.nc,
#: summary.json, commit)
WRITE_STEPS = 7
#: the step whose pause follows the stored simulation checkpoint
AFTER_CHECKPOINT = 4
#: kill points drawn per test run, besides AFTER_CHECKPOINT
RANDOM_POINTS = 1


def _run(cfg, out, env=None):
    return subprocess.run(
        [sys.executable, "-c", RUN_API, str(cfg), str(out)],
        env={**os.environ, **(env or {})},
        check=False,
        timeout=PROCESS_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    cfg = folder / "c.toml"
    cfg.write_text(TINY)
    assert _run(cfg, folder / "out").returncode == 0
    return cfg, run_numbers(folder / "out")


def _kill_points(seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    others = [s for s in range(1, WRITE_STEPS + 1) if s != AFTER_CHECKPOINT]
    return sorted([AFTER_CHECKPOINT, *rng.choice(others, RANDOM_POINTS, replace=False).tolist()])


@pytest.mark.parametrize("draw", range(RANDOM_POINTS + 1))
def test_killed_run_resumes_with_identical_numbers(tmp_path, record, reference, draw):
    cfg, (ref_summary, ref_arrays) = reference
    step = _kill_points(int(os.environ.get("SGDFLUCT_TEST_SEED", "0")))[draw]
    out = tmp_path / "out"
    marker = tmp_path / "steps.log"
    env = {**os.environ, PAUSE_ENV: "0.25", PAUSE_MARKER_ENV: str(marker)}
    proc = subprocess.Popen([sys.executable, "-c", RUN_API, str(cfg), str(out)], env=env)
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while len(marker.read_text().splitlines() if marker.exists() else []) < step:
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before the step"
        time.sleep(0.02)
    proc.kill()
    proc.wait(timeout=PROCESS_TIMEOUT_S)
    checkpointed = any((tmp_path / ".out.resume").glob("simulation-*.npz"))
    if step >= AFTER_CHECKPOINT:  # (before it, a slow kill may land a step later: no check)
        assert checkpointed
    assert _run(cfg, out).returncode == 0
    summary, arrays = run_numbers(out)
    record.update(exit=0, traceback=False, expected=0, kill_step=step, resumed=checkpointed)
    assert summary == ref_summary
    assert arrays.keys() == ref_arrays.keys()
    for name, array in arrays.items():
        np.testing.assert_array_equal(array, ref_arrays[name], err_msg=name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "steps.log"]


#: a run whose simulation lasts a few seconds (many chunks of the engine)
LONG_STEPS = 3_000_000  # seconds of simulation: a worker outlives a killed parent by <= 0.5 s


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory):
    """An uninterrupted run of the long config: its config file and its numbers."""
    folder = tmp_path_factory.mktemp("long_reference")
    cfg = folder / "long.toml"
    cfg.write_text(TINY.replace("steps = 2000", f"steps = {LONG_STEPS}"))
    assert _run(cfg, folder / "out").returncode == 0
    return cfg, run_numbers(folder / "out")


def _wait_for_checkpoint(proc, folder, pattern):
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while not list(folder.glob(pattern)):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    return folder.glob(pattern)


def _checkpoint_step(path):
    import pickle

    from sgdfluct.simulate._checkpoint import MAGIC

    # our own checkpoint, written by the test's run: the magic, the SHA-256, then the pickle
    return pickle.loads(path.read_bytes()[len(MAGIC) + 32 :])["k"]


def test_run_killed_mid_simulation_resumes_bitwise(
    tmp_path, record, global_random_seed, long_reference
):
    """Checkpoints after every chunk; SIGKILL at a random moment of the simulation; the re-run
    continues from the last checkpoint and returns the numbers of an uninterrupted run."""
    cfg, (ref_summary, ref_arrays) = long_reference
    out = tmp_path / "out"
    env = {**os.environ, "SGDFLUCT_CHECKPOINT_SECONDS": "0"}
    proc = subprocess.Popen([sys.executable, "-c", RUN_API, str(cfg), str(out)], env=env)
    resume = tmp_path / ".out.resume"
    _wait_for_checkpoint(proc, resume, "*.ckpt")
    time.sleep(np.random.default_rng(global_random_seed).uniform(0.0, 0.3))
    proc.kill()
    proc.wait(timeout=PROCESS_TIMEOUT_S)
    (ckpt,) = resume.glob("*.ckpt")
    step = _checkpoint_step(ckpt)
    assert 0 < step < LONG_STEPS, step  # killed mid-simulation
    assert _run(cfg, out).returncode == 0
    record.update(exit=0, traceback=False, expected=0, killed_at_step=int(step))
    summary, arrays = run_numbers(out)
    assert summary == ref_summary
    for name, array in arrays.items():
        np.testing.assert_array_equal(array, ref_arrays[name], err_msg=name)
    assert not resume.exists()


@pytest.mark.slow
def test_sweep_cell_killed_mid_simulation_resumes_bitwise(tmp_path, record, long_reference):
    """kill -9 of a sweep while its cell simulates: the workers die with it, the re-run resumes
    the cell from its checkpoint and the cell equals an uninterrupted run (replicate 0 keeps the
    config's seeds)."""
    cfg, (ref_summary, ref_arrays) = long_reference
    (tmp_path / "base.toml").write_text(cfg.read_text())
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('base = "base.toml"\n[grid]\n"data.seed" = [0]\n')
    out = tmp_path / "out"
    command = [sys.executable, "-m", "sgdfluct.cli", "sweep", str(sweep), "--out", str(out), "-q"]
    env = {**os.environ, "SGDFLUCT_CHECKPOINT_SECONDS": "0"}
    proc = subprocess.Popen([*command, "--workers", "1"], env=env)
    (ckpt,) = _wait_for_checkpoint(proc, out / "cells", ".resume-*/*.ckpt")
    proc.kill()
    proc.wait(timeout=PROCESS_TIMEOUT_S)
    time.sleep(1.0)  # the worker follows its parent (watchdog period 0.5 s)
    step = _checkpoint_step(ckpt)
    assert 0 < step < LONG_STEPS, step
    rerun = subprocess.run(command, check=False, timeout=PROCESS_TIMEOUT_S)
    assert rerun.returncode == 0
    record.update(exit=0, traceback=False, expected=0, killed_at_step=int(step))
    summary, arrays = run_numbers(out / "cells" / "data.seed=0__rep=0")
    assert summary == ref_summary
    for name, array in arrays.items():
        np.testing.assert_array_equal(array, ref_arrays[name], err_msg=name)
    assert sorted(p.name for p in (out / "cells").iterdir()) == ["data.seed=0__rep=0"]
