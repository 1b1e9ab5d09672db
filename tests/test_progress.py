"""Progress that a person can see anywhere (issue 21): log lines when output is not a terminal.

A sweep into a file (the CLI, as under ``nohup`` or CI) writes one line per finished cell with the
elapsed time and an ETA; ``--quiet`` writes none; a heartbeat line comes while nothing finishes.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgdfluct.errors import ConfigError
from sgdfluct.progress import Progress, format_seconds, progress_mode

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(
    r"^\[sweep\] (\d+)/(\d+) cells, (\d+:\d\d) elapsed(, ETA ~?[\d:]+( \(prior\))?)?: "
)


class _FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_mode_follows_the_stream() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress_mode(True, Tty()) == "bar"
    assert progress_mode("auto", io.StringIO()) == "log"
    assert progress_mode(False) == "off"
    assert progress_mode("log", Tty()) == "log"
    with pytest.raises(ConfigError, match="progress = 'loud'"):
        progress_mode("loud")


def test_log_lines_with_elapsed_time_and_cost_model_eta() -> None:
    """ETA = remaining cost / finished cost per second; before any item, the prior."""
    out, clock = io.StringIO(), _FakeClock()
    bar = Progress(
        total=4,
        done=1,
        desc="sweep",
        mode="log",
        remaining_cost=30.0,
        seconds_per_cost=2.0,
        workers=2,
        stream=out,
        interval=3600,
        clock=clock,
    )
    clock.now += 10
    bar.advance("cell-a", 10.0)  # 10 cost units in 10 s: 20 units left -> 20 s
    clock.now += 30
    bar.advance("cell-b", 5.0)  # 15 units in 40 s: 15 left -> 40 s
    bar.close()
    lines = out.getvalue().splitlines()
    assert (
        lines[0]
        == "[sweep] 1/4 cells, 0:00 elapsed, ETA ~0:30 (prior): started, 3 of 4 cells to do"
    )
    assert lines[1] == "[sweep] 2/4 cells, 0:10 elapsed, ETA 0:20: finished cell-a"
    assert lines[2] == "[sweep] 3/4 cells, 0:40 elapsed, ETA 0:40: finished cell-b"


def test_heartbeat_while_nothing_finishes() -> None:
    out = io.StringIO()
    with Progress(total=2, desc="sweep", mode="log", stream=out, interval=0.05):
        time.sleep(0.3)
    beats = [ln for ln in out.getvalue().splitlines() if ln.endswith("working (1 at once)")]
    assert len(beats) >= 2


def test_off_writes_nothing() -> None:
    out = io.StringIO()
    with Progress(total=2, desc="sweep", mode="off", stream=out, interval=0.01) as bar:
        bar.advance("x", 1.0)
        bar.note("claim decided")
        time.sleep(0.05)
    assert out.getvalue() == ""


def test_format_seconds() -> None:
    assert format_seconds(59.6) == "1:00"
    assert format_seconds(3725) == "1:02:05"


def _sweep_file(tmp_path: Path) -> Path:
    """Two single-layer cells of a second or so each."""
    base = tmp_path / "base.toml"
    base.write_text(
        "[data]\nn_in = 5\nn_out = 1\nn_samples = 20\nseed = 0\n[model]\ndepth = 1\n"
        "[sgd]\nlearning_rate = 0.05\nbatch_size = 4\nsteps = 20000\nburn_in = 2000\n"
        "record_every = 5\nreplicas = 4\nseed = 1\n"
    )
    path = tmp_path / "sweep.toml"
    path.write_text('base = "base.toml"\n[grid]\n"data.n_samples" = [20, 30]\n')
    return path


@pytest.mark.parametrize("quiet", [False, True], ids=["log-lines", "quiet"])
def test_sweep_into_a_file_logs_each_cell(tmp_path: Path, quiet: bool) -> None:
    """``sgdfluct sweep`` with stderr in a file: a line per cell (``--quiet``: none)."""
    log = tmp_path / "log.txt"
    cmd = [sys.executable, "-m", "sgdfluct.cli", "sweep", str(_sweep_file(tmp_path))]
    cmd += ["--out", str(tmp_path / "out"), "--workers", "1"] + (["--quiet"] if quiet else [])
    with log.open("w") as stream:
        done = subprocess.run(cmd, stdout=stream, stderr=stream, cwd=REPO, timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text
    if quiet:
        assert text == ""
        return
    lines = [ln for ln in text.splitlines() if ln.startswith("[sweep]")]
    assert all(LINE.match(ln) for ln in lines), lines
    finished = [ln for ln in lines if ": finished " in ln]
    assert [ln.split("cells")[0] for ln in finished] == ["[sweep] 1/2 ", "[sweep] 2/2 "]
    assert "ETA" in finished[0] and "\r" not in text  # no bar redraws in a file


@pytest.mark.slow
def test_reproduce_into_a_file_logs_cells_and_claims(tmp_path: Path) -> None:
    """``sgdfluct reproduce`` with output in a file: cell lines, then one line per claim."""
    log = tmp_path / "log.txt"
    cmd = [sys.executable, "-m", "sgdfluct.cli", "reproduce", "--smoke", "--only", "1"]
    cmd += ["--out", str(tmp_path / "rep"), "--workers", "1"]
    with log.open("w") as stream:
        done = subprocess.run(cmd, stdout=stream, stderr=stream, cwd=REPO, timeout=600)
    text = log.read_text()
    assert done.returncode == 0, text
    cells = [ln for ln in text.splitlines() if ln.startswith("[sweep] ") and "finished" in ln]
    claims = [ln for ln in text.splitlines() if ln.startswith("[claims] ")]
    assert cells and cells[-1].startswith("[sweep] 4/4 cells")
    assert claims[-1].startswith("[claims] 1/1 claims") and "1_noise_vs_hessian" in claims[-1]


def test_failed_cells_get_a_line_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cell that fails is named in the log (log mode), with its error."""
    import functools

    from sgdfluct.config import load_config
    from sgdfluct.experiments._cells import failing_cell
    from sgdfluct.experiments.sweep import SweepIncomplete, SweepSpec, run_sweep

    spec = SweepSpec(
        base=load_config(REPO / "configs" / "single_layer.toml"),
        grid={"data.n_samples": [20, 40]},
        replicates=1,
    )
    fn = functools.partial(failing_cell, n_samples=40)
    with pytest.raises(SweepIncomplete):
        run_sweep(spec, tmp_path / "out", workers=1, cell_fn=fn, progress="log", retries=0)
    err = capsys.readouterr().err.splitlines()
    assert any(": finished data.n_samples=20" in ln for ln in err), err
    failed = [ln for ln in err if ": failed data.n_samples=40" in ln]
    assert len(failed) == 1 and "RuntimeError: failing_cell: n_samples = 40" in failed[0]


def test_run_into_a_file_says_when_it_starts_and_ends(tmp_path: Path) -> None:
    """``sgdfluct run`` (one computation, no cells) with output in a file: start and end lines
    (and a heartbeat every 60 s in between, as every log-mode Progress)."""
    base = _sweep_file(tmp_path).parent / "base.toml"
    log = tmp_path / "log.txt"
    cmd = [sys.executable, "-m", "sgdfluct.cli", "run", str(base), "--out", str(tmp_path / "r")]
    with log.open("w") as stream:
        done = subprocess.run(cmd, stdout=stream, stderr=stream, cwd=REPO, timeout=300)
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("[run] ")]
    assert done.returncode == 0, log.read_text()
    assert lines[0].endswith("started, 1 of 1 runs to do") and lines[-1].endswith("finished run")
