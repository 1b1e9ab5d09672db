"""``sgdfluct reproduce``: run every claim's sweep, measure, decide, and write the report.

The claims and their sweeps are declared in :mod:`sgdfluct.experiments.claims`; this module only
drives them. The sweeps run together through :func:`~sgdfluct.experiments.sweep.run_sweeps` (one
pool of workers, longest cells first across all sweeps, each sweep in its own folder as
:func:`~sgdfluct.experiments.sweep.run_sweep` leaves it), so an interrupted reproduction resumes
where it stopped (finished cells under ``DIR/sweeps/<name>/cells/`` are kept).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import xarray as xr

import sgdfluct.experiments.claims as _claims
from sgdfluct._version import __version__
from sgdfluct.config import ConfigError, config_from_dict, config_to_toml
from sgdfluct.experiments.claims import (
    ClaimSpec,
    Measurement,
    StandaloneClaim,
    SweepDef,
    require_metrics,
    tidy_log_axes,
)
from sgdfluct.experiments.claims.claim8_probe import PROBE_CLAIM_ID
from sgdfluct.io import atomic_save_figure, atomic_write_json, to_jsonable
from sgdfluct.plotting.polish import polish_figure
from sgdfluct.progress import Progress, progress_mode
from sgdfluct.report import ClaimResult, config_hash, machine_info, write_report
from sgdfluct.runner import run_experiment_without_figures

__all__ = [
    "EVIDENCE",
    "PROBE_CLAIM_ID",
    "RULES_FROZEN_FILE",
    "DesignedClaimResult",
    "claim_ids",
    "reproduce",
    "rule_hash",
]

SCALES = ("quick", "full", "smoke")
#: what a verdict at each scale is evidence of: the quick scale is exploratory (its rules were
#: revised after seeing quick data), the full scale confirmatory (fresh seeds, rules frozen before
#: it starts); smoke verdicts carry no weight
EVIDENCE = {"quick": "exploratory", "full": "confirmatory", "smoke": "pipeline check"}
#: per scale and claim, the rule's hash and the time it was frozen, written into the report folder
#: before any cell is computed (a resumed run keeps the first entry)
RULES_FROZEN_FILE = "rules_frozen.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DesignedClaimResult(ClaimResult):
    """A :class:`~sgdfluct.report.ClaimResult` with the design of its test, added to its
    ``claims.json`` record: ``scale``, ``evidence``, ``seeds``, ``rule_hash``, ``rule_frozen``,
    ``rule_last_changed``, ``rule_changed_after_data``, ``seed_plan``."""

    design: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The base record plus the design fields (the base keys are never renamed)."""
        return {**super().to_json(), **to_jsonable(dict(self.design))}


def rule_hash(rule: str) -> str:
    """Short SHA-256 (12 hex digits) of a rule's text: any change of a threshold changes it."""
    return hashlib.sha256(rule.encode()).hexdigest()[:12]


def _freeze_rules(
    out: Path, scale: str, claims: Sequence[ClaimSpec | StandaloneClaim]
) -> dict[str, Any]:
    """Record each claim's rule hash and the time, before any computing, in
    ``out/rules_frozen.json``; entries already there (a resumed run) are kept."""
    path = out / RULES_FROZEN_FILE
    frozen: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    entries = frozen.setdefault(scale, {})
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    changed = False
    for claim in claims:
        if claim.id not in entries:
            entries[claim.id] = {"rule_hash": rule_hash(claim.rule), "frozen": now}
            changed = True
    if changed:
        atomic_write_json(path, frozen)
    return dict(entries)


def _seeds_of(sweep: SweepDef) -> dict[str, list[int]]:
    """The data and SGD seeds of a sweep's cells (each replicate a new data set)."""
    from sgdfluct.experiments.sweep import cells

    grid = cells(_spec(sweep))
    return {
        "data": sorted({c.config.data.seed for c in grid}),
        "sgd": sorted({c.config.sgd.seed for c in grid}),
        "replicates": [sweep.replicates],
    }


def _with_design(
    result: ClaimResult,
    claim: ClaimSpec | StandaloneClaim,
    scale: str,
    frozen: Mapping[str, Any],
    seeds: Mapping[str, Any] | None,
) -> DesignedClaimResult:
    """``result`` with its design fields; a rule whose hash differs from the one frozen when the
    run started is flagged (in ``claims.json`` and at the top of the claim's details)."""
    entry = frozen.get(claim.id, {})
    current = rule_hash(result.rule or claim.rule)
    changed = bool(entry) and entry.get("rule_hash") != current
    history_dates = [str(h["date"]) for h in claim.rule_history]
    plan = claim.seed_plan
    design = {
        "scale": scale,
        "evidence": EVIDENCE[scale],
        "seeds": dict(seeds) if seeds is not None else None,
        "rule_hash": current,
        "rule_frozen": entry.get("frozen"),
        "rule_last_changed": max(history_dates) if history_dates else None,
        "rule_changed_after_data": changed,
        "seed_plan": None
        if plan is None
        else {
            **dataclasses.asdict(plan),
            "full_seeds": plan.full_seeds(),
            "reached_half_width": plan.reached_half_width(),
        },
    }
    details = result.details
    if changed:
        what = "confirmatory" if scale == "full" else "this run's"
        details = (
            f"**Rule changed after its {what} data were seen**: the rule's hash is {current}, it "
            f"was {entry.get('rule_hash')} when this run started ({entry.get('frozen')}). The "
            "verdict is not confirmatory evidence.\n\n" + details
        )
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(ClaimResult)}
    fields["details"] = details
    return DesignedClaimResult(**fields, design=design)


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
    sweeps: Sequence[SweepDef],
    out: Path,
    workers: int | None,
    progress: bool | str,
    scheduler: str | Any | None = None,
) -> dict[str, tuple[xr.Dataset | None, str]]:
    """Run the sweeps on one pool of workers (longest cells first, across sweeps); return each
    one's metrics and an error text (cells that failed: the finished ones are gathered)."""
    from sgdfluct.experiments.sweep import SweepIncomplete, collect_sweep, run_sweeps

    specs = [_spec(sweep) for sweep in sweeps]
    folders = [out / "sweeps" / sweep.name for sweep in sweeps]
    outcomes = run_sweeps(
        list(zip(specs, folders, strict=True)),
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        cell_fn=run_experiment_without_figures,
    )
    results: dict[str, tuple[xr.Dataset | None, str]] = {}
    for sweep, spec, folder, outcome in zip(sweeps, specs, folders, outcomes, strict=True):
        error = ""
        if isinstance(outcome, SweepIncomplete):
            error = str(outcome)
            outcome = collect_sweep(spec, folder, allow_missing=True)
        outcome.attrs["n_in"] = spec.base.data.n_in
        results[sweep.name] = (outcome, error)
    return results


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
        polish_figure(fig)  # readable ticks, clipped intervals marked, legends off the data
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
        # the summary table's headline, where a claim names one (report.headline)
        headline=getattr(measurement, "headline", "") or getattr(claim, "headline", ""),
    )


def _executor_text(workers: int | None, scheduler: str | Any | None) -> str:
    """Where the sweeps' cells ran, for the report header."""
    if scheduler is not None:
        address = scheduler if isinstance(scheduler, str) else getattr(scheduler, "scheduler", "")
        return f"dask scheduler {getattr(address, 'address', address)}"
    import os

    return f"local, {workers or os.cpu_count() or 1} worker processes"


def claim_ids() -> list[str]:
    """Every claim id of the reproduction (the sweep claims, then claim 8)."""
    return _claims.REGISTRY.ids()


def reproduce(
    out_dir: str | Path,
    *,
    scale: str = "quick",
    only: Sequence[str] | None = None,
    workers: int | None = None,
    scheduler: str | Any | None = None,
    progress: bool | str = False,
) -> list[ClaimResult]:
    """Test every claim of docs/theory.md §10 and write ``report.html``, ``report.md``,
    ``claims.json``.

    Parameters
    ----------
    out_dir : path
        Report folder; sweeps are kept under ``out_dir/sweeps/`` (re-running resumes).
    scale : {"quick", "full"}
        ``quick``: 282 s on 2 cores of a quiet machine, 3078 s on a loaded one (load 5-7; the
        README gives the conditions); ``full``: 10x longer simulations, larger spectra.
    only : sequence of str, optional
        Claim ids (or id prefixes such as ``"7"``) to run; default all.
    workers : int, optional
        Local worker processes for the sweeps (default: all cores).
    scheduler : str or distributed.Client, optional
        A Dask scheduler's address (or a client) to run the sweeps' cells on, instead of local
        workers (as :func:`~sgdfluct.experiments.sweep.run_sweeps`); claim 8 (the probe) runs in
        this process either way.
    progress : bool or {"auto", "bar", "log", "off"}
        Progress over the sweeps' cells (:func:`~sgdfluct.experiments.sweep.run_sweeps`) and,
        in ``"log"`` mode (output not a terminal), one line per decided claim.
    """
    if scale not in SCALES:
        raise ConfigError(f"scale = {scale!r} is not allowed: expected one of {SCALES}")
    start = time.perf_counter()
    out = Path(out_dir).resolve()
    registry = _claims.REGISTRY

    def selected(claim_id: str) -> bool:
        return not only or any(claim_id.startswith(o) for o in only)

    claims = [c for c in registry.claims if selected(c.id)]
    standalone = [c for c in registry.standalone if selected(c.id)]
    if not claims and not standalone:
        raise ConfigError(f"--only {list(only or [])} matches no claim id: {registry.ids()}")
    defs = registry.sweep_defs(scale)
    frozen = _freeze_rules(out, scale, [*claims, *standalone])
    names = dict.fromkeys(c.sweep for c in claims)
    results = _run([defs[name] for name in names], out, workers, progress, scheduler)
    claim_results: list[ClaimResult] = []
    # one line per decided claim where output is not a terminal (sgdfluct.progress)
    mode = "log" if progress_mode(progress) == "log" else "off"
    with Progress(
        total=len(claims) + len(standalone), desc="claims", mode=mode, unit="claim"
    ) as bar:
        for c in claims:
            result = _claim_result(c, *results[c.sweep], figures_dir=out / "figures")
            seeds = _seeds_of(defs[c.sweep])
            claim_results.append(_with_design(result, c, scale, frozen, seeds))
            bar.advance(f"{c.id}: {claim_results[-1].verdict}")
        for s in standalone:
            probe_seeds = {"seeds": list(s.seeds(scale))} if s.seeds else None
            result = s.run(scale, out, workers)
            claim_results.append(_with_design(result, s, scale, frozen, probe_seeds))
            bar.advance(f"{s.id}: {claim_results[-1].verdict}")
    header = {
        "version": __version__,
        "scale": scale,
        "evidence": EVIDENCE[scale],
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
        "executor": _executor_text(workers, scheduler),
        "runtime": f"{time.perf_counter() - start:.0f} s",
    }
    write_report(out, claim_results, header=header)
    return claim_results


#: the cell-cost model (:func:`sgdfluct.experiments.sweep.cell_cost` x ``SECONDS_PER_COST``)
#: against a measurement: the quick reproduction of issue 12 took 591 s on 2 quiet cores, 35 s of
#: them claim 8, i.e. 556 s for sweeps the model put at 1990 core-seconds (995 s on 2 workers)
MODEL_CALIBRATION = 556.0 / 995.0
#: claim 8 (the probe, not a sweep) at the quick scale on 2 quiet cores (issue 12), and its full
#: scale's growth: steps x 40/12, parameters x 2.4 (64-32-32-10 against 64-16-16-10)
PROBE_QUICK_SECONDS = 35.0
PROBE_FULL_FACTOR = (40_000 / 12_000) * (3402 / 1450)


def projected_cost(scale: str = "full", workers: int = 2) -> dict[str, Any]:
    """Projected wall time of ``reproduce`` at ``scale`` from the cell-cost model, calibrated on
    the measured quick reproduction (:data:`MODEL_CALIBRATION`).

    Returns
    -------
    dict
        ``sweeps``: per sweep its cells, the claims that read it, core-seconds and its longest
        cell (s); ``probe_seconds``; ``total_core_seconds``; ``wall_seconds`` (core-seconds /
        workers, at least the longest cell, plus claim 8); ``workers``.
    """
    from sgdfluct.experiments.sweep import SECONDS_PER_COST, cell_cost, cells

    if scale not in SCALES:
        raise ConfigError(f"scale = {scale!r} is not allowed: expected one of {SCALES}")
    if workers < 1:
        raise ConfigError(f"workers = {workers!r} is out of range: expected an integer >= 1")
    registry = _claims.REGISTRY
    rows: dict[str, dict[str, Any]] = {}
    for name, sweep in registry.sweep_defs(scale).items():
        costs = [
            cell_cost(c.config) * SECONDS_PER_COST * MODEL_CALIBRATION for c in cells(_spec(sweep))
        ]
        rows[name] = {
            "cells": len(costs),
            "claims": [c.id for c in registry.claims if c.sweep == name],
            "core_seconds": float(sum(costs)),
            "longest_cell_seconds": float(max(costs)),
        }
    core = sum(r["core_seconds"] for r in rows.values())
    longest = max(r["longest_cell_seconds"] for r in rows.values())
    probe = PROBE_QUICK_SECONDS * (PROBE_FULL_FACTOR if scale == "full" else 1.0)
    return {
        "sweeps": rows,
        "probe_seconds": probe,
        "total_core_seconds": core,
        "wall_seconds": max(core / workers, longest) + probe,
        "workers": workers,
    }
