"""``sgdfluct reproduce``: run every claim's sweep, measure, decide, and write the report.

The claims and their sweeps are declared in :mod:`sgdfluct.experiments.claims`; this module only
drives them. Sweeps run through :func:`~sgdfluct.experiments.sweep.run_sweep`, so an interrupted
reproduction resumes where it stopped (finished cells under ``DIR/sweeps/<name>/cells/`` are kept).
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from sgdfluct._version import __version__
from sgdfluct.config import ConfigError, config_from_dict, config_to_toml
from sgdfluct.experiments.claims import (
    CLAIMS,
    ClaimSpec,
    Measurement,
    SweepDef,
    require_metrics,
    sweep_defs,
    tidy_log_axes,
)
from sgdfluct.io import atomic_save_figure
from sgdfluct.report import ClaimResult, config_hash, machine_info, write_report
from sgdfluct.runner import run_experiment_without_figures

__all__ = ["reproduce"]

SCALES = ("quick", "full", "smoke")


def _spec(sweep: SweepDef) -> Any:
    from sgdfluct.experiments.sweep import SweepSpec

    base = config_from_dict(sweep.base)
    grid = "\n".join(f"{json.dumps(k)} = {json.dumps(list(v))}" for k, v in sweep.grid.items())
    text = f"# sweep {sweep.name}\n{config_to_toml(base)}\n[grid]\n{grid}\n"
    text += f"replicates = {sweep.replicates}\n"
    return SweepSpec(
        base=base,
        grid={k: tuple(v) for k, v in sweep.grid.items()},
        replicates=sweep.replicates,
        text=text,
    )


def _run(
    sweep: SweepDef, folder: Path, workers: int | None, progress: bool
) -> tuple[xr.Dataset | None, str]:
    """Run one sweep; return its metrics (None if nothing finished) and an error text."""
    from sgdfluct.experiments.sweep import SweepIncomplete, collect_sweep, run_sweep

    spec = _spec(sweep)
    error = ""
    try:
        ds = run_sweep(
            spec, folder, workers=workers, progress=progress, cell_fn=run_experiment_without_figures
        )
    except SweepIncomplete as exc:
        if exc.interrupted:
            raise
        error = str(exc)
        ds = collect_sweep(spec, folder, allow_missing=True)
    ds.attrs["n_in"] = spec.base.data.n_in
    return ds, error


def _claim_result(
    claim: ClaimSpec, ds: xr.Dataset | None, error: str, figures_dir: Path
) -> ClaimResult:
    figures: list[Path] = []
    if ds is not None and not error:
        # a declared metric a complete sweep lacks is a bug of the pipeline, not a measurement:
        # raise (with failed cells the metric may live only in them: then the claim is reported
        # inconclusive with the error below)
        require_metrics(ds, claim.metrics, claim.id)
    try:
        if ds is None:
            raise RuntimeError(error or "no cell of the sweep finished")
        measurement = claim.measure(ds)
        fig = claim.figure(ds)
        tidy_log_axes(fig)
        try:
            path = figures_dir / f"{claim.id}.png"
            atomic_save_figure(fig, path)
            figures.append(path)
        finally:
            fig.clear()
    except Exception as exc:  # a failed measurement is reported, never turned into a verdict
        measurement = Measurement(
            measured={"error": f"{type(exc).__name__}: {exc}"},
            verdict="inconclusive",
            details="The measurement could not be completed:\n\n"
            + "".join(traceback.format_exception_only(exc)),
        )
    details = measurement.details
    verdict = measurement.verdict
    if error:
        details += f"\n\nSome cells failed: {error}"
        # a claim measured on an incomplete sweep can still fail, but cannot be said to hold
        if verdict == "holds":
            verdict = "inconclusive"
    return ClaimResult(
        id=claim.id,
        statement=claim.statement,
        expected=claim.expected,
        measured=measurement.measured,
        verdict=verdict,
        figures=tuple(figures),
        details=details,
        rule=claim.rule,
        rule_history=tuple(claim.rule_history),
    )


def reproduce(
    out_dir: str | Path,
    *,
    scale: str = "quick",
    only: Sequence[str] | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> list[ClaimResult]:
    """Test every claim of SPEC §10 and write ``report.html``, ``report.md``, ``claims.json``.

    Parameters
    ----------
    out_dir : path
        Report folder; sweeps are kept under ``out_dir/sweeps/`` (re-running resumes).
    scale : {"quick", "full"}
        ``quick``: about 15 minutes on 2 cores; ``full``: 10x longer simulations, larger spectra.
    only : sequence of str, optional
        Claim ids (or id prefixes such as ``"7"``) to run; default all.
    workers : int, optional
        Local worker processes for the sweeps (default: all cores).
    progress : bool
        Progress bars.
    """
    if scale not in SCALES:
        raise ConfigError(f"scale = {scale!r} is not allowed: expected one of {SCALES}")
    start = time.perf_counter()
    out = Path(out_dir).resolve()
    claims = [c for c in CLAIMS if not only or any(c.id.startswith(o) for o in only)]
    if not claims:
        raise ConfigError(
            f"--only {list(only or [])} matches no claim id: {[c.id for c in CLAIMS]}"
        )
    defs = sweep_defs(scale)
    results: dict[str, tuple[xr.Dataset | None, str]] = {}
    for name in dict.fromkeys(c.sweep for c in claims):
        results[name] = _run(defs[name], out / "sweeps" / name, workers, progress)
    claim_results = [
        _claim_result(c, *results[c.sweep], figures_dir=out / "figures") for c in claims
    ]
    header = {
        "version": __version__,
        "scale": scale,
        "config hashes": {n: config_hash(_spec(defs[n]).text) for n in results},
        "seeds": {
            n: {
                "data": defs[n].base["data"]["seed"],
                "sgd": defs[n].base["sgd"]["seed"],
                "replicates": defs[n].replicates,
            }
            for n in results
        },
        "machine": machine_info(),
        "runtime": f"{time.perf_counter() - start:.0f} s",
    }
    write_report(out, claim_results, header=header)
    return claim_results
