"""Resumable parameter sweeps: a grid of run configs, one output folder per cell.

A sweep file (TOML, see ``docs/architecture.md``) names a base run config and a grid of dotted
config keys::

    base = "single_layer.toml"        # a run config, relative to this file
    replicates = 2                    # independent seeds per cell (also accepted inside [grid])
    [grid]                            # every combination is one cell
    "data.n_samples" = [20, 40, 80]
    "sgd.learning_rate" = [0.02, 0.05]

:func:`load_sweep` validates everything up front (every cell's config is built, so a bad value fails
with its key named before anything runs); :func:`cells` enumerates the cells; :func:`run_sweep` runs
the missing ones on local processes or a Dask cluster and gathers their scalar metrics into
``DIR/sweep.nc`` (:func:`collect_sweep`).

Layout of the output folder ``DIR``::

    DIR/cells.json               index: cell id -> overrides, replicate, seeds (rewritten each run)
    DIR/cells/<cell-id>/         the outputs of one cell (cell.json, summary.json, ...)
    DIR/sweep.nc                 scalar metrics, one dimension per grid axis plus ``replicate``

Cell ids are human-readable: ``data.n_samples=20__sgd.learning_rate=0.02__rep=0`` (axes in the
order of the sweep file; characters outside ``[A-Za-z0-9._=+-]`` replaced by ``-``). A cell is done
when its folder ``DIR/cells/<cell-id>/`` exists: each cell is computed in a temporary folder
``DIR/cells/.tmp-<cell-id>-*`` that is renamed atomically once ``summary.json`` is written, so an
interrupted sweep leaves only complete cells (temporary folders of killed cells are removed on the
next run). Re-running computes only the missing cells; a cell folder whose stored config differs
from the one the sweep file now gives is an error, never silently reused. A cell's engine
checkpoints live in ``DIR/cells/.resume-<cell-id>/`` while it computes, so a cell of hours whose
worker or sweep was killed resumes where it stopped; they are removed once the cell is done.

The folder is locked while a sweep runs (a second sweep into it is refused), marked as a sweep
(``.sgdfluct-output.json``; a folder holding anything else is refused, an earlier sgdfluct
output is replaced only with ``overwrite``), and a re-run refused for a changed config leaves
it untouched.

Seeds: replicate 0 of a cell keeps the seeds of its config (base config plus overrides), so a sweep
with ``replicates = 1`` reproduces plain ``sgdfluct run`` results. Replicate ``r >= 1`` takes
``SeedSequence([data.seed, sgd.seed]).spawn(replicates)[r]`` (built directly with
``spawn_key=(r,)``, so it does not depend on the number of replicates) and draws new ``data.seed``
and ``sgd.seed`` from it: a new data set and new SGD noise. Seeds depend only on the cell's own
config, so adding a grid point or a replicate changes no other cell; results do not depend on the
number of workers or on the scheduler.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sgdfluct.config import (
    ConfigError,
    ExperimentConfig,
    check_resources,
    config_from_dict,
    config_to_dict,
    config_to_toml,
    load_config,
    read_toml,
    with_overrides,
)
from sgdfluct.experiments import _executors
from sgdfluct.io import (
    apply_umask,
    atomic_write_dataset,
    atomic_write_json,
    folder_lock,
    prepare_output_dir,
    resumable,
)
from sgdfluct.progress import Progress, progress_mode

__all__ = [
    "Cell",
    "CellFn",
    "SweepIncomplete",
    "SweepSpec",
    "cell_cost",
    "cells",
    "collect_sweep",
    "load_sweep",
    "run_sweep",
    "run_sweeps",
    "schedule",
]

CellFn = Callable[[ExperimentConfig, Path], Mapping[str, Any]]
"""``cell_fn(config, cell_dir) -> metrics``: runs one cell, writing its outputs into ``cell_dir``.

It must be picklable (a module-level function or a ``functools.partial`` of one). If it does not
write ``cell_dir/summary.json`` itself, the returned mapping is written there.
"""

_TMP_PREFIX = ".tmp-"
_RESUME_PREFIX = ".resume-"
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")
_MAX_ID_LENGTH = 200  # well below the 255-byte file-name limit of common file systems
_SEED_KEYS = ("data.seed", "sgd.seed")


class SweepIncomplete(RuntimeError):
    """A sweep stopped before every cell was done (Ctrl-C, failed or killed cells).

    Finished cells are kept; re-running the same sweep into the same folder computes only the
    missing ones.

    Attributes
    ----------
    n_done, n_total : int
        Cells done (including those of earlier runs) and cells of the sweep.
    missing : tuple of str
        Ids of the cells not done.
    failures : dict
        Cell id -> error message, for cells whose computation raised or whose worker died.
    interrupted : bool
        True when the sweep was stopped by ``KeyboardInterrupt`` (Ctrl-C, SIGINT).
    """

    def __init__(
        self,
        *,
        n_done: int,
        n_total: int,
        missing: Sequence[str],
        failures: Mapping[str, str],
        interrupted: bool,
    ) -> None:
        self.n_done = n_done
        self.n_total = n_total
        self.missing = tuple(missing)
        self.failures = dict(failures)
        self.interrupted = interrupted
        reason = "interrupted" if interrupted else "incomplete"
        message = f"sweep {reason}: {n_done} of {n_total} cells done, {len(self.missing)} missing"
        if self.failures:
            first_id, first_error = next(iter(self.failures.items()))
            message += f"; {len(self.failures)} cell(s) failed, e.g. {first_id}: {first_error}"
        message += (
            ". Finished cells are kept; re-run the same sweep to compute only the missing ones."
        )
        super().__init__(message)


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """A validated sweep: base config, grid axes and replicates.

    Attributes
    ----------
    base : ExperimentConfig
        The run config every cell starts from.
    grid : mapping of str to tuple
        Dotted config key (``"section.field"``) -> the values it takes, in order. Values are stored
        as the validated config values (e.g. an integer learning rate becomes a float). An empty
        grid is one cell.
    replicates : int
        Independent seeds per grid point (>= 1).
    text : str
        The sweep file's text (stored in ``sweep.nc`` attrs); empty for a spec built in code.
    source : Path or None
        The sweep file, if any.

    Every cell's config is built on construction, so an invalid value raises :class:`ConfigError`
    naming the key before anything runs.
    """

    base: ExperimentConfig
    grid: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    replicates: int = 1
    text: str = ""
    source: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.base, ExperimentConfig):
            raise ConfigError(f"base must be an ExperimentConfig, got {type(self.base).__name__}")
        if (
            isinstance(self.replicates, bool)
            or not isinstance(self.replicates, int)
            or self.replicates < 1
        ):
            raise ConfigError(
                f"replicates = {self.replicates!r} is out of range: expected an integer >= 1"
            )
        if not isinstance(self.grid, Mapping):
            raise ConfigError(
                f"grid must be a table of 'section.field' = [values], got {self.grid!r}"
            )
        normalized: dict[str, tuple[Any, ...]] = {}
        for key, values in self.grid.items():
            normalized[key] = _normalize_axis(self.base, key, values)
        object.__setattr__(self, "grid", types.MappingProxyType(normalized))
        ids = [c.cell_id for c in cells(self)]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ConfigError(
                f"two grid points map to the same cell id {dup!r} after sanitizing: "
                "give distinguishable values"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        """Sizes of the grid axes followed by ``replicates``."""
        return (*(len(v) for v in self.grid.values()), self.replicates)


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One cell of a sweep: a grid point and a replicate.

    Attributes
    ----------
    index : tuple of int
        Position along each grid axis, then the replicate.
    cell_id : str
        Folder name under ``DIR/cells/`` (see the module docstring).
    overrides : tuple of (str, value)
        The grid values of this cell, in the order of the axes.
    replicate : int
    config : ExperimentConfig
        The fully resolved config, seeds included.
    """

    index: tuple[int, ...]
    cell_id: str
    overrides: tuple[tuple[str, Any], ...]
    replicate: int
    config: ExperimentConfig

    def describe(self) -> dict[str, Any]:
        """JSON-able record of the cell (written to ``cell.json`` and ``cells.json``)."""
        return {
            "cell_id": self.cell_id,
            "overrides": dict(self.overrides),
            "replicate": self.replicate,
            "seeds": {"data.seed": self.config.data.seed, "sgd.seed": self.config.sgd.seed},
            "config": config_to_dict(self.config),
        }


def _normalize_axis(base: ExperimentConfig, key: Any, values: Any) -> tuple[Any, ...]:
    """Validate one grid axis: every value must give a valid config; return validated values."""
    if not isinstance(key, str) or key.count(".") != 1:
        raise ConfigError(f"grid key {key!r} is not a dotted config key 'section.field'")
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or len(values) == 0:
        raise ConfigError(f"grid.{key!r} = {values!r}: expected a non-empty list of values")
    section, name = key.split(".")
    out: list[Any] = []
    for value in values:
        if isinstance(value, Mapping | list | tuple):
            raise ConfigError(f"grid.{key!r} contains {value!r}: expected scalar values")
        try:
            config = with_overrides(base, {key: value})
        except ConfigError as exc:
            raise ConfigError(f"grid {key!r} = {value!r}: {exc}") from None
        out.append(getattr(getattr(config, section), name))
    if len(set(out)) != len(out):
        raise ConfigError(f"grid {key!r} = {list(values)!r} contains repeated values")
    return tuple(out)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _cell_id(overrides: Sequence[tuple[str, Any]], replicate: int) -> str:
    parts = [f"{key}={_format_value(value)}" for key, value in overrides]
    parts.append(f"rep={replicate}")
    cell_id = _ID_UNSAFE.sub("-", "__".join(parts))
    if len(cell_id) > _MAX_ID_LENGTH:
        raise ConfigError(
            f"cell id {cell_id[:60]!r}... is longer than {_MAX_ID_LENGTH} characters: "
            "use fewer grid axes or shorter values"
        )
    return cell_id


def _replicate_seeds(config: ExperimentConfig, replicate: int) -> dict[str, int]:
    """Seeds of replicate ``replicate``; replicate 0 keeps the config's own seeds."""
    if replicate == 0:
        return {"data.seed": config.data.seed, "sgd.seed": config.sgd.seed}
    child = np.random.SeedSequence([config.data.seed, config.sgd.seed], spawn_key=(replicate,))
    data_seed, sgd_seed = (int(s) for s in child.generate_state(2, dtype=np.uint32))
    return {"data.seed": data_seed, "sgd.seed": sgd_seed}


def cells(spec: SweepSpec) -> list[Cell]:
    """All cells of ``spec`` in grid order (first axis slowest, replicate fastest).

    Parameters
    ----------
    spec : SweepSpec

    Returns
    -------
    list of Cell
        ``prod(spec.shape)`` cells with resolved configs and per-replicate seeds.
    """
    keys = list(spec.grid)
    axes = [list(enumerate(spec.grid[k])) for k in keys]
    out: list[Cell] = []
    for combo in itertools.product(*axes):
        overrides = tuple((k, v) for k, (_, v) in zip(keys, combo, strict=True))
        point = with_overrides(spec.base, dict(overrides))
        for r in range(spec.replicates):
            config = with_overrides(point, _replicate_seeds(point, r)) if r else point
            out.append(
                Cell(
                    index=(*(i for i, _ in combo), r),
                    cell_id=_cell_id(overrides, r),
                    overrides=overrides,
                    replicate=r,
                    config=config,
                )
            )
    return out


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file (TOML).

    Parameters
    ----------
    path : str or Path
        The sweep file. Keys: ``base`` (path of a run config, relative to the sweep file),
        ``[grid]`` (dotted config keys -> lists of values) and ``replicates`` (top level or inside
        ``[grid]``, default 1). Unknown keys are rejected.

    Raises
    ------
    ConfigError
        Missing or unreadable files, unknown keys, or any cell whose config is invalid (the
        message names the key and the value).
    """
    path = Path(path)
    raw, text = read_toml(path, "sweep file")
    unknown = set(raw) - {"base", "grid", "replicates"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {sorted(unknown)}: allowed are 'base', 'grid', 'replicates'"
        )
    base_name = raw.get("base")
    if not isinstance(base_name, str) or not base_name:
        raise ConfigError(f"{path}: 'base' must name a run config file, got {base_name!r}")
    base_path = (path.parent / base_name).resolve()
    if not base_path.is_file():
        raise ConfigError(f"{path}: base config {str(base_path)!r} does not exist")
    if not isinstance(raw.get("grid", {}), Mapping):
        raise ConfigError(
            f"{path}: grid = {raw['grid']!r} is not a table: expected a [grid] section of "
            "'section.field' = [values]"
        )
    grid = dict(raw.get("grid", {}))
    replicates: Any = 1
    if "replicates" in grid and "replicates" in raw:
        raise ConfigError(f"{path}: 'replicates' is given twice (top level and in [grid])")
    if "replicates" in grid:
        replicates = grid.pop("replicates")
    elif "replicates" in raw:
        replicates = raw["replicates"]
    try:
        spec = SweepSpec(
            base=load_config(base_path, check_memory=False),
            grid=grid,
            replicates=replicates,
            text=text,
            source=path.resolve(),
        )
        for cell in cells(spec):
            check_resources(cell.config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return spec


# --------------------------------------------------------------------------------------------------
# output folder
# --------------------------------------------------------------------------------------------------


def _cells_dir(out_dir: Path) -> Path:
    return out_dir / "cells"


def _read_summary(cell_dir: Path) -> dict[str, Any] | None:
    """The parsed ``summary.json`` of a cell folder, or None if absent or unreadable."""
    try:
        summary = json.loads((cell_dir / "summary.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):  # absent or damaged
        return None
    return summary if isinstance(summary, dict) else None


def _is_done(cell: Cell, out_dir: Path) -> bool:
    """True if the cell folder exists and is complete; error if it holds a different config."""
    cell_dir = _cells_dir(out_dir) / cell.cell_id
    if not cell_dir.exists():
        return False
    if _read_summary(cell_dir) is None:
        raise ConfigError(
            f"cell folder {str(cell_dir)!r} exists but has no readable summary.json: "
            "delete it to recompute that cell"
        )
    try:
        stored = json.loads((cell_dir / "cell.json").read_text())["config"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        stored = None
    if stored is not None and config_from_dict(stored) != cell.config:
        raise ConfigError(
            f"cell folder {str(cell_dir)!r} was computed with a different config than the sweep "
            "now gives (changed base config?): use a new --out folder or delete the stale cells"
        )
    return True


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Remove temporary cell folders left behind by killed runs (ours only: ``.tmp-`` prefix)."""
    cells_dir = _cells_dir(out_dir)
    if not cells_dir.is_dir():
        return
    for entry in cells_dir.iterdir():
        if entry.name.startswith(_TMP_PREFIX) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        # checkpoints of an unfinished cell stay (its re-run resumes); of a finished one go
        done = cells_dir / entry.name.removeprefix(_RESUME_PREFIX)
        if entry.name.startswith(_RESUME_PREFIX) and entry.is_dir() and done.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# gathering
# --------------------------------------------------------------------------------------------------


#: top-level summary entries that are facts about the run, not results (left out of sweep.nc)
NON_METRIC_KEYS = frozenset({"timing"})


def _flatten_metrics(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float | int | None]:
    """Numeric scalars of a (nested) summary, keys joined by ``.``; JSON null kept as None."""
    out: dict[str, float | int | None] = {}
    for key, value in summary.items():
        if not prefix and key in NON_METRIC_KEYS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten_metrics(value, prefix=f"{name}."))
        elif isinstance(value, bool):
            out[name] = int(value)
        elif isinstance(value, int | float) or value is None:
            out[name] = value
    return out


def _variable_name(name: str) -> str:
    # '/' separates groups in HDF5/netCDF-4; everything else is a legal name
    return name.replace("/", "_")


def collect_sweep(
    spec: SweepSpec, out_dir: str | Path, *, allow_missing: bool = False
) -> xr.Dataset:
    """Gather the scalar metrics of every cell's ``summary.json`` into one Dataset.

    Parameters
    ----------
    spec : SweepSpec
    out_dir : str or Path
        The sweep's output folder.
    allow_missing : bool
        If False (default) a missing cell raises :class:`SweepIncomplete`; if True it is filled
        with NaN and listed in ``attrs["missing_cells"]``.

    Returns
    -------
    xarray.Dataset
        One variable per numeric metric (nested keys joined by ``.``, e.g. ``"ivfr.layer_2.psi"``;
        booleans as 0/1), with dims = the grid keys (coordinates: their values) + ``replicate``.
        Integer metrics stay integers when present in every cell; a metric absent from a cell, or
        null in its summary (a non-finite value), is NaN there. ``cell_id`` is a string coordinate.
        ``attrs``: ``sweep`` (file text), ``base_config`` (TOML), ``version``, ``replicates``.
    """
    from sgdfluct._version import __version__

    out_dir = Path(out_dir)
    all_cells = cells(spec)
    shape = spec.shape
    summaries: dict[tuple[int, ...], dict[str, float | int | None]] = {}
    missing: list[str] = []
    for cell in all_cells:
        summary = _read_summary(_cells_dir(out_dir) / cell.cell_id)
        if summary is None:
            missing.append(cell.cell_id)
        else:
            summaries[cell.index] = _flatten_metrics(summary)
    if missing and not allow_missing:
        raise SweepIncomplete(
            n_done=len(all_cells) - len(missing),
            n_total=len(all_cells),
            missing=missing,
            failures={},
            interrupted=False,
        )
    names: list[str] = []
    for metrics in summaries.values():
        names.extend(n for n in metrics if n not in names)
    dims = [*spec.grid, "replicate"]
    coords: dict[str, Any] = {key: np.asarray(values) for key, values in spec.grid.items()}
    coords["replicate"] = np.arange(spec.replicates)
    cell_ids = np.empty(shape, dtype=object)
    for cell in all_cells:
        cell_ids[cell.index] = cell.cell_id
    coords["cell_id"] = (dims, cell_ids.astype(str))
    data_vars: dict[str, Any] = {}
    for name in sorted(names):
        values = [m.get(name) for m in summaries.values()]
        complete = len(summaries) == len(all_cells)
        integer = complete and all(isinstance(v, int) for v in values)
        array = np.zeros(shape, dtype=np.int64) if integer else np.full(shape, np.nan)
        for index, metrics in summaries.items():
            value = metrics.get(name)
            array[index] = np.nan if value is None else value
        var = _variable_name(name)
        if var in coords:  # e.g. a metric named like a grid axis: keep both
            var = f"summary.{var}"
        data_vars[var] = (dims, array)
    attrs: dict[str, Any] = {
        "sweep": spec.text,
        "base_config": config_to_toml(spec.base),
        "version": __version__,
        "replicates": spec.replicates,
        "seeding": "replicate 0 keeps the cell config's seeds; replicate r >= 1 draws "
        "(data.seed, sgd.seed) from SeedSequence([data.seed, sgd.seed], spawn_key=(r,))",
    }
    if missing:
        attrs["missing_cells"] = json.dumps(missing)
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


# --------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------


def default_cell_fn(config: ExperimentConfig, cell_dir: Path) -> Mapping[str, Any]:
    """Run one experiment with :func:`sgdfluct.runner.run_experiment` (the ``run`` command)."""
    from sgdfluct.runner import run_experiment

    return run_experiment(config, cell_dir, quiet=True, claim=False)


def run_cell(cell_fn: CellFn, cell: Cell, out_dir: Path) -> str:
    """Compute one cell in a temporary folder and rename it atomically into place.

    Runs in a worker process. Returns the cell id. If the final folder appeared meanwhile (a
    concurrent duplicate of the same cell), the temporary one is discarded: the cell is done.
    """
    import tempfile

    cells_dir = _cells_dir(out_dir)
    cells_dir.mkdir(parents=True, exist_ok=True)
    final = cells_dir / cell.cell_id
    if final.exists():
        return cell.cell_id
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{cell.cell_id}-", dir=cells_dir))
    apply_umask(tmp, directory=True)
    # checkpoints of a long cell survive a killed worker or sweep: the re-run resumes the cell
    key = json.dumps(cell.describe(), sort_keys=True)
    try:
        with resumable(cells_dir / f"{_RESUME_PREFIX}{cell.cell_id}", key):
            atomic_write_json(tmp / "cell.json", cell.describe())
            metrics = cell_fn(cell.config, tmp)
            if _read_summary(tmp) is None:
                if not isinstance(metrics, Mapping):
                    raise TypeError(
                        f"cell_fn returned {type(metrics).__name__} and wrote no summary.json: "
                        "expected a mapping of metrics"
                    )
                atomic_write_json(tmp / "summary.json", dict(metrics))
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.exists():
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return cell.cell_id


#: cost of a depth >= 2 cell per parameter-step, relative to depth 1, per extra layer: the
#: aligned window measurement, saturation gate and layer-wise theories of docs/theory.md §8a grow
#: faster than the simulation (measured on the quick reproduction, 2 cores: about 3e-8 s per
#: replica-step-weight at depth 1, 0.8-2e-7 at depth 2, 2-3e-7 at depth 3)
DEEP_ANALYSIS_FACTOR = 4.0

#: seconds per :func:`cell_cost` unit on one worker: the prior of the progress estimate before the
#: first cell has finished (the depth-1 figure of the measurement above, 2 cores, quick scale);
#: after that the estimate uses the measured rate
SECONDS_PER_COST = 3e-8


def cell_cost(config: ExperimentConfig) -> float:
    """Estimated relative cost of computing one cell: used only to order cells, longest first.

    ``steps × replicas × d × DEEP_ANALYSIS_FACTOR ** (depth - 1)``, with ``d`` the number of
    weights. A deterministic function of the config (never a measurement), so the order, like
    the results, is the same on every machine; it only needs to rank cells roughly (a depth-3
    cell of the quick reproduction takes 50-80 s, a depth-2 one 15-40 s, a single-layer one
    0.2-5 s).

    Parameters
    ----------
    config : ExperimentConfig

    Returns
    -------
    float
        Arbitrary units; larger runs longer.
    """
    d = sum(rows * cols for rows, cols in config.layer_shapes())
    s = config.sgd
    return float(s.steps) * s.replicas * d * DEEP_ANALYSIS_FACTOR ** (config.model.depth - 1)


def schedule(tasks: Sequence[_executors.Task]) -> list[_executors.Task]:
    """``(cell, folder)`` tasks in the order they start: largest :func:`cell_cost` first.

    Longest-first keeps every worker busy to the end (a long cell started last would leave the
    others idle); ties keep their given (grid) order. Results do not depend on the order: every
    cell has its own seeds and folder.
    """
    return sorted(tasks, key=lambda task: -cell_cost(task[0].config))


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | Any | None = None,
    progress: bool | str = False,
    cell_fn: CellFn | None = None,
    retries: int = 1,
    overwrite: bool = False,
) -> xr.Dataset:
    """Run the missing cells of a sweep and write ``out_dir/sweep.nc``.

    Cells start longest first (:func:`schedule`); the order changes no number.

    Parameters
    ----------
    spec : SweepSpec
        From :func:`load_sweep` (or built in code).
    out_dir : str or Path
        Output folder; re-using it resumes the sweep.
    workers : int, optional
        Local worker processes (default ``os.cpu_count()``); ignored with ``scheduler``. Cells
        always run in worker processes (spawn/forkserver), never in this one.
    scheduler : str or distributed.Client, optional
        Address of a running Dask scheduler (``"tcp://host:8786"``) or a ``Client``; needs the
        ``dask`` extra.
    progress : bool or {"auto", "bar", "log", "off"}
        Progress over cells (:mod:`sgdfluct.progress`): ``True``/``"auto"`` a tqdm bar on a
        terminal and otherwise one line on stderr per finished cell and at least every 60 s,
        with the elapsed time and an ETA from :func:`cell_cost`; ``False``/``"off"`` nothing.
    cell_fn : callable, optional
        ``cell_fn(config, cell_dir) -> metrics`` (see :data:`CellFn`); default: the ``run`` command
        (:func:`sgdfluct.runner.run_experiment`). Must be picklable.
    retries : int
        Locally: how often the pool is restarted after a worker process died (the cells in flight
        are resubmitted). With Dask: task retries after an exception; tasks of a killed worker are
        rescheduled by Dask itself (``distributed.scheduler.allowed-failures``).
    overwrite : bool
        Empty a folder holding an earlier sgdfluct output (a different sweep, a run) first.
        Without it such a folder is refused; a folder holding this sweep is resumed.

    Returns
    -------
    xarray.Dataset
        The gathered metrics (:func:`collect_sweep`), also written to ``out_dir/sweep.nc``.

    Raises
    ------
    SweepIncomplete
        Ctrl-C (``interrupted=True``; submission stops, worker processes are stopped, finished
        cells stay) or cells that failed after their retries; it says how many cells are done.
        Re-running computes only the missing cells.
    ConfigError
        Bad arguments, or a cell folder computed with a different config (the folder is then
        left unchanged).
    OutputError
        Another process writes ``out_dir`` (a lock), it holds something else, or it cannot be
        written; checked before any cell runs.
    """
    (outcome,) = run_sweeps(
        [(spec, out_dir)],
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        cell_fn=cell_fn,
        retries=retries,
        overwrite=overwrite,
    )
    if isinstance(outcome, SweepIncomplete):
        raise outcome
    return outcome


def run_sweeps(
    jobs: Sequence[tuple[SweepSpec, str | Path]],
    *,
    workers: int | None = None,
    scheduler: str | Any | None = None,
    progress: bool | str = False,
    cell_fn: CellFn | None = None,
    retries: int = 1,
    overwrite: bool = False,
) -> list[xr.Dataset | SweepIncomplete]:
    """Run several sweeps on one pool of workers: :func:`run_sweep` for each ``(spec, folder)``.

    Every folder is locked, prepared and checked (with its ``cells.json``) before any cell runs;
    then the missing cells of all sweeps share one executor in one longest-first order
    (:func:`schedule`), so no worker idles while another sweep still has cells; last, each sweep
    is gathered into its ``sweep.nc``. Each folder ends as if :func:`run_sweep` had run on it.

    Parameters
    ----------
    jobs : sequence of (SweepSpec, path)
        The sweeps and their output folders (distinct).
    workers, scheduler, progress, cell_fn, retries, overwrite
        As :func:`run_sweep`, for every sweep.

    Returns
    -------
    list
        Per job, in order: its gathered Dataset, or the :class:`SweepIncomplete` it would have
        raised (cells failed; the other sweeps are still gathered).

    Raises
    ------
    SweepIncomplete
        Ctrl-C (``interrupted=True``), counted over all sweeps (with several sweeps, ``missing``
        names ``<folder name>/<cell id>``); finished cells stay.
    ConfigError, OutputError
        As :func:`run_sweep`, for any of the folders, before any cell runs.
    """
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise ConfigError(f"workers = {workers!r} is out of range: expected an integer >= 1")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries = {retries!r} is out of range: expected an integer >= 0")
    folders = [Path(out_dir) for _, out_dir in jobs]
    if len({folder.resolve() for folder in folders}) != len(folders):
        raise ConfigError(f"two sweeps write the same folder: {[str(f) for f in folders]}")
    if cell_fn is None:
        try:
            import sgdfluct.runner  # noqa: F401
        except ImportError as exc:
            raise ConfigError(f"the default cell function needs sgdfluct.runner: {exc}") from exc
        cell_fn = default_cell_fn
    with contextlib.ExitStack() as stack:
        locked = [stack.enter_context(folder_lock(folder)) for folder in folders]
        for folder in locked:
            prepare_output_dir(folder, kind="sweep", overwrite=overwrite)
        specs = [spec for spec, _ in jobs]
        return _run_locked(
            list(zip(specs, locked, strict=True)), workers, scheduler, progress, cell_fn, retries
        )


def _run_locked(
    jobs: list[tuple[SweepSpec, Path]],
    workers: int | None,
    scheduler: str | Any | None,
    progress: bool | str,
    cell_fn: CellFn,
    retries: int,
) -> list[xr.Dataset | SweepIncomplete]:
    """:func:`run_sweeps` once every folder is locked and known to hold its sweep (or nothing)."""
    all_cells = [cells(spec) for spec, _ in jobs]
    todo: list[_executors.Task] = []
    for (_, out_dir), sweep_cells in zip(jobs, all_cells, strict=True):
        _remove_stale_temporaries(out_dir)
        # every check first: a rejected re-run (changed base config) leaves the folder untouched
        todo.extend((c, out_dir.resolve()) for c in sweep_cells if not _is_done(c, out_dir))
    for (_, out_dir), sweep_cells in zip(jobs, all_cells, strict=True):
        atomic_write_json(out_dir / "cells.json", [c.describe() for c in sweep_cells])

    failures: dict[tuple[Path, str], str] = {}
    interrupted = False
    if todo:
        n_total = sum(len(c) for c in all_cells)
        n_workers = workers or os.cpu_count() or 1
        # cost of each cell still to do; a finished cell is found by its folder (renamed into
        # place when complete), whichever worker or executor ran it
        pending = {(out_dir, c.cell_id): cell_cost(c.config) for c, out_dir in todo}
        bar = Progress(
            total=n_total,
            done=n_total - len(todo),
            desc="sweep" if len(jobs) == 1 else f"{len(jobs)} sweeps",
            mode=progress_mode(progress),
            remaining_cost=sum(pending.values()),
            seconds_per_cost=SECONDS_PER_COST,
            workers=n_workers if scheduler is None else 1,
        )

        def on_done(_n: int = 1) -> None:
            for key in [k for k in pending if (_cells_dir(k[0]) / k[1]).is_dir()]:
                label = key[1] if len(jobs) == 1 else f"{key[0].name}/{key[1]}"
                bar.advance(label, pending.pop(key))

        try:
            if scheduler is not None:
                failures = _executors.run_dask(cell_fn, schedule(todo), scheduler, retries, on_done)
            else:
                failures = _executors.run_local(
                    cell_fn, schedule(todo), n_workers, retries, on_done
                )
            for (folder, cell_id), reason in failures.items():  # failed cells: a line each too
                label = cell_id if len(jobs) == 1 else f"{folder.name}/{cell_id}"
                bar.note(f"failed {label}: {' '.join(reason.split())[:300]}")
        except KeyboardInterrupt:
            interrupted = True
            if scheduler is None:  # our worker processes are stopped: their folders are litter
                for _, out_dir in jobs:
                    _remove_stale_temporaries(out_dir)
        finally:
            bar.close()

    outcomes: list[xr.Dataset | SweepIncomplete] = []
    for (spec, out_dir), sweep_cells in zip(jobs, all_cells, strict=True):
        missing = [c.cell_id for c in sweep_cells if not (_cells_dir(out_dir) / c.cell_id).is_dir()]
        if missing or interrupted:
            key = out_dir.resolve()
            outcomes.append(
                SweepIncomplete(
                    n_done=len(sweep_cells) - len(missing),
                    n_total=len(sweep_cells),
                    missing=missing,
                    failures={i: failures[(key, i)] for i in missing if (key, i) in failures},
                    interrupted=interrupted,
                )
            )
            continue
        dataset = collect_sweep(spec, out_dir)
        atomic_write_dataset(out_dir / "sweep.nc", dataset)
        outcomes.append(dataset)
    if interrupted:
        raise _merged(outcomes, [out_dir.name for _, out_dir in jobs])
    return outcomes


def _merged(
    outcomes: Sequence[xr.Dataset | SweepIncomplete], names: Sequence[str]
) -> SweepIncomplete:
    """One interrupted :class:`SweepIncomplete` counting every sweep (itself for one sweep)."""
    if len(outcomes) == 1 and isinstance(outcomes[0], SweepIncomplete):
        return outcomes[0]
    n_done = n_total = 0
    missing: list[str] = []
    failures: dict[str, str] = {}
    for outcome, name in zip(outcomes, names, strict=True):
        if isinstance(outcome, SweepIncomplete):
            n_done += outcome.n_done
            n_total += outcome.n_total
            missing.extend(f"{name}/{i}" for i in outcome.missing)
            failures.update({f"{name}/{i}": e for i, e in outcome.failures.items()})
    return SweepIncomplete(
        n_done=n_done, n_total=n_total, missing=missing, failures=failures, interrupted=True
    )
