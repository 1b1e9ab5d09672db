"""Interrupted sweeps (Ctrl-C, killed workers) keep finished cells and resume to equal numbers."""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

from sgdfluct.config import load_config
from sgdfluct.experiments._cells import dying_cell, synthetic_cell
from sgdfluct.experiments.sweep import SweepIncomplete, SweepSpec, cells, run_sweep

BASE = Path(__file__).resolve().parents[2] / "configs" / "single_layer.toml"
GRID = {"data.n_samples": [20, 40, 80], "sgd.learning_rate": [0.02, 0.05]}
REPLICATES = 2
SLEEP_S = 0.4  # per cell: 12 cells on 2 workers take >= 2.4 s, ample time to interrupt
DEADLINE_S = 60.0  # generous bound on start-up (imports, worker spawn) on a loaded 2-core machine

# A stand-in for the CLI: run the sweep, turn SweepIncomplete into a message and exit code 130/1.
SCRIPT = f"""
import functools, sys
from pathlib import Path
from sgdfluct.config import load_config
from sgdfluct.experiments._cells import synthetic_cell
from sgdfluct.experiments.sweep import SweepIncomplete, SweepSpec, run_sweep

base, out, log, sleep = sys.argv[1:5]
spec = SweepSpec(base=load_config(base), grid={GRID!r}, replicates={REPLICATES})
fn = functools.partial(synthetic_cell, sleep=float(sleep), log=Path(log))
try:
    run_sweep(spec, out, workers=2, cell_fn=fn)
except SweepIncomplete as exc:
    print(exc, file=sys.stderr)
    sys.exit(130 if exc.interrupted else 1)
print("complete")
"""


def _default_sigint() -> None:
    """In the child before exec: Ctrl-C as in a user's shell. An ignored SIGINT is inherited
    across exec, and Python then never raises KeyboardInterrupt; something in a long pytest
    session left it ignored once (the Ctrl-C tests failed in one whole-suite run on a fresh clone
    and passed alone and in every other run)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _spec() -> SweepSpec:
    return SweepSpec(base=load_config(BASE), grid=GRID, replicates=REPLICATES)


def _done_cells(out: Path) -> list[str]:
    folder = out / "cells"
    if not folder.is_dir():
        return []
    return [p.name for p in folder.iterdir() if not p.name.startswith(".")]


def _n_lines(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_ctrl_c_then_resume(tmp_path: Path) -> None:
    out, log = tmp_path / "out", tmp_path / "log.txt"
    n_total = len(cells(_spec()))
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(BASE), str(out), str(log), str(SLEEP_S)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while len(_done_cells(out)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, f"sweep ended before the interrupt: {proc.communicate()}"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "re-run" in stderr
    done = _done_cells(out)
    assert 2 <= len(done) < n_total
    assert f"{len(done)} of {n_total} cells done" in stderr
    assert not [p for p in (out / "cells").iterdir() if p.name.startswith(".tmp-")]
    assert not (out / "sweep.nc").exists()

    # resume: only the missing cells are computed
    before = _n_lines(log)
    resumed = run_sweep(_spec(), out, workers=2, cell_fn=functools.partial(synthetic_cell, log=log))
    assert _n_lines(log) - before == n_total - len(done)
    uninterrupted = run_sweep(_spec(), tmp_path / "ref", workers=1, cell_fn=synthetic_cell)
    xr.testing.assert_identical(resumed, uninterrupted)


def test_killed_worker_reported_then_resumed(tmp_path: Path) -> None:
    # the first n_samples=40 cell SIGKILLs its worker process: with retries=0 the sweep reports
    # the lost cells; a re-run computes them (the marker now exists) and matches a clean run
    out, marker = tmp_path / "out", tmp_path / "killed.marker"
    fn = functools.partial(dying_cell, marker=marker, n_samples=40)
    with pytest.raises(SweepIncomplete) as info:
        run_sweep(_spec(), out, workers=2, cell_fn=fn, retries=0)
    assert marker.exists()
    assert not info.value.interrupted
    assert info.value.n_done < info.value.n_total == len(cells(_spec()))
    assert info.value.failures and all("died" in m for m in info.value.failures.values())
    assert set(info.value.missing) == {c.cell_id for c in cells(_spec())} - set(_done_cells(out))
    resumed = run_sweep(_spec(), out, workers=2, cell_fn=fn, retries=0)
    reference = run_sweep(_spec(), tmp_path / "ref", workers=2, cell_fn=synthetic_cell)
    xr.testing.assert_identical(resumed, reference)


def test_killed_worker_retried(tmp_path: Path) -> None:
    marker = tmp_path / "killed.marker"
    fn = functools.partial(dying_cell, marker=marker, n_samples=80)
    got = run_sweep(_spec(), tmp_path / "out", workers=2, cell_fn=fn, retries=1)
    assert marker.exists()
    reference = run_sweep(_spec(), tmp_path / "ref", workers=1, cell_fn=synthetic_cell)
    xr.testing.assert_identical(got, reference)


def test_interrupt_message_names_counts() -> None:
    exc = SweepIncomplete(n_done=3, n_total=8, missing=["a"] * 5, failures={}, interrupted=True)
    assert "3 of 8 cells done" in str(exc) and "re-run" in str(exc)
