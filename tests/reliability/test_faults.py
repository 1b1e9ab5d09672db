"""Faults in real processes: Ctrl-C, SIGTERM, kill -9 while writing, two concurrent sweeps, a
killed sweep parent. Each asserts the exit code, the message, and that nothing half-written or
mixed is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from reliability_helpers import PROCESS_TIMEOUT_S, TINY, cli_command, run_cli, tree

from sgdfluct.io import MARKER, PAUSE_ENV, PAUSE_MARKER_ENV, claim_output_dir

#: the run's write steps: resume key, marker, simulation checkpoint, config.toml, result.nc,
#: summary.json, commit of the folder
WRITE_STEPS = 7
#: the kill step after which the killed run is re-run for real (the others re-claim only)
RERUN_STEP = 3
#: seconds each write step pauses under the test hook (room to deliver a signal)
PAUSE_S = 0.25

_RUN_API = """
import sys, tomllib
from sgdfluct.config import config_from_dict
from sgdfluct.runner import run_experiment
config = config_from_dict(tomllib.loads(open(sys.argv[1]).read()))
run_experiment(config, sys.argv[2], figures=False, overwrite=True)
"""


def _wait_for(predicate, what: str, timeout: float = PROCESS_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _leftovers(parent: Path, name: str) -> list[str]:
    """Temporary folders or locks of ``name`` left in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


#: kill points: before computing, as the finished simulation is stored (then re-run for real), while
#: writing summary.json, and at the commit rename (test_resume.py draws further points)
KILL_STEPS = (1, 3, 6, WRITE_STEPS)


@pytest.mark.parametrize("step", KILL_STEPS, ids=lambda s: f"kill9_at_write_{s}")
def test_kill9_while_writing_leaves_old_run_or_new_run_never_a_mix(tmp_path, record, step):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"kind": "run"}))
    (out / "summary.json").write_text('{"old": true}\n')
    (out / "old_only.png").write_bytes(b"old")
    old = tree(out)
    marker = tmp_path / "steps.log"
    env = {**os.environ, PAUSE_ENV: str(PAUSE_S), PAUSE_MARKER_ENV: str(marker)}
    proc = subprocess.Popen([sys.executable, "-c", _RUN_API, str(cfg), str(out)], env=env)
    _wait_for(lambda: len(_lines(marker)) >= step or proc.poll() is not None, f"write {step}")
    proc.kill()  # SIGKILL: no clean-up code runs
    proc.wait(timeout=PROCESS_TIMEOUT_S)
    now = tree(out)
    record.update(exit=proc.returncode, traceback=False, expected=-9, step=step)
    # either the old run, untouched, or (killed after the commit) the complete new one
    assert now == old or (
        "old_only.png" not in now and {"summary.json", "result.nc", "config.toml"} <= set(now)
    ), sorted(now)
    # the next claim removes the killed run's temporary folder; one step also re-runs for real
    if step == RERUN_STEP:
        proc = subprocess.run([sys.executable, "-c", _RUN_API, str(cfg), str(out)], check=False)
        assert proc.returncode == 0
        assert json.loads((out / "summary.json").read_text())["depth"] == 1
        assert _leftovers(tmp_path, "out") == []  # the checkpoints went with the completion
    else:
        with claim_output_dir(out, overwrite=True) as tmp:
            (tmp / "summary.json").write_text("{}")
        # only the checkpoints of the killed run stay, for its re-run
        assert set(_leftovers(tmp_path, "out")) <= {".out.resume"}
    assert "old_only.png" not in tree(out)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_interrupted_run_exits_130_and_writes_nothing(tmp_path, record, sig):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY.replace("steps = 2000", "steps = 200000000"))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        cli_command("run", str(cfg), "--out", str(out), "-q"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as in a user's shell: an ignored SIGINT would be inherited across exec (it was,
        # once, in a whole-suite run on a fresh clone: the run then never stopped)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # the claim (its temporary folder) exists before the simulation starts
    _wait_for(lambda: any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir()), "claim")
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=PROCESS_TIMEOUT_S)
    record.update(exit=proc.returncode, traceback="Traceback" in err, expected=130)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert not out.exists()
    # only the checkpoint folder stays, so that the same command resumes
    assert set(_leftovers(tmp_path, "out")) <= {".out.resume"}


def _sweep_files(tmp_path: Path, seeds: int, steps: int) -> Path:
    (tmp_path / "base.toml").write_text(TINY.replace("steps = 2000", f"steps = {steps}"))
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'base = "base.toml"\n[grid]\n"data.seed" = {list(range(seeds))}\n')
    return sweep


def _complete_cells(out: Path) -> list[str]:
    cells = out / "cells"
    return (
        sorted(
            p.name
            for p in cells.iterdir()
            if not p.name.startswith(".") and (p / "summary.json").is_file()
        )
        if cells.is_dir()
        else []
    )


def test_two_concurrent_sweeps_into_one_folder(tmp_path, record):
    sweep = _sweep_files(tmp_path, seeds=1, steps=2000)
    out = tmp_path / "out"
    marker = tmp_path / "steps.log"
    first = subprocess.Popen(
        cli_command("sweep", str(sweep), "--out", str(out), "--workers", "1", "-q"),
        env={**os.environ, PAUSE_ENV: "0.2", PAUSE_MARKER_ENV: str(marker)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(lambda: len(_lines(marker)) >= 1, "the first sweep to start writing")
    second = run_cli(["sweep", str(sweep), "--out", str(out), "--workers", "1", "-q"])
    _, err = first.communicate(timeout=PROCESS_TIMEOUT_S)
    record.update(exit=second.returncode, traceback="Traceback" in second.stderr, expected=2)
    assert first.returncode == 0, err
    assert second.returncode == 2, second.stderr
    assert "being written by another sgdfluct process" in second.stderr
    assert "Traceback" not in second.stderr
    # every cell complete, each computed once (no mix of two writers)
    assert _complete_cells(out) == ["data.seed=0__rep=0"]
    for cell in _complete_cells(out):
        assert (out / "cells" / cell / "result.nc").is_file()
    assert (out / "sweep.nc").is_file()


def test_killed_sweep_parent_takes_its_workers_along(tmp_path, record):
    sweep = _sweep_files(tmp_path, seeds=4, steps=3_000_000)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        cli_command("sweep", str(sweep), "--out", str(out), "--workers", "2", "-q"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    parent = psutil.Process(proc.pid)

    def computing() -> bool:
        cells = out / "cells"
        return cells.is_dir() and any(p.name.startswith(".tmp-") for p in cells.iterdir())

    _wait_for(computing, "a cell to start")
    children = parent.children(recursive=True)
    assert children
    proc.kill()
    proc.wait(timeout=PROCESS_TIMEOUT_S)
    _, alive = psutil.wait_procs(children, timeout=30)
    record.update(exit=proc.returncode, traceback=False, expected=-9, orphans=len(alive))
    assert not alive, [p.pid for p in alive]
    # nothing half-written counts as done: only complete cells or temporaries
    for entry in (out / "cells").iterdir():
        assert entry.name.startswith((".tmp-", ".resume-")) or (entry / "summary.json").is_file()
    assert not (out / "sweep.nc").exists()
