"""SIGTERM to `sgdfluct sweep` acts like Ctrl-C.

Workers stop, finished cells stay, and a re-run resumes and completes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

BASE = """
[data]
n_in = 4
n_samples = 16
[model]
depth = 1
[sgd]
learning_rate = 0.05
batch_size = 4
steps = 400000
burn_in = 1000
record_every = 5
replicas = 4
[analysis]
bootstrap = 20
"""

SWEEP = """
base = "base.toml"
[grid]
"data.seed" = [0, 1, 2, 3, 4, 5]
"""

# generous bound for the first cell (about 5 s on a loaded 2-core machine)
FIRST_CELL_TIMEOUT_S = 180


def test_sigterm_stops_workers_and_resume_completes(tmp_path: Path) -> None:
    (tmp_path / "base.toml").write_text(BASE)
    (tmp_path / "sweep.toml").write_text(SWEEP)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "sgdfluct.cli",
        "sweep",
        str(tmp_path / "sweep.toml"),
        "--out",
        str(out),
        "--workers",
        "2",
        "-q",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + FIRST_CELL_TIMEOUT_S
    while time.monotonic() < deadline and not list(out.glob("cells/*/summary.json")):
        time.sleep(0.2)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    done = len(list(out.glob("cells/*/summary.json")))
    # six cells of ~1 s of simulation each on two workers cannot all finish right after the first
    assert 1 <= done < 6
    assert proc.returncode == 130, err
    assert "re-run" in err
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.cmdline()[:3] for p in alive]  # no orphaned worker keeps computing
    rerun = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert len(list(out.glob("cells/*/summary.json"))) == 6
    assert (out / "sweep.nc").is_file()
    for path in out.glob("cells/*/summary.json"):
        json.loads(path.read_text())
    assert os.path.isdir(out / "cells")
