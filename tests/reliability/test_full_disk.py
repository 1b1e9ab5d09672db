"""No signal death on a full disk (issue 22).

Before its final write a command checks the free space against an estimate from the array sizes
with a margin (``sgdfluct.io.dataset_bytes_estimate``) and refuses with exit 2, naming the folder,
the bytes needed and the bytes free; a run's checkpoints are kept, so the same command resumes
once space is freed. A write that still fails (the disk filled meanwhile) is an ordinary error,
never a crash inside h5py (before: SIGSEGV, exit -11).

With root the cases run on a real, small tmpfs (``mount -t tmpfs -o size=64k``); without it they
are skipped and the simulated cases below (a patched ``shutil.disk_usage``, an injected ENOSPC)
still run.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from reliability_helpers import (
    PROBE_LINEAR,
    PROCESS_TIMEOUT_S,
    TINY,
    run_cli,
    run_numbers,
)

from sgdfluct.cli import main

#: a tmpfs this small holds the checkpoints of the tiny run but not its outputs
FULL = "64k"
#: room for everything
ROOMY = "16m"

#: the CLI with the free-space check disabled (and, with --direct, h5py writing to the disk
#: itself): what a disk that fills up after the check does
_UNCHECKED = """
import sys
import sgdfluct.io as io
io.check_free_space = lambda *a, **k: None
if sys.argv[1] == "--direct":
    io.IN_MEMORY_NETCDF_BYTES = 0
sys.argv[:2] = ["sgdfluct"]
from sgdfluct.cli import main
main()
"""


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``mount(size)`` mounts (or remounts) a tmpfs of ``size`` and returns its path."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    point = tmp_path / "disk"
    point.mkdir()
    mounted = False

    def mount(size: str) -> Path:
        nonlocal mounted
        opts = f"remount,size={size}" if mounted else f"size={size}"
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
        mounted = True
        return point

    yield mount
    if mounted:
        subprocess.run(["umount", str(point)], check=False)


def _error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error")]
    return lines[0] if lines else ""


def _assert_refused(result, record, folder: Path) -> None:  # type: ignore[no-untyped-def]
    message = _error(result)
    record.update(exit=result.returncode, expected=2, traceback="Traceback" in result.stderr,
                  message=message)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"not enough free space in {str(folder)!r}" in message, message
    assert "bytes needed" in message and "bytes free" in message


@pytest.mark.slow
def test_run_on_a_full_disk_exits_2_then_resumes(tmp_path, record, tmpfs) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    assert run_cli(["run", str(cfg), "--out", str(tmp_path / "ref"), "-q"]).returncode == 0
    disk = tmpfs(FULL)
    result = run_cli(["run", str(cfg), "--out", str(disk / "out"), "-q"])
    _assert_refused(result, record, disk / "out")
    assert not (disk / "out").exists()
    assert list((disk / ".out.resume").glob("simulation-*.npz"))  # kept for the re-run
    tmpfs(ROOMY)
    rerun = run_cli(["run", str(cfg), "--out", str(disk / "out"), "-q"])
    assert rerun.returncode == 0, rerun.stderr
    (ref_summary, ref_arrays), (summary, arrays) = (
        run_numbers(tmp_path / "ref"),
        run_numbers(disk / "out"),
    )
    assert summary == ref_summary
    for name, array in arrays.items():
        np.testing.assert_array_equal(array, ref_arrays[name], err_msg=name)


def test_sweep_on_a_full_disk_exits_2(tmp_path, record, tmpfs) -> None:
    disk = tmpfs(FULL)
    (disk / "base.toml").write_text(TINY)
    (disk / "sweep.toml").write_text('base = "base.toml"\n[grid]\n"data.seed" = [0]\n')
    result = run_cli(["sweep", str(disk / "sweep.toml"), "--out", str(disk / "s"), "-q",
                      "--workers", "1"])  # fmt: skip
    message = _error(result)
    record.update(exit=result.returncode, expected=2, traceback="Traceback" in result.stderr,
                  message=message)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    # the cell fails at the free-space check or, earlier, at a checkpoint's write (ENOSPC)
    assert "free some space" in message, message


@pytest.mark.slow
def test_probe_on_a_full_disk_exits_2(tmp_path, record, tmpfs) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    cfg = tmp_path / "p.toml"
    cfg.write_text(PROBE_LINEAR.format(eta=0.7, batch=4, sampling="with_replacement"))
    disk = tmpfs(FULL)
    result = run_cli(["probe", str(cfg), "--out", str(disk / "out"), "-q"])
    _assert_refused(result, record, disk / "out")


@pytest.mark.parametrize("path", ["in_memory", "direct"])
def test_write_failing_after_the_check_is_an_error_not_a_crash(tmp_path, record, tmpfs, path):
    """The disk fills after the check: h5py's failure (or the plain write's ENOSPC) is an
    OutputError (exit 2), not SIGSEGV at exit (before: -11)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    disk = tmpfs(FULL)
    mode = "--direct" if path == "direct" else "--in-memory"
    result = subprocess.run(
        [sys.executable, "-c", _UNCHECKED, mode, "run", str(cfg), "--out", str(disk / "out"),
         "-q"], capture_output=True, text=True, check=False, timeout=PROCESS_TIMEOUT_S,
    )  # fmt: skip
    message = _error(result)
    record.update(exit=result.returncode, expected=2, traceback="Traceback" in result.stderr,
                  message=message[:200])  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot write" in message and "result.nc" in message


# ------------------------------------------------------------------ simulated (no root needed)


def test_simulated_full_disk_is_refused_before_the_write(tmp_path, record, monkeypatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    real = shutil.disk_usage

    def tiny(path):  # type: ignore[no-untyped-def]
        usage = real(path)
        return usage._replace(free=12_345)

    monkeypatch.setattr(shutil, "disk_usage", tiny)
    result = CliRunner().invoke(main, ["run", str(cfg), "--out", str(tmp_path / "out"), "-q"])
    record.update(exit=result.exit_code, expected=2, traceback=False, message=result.output[:200])
    assert result.exit_code == 2, result.output
    assert f"not enough free space in {str(tmp_path / 'out')!r}" in result.output
    assert "12345 bytes free" in result.output
    assert list(tmp_path.glob(".out.resume/simulation-*.npz"))  # checkpoints kept


def test_simulated_enospc_on_write_is_an_output_error(tmp_path, record, monkeypatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    import sgdfluct.io as io

    real = io.atomic_write_dataset

    def failing(path, dataset):  # type: ignore[no-untyped-def]
        def no_space(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(io.os, "fsync", no_space)
        real(path, dataset)

    monkeypatch.setattr(io, "atomic_write_dataset", failing)
    import sgdfluct.runner as runner

    monkeypatch.setattr(runner, "atomic_write_dataset", failing)
    result = CliRunner().invoke(main, ["run", str(cfg), "--out", str(tmp_path / "out"), "-q"])
    record.update(exit=result.exit_code, expected=2, traceback=False, message=result.output[:200])
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.output and "result.nc" in result.output
    assert not (tmp_path / "out").exists()


def test_estimate_covers_the_written_file(tmp_path) -> None:
    """The estimate is at least the size of the file written (tiny run's result.nc)."""
    import xarray as xr

    from sgdfluct.io import DISK_MARGIN_BYTES, atomic_write_dataset, dataset_bytes_estimate

    ds = xr.Dataset(
        {f"v{i}": (("a", "b"), np.ones((40, 40))) for i in range(30)}, attrs={"config": "x" * 999}
    )
    atomic_write_dataset(tmp_path / "r.nc", ds)
    size = (tmp_path / "r.nc").stat().st_size
    estimate = dataset_bytes_estimate(ds)
    assert size <= estimate - DISK_MARGIN_BYTES  # the margin is on top, for what follows
