"""Sweeps on a Dask cluster give the same sweep.nc as local processes (any number of workers)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import xarray as xr

from sgdfluct.config import ConfigError, load_config
from sgdfluct.experiments._cells import dying_cell, synthetic_cell
from sgdfluct.experiments.sweep import SweepSpec, cells, run_sweep

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.dask

BASE = Path(__file__).resolve().parents[2] / "configs" / "single_layer.toml"


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    with distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
    ) as local_cluster:
        yield local_cluster


def _spec() -> SweepSpec:
    return SweepSpec(
        base=load_config(BASE),
        grid={"data.n_samples": [20, 40, 80], "sgd.learning_rate": [0.02, 0.05]},
        replicates=2,
    )


def test_dask_matches_local_workers(tmp_path: Path, cluster) -> None:  # type: ignore[no-untyped-def]
    spec = _spec()
    on_dask = run_sweep(
        spec, tmp_path / "dask", scheduler=cluster.scheduler_address, cell_fn=synthetic_cell
    )
    two = run_sweep(spec, tmp_path / "two", workers=2, cell_fn=synthetic_cell)
    one = run_sweep(spec, tmp_path / "one", workers=1, cell_fn=synthetic_cell)
    xr.testing.assert_identical(on_dask, two)
    xr.testing.assert_identical(on_dask, one)
    with xr.open_dataset(tmp_path / "dask" / "sweep.nc", engine="h5netcdf") as on_disk:
        xr.testing.assert_identical(on_disk.load(), one)
    assert len(list((tmp_path / "dask" / "cells").iterdir())) == len(cells(spec))


def test_dask_killed_worker_is_rescheduled(tmp_path: Path, cluster) -> None:  # type: ignore[no-untyped-def]
    # the first attempt of the n_samples=40 cells SIGKILLs its Dask worker; the nanny restarts it
    # and the scheduler reschedules the lost task, so the sweep completes with the same numbers
    spec = _spec()
    marker = tmp_path / "killed.marker"
    fn = functools.partial(dying_cell, marker=marker, n_samples=40)
    got = run_sweep(spec, tmp_path / "out", scheduler=cluster.scheduler_address, cell_fn=fn)
    assert marker.exists()
    reference = run_sweep(spec, tmp_path / "ref", workers=2, cell_fn=synthetic_cell)
    xr.testing.assert_identical(got, reference)


def test_dask_starts_the_costliest_cells_first(tmp_path: Path) -> None:
    spec = SweepSpec(base=load_config(BASE), grid={"sgd.steps": [10_000, 40_000, 20_000]})
    log = tmp_path / "log.txt"
    fn = functools.partial(synthetic_cell, log=log)
    with distributed.LocalCluster(
        n_workers=1, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    ) as one_worker:
        run_sweep(spec, tmp_path / "out", scheduler=one_worker.scheduler_address, cell_fn=fn)
    assert [line.split()[-1] for line in log.read_text().splitlines()] == [
        "40000",
        "20000",
        "10000",
    ]


def test_unreachable_scheduler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sgdfluct.experiments import _executors

    monkeypatch.setattr(_executors, "_CONNECT_TIMEOUT_S", 1.0)
    spec = SweepSpec(base=load_config(BASE))
    with pytest.raises(ConfigError, match="scheduler"):
        run_sweep(spec, tmp_path, scheduler="tcp://127.0.0.1:9", cell_fn=synthetic_cell)


def test_reproduce_on_dask_matches_local_workers(tmp_path: Path, cluster) -> None:  # type: ignore[no-untyped-def]
    # the same claims, measured from the same cells, whether the cells ran on Dask or locally
    import json

    from sgdfluct.experiments.reproduce import reproduce

    address = cluster.scheduler_address
    reproduce(tmp_path / "dask", scale="smoke", only=["1"], scheduler=address)
    reproduce(tmp_path / "local", scale="smoke", only=["1"], workers=2)

    def records(folder: str) -> list[dict]:  # type: ignore[type-arg]
        claims = json.loads((tmp_path / folder / "claims.json").read_text())
        return [{k: v for k, v in c.items() if k != "rule_frozen"} for c in claims]  # a time

    assert records("dask") == records("local")
    assert records("dask")[0]["scale"] == "smoke"
    assert "dask scheduler tcp://127.0.0.1" in (tmp_path / "dask" / "report.md").read_text()


def test_reproduce_refuses_workers_with_scheduler(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sgdfluct.cli import main

    args = ["reproduce", "--smoke", "--out", str(tmp_path / "r"), "--workers", "2"]
    result = CliRunner().invoke(main, [*args, "--scheduler", "tcp://127.0.0.1:1"])
    assert result.exit_code == 2
    assert "--workers and --scheduler are exclusive" in result.output
    assert not (tmp_path / "r").exists()
