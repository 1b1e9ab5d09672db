"""Command line interface: a thin layer over the library (``sgdfluct --help``)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click

from sgdfluct._version import __version__
from sgdfluct.config import ConfigError

__all__ = ["main"]


def _show_progress(quiet: bool) -> bool:
    """Progress bars only on an interactive terminal and without ``--quiet``."""
    return not quiet and sys.stderr.isatty()


def _terminate_as_interrupt() -> None:
    """Treat SIGTERM like Ctrl-C: a terminated sweep stops its workers and keeps finished cells."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sgdfluct")
def main() -> None:
    """sgdfluct: weight fluctuations of (deep) linear networks under SGD.

    Simulate SGD, solve the stationary theory, test the inverse variance-flatness relation and
    reproduce arXiv 2311.14120.
    """


_quiet = click.option("--quiet", "-q", is_flag=True, help="No progress output.")
_workers = click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Local worker processes (default: number of cores).",
)


@main.command()
@click.argument(
    "config_path", metavar="CONFIG.toml", type=click.Path(dir_okay=False, path_type=Path)
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (config.toml, summary.json, result.nc, figures/).",
)
@_quiet
def run(config_path: Path, out_dir: Path, quiet: bool) -> None:
    """Run one experiment: simulation, theory, analysis and figures."""
    from sgdfluct.config import load_config
    from sgdfluct.runner import run_experiment

    try:
        config = load_config(config_path)
        summary = run_experiment(config, out_dir, progress=_show_progress(quiet))
    except ConfigError as exc:
        _fail(str(exc))
    except _science_errors() as exc:
        _fail(str(exc), code=3)
    if not quiet:
        click.echo(_headline(summary))
        click.echo(f"results written to {out_dir}")


@main.command()
@click.argument("sweep_path", metavar="SWEEP.toml", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (cells/<cell-id>/ and sweep.nc).",
)
@_workers
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Address of a running Dask scheduler, e.g. tcp://host:8786 (needs sgdfluct[dask]).",
)
@_quiet
def sweep(
    sweep_path: Path, out_dir: Path, workers: int | None, scheduler: str | None, quiet: bool
) -> None:
    """Run a grid of experiments; re-running resumes and computes only missing cells."""
    from sgdfluct.experiments.sweep import SweepIncomplete, load_sweep, run_sweep

    if workers is not None and scheduler is not None:
        _fail("--workers and --scheduler are exclusive: give one of them")
    _terminate_as_interrupt()
    try:
        spec = load_sweep(sweep_path)
        run_sweep(
            spec, out_dir, workers=workers, scheduler=scheduler, progress=_show_progress(quiet)
        )
    except ConfigError as exc:
        _fail(str(exc))
    except SweepIncomplete as exc:
        _fail(str(exc), code=130 if exc.interrupted else 1)
    except KeyboardInterrupt:
        _fail("interrupted; finished cells are kept, re-run the same command to resume", code=130)
    if not quiet:
        click.echo(f"sweep complete: {out_dir / 'sweep.nc'}")


@main.command()
@click.option(
    "--quick",
    "scale",
    flag_value="quick",
    default=True,
    help="Small sizes: about 6 minutes on 2 cores (default).",
)
@click.option("--full", "scale", flag_value="full", help="Publication scale (hours).")
@click.option(
    "--smoke",
    "scale",
    flag_value="smoke",
    hidden=True,
    help="Tiny sizes for the test suite (verdicts carry no weight).",
)
@_workers
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (report.html, report.md, claims.json, figures/).",
)
@click.option(
    "--only",
    multiple=True,
    metavar="CLAIM_ID",
    help="Run only these claims (repeatable); default: all.",
)
@_quiet
def reproduce(
    scale: str, out_dir: Path, workers: int | None, only: tuple[str, ...], quiet: bool
) -> None:
    """Test every claim of the paper (SPEC §10) and write a report with measured verdicts."""
    from sgdfluct.experiments.reproduce import reproduce as run_reproduction
    from sgdfluct.experiments.sweep import SweepIncomplete

    _terminate_as_interrupt()
    try:
        claims = run_reproduction(
            out_dir,
            scale=scale,
            only=list(only) or None,
            workers=workers,
            progress=_show_progress(quiet),
        )
    except ConfigError as exc:
        _fail(str(exc))
    except (KeyboardInterrupt, SweepIncomplete):
        _fail(
            "interrupted; finished cells are kept under OUT/sweeps/, re-run the same command "
            "to resume",
            code=130,
        )
    if not quiet:
        for claim in claims:
            click.echo(f"{claim.verdict:>12}  {claim.id}: {claim.statement}")
        click.echo(f"report: {out_dir / 'report.html'}")


@main.command()
@click.option("--quick", is_flag=True, help="Short benchmark (under 3 minutes).")
@click.option(
    "--out",
    "out_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON file for the results.",
)
@_quiet
def bench(quick: bool, out_file: Path, quiet: bool) -> None:
    """Measure the SGD engine against a naive PyTorch loop and the machine's GEMM peak."""
    from sgdfluct.bench import run_benchmarks
    from sgdfluct.io import atomic_write_json

    results = run_benchmarks(quick=quick, progress=_show_progress(quiet))
    atomic_write_json(out_file, results)
    if not quiet:
        for problem in results.get("problems", []):
            click.echo(_bench_line(problem))
        click.echo(f"written to {out_file}")


@main.command()
@click.argument(
    "config_path", metavar="CONFIG.toml", type=click.Path(dir_okay=False, path_type=Path)
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@_quiet
def probe(config_path: Path, out_dir: Path, quiet: bool) -> None:
    """Weight fluctuations, noise and the IVFR of a PyTorch model (SPEC §11; `probe` extra)."""
    try:
        from sgdfluct.probe import run_probe_config
    except ImportError as exc:
        _fail(
            f"sgdfluct probe needs the optional 'probe' extra (torch, scikit-learn): {exc}; "
            "install it with: pip install torch==2.13.0 'sgdfluct[probe]'"
        )
        return
    try:
        summary = run_probe_config(config_path, out_dir, progress=_show_progress(quiet))
    except ConfigError as exc:
        _fail(str(exc))
        return
    if not quiet:
        click.echo(f"probe complete: {out_dir} ({summary.get('headline', '')})")


def _bench_line(problem: dict[str, Any]) -> str:
    speed = problem.get("speedup")
    frac = problem.get("fraction_of_peak")
    speed_text = "n/a (torch missing)" if speed is None else f"{speed:.0f}x naive torch"
    frac_text = "n/a" if frac is None else f"{100 * frac:.1f} % of GEMM peak"
    return (
        f"{problem.get('name')}: {problem.get('engine_replica_steps_per_s', 0):.3g} "
        f"replica-steps/s, {speed_text}, {frac_text}"
    )


def _science_errors() -> tuple[type[BaseException], ...]:
    """Errors that carry an explanation for the user (divergence, instability)."""
    errors: list[type[BaseException]] = []
    try:
        from sgdfluct.simulate import DivergenceError

        errors.append(DivergenceError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from sgdfluct.theory.discrete import UnstableError

        errors.append(UnstableError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors) or (RuntimeError,)


def _headline(summary: dict[str, Any]) -> str:
    keys = [k for k in ("rel_error_discrete", "rel_error_continuum") if k in summary]
    parts = [f"{k} = {summary[k]:.3g}" for k in keys if isinstance(summary[k], int | float)]
    return "; ".join(parts) if parts else "run complete"


if __name__ == "__main__":  # pragma: no cover
    main()
