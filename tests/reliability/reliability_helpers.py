"""Helpers of the hostile-input and fault table (imported by its test modules)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: a depth-1 run that computes in about a second (records: (2000 - 200) / 5 = 360 >= 16)
TINY = """
[data]
n_in = 3
n_out = 1
n_samples = 12
label_noise = 0.5
seed = 0
[model]
depth = 1
[sgd]
learning_rate = 0.05
batch_size = 3
steps = 2000
burn_in = 200
record_every = 5
replicas = 2
seed = 1
[analysis]
bootstrap = 20
"""

#: a probe of the teacher-student linear model of `run` (N_i = 5, P = 40: λ_max(H) = 1.517);
#: fill in ``eta``, ``batch`` and ``sampling``; at η = 0.7, batch 4 it takes a few seconds
PROBE_LINEAR = """
[data]
dataset = "teacher_student"
n_in = 5
n_out = 1
n_samples = 40
label_noise = 1.0
seed = 0
n_test = 50
[model]
kind = "linear"
hidden = []
bias = false
loss = "mse"
[sgd]
learning_rate = {eta}
batch_size = {batch}
sampling = "{sampling}"
steps = 6000
record_every = 2
seed = 1
[probe]
top_k = 5
window = 2000
bootstrap = 20
"""

#: `run_experiment` (no figures) on CONFIG OUT, in a subprocess: ``python -c RUN_API CONFIG OUT``
RUN_API = """
import sys, tomllib
from sgdfluct.config import config_from_dict
from sgdfluct.runner import run_experiment
config = config_from_dict(tomllib.loads(open(sys.argv[1]).read()))
run_experiment(config, sys.argv[2], figures=False)
"""

#: generous bound for a subprocess that should end by itself (a loaded 2-core machine)
PROCESS_TIMEOUT_S = 240


def cli_command(*args: str) -> list[str]:
    """``sgdfluct ARGS`` as a subprocess command line (this interpreter)."""
    return [sys.executable, "-m", "sgdfluct.cli", *args]


def run_cli(
    args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        cli_command(*args),
        capture_output=True,
        text=True,
        check=False,
        env=full_env,
        cwd=cwd,
        timeout=PROCESS_TIMEOUT_S,
    )


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes): to show nothing changed."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def run_numbers(folder: Path) -> tuple[dict, dict]:
    """The numbers of a finished run folder: its summary (without the wall-clock timing) and
    every data variable of its ``result.nc``."""
    import json

    import xarray as xr

    summary = json.loads((folder / "summary.json").read_text())
    summary.pop("timing")  # wall-clock facts, not results
    with xr.open_dataset(folder / "result.nc", engine="h5netcdf") as ds:
        arrays = {name: ds[name].values.copy() for name in ds.data_vars}
    return summary, arrays
