"""Where a reproduction cell spends its time: one representative cell per sweep of
``sgdfluct reproduce`` (issue 20, item 1).

Every sweep that the claims declare (``sgdfluct.experiments.claims.REGISTRY.sweep_defs``) is
expanded into its cells; the cell of median cost (``sweep.cell_cost``: the reproduction's own
ordering model) is run through the reproduction's cell function
(``runner.run_experiment_without_figures``) in this process, with one BLAS/numba thread like a
sweep worker. Wall time is split by wrapping the pipeline's stages (exclusive time: a stage
called inside another is counted once, in the inner one):

========== ==============================================================================
simulation ``runner._common._simulate``: the SGD engine (kernel, index streams, streaming stats)
gate       ``analysis.saturation.saturation_gate``
alignment  ``analysis.alignment.measure_layered_covariance`` (windows, Procrustes, pooling)
theories   ``theory.layered.layered_covariance``, ``theory.discrete.stationary_covariance``,
           ``theory.lyapunov.continuum_covariance``
bootstrap  ``landscape.fit_ivfr`` (the PCA fit and its window bootstrap)
calibrated ``landscape._calibrated_fit`` (the calibrated IVFR estimate)
ivfr_rest  the rest of ``runner._common._ivfr`` (directions, profiles, Spearman)
null_space ``runner._deep._null_space_block`` and ``networks.gradient_flow``
io         ``runner.present`` (``result.nc``, ``summary.json``, ``config.toml``)
other      everything else of the cell (data, Hessian, noise, spectra, summaries)
========== ==============================================================================

``analysis/kernel`` is (gate + alignment + theories + bootstrap + calibrated + ivfr_rest +
null_space) / simulation: the issue's target is <= 1 at depth >= 2.

Usage::

    nice -n 10 .venv/bin/python benchmarks/profile_cells.py                 # quick scale
    nice -n 10 .venv/bin/python benchmarks/profile_cells.py --full --max-cost 1e9
    nice -n 10 .venv/bin/python benchmarks/profile_cells.py --only two_layer_alpha --json p.json
    nice -n 10 .venv/bin/python benchmarks/profile_cells.py --compare HEAD   # before/after

``--compare REV`` profiles every cell twice in one run, alternating per sweep: with the package
of git revision ``REV`` (``git archive``, on ``PYTHONPATH``) and with the working tree, each in a
fresh process after an untimed warm-up on the sweep's smoke-scale cell (numba compilation and
imports are not counted), so both see the same load.

Timings are wall clock of one process: on a loaded machine compare ratios within one run.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: (category, module, attribute) of every wrapped stage
STAGES: tuple[tuple[str, str, str], ...] = (
    ("simulation", "sgdfluct.runner._deep", "_simulate"),
    ("simulation", "sgdfluct.runner._single", "_simulate"),
    ("gate", "sgdfluct.analysis.saturation", "saturation_gate"),
    ("alignment", "sgdfluct.analysis.alignment", "measure_layered_covariance"),
    ("theories", "sgdfluct.theory.layered", "layered_covariance"),
    ("theories", "sgdfluct.theory.discrete", "stationary_covariance"),
    ("theories", "sgdfluct.theory.lyapunov", "continuum_covariance"),
    ("bootstrap", "sgdfluct.landscape", "fit_ivfr"),
    ("calibrated", "sgdfluct.landscape", "_calibrated_fit"),
    ("ivfr_rest", "sgdfluct.runner._deep", "_ivfr"),
    ("ivfr_rest", "sgdfluct.runner._single", "_ivfr"),
    ("null_space", "sgdfluct.runner._deep", "_null_space_block"),
    ("null_space", "sgdfluct.networks", "gradient_flow"),
    ("io", "sgdfluct.runner", "present"),
)
CATEGORIES = (
    "simulation",
    "gate",
    "alignment",
    "theories",
    "bootstrap",
    "calibrated",
    "ivfr_rest",
    "null_space",
    "io",
    "other",
)
ANALYSIS = ("gate", "alignment", "theories", "bootstrap", "calibrated", "ivfr_rest", "null_space")


class Profiler:
    """Exclusive wall time per category of the wrapped stages."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = dict.fromkeys(CATEGORIES, 0.0)
        self._stack: list[list[float]] = []  # [start, time spent in nested stages]

    def wrap(self, category: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            frame = [time.perf_counter(), 0.0]
            self._stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stack.pop()
                elapsed = time.perf_counter() - frame[0]
                self.totals[category] += elapsed - frame[1]
                if self._stack:
                    self._stack[-1][1] += elapsed

        return timed

    def install(self) -> None:
        for category, module_name, attr in STAGES:
            module = importlib.import_module(module_name)
            setattr(module, attr, self.wrap(category, getattr(module, attr)))

    def reset(self) -> None:
        self.totals = dict.fromkeys(CATEGORIES, 0.0)


def representative_cell(sweep: Any, pick: str) -> tuple[Any, int]:
    """The cell of median (or max/min) cost of a sweep, and the sweep's number of cells."""
    from sgdfluct.experiments.reproduce import _spec
    from sgdfluct.experiments.sweep import cell_cost, cells

    all_cells = sorted(cells(_spec(sweep)), key=lambda c: cell_cost(c.config))
    index = {"min": 0, "median": len(all_cells) // 2, "max": len(all_cells) - 1}[pick]
    return all_cells[index], len(all_cells)


def _warm_up(sweep: Any, folder: Path) -> None:
    """Run the sweep's cheapest smoke-scale cell that computes (some are too short to measure)."""
    from sgdfluct.errors import SgdfluctError
    from sgdfluct.experiments.reproduce import _spec
    from sgdfluct.experiments.sweep import cell_cost, cells
    from sgdfluct.runner import run_experiment_without_figures

    for k, cell in enumerate(sorted(cells(_spec(sweep)), key=lambda c: cell_cost(c.config))):
        try:
            run_experiment_without_figures(cell.config, folder.with_name(f"{folder.name}-{k}"))
            return
        except SgdfluctError:
            continue


def profile(
    scale: str,
    only: list[str] | None,
    pick: str,
    max_cost: float | None,
    warmup: bool = False,
    quiet: bool = False,
) -> list[dict]:
    from sgdfluct.experiments.claims import REGISTRY
    from sgdfluct.experiments.sweep import cell_cost
    from sgdfluct.runner import run_experiment_without_figures

    prof = Profiler()
    prof.install()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="sgdfluct-profile-") as tmp:
        for name, sweep in REGISTRY.sweep_defs(scale).items():
            if only and name not in only:
                continue
            cell, n_cells = representative_cell(sweep, pick)
            cost = cell_cost(cell.config)
            if max_cost is not None and cost > max_cost:
                print(f"{name}: skipped (cell_cost {cost:.3g} > --max-cost)", flush=True)
                continue
            if warmup:  # untimed: numba compilation, imports, caches of the first cell
                _warm_up(REGISTRY.sweep_defs("smoke")[name], Path(tmp) / f"{name}-warmup")
            prof.reset()
            start = time.perf_counter()
            run_experiment_without_figures(cell.config, Path(tmp) / f"{name}-{scale}")
            total = time.perf_counter() - start
            times = dict(prof.totals)
            times["other"] = total - sum(v for k, v in times.items() if k != "other")
            analysis = sum(times[k] for k in ANALYSIS)
            c = cell.config
            row = {
                "sweep": name,
                "scale": scale,
                "cells": n_cells,
                "cell": cell.cell_id,
                "shape": "-".join(
                    str(n)
                    for n in [c.data.n_in, *([c.model.hidden] * (c.model.depth - 1)), c.data.n_out]
                ),
                "steps": c.sgd.steps,
                "replicas": c.sgd.replicas,
                "total": total,
                **times,
                "analysis": analysis,
                "analysis_over_kernel": analysis / times["simulation"]
                if times["simulation"] > 0
                else float("nan"),
            }
            rows.append(row)
            if not quiet:
                print(_format_row(row), flush=True)
    return rows


def _format_row(row: dict) -> str:
    cols = " | ".join(f"{row[k]:.2f}" for k in ("total", *CATEGORIES))
    return (
        f"| {row['sweep']} | {row['scale']} | {row['shape']} | {row['steps']} x {row['replicas']}"
        f" | {cols} | {row['analysis_over_kernel']:.2f} |"
    )


HEADER = (
    "| sweep | scale | shape | steps x replicas | total s | "
    + " | ".join(CATEGORIES)
    + " | analysis/kernel |\n|"
    + "---|" * (6 + len(CATEGORIES))
)


def compare(rev: str, args: argparse.Namespace) -> list[dict]:
    """Profile every sweep's cell with revision ``rev`` and with the working tree, alternating."""
    from sgdfluct.experiments.claims import REGISTRY

    repo = Path(__file__).resolve().parents[1]
    names = [n for n in REGISTRY.sweep_defs("quick") if not args.only or n in args.only]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="sgdfluct-compare-") as tmp:
        old = Path(tmp) / "old"
        old.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", rev, "src"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        for name in names:
            for label, src in (("before", old / "src"), ("after", repo / "src")):
                out = Path(tmp) / f"{name}-{label}.json"
                cmd = [sys.executable, __file__, "--only", name, "--pick", args.pick]
                cmd += ["--json", str(out), "--warmup", "--quiet"]
                cmd += ["--full"] if args.full else []
                cmd += ["--max-cost", str(args.max_cost)] if args.max_cost else []
                env = {**os.environ, "PYTHONPATH": str(src)}
                subprocess.run(cmd, check=True, env=env)
                for row in json.loads(out.read_text()):
                    row["code"] = f"{label} ({rev})" if label == "before" else "after (tree)"
                    rows.append(row)
                    print(_format_row(row) + f" {row['code']} |", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full scale instead of quick")
    parser.add_argument("--only", nargs="*", help="sweep names (default: every sweep)")
    parser.add_argument("--pick", choices=("median", "max", "min"), default="median")
    parser.add_argument("--max-cost", type=float, help="skip cells with a larger cell_cost")
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    parser.add_argument("--compare", metavar="REV", help="profile REV and the working tree")
    parser.add_argument("--warmup", action="store_true", help="untimed smoke-scale cell first")
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(name, "1")  # one thread, like a sweep worker (before numpy loads)
    if args.compare:
        print(
            HEADER.replace(" analysis/kernel |", " analysis/kernel | code |") + "---|", flush=True
        )
        rows = compare(args.compare, args)
    else:
        if not args.quiet:
            print(HEADER, flush=True)
        scale = "full" if args.full else "quick"
        rows = profile(
            scale, args.only, args.pick, args.max_cost, warmup=args.warmup, quiet=args.quiet
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
