"""``sgdfluct reproduce``: run every claim's sweep, measure, decide, and write the report.

The claims and their sweeps are declared in :mod:`sgdfluct.experiments.claims`; this module only
drives them. The sweeps run together through :func:`~sgdfluct.experiments.sweep.run_sweeps` (one
pool of workers, longest cells first across all sweeps, each sweep in its own folder as
:func:`~sgdfluct.experiments.sweep.run_sweep` leaves it), so an interrupted reproduction resumes
where it stopped (finished cells under ``DIR/sweeps/<name>/cells/`` are kept).
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
from sgdfluct.io import atomic_save_figure, atomic_write_json
from sgdfluct.report import ClaimResult, config_hash, machine_info, write_report
from sgdfluct.runner import run_experiment_without_figures

__all__ = ["PROBE_CLAIM_ID", "claim_ids", "reproduce"]

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
    sweeps: Sequence[SweepDef], out: Path, workers: int | None, progress: bool
) -> dict[str, tuple[xr.Dataset | None, str]]:
    """Run the sweeps on one pool of workers (longest cells first, across sweeps); return each
    one's metrics and an error text (cells that failed: the finished ones are gathered)."""
    from sgdfluct.experiments.sweep import SweepIncomplete, collect_sweep, run_sweeps

    specs = [_spec(sweep) for sweep in sweeps]
    folders = [out / "sweeps" / sweep.name for sweep in sweeps]
    outcomes = run_sweeps(
        list(zip(specs, folders, strict=True)),
        workers=workers,
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


#: claim 8 (docs/theory.md §10.8, §11): the probe on a nonlinear network; not a sweep of `run`
PROBE_CLAIM_ID = "8_probe_ivfr"
PROBE_CLAIM_STATEMENT = (
    "IVFR in a nonlinear network on real data (digits MLP, two hidden layers): which layer "
    "carries it; does the linear network of the same shape on the same data show the same "
    "pattern; does the noise (T_i vs k_i) or the coupling explain it"
)
PROBE_CLAIM_EXPECTED = (
    "Feng & Tu: variance larger along sharper directions (psi > 0) in every layer; the linear "
    "theory attributes it to the inter-layer coupling"
)
#: seeds of claim 8 (the replication unit; the rule needs >= 5)
PROBE_CLAIM_SEEDS = 5


def claim_ids() -> list[str]:
    """Every claim id of the reproduction (the sweep claims, then claim 8)."""
    return [c.id for c in CLAIMS] + [PROBE_CLAIM_ID]


def _probe_claim(scale: str, out: Path, workers: int | None) -> ClaimResult:
    """Claim 8 through :func:`sgdfluct.probe.claims.measure_claim8`; the measurement is kept in
    ``out/probe/claim8.json`` so that a resumed reproduction does not repeat it."""
    try:
        from sgdfluct.probe import claims as probe_claims
    except ImportError as exc:  # the optional `probe` extra (torch, scikit-learn) is missing
        return ClaimResult(
            id=PROBE_CLAIM_ID,
            statement=PROBE_CLAIM_STATEMENT,
            expected=PROBE_CLAIM_EXPECTED,
            measured={"error": f"the probe extra is not installed ({exc})"},
            verdict="inconclusive",
            details="Install it with `pip install torch==2.13.0 'sgdfluct[probe]'`.",
        )
    cache = out / "probe" / "claim8.json"
    seeds = 2 if scale == "smoke" else PROBE_CLAIM_SEEDS
    key = {"version": __version__, "scale": scale, "seeds": seeds}
    result: dict[str, Any] | None = None
    if cache.exists():
        stored = json.loads(cache.read_text())
        if {k: stored.get(k) for k in key} == key:
            result = stored
    if result is None:
        measured_scale = "quick" if scale == "smoke" else scale
        result = {**probe_claims.measure_claim8(measured_scale, seeds, workers=workers), **key}
        atomic_write_json(cache, result)
    measured: dict[str, Any] = {}
    for net in ("mlp", "linear"):
        for layer, block in sorted(result[net]["layers"].items()):
            t = block["psi_sharp"]
            measured[f"psi {net} {layer}"] = (
                {"value": t["mean"], "ci": t["ci"]} if t["ci"] is not None else t["mean"]
            )
        measured[f"seeds on the plateau ({net})"] = result[net]["seeds_ok"]
    for layer, block in sorted(result["mlp"]["layers"].items()):
        t = block["spearman_T_k"]
        measured[f"Spearman(T, k) mlp {layer}"] = (
            {"value": t["mean"], "ci": t["ci"]} if t["ci"] is not None else t["mean"]
        )
    measured["carrying layers"] = ", ".join(result["carrying_layers"]) or "none"
    measured["pattern mlp / linear"] = (
        f"{' '.join(result['pattern_mlp'])} / {' '.join(result['pattern_linear'])}"
    )
    measured["explanation"] = result["explanation"]
    measured["seconds"] = result["seconds"]
    figures: list[Path] = []
    fig = _probe_figure(result)
    try:
        path = out / "figures" / f"{PROBE_CLAIM_ID}.png"
        atomic_save_figure(fig, path)
        figures.append(path)
    finally:
        fig.clear()
    return ClaimResult(
        id=PROBE_CLAIM_ID,
        statement=PROBE_CLAIM_STATEMENT,
        expected=PROBE_CLAIM_EXPECTED,
        measured=measured,
        verdict=result["verdict"],
        figures=tuple(figures),
        details=(
            "psi fitted on the sharp directions of each layer (curvature >= 1e-2 lambda_max, "
            "drift share < 0.5), t-interval over seeds (data subset, init and SGD seed); the "
            "linear network of the same shape on the same data is the control "
            "(`sgdfluct.probe.claims`)."
            + (" Smoke scale: 2 seeds, pipeline check only." if scale == "smoke" else "")
        ),
        rule=result["rule"],
        rule_history=tuple(result["rule_history"]),
    )


def _probe_figure(result: dict[str, Any]) -> Any:
    """psi per layer with its interval, the MLP beside its linear control."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for offset, net, color in ((-0.1, "mlp", "C0"), (0.1, "linear", "C1")):
        layers = sorted(result[net]["layers"])
        for i, layer in enumerate(layers):
            t = result[net]["layers"][layer]["psi_sharp"]
            if t["mean"] is None:
                continue
            lo, hi = t["ci"] if t["ci"] is not None else (t["mean"], t["mean"])
            ax.errorbar(
                i + 1 + offset,
                t["mean"],
                yerr=[[t["mean"] - lo], [hi - t["mean"]]],
                fmt="o",
                color=color,
                label=net if i == 0 else None,
            )
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel("psi (sharp directions), 95 % t-interval over seeds")
    ax.legend()
    return fig


def reproduce(
    out_dir: str | Path,
    *,
    scale: str = "quick",
    only: Sequence[str] | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> list[ClaimResult]:
    """Test every claim of docs/theory.md §10 and write ``report.html``, ``report.md``,
    ``claims.json``.

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
    with_probe = not only or any(PROBE_CLAIM_ID.startswith(o) for o in only)
    if not claims and not with_probe:
        raise ConfigError(f"--only {list(only or [])} matches no claim id: {claim_ids()}")
    defs = sweep_defs(scale)
    names = dict.fromkeys(c.sweep for c in claims)
    results = _run([defs[name] for name in names], out, workers, progress)
    claim_results = [
        _claim_result(c, *results[c.sweep], figures_dir=out / "figures") for c in claims
    ]
    if with_probe:
        claim_results.append(_probe_claim(scale, out, workers))
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
