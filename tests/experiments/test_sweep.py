"""Sweep files, cells, seeds, local execution and resumption (sgdfluct.experiments.sweep)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from sgdfluct.config import ConfigError, load_config, with_overrides
from sgdfluct.experiments import sweep as sweep_module
from sgdfluct.experiments._cells import failing_cell, synthetic_cell, synthetic_metrics
from sgdfluct.experiments.sweep import (
    SweepIncomplete,
    SweepSpec,
    cell_cost,
    cells,
    collect_sweep,
    load_sweep,
    run_sweep,
    run_sweeps,
    schedule,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "configs" / "sweep_example.toml"
BASE = REPO / "configs" / "single_layer.toml"


def _write_sweep(tmp_path: Path, body: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(f'base = "{BASE.as_posix()}"\n{body}')
    return path


def _log_lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


# --- sweep files ------------------------------------------------------------------------------


def test_example_sweep_file_loads() -> None:
    spec = load_sweep(EXAMPLE)
    assert dict(spec.grid) == {"data.n_samples": (20, 40, 80), "sgd.learning_rate": (0.02, 0.05)}
    assert spec.replicates == 1
    assert spec.base == load_config(BASE)
    ids = [c.cell_id for c in cells(spec)]
    assert ids[0] == "data.n_samples=20__sgd.learning_rate=0.02__rep=0"
    assert len(ids) == len(set(ids)) == 6


def test_replicates_top_level_or_in_grid(tmp_path: Path) -> None:
    top = load_sweep(_write_sweep(tmp_path, 'replicates = 3\n[grid]\n"data.n_samples" = [20]\n'))
    inside = load_sweep(_write_sweep(tmp_path, '[grid]\n"data.n_samples" = [20]\nreplicates = 3\n'))
    assert top.replicates == inside.replicates == 3
    assert top.shape == (1, 3)
    with pytest.raises(ConfigError, match="replicates"):
        load_sweep(
            _write_sweep(
                tmp_path, 'replicates = 2\n[grid]\n"data.n_samples" = [20]\nreplicates = 3\n'
            )
        )
    with pytest.raises(ConfigError, match="replicates"):
        load_sweep(_write_sweep(tmp_path, '[grid]\n"data.n_samples" = [20]\nreplicates = 0\n'))


@pytest.mark.parametrize(
    ("grid", "named"),
    [
        ('"sgd.learning_rate" = [0.05, -1.0]', "sgd.learning_rate"),
        ('"data.n_samples" = [20, "many"]', "data.n_samples"),
        ('"sgd.batch_size" = [4, 1000]', "sgd.batch_size"),  # > n_samples: cross-field check
        ('"data.nonsense" = [1]', "data.nonsense"),
        ('"learning_rate" = [0.1]', "learning_rate"),
        ('"data.n_samples" = []', "data.n_samples"),
        ('"data.n_samples" = [20, 20]', "data.n_samples"),
    ],
)
def test_bad_grid_fails_up_front_naming_the_key(tmp_path: Path, grid: str, named: str) -> None:
    path = _write_sweep(tmp_path, f"[grid]\n{grid}\n")
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_sweep(path)


def test_missing_base_and_unknown_keys(tmp_path: Path) -> None:
    missing = tmp_path / "a.toml"
    missing.write_text('base = "nope.toml"\n[grid]\n"data.n_samples" = [20]\n')
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep(missing)
    with pytest.raises(ConfigError, match="bogus"):
        load_sweep(_write_sweep(tmp_path, 'bogus = 1\n[grid]\n"data.n_samples" = [20]\n'))
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep(tmp_path / "absent.toml")


def test_base_path_is_relative_to_the_sweep_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "base.toml").write_text(BASE.read_text())
    path = tmp_path / "sub" / "s.toml"
    path.write_text('base = "base.toml"\n[grid]\n"data.n_samples" = [20]\n')
    assert load_sweep(path).base == load_config(BASE)


# --- cells and seeds --------------------------------------------------------------------------


def test_seeds_per_replicate_are_stable_and_distinct() -> None:
    base = load_config(BASE)
    spec2 = SweepSpec(base=base, grid={"data.n_samples": [20, 40]}, replicates=2)
    spec3 = SweepSpec(base=base, grid={"data.n_samples": [20, 40, 80]}, replicates=3)
    by_id2 = {c.cell_id: c for c in cells(spec2)}
    by_id3 = {c.cell_id: c for c in cells(spec3)}
    # adding a grid point or a replicate changes no existing cell
    for cell_id, cell in by_id2.items():
        assert by_id3[cell_id].config == cell.config
    # replicate 0 keeps the base seeds; other replicates get distinct data and SGD seeds
    rep0 = by_id3["data.n_samples=20__rep=0"].config
    assert (rep0.data.seed, rep0.sgd.seed) == (base.data.seed, base.sgd.seed)
    seeds = {(c.config.data.seed, c.config.sgd.seed) for c in by_id3.values() if c.index[0] == 0}
    assert len(seeds) == 3
    # the seeds of a replicate follow from the cell's own config (SeedSequence spawn_key=(r,))
    child = np.random.SeedSequence([base.data.seed, base.sgd.seed]).spawn(3)[2]
    expected = tuple(int(s) for s in child.generate_state(2, dtype=np.uint32))
    rep2 = by_id3["data.n_samples=40__rep=2"].config
    assert (rep2.data.seed, rep2.sgd.seed) == expected


def test_cell_ids_are_sanitized_and_unique() -> None:
    spec = SweepSpec(
        base=load_config(BASE),
        grid={"data.inputs": ["gaussian", "student_t"], "sgd.learning_rate": [1, 0.5]},
    )
    ids = [c.cell_id for c in cells(spec)]
    assert ids[0] == "data.inputs=gaussian__sgd.learning_rate=1.0__rep=0"  # int 1 validated to 1.0
    assert all("/" not in i and " " not in i for i in ids)
    assert spec.grid["sgd.learning_rate"] == (1.0, 0.5)


# --- running ----------------------------------------------------------------------------------


def test_run_sweep_gathers_metrics_and_resumes(tmp_path: Path) -> None:
    spec = SweepSpec(
        base=load_config(BASE),
        grid={"data.n_samples": [20, 40], "sgd.learning_rate": [0.02, 0.05]},
        replicates=2,
    )
    log = tmp_path / "log.txt"
    fn = functools.partial(synthetic_cell, log=log)
    out = tmp_path / "out"
    ds = run_sweep(spec, out, workers=2, cell_fn=fn)
    assert len(_log_lines(log)) == 8
    assert ds.sizes == {"data.n_samples": 2, "sgd.learning_rate": 2, "replicate": 2}
    assert list(ds["data.n_samples"].values) == [20, 40]
    # flattened nested metrics; booleans as 0/1; strings and lists dropped
    assert set(ds.data_vars) == {
        "train_loss",
        "n_params",
        "sgd.noise_scale",
        "sgd.mc_mean",
        "underparameterized",
    }
    assert ds["n_params"].dtype == np.int64
    cell = cells(spec)[5]
    expected = synthetic_metrics(cell.config)
    got = ds.isel(dict(zip(ds["train_loss"].dims, cell.index, strict=True)))
    assert float(got["train_loss"]) == expected["train_loss"]
    assert float(got["sgd.mc_mean"]) == expected["sgd"]["mc_mean"]
    assert str(got["cell_id"].values) == cell.cell_id
    assert json.loads((out / "cells" / cell.cell_id / "cell.json").read_text())["replicate"] == 1
    # the file on disk is the returned dataset
    with xr.open_dataset(out / "sweep.nc", engine="h5netcdf") as on_disk:
        xr.testing.assert_identical(on_disk.load(), ds)
    # re-running computes nothing and gives the same dataset
    again = run_sweep(spec, out, workers=1, cell_fn=fn)
    assert len(_log_lines(log)) == 8
    xr.testing.assert_identical(again, ds)
    # a deleted cell is recomputed alone
    import shutil

    shutil.rmtree(out / "cells" / cell.cell_id)
    xr.testing.assert_identical(run_sweep(spec, out, workers=2, cell_fn=fn), ds)
    assert len(_log_lines(log)) == 9


def test_growing_the_grid_computes_only_new_cells(tmp_path: Path) -> None:
    base = load_config(BASE)
    log = tmp_path / "log.txt"
    fn = functools.partial(synthetic_cell, log=log)
    small = SweepSpec(base=base, grid={"data.n_samples": [20, 40]})
    big = SweepSpec(base=base, grid={"data.n_samples": [20, 40, 80]})
    run_sweep(small, tmp_path / "out", workers=1, cell_fn=fn)
    ds_big = run_sweep(big, tmp_path / "out", workers=1, cell_fn=fn)
    assert [line.split()[0] for line in _log_lines(log)][-1] == "80"
    assert len(_log_lines(log)) == 3
    fresh = run_sweep(big, tmp_path / "fresh", workers=2, cell_fn=synthetic_cell)
    xr.testing.assert_identical(ds_big, fresh)


def test_stale_cells_from_another_config_are_refused(tmp_path: Path) -> None:
    base = load_config(BASE)
    spec = SweepSpec(base=base, grid={"data.n_samples": [20]})
    run_sweep(spec, tmp_path, workers=1, cell_fn=synthetic_cell)
    from sgdfluct.config import with_overrides

    changed = SweepSpec(
        base=with_overrides(base, {"data.label_noise": 2.0}), grid={"data.n_samples": [20]}
    )
    with pytest.raises(ConfigError, match="different config"):
        run_sweep(changed, tmp_path, workers=1, cell_fn=synthetic_cell)


def test_failing_cell_raises_sweep_incomplete(tmp_path: Path) -> None:
    spec = SweepSpec(base=load_config(BASE), grid={"data.n_samples": [20, 40]})
    fn = functools.partial(synthetic_cell, log=tmp_path / "no_such_dir" / "log.txt")
    with pytest.raises(SweepIncomplete) as info:
        run_sweep(spec, tmp_path / "out", workers=1, cell_fn=fn)
    assert info.value.n_done == 0 and info.value.n_total == 2 and not info.value.interrupted
    assert "FileNotFoundError" in next(iter(info.value.failures.values()))
    assert "re-run" in str(info.value)
    assert not (tmp_path / "out" / "sweep.nc").exists()
    assert [p.name for p in (tmp_path / "out" / "cells").iterdir()] == []  # no temporary litter


def test_collect_with_missing_cells(tmp_path: Path) -> None:
    spec = SweepSpec(base=load_config(BASE), grid={"data.n_samples": [20, 40]})
    run_sweep(
        SweepSpec(base=spec.base, grid={"data.n_samples": [20]}),
        tmp_path,
        workers=1,
        cell_fn=synthetic_cell,
    )
    with pytest.raises(SweepIncomplete):
        collect_sweep(spec, tmp_path)
    ds = collect_sweep(spec, tmp_path, allow_missing=True)
    assert np.isnan(ds["train_loss"].sel({"data.n_samples": 40})).all()
    assert np.isfinite(ds["train_loss"].sel({"data.n_samples": 20})).all()
    assert ds["n_params"].dtype == np.float64  # integers cannot hold the gap
    assert json.loads(ds.attrs["missing_cells"]) == ["data.n_samples=40__rep=0"]


def test_bad_arguments(tmp_path: Path) -> None:
    spec = SweepSpec(base=load_config(BASE))
    with pytest.raises(ConfigError, match="workers"):
        run_sweep(spec, tmp_path, workers=0, cell_fn=synthetic_cell)
    with pytest.raises(ConfigError, match="retries"):
        run_sweep(spec, tmp_path, retries=-1, cell_fn=synthetic_cell)
    assert [c.cell_id for c in cells(spec)] == ["rep=0"]


def _runner_available() -> bool:
    try:
        import sgdfluct.runner  # noqa: F401
    except ImportError:
        return False
    return True


# wall-clock timings (the summary's "timing" block) must stay out of sweep.nc
TIMING_SUFFIX = "_seconds"


@pytest.mark.slow
@pytest.mark.skipif(not _runner_available(), reason="sgdfluct.runner not available yet")
def test_real_runner_cells(tmp_path: Path) -> None:
    import shutil

    from sgdfluct.config import with_overrides

    base = with_overrides(
        load_config(BASE),
        {"data.n_in": 4, "sgd.steps": 2000, "sgd.burn_in": 200, "sgd.replicas": 2},
    )
    spec = SweepSpec(base=base, grid={"data.n_samples": [12, 24]})
    ds = run_sweep(spec, tmp_path, workers=2)
    for cell in cells(spec):
        folder = tmp_path / "cells" / cell.cell_id
        for name in ("config.toml", "summary.json", "result.nc", "cell.json"):
            assert (folder / name).is_file(), name
    assert len(ds.data_vars) > 0
    assert all(np.isfinite(ds[v]).any() for v in ds.data_vars)
    # recompute one cell in a single worker: every non-timing metric is bit-identical
    shutil.rmtree(tmp_path / "cells" / cells(spec)[1].cell_id)
    again = run_sweep(spec, tmp_path, workers=1)
    assert not [v for v in ds.data_vars if str(v).endswith(TIMING_SUFFIX)]
    xr.testing.assert_identical(again, ds)


@pytest.mark.skipif(not _runner_available(), reason="sgdfluct.runner not available yet")
def test_cli_sweep_small(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sgdfluct.cli import main

    small = tmp_path / "small.toml"
    small.write_text(
        "[data]\nn_in = 4\nn_samples = 12\n[model]\ndepth = 1\n"
        "[sgd]\nsteps = 2000\nburn_in = 200\nreplicas = 2\nbatch_size = 4\n"
    )
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('base = "small.toml"\n[grid]\n"sgd.learning_rate" = [0.02, 0.05]\n')
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["sweep", str(sweep), "--out", str(out), "--workers", "2"])
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out / "sweep.nc", engine="h5netcdf") as ds:
        assert ds.sizes["sgd.learning_rate"] == 2
    bad = tmp_path / "bad.toml"
    bad.write_text('base = "small.toml"\n[grid]\n"sgd.learning_rate" = [-0.1]\n')
    result = CliRunner().invoke(main, ["sweep", str(bad), "--out", str(out)])
    assert result.exit_code != 0 and "sgd.learning_rate" in result.output


@pytest.mark.skipif(not _runner_available(), reason="sgdfluct.runner not available yet")
def test_two_layer_cells_in_worker_processes(tmp_path: Path) -> None:
    """Depth-2 cells through the real runner in worker processes (numba thread caps, alignment)."""
    base = load_config(Path(__file__).parents[2] / "configs" / "two_layer.toml")
    base = with_overrides(base, {"sgd.steps": 120_000, "sgd.burn_in": 2_000, "sgd.replicas": 2})
    spec = SweepSpec(base=base, grid={"sgd.learning_rate": [0.05, 0.1]})
    ds = run_sweep(spec, tmp_path, workers=2)
    assert np.isfinite(ds["layers.layer_1.rel_error_renormalized"].values).all()


# --- scheduling: longest cells first, several sweeps on one pool ---------------------------------


def test_schedule_puts_the_costliest_cells_first() -> None:
    base = load_config(BASE)
    spec = SweepSpec(
        base=base, grid={"sgd.steps": [10_000, 40_000, 20_000], "sgd.replicas": [1, 2]}
    )
    tasks = [(cell, Path("out")) for cell in cells(spec)]
    ordered = schedule(tasks)
    costs = [cell_cost(cell.config) for cell, _ in ordered]
    assert costs == sorted(costs, reverse=True)
    # 40 000 x 1 and 20 000 x 2 cost the same: ties keep the grid order
    assert [(c.config.sgd.steps, c.config.sgd.replicas) for c, _ in ordered[:3]] == [
        (40_000, 2),
        (40_000, 1),
        (20_000, 2),
    ]
    # cost grows with the number of weights and, beyond it, with depth (the aligned analysis)
    wide = with_overrides(base, {"data.n_in": 2 * base.data.n_in})
    assert cell_cost(wide) == 2 * cell_cost(base)
    deep = with_overrides(base, {"model.depth": 2, "model.hidden": base.data.n_in})
    assert cell_cost(deep) > 2 * cell_cost(base)


def test_local_workers_start_the_costliest_cells_first(tmp_path: Path) -> None:
    spec = SweepSpec(base=load_config(BASE), grid={"sgd.steps": [10_000, 40_000, 20_000]})
    log = tmp_path / "log.txt"
    run_sweep(spec, tmp_path / "out", workers=1, cell_fn=functools.partial(synthetic_cell, log=log))
    assert [line.split()[-1] for line in _log_lines(log)] == ["40000", "20000", "10000"]


def test_cell_order_does_not_change_the_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = SweepSpec(
        base=load_config(BASE),
        grid={"data.n_samples": [20, 40], "sgd.learning_rate": [0.02, 0.05]},
        replicates=2,
    )
    log = tmp_path / "log.txt"
    forward = run_sweep(spec, tmp_path / "forward", workers=1, cell_fn=synthetic_cell)
    monkeypatch.setattr(sweep_module, "schedule", lambda tasks: list(reversed(tasks)))
    fn = functools.partial(synthetic_cell, log=log)
    backward = run_sweep(spec, tmp_path / "backward", workers=1, cell_fn=fn)
    first = cells(spec)[-1].config
    assert _log_lines(log)[0].split()[:2] == [str(first.data.n_samples), repr(0.05)]
    xr.testing.assert_identical(forward, backward)


@pytest.mark.slow
@pytest.mark.skipif(not _runner_available(), reason="sgdfluct.runner not available yet")
def test_real_cells_sharing_a_data_set_give_the_same_numbers_in_any_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a learning-rate grid shares one data set: in one worker the later cells reuse its
    # random-matrix metrics (runner/_single.py); two workers each compute them afresh
    base = with_overrides(
        load_config(BASE),
        {"data.n_in": 4, "sgd.steps": 2000, "sgd.burn_in": 200, "sgd.replicas": 2},
    )
    spec = SweepSpec(base=base, grid={"sgd.learning_rate": [0.02, 0.05]})
    apart = run_sweep(spec, tmp_path / "apart", workers=2)
    monkeypatch.setattr(sweep_module, "schedule", lambda tasks: list(reversed(tasks)))
    shared = run_sweep(spec, tmp_path / "shared", workers=1)
    assert "ks_noise_generalized_mp" in shared
    xr.testing.assert_identical(apart, shared)


def _two_specs() -> tuple[SweepSpec, SweepSpec]:
    base = load_config(BASE)
    return (
        SweepSpec(base=base, grid={"data.n_samples": [20, 40]}, replicates=2),
        SweepSpec(base=base, grid={"sgd.learning_rate": [0.02, 0.05, 0.1]}),
    )


def test_run_sweeps_share_one_pool_and_match_separate_sweeps(tmp_path: Path) -> None:
    first, second = _two_specs()
    together = run_sweeps(
        [(first, tmp_path / "a"), (second, tmp_path / "b")], workers=2, cell_fn=synthetic_cell
    )
    alone = [
        run_sweep(first, tmp_path / "a_alone", workers=2, cell_fn=synthetic_cell),
        run_sweep(second, tmp_path / "b_alone", workers=2, cell_fn=synthetic_cell),
    ]
    for got, expected, name in zip(together, alone, ("a", "b"), strict=True):
        assert isinstance(got, xr.Dataset)
        xr.testing.assert_identical(got, expected)
        with xr.open_dataset(tmp_path / name / "sweep.nc", engine="h5netcdf") as on_disk:
            xr.testing.assert_identical(on_disk.load(), expected)
        assert json.loads((tmp_path / name / "cells.json").read_text())
    # resumed: nothing to compute
    log = tmp_path / "log.txt"
    fn = functools.partial(synthetic_cell, log=log)
    run_sweeps([(first, tmp_path / "a"), (second, tmp_path / "b")], workers=1, cell_fn=fn)
    assert _log_lines(log) == []


def test_run_sweeps_reports_failures_per_sweep(tmp_path: Path) -> None:
    first, second = _two_specs()
    # fails only the n_samples = 40 cells of the first sweep
    fn = functools.partial(failing_cell, n_samples=40)
    outcomes = run_sweeps(
        [(first, tmp_path / "a"), (second, tmp_path / "b")], workers=2, cell_fn=fn
    )
    assert isinstance(outcomes[0], SweepIncomplete)
    assert outcomes[0].n_done == 2 and outcomes[0].n_total == 4
    assert sorted(outcomes[0].failures) == sorted(outcomes[0].missing)
    assert all(i.startswith("data.n_samples=40") for i in outcomes[0].missing)
    assert isinstance(outcomes[1], xr.Dataset)
    assert (tmp_path / "b" / "sweep.nc").is_file() and not (tmp_path / "a" / "sweep.nc").exists()
    with pytest.raises(ConfigError, match="same folder"):
        run_sweeps([(first, tmp_path / "a"), (second, tmp_path / "a")], cell_fn=synthetic_cell)


def test_interrupted_sweeps_are_counted_together() -> None:
    first = SweepIncomplete(n_done=1, n_total=3, missing=["x", "y"], failures={}, interrupted=True)
    second = SweepIncomplete(n_done=2, n_total=2, missing=[], failures={}, interrupted=True)
    merged = sweep_module._merged([first, second], ["a", "b"])
    assert (merged.n_done, merged.n_total, merged.interrupted) == (3, 5, True)
    assert merged.missing == ("a/x", "a/y")
    assert sweep_module._merged([first], ["a"]) is first
