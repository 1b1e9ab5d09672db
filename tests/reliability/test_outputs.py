"""Output folders that cannot be mixed or lost: claims, refusals, overwrite, locks, umask."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from reliability_helpers import TINY, tree

from sgdfluct.cli import main
from sgdfluct.config import config_from_dict
from sgdfluct.errors import OutputError
from sgdfluct.io import MARKER, claim_output_dir, folder_lock, output_kind


def _config():
    return config_from_dict(tomllib.loads(TINY))


def _old_run(folder: Path) -> dict[str, bytes]:
    """A finished earlier run (as the claim leaves it), with a figure the new run would not
    write: a mix of the two runs would show it."""
    folder.mkdir(parents=True)
    (folder / MARKER).write_text(json.dumps({"kind": "run"}))
    (folder / "summary.json").write_text('{"old": true}\n')
    (folder / "figures").mkdir()
    (folder / "figures" / "old_only.png").write_bytes(b"old figure")
    return tree(folder)


def _invoke(args):
    result = CliRunner().invoke(main, args)
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    return result, crashed


def _write_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    return cfg


def test_run_into_folder_holding_another_run_is_refused_and_untouched(tmp_path, record):
    out = tmp_path / "out"
    before = _old_run(out)
    result, crashed = _invoke(["run", str(_write_config(tmp_path)), "--out", str(out), "-q"])
    record.update(exit=result.exit_code, traceback=crashed, expected=2)
    assert not crashed and result.exit_code == 2
    assert "already holds an earlier run" in result.output and "--overwrite" in result.output
    assert tree(out) == before


def test_overwrite_replaces_the_whole_folder(tmp_path, record):
    from sgdfluct.runner import run_experiment

    out = tmp_path / "out"
    _old_run(out)
    summary = run_experiment(_config(), out, figures=False, overwrite=True)
    record.update(exit=0, traceback=False, expected=0)
    assert not (out / "figures" / "old_only.png").exists()  # nothing of the old run is left
    assert json.loads((out / "summary.json").read_text())["n_params"] == summary["n_params"]
    assert {p.name for p in tmp_path.iterdir()} == {"out"}  # no temporary folder, no lock


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_foreign_files_are_never_touched(tmp_path, record, overwrite):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    before = tree(out)
    args = ["run", str(_write_config(tmp_path)), "--out", str(out), "-q"]
    result, crashed = _invoke([*args, "--overwrite"] if overwrite else args)
    record.update(exit=result.exit_code, traceback=crashed, expected=2)
    assert not crashed and result.exit_code == 2
    assert "did not write" in result.output and str(out) in result.output
    assert tree(out) == before


@pytest.mark.parametrize(
    "where",
    ["out_is_a_file", "parent_is_a_file", "under_proc"],
)
def test_unwritable_output_is_refused_before_computing(tmp_path, record, where):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = {
        "out_is_a_file": blocker,
        "parent_is_a_file": blocker / "sub" / "out",
        "under_proc": Path("/proc/sgdfluct-test/out"),
    }[where]
    cfg = _write_config(tmp_path)
    # a run that would take minutes: the refusal must come before it
    cfg.write_text(TINY.replace("steps = 2000", "steps = 50000000"))
    result, crashed = _invoke(["run", str(cfg), "--out", str(out), "-q"])
    record.update(exit=result.exit_code, traceback=crashed, expected=2)
    assert not crashed, repr(result.exception)
    assert result.exit_code == 2, result.output
    assert "error" in result.output.lower() and str(out.parent.parent) in result.output
    assert blocker.read_text() == "x"


def test_locked_folder_is_refused(tmp_path, record):
    out = tmp_path / "out"
    with folder_lock(out):
        result, crashed = _invoke(["run", str(_write_config(tmp_path)), "--out", str(out), "-q"])
    record.update(exit=result.exit_code, traceback=crashed, expected=2)
    assert not crashed and result.exit_code == 2
    assert "being written by another sgdfluct process" in result.output
    assert not out.exists()


def test_failed_claim_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), claim_output_dir(out) as tmp:
        (tmp / "summary.json").write_text("{}")
        raise RuntimeError("the computation failed")
    assert list(tmp_path.iterdir()) == []


def test_claim_removes_temporaries_of_a_killed_claim(tmp_path):
    out = tmp_path / "out"
    stale = tmp_path / ".out.tmp-abc123"
    stale.mkdir()
    (stale / "summary.json").write_text("half")
    with claim_output_dir(out) as tmp:
        (tmp / "summary.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert output_kind(out) == "run"


def test_sweep_into_a_run_folder_is_refused(tmp_path, record):
    out = tmp_path / "out"
    before = _old_run(out)
    (tmp_path / "base.toml").write_text(TINY)
    (tmp_path / "s.toml").write_text('base = "base.toml"\n')
    result, crashed = _invoke(["sweep", str(tmp_path / "s.toml"), "--out", str(out), "-q"])
    record.update(exit=result.exit_code, traceback=crashed, expected=2)
    assert not crashed and result.exit_code == 2
    assert "already holds the output of a run" in result.output
    assert tree(out) == before


@pytest.mark.parametrize("where", ["folder", "under_a_file"])
def test_bench_output_checked_before_measuring(tmp_path, record, where):
    (tmp_path / "file").write_text("x")
    out = tmp_path if where == "folder" else tmp_path / "file" / "bench.json"
    result, crashed = _invoke(["bench", "--quick", "--out", str(out)])
    record.update(exit=result.exit_code, traceback=crashed, expected=2)
    assert not crashed and result.exit_code == 2, result.output
    assert "is a directory" in result.output or "cannot write" in result.output


def test_rejected_sweep_rerun_changes_nothing(tmp_path, record):
    """A re-run whose base config changed is refused and leaves cells.json and cells alone."""
    from sgdfluct.experiments._cells import synthetic_cell
    from sgdfluct.experiments.sweep import load_sweep, run_sweep

    (tmp_path / "base.toml").write_text(TINY)
    (tmp_path / "s.toml").write_text('base = "base.toml"\n[grid]\n"data.seed" = [0, 1]\n')
    out = tmp_path / "out"
    run_sweep(load_sweep(tmp_path / "s.toml"), out, workers=1, cell_fn=synthetic_cell)
    before = tree(out)
    mtime = (out / "cells.json").stat().st_mtime_ns
    (tmp_path / "base.toml").write_text(TINY.replace("label_noise = 0.5", "label_noise = 0.7"))
    with pytest.raises(Exception, match="different config") as info:
        run_sweep(load_sweep(tmp_path / "s.toml"), out, workers=1, cell_fn=synthetic_cell)
    record.update(exit=2, traceback=False, expected=2, error=type(info.value).__name__)
    assert tree(out) == before
    assert (out / "cells.json").stat().st_mtime_ns == mtime


def test_files_get_the_users_umask(tmp_path):
    from sgdfluct.io import atomic_write_text

    old = os.umask(0o002)
    try:
        with claim_output_dir(tmp_path / "out") as tmp:
            atomic_write_text(tmp / "summary.json", "{}")
    finally:
        os.umask(old)
    out = tmp_path / "out"
    assert stat.S_IMODE((out / "summary.json").stat().st_mode) == 0o664
    assert stat.S_IMODE((out / MARKER).stat().st_mode) == 0o664
    assert stat.S_IMODE(out.stat().st_mode) == 0o775


def test_non_finite_metrics_are_an_error(record):
    from sgdfluct.errors import MeasurementError
    from sgdfluct.io import require_finite

    with pytest.raises(MeasurementError, match=r"ivfr\.layer_1\.psi"):
        require_finite({"ok": 1.0, "ivfr": {"layer_1": {"psi": float("inf")}}, "note": None})
    record.update(exit=2, traceback=False, expected=2)
    require_finite({"ok": 1.0, "missing": None, "flag": True})


def test_output_error_is_in_the_family():
    assert issubclass(OutputError, OSError)


def test_reproduce_into_a_run_folder_is_refused_before_computing(tmp_path, record):
    out = tmp_path / "out"
    before = _old_run(out)
    result, crashed = _invoke(["reproduce", "--smoke", "--only", "4", "--out", str(out), "-q"])
    record.update(exit=result.exit_code, traceback=crashed, expected=2)
    assert not crashed and result.exit_code == 2, result.output
    assert "already holds the output of a run" in result.output
    assert tree(out) == before


def test_reproduce_into_a_locked_folder_is_refused(tmp_path, record):
    out = tmp_path / "out"
    with folder_lock(out):
        result, crashed = _invoke(["reproduce", "--smoke", "--only", "4", "--out", str(out)])
    record.update(exit=result.exit_code, traceback=crashed, expected=2)
    assert not crashed and result.exit_code == 2
    assert "being written by another sgdfluct process" in result.output


def test_probe_into_foreign_folder_is_refused(tmp_path, record):
    pytest.importorskip("torch")
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("keep")
    cfg = tmp_path / "p.toml"
    cfg.write_text('[data]\ndataset = "digits"\n')
    result, crashed = _invoke(["probe", str(cfg), "--out", str(out), "-q"])
    record.update(exit=result.exit_code, traceback=crashed, expected=2)
    assert not crashed and result.exit_code == 2, result.output
    assert "did not write" in result.output
    assert tree(out) == {"todo.txt": b"keep"}


def test_sweep_overwrite_starts_afresh(tmp_path, record):
    """--overwrite on a sweep whose base changed: the stale cells go, every cell is recomputed."""
    from sgdfluct.experiments._cells import synthetic_cell
    from sgdfluct.experiments.sweep import load_sweep, run_sweep

    (tmp_path / "base.toml").write_text(TINY)
    (tmp_path / "s.toml").write_text('base = "base.toml"\n[grid]\n"data.seed" = [0, 1]\n')
    out = tmp_path / "out"
    run_sweep(load_sweep(tmp_path / "s.toml"), out, workers=1, cell_fn=synthetic_cell)
    (tmp_path / "base.toml").write_text(TINY.replace("label_noise = 0.5", "label_noise = 0.7"))
    spec = load_sweep(tmp_path / "s.toml")
    ds = run_sweep(spec, out, workers=1, cell_fn=synthetic_cell, overwrite=True)
    record.update(exit=0, traceback=False, expected=0)
    for cell in (out / "cells").iterdir():
        stored = json.loads((cell / "cell.json").read_text())["config"]
        assert stored["data"]["label_noise"] == 0.7
    assert ds.sizes["data.seed"] == 2


def test_output_folder_may_not_be_the_current_folder(tmp_path, record, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    cfg = _write_config(tmp_path)
    monkeypatch.chdir(here)
    result, crashed = _invoke(["run", str(cfg), "--out", ".", "-q"])
    record.update(exit=result.exit_code, traceback=crashed, expected=2)
    assert not crashed and result.exit_code == 2
    assert "is the current folder" in result.output
    assert here.is_dir() and list(here.iterdir()) == []


def test_disk_full_while_writing_is_an_output_error_and_leaves_nothing(
    tmp_path, record, monkeypatch
):
    import errno

    import sgdfluct.io as sio
    from sgdfluct.runner import run_experiment

    real_replace = os.replace

    def full_disk(src, dst):
        if Path(dst).name == "result.nc":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(sio.os, "replace", full_disk)
    with pytest.raises(OutputError, match="No space left on device") as info:
        run_experiment(_config(), tmp_path / "out", figures=False)
    record.update(exit=2, traceback=False, expected=2, error=type(info.value).__name__)
    assert "result.nc" in str(info.value)
    # nothing but the run's checkpoints, kept on a full disk (issue 22) for the re-run to resume
    assert [p.name for p in tmp_path.iterdir()] == [".out.resume"]
    monkeypatch.undo()
    run_experiment(_config(), tmp_path / "out", figures=False)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
