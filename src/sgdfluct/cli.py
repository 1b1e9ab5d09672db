"""Command line interface: a thin layer over the library (``sgdfluct --help``).

Errors are mapped to exit codes in one place (:func:`_guarded`, using
:func:`sgdfluct.errors.exit_code`); what each exit status means is written once, in
:func:`sgdfluct.errors.exit_code_descriptions`, and printed by ``sgdfluct --help``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from sgdfluct._version import __version__
from sgdfluct.errors import (
    EXIT_INTERRUPTED,
    ConfigError,
    SgdfluctError,
    exit_code,
    exit_code_descriptions,
    install_hint,
)

__all__ = ["EXIT_INTERRUPTED", "main"]

F = TypeVar("F", bound=Callable[..., Any])


def _show_progress(quiet: bool) -> bool:
    """Progress bars of one run (``run``, ``probe``, ``bench``): only on an interactive terminal
    and without ``--quiet``."""
    return not quiet and sys.stderr.isatty()


def _cell_progress(quiet: bool) -> str:
    """Progress over cells and claims (``sweep``, ``reproduce``): a bar on a terminal, otherwise
    one log line per finished cell and at least every 60 s (:mod:`sgdfluct.progress`); nothing
    with ``--quiet``."""
    return "off" if quiet else "auto"


@contextlib.contextmanager
def _run_heartbeat(quiet: bool, desc: str) -> Any:
    """One command of a single computation (``run``, ``probe``) when output is not a terminal:
    a line when it starts, one at least every 60 s while it works, one when it ends
    (:mod:`sgdfluct.progress`); on a terminal the bars of the computation itself, nothing with
    ``--quiet``."""
    from sgdfluct.progress import Progress, progress_mode

    if progress_mode(_cell_progress(quiet)) != "log":
        yield
        return
    with Progress(total=1, desc=desc, mode="log", unit="run") as bar:
        yield
        bar.advance(desc)


def _terminate_as_interrupt() -> None:
    """Treat SIGTERM like Ctrl-C: a terminated command stops its workers and keeps finished work."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    if code == EXIT_INTERRUPTED:
        _exit_interrupted()
    sys.exit(code)


def _exit_interrupted() -> NoReturn:
    """Exit 130 at once: the clean-up (``finally`` blocks, stopped workers) has run.

    A KeyboardInterrupt raised inside a library's nested ``PyRun_*`` call marks the interpreter
    as interrupted even when it was caught, and CPython then ends the process with SIGINT
    (status -2) instead of the exit code (seen in about 1 of 8 interrupted runs started with
    ``python -m``); ``os._exit`` keeps the documented 130.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(EXIT_INTERRUPTED)


def _guarded(interrupted: str) -> Callable[[F], F]:
    """Run a command with the one error-to-exit-code mapping of the CLI.

    ``interrupted`` is the message printed on Ctrl-C / SIGTERM (exit 130).
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _terminate_as_interrupt()
            try:
                return fn(*args, **kwargs)
            except KeyboardInterrupt:
                # clean-up has run; a second signal must not turn the exit into a traceback
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                _fail(interrupted, code=EXIT_INTERRUPTED)
            except SgdfluctError as exc:
                _fail(str(exc), code=exit_code(exc))
            except MemoryError:
                _fail(
                    "out of memory: the run does not fit in this machine's memory; reduce "
                    "data.n_in, model.hidden, sgd.replicas or the number of --workers",
                    code=2,
                )

        return wrapper  # type: ignore[return-value]

    return decorate


def _main_help() -> str:
    """The group's help: what it does, then every exit status (from sgdfluct.errors)."""
    import textwrap

    lines = ["\b", "Exit codes:"]
    for code, text in exit_code_descriptions():
        wrapped = textwrap.wrap(
            text, width=72, initial_indent=f"  {code:<5}", subsequent_indent=" " * 7
        )
        lines.extend(wrapped)
    return (
        "sgdfluct: weight fluctuations of (deep) linear networks under SGD.\n\n"
        "Simulate SGD, solve the stationary theory, test the inverse variance-flatness relation "
        "and reproduce arXiv 2311.14120.\n\n" + "\n".join(lines)
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, help=_main_help())
@click.version_option(__version__, prog_name="sgdfluct")
def main() -> None:
    """sgdfluct: weight fluctuations of (deep) linear networks under SGD (help: _main_help)."""


_quiet = click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No progress output (otherwise: bars on a terminal; for sweep and reproduce, log lines "
    "with elapsed time and ETA when output is not a terminal).",
)
_workers = click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Local worker processes (default: number of cores).",
)
_overwrite = click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an earlier sgdfluct output in --out (refused otherwise; a folder holding "
    "other files is always refused).",
)


def _out_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--out",
        "out_dir",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help=help_text,
    )


_config_argument = click.argument(
    "config_path", metavar="CONFIG.toml", type=click.Path(dir_okay=False, path_type=Path)
)


@main.command()
@_config_argument
@_out_option("Output folder (config.toml, summary.json, result.nc, figures/).")
@_overwrite
@_quiet
@_guarded("interrupted; nothing was written to --out (re-run the same command to resume)")
def run(config_path: Path, out_dir: Path, overwrite: bool, quiet: bool) -> None:
    """Run one experiment: simulation, theory, analysis and figures.

    The output folder is claimed before anything is computed (a lock; a folder holding another
    output is refused unless --overwrite) and appears complete, in one rename, at the end.
    Interrupted (Ctrl-C, SIGTERM, a kill), the same command resumes from the last checkpoint
    (every 120 s, or $SGDFLUCT_CHECKPOINT_SECONDS) with the numbers of an uninterrupted run.
    """
    from sgdfluct.config import load_config
    from sgdfluct.runner import run_experiment

    config = load_config(config_path)
    with _run_heartbeat(quiet, "run"):
        summary = run_experiment(
            config, out_dir, progress=_show_progress(quiet), overwrite=overwrite
        )
    if not quiet:
        click.echo(_headline(summary))
        click.echo(f"results written to {out_dir}")


_scheduler = click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Address of a running Dask scheduler, e.g. tcp://host:8786 (needs sgdfluct[dask]); "
    "checked before anything starts.",
)
_scheduler_timeout = click.option(
    "--scheduler-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds to connect to the --scheduler and complete its handshake.",
)


def _checked_scheduler_address(workers: int | None, scheduler: str | None) -> str | None:
    """``--workers`` and ``--scheduler`` are exclusive; a malformed address is refused at once."""
    if workers is not None and scheduler is not None:
        raise ConfigError("--workers and --scheduler are exclusive: give one of them")
    if scheduler is None:
        return None
    from sgdfluct.experiments._executors import check_scheduler_address

    return check_scheduler_address(scheduler)


def _connect_scheduler(scheduler: str | None, timeout: float) -> None:
    """Connect to the scheduler and complete its handshake within one deadline (before any work)."""
    if scheduler is not None:
        from sgdfluct.experiments._executors import check_scheduler

        check_scheduler(scheduler, timeout)


@main.command()
@click.argument("sweep_path", metavar="SWEEP.toml", type=click.Path(dir_okay=False, path_type=Path))
@_out_option("Output folder (cells/<cell-id>/ and sweep.nc).")
@_workers
@_scheduler
@_scheduler_timeout
@_overwrite
@_quiet
@_guarded("interrupted; finished cells are kept, re-run the same command to resume")
def sweep(
    sweep_path: Path,
    out_dir: Path,
    workers: int | None,
    scheduler: str | None,
    scheduler_timeout: float,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Run a grid of experiments; re-running resumes and computes only missing cells."""
    scheduler = _checked_scheduler_address(workers, scheduler)
    from sgdfluct.experiments.sweep import SweepIncomplete, load_sweep, run_sweep

    spec = load_sweep(sweep_path)
    _connect_scheduler(scheduler, scheduler_timeout)
    try:
        run_sweep(
            spec,
            out_dir,
            workers=workers,
            scheduler=scheduler,
            progress=_cell_progress(quiet),
            overwrite=overwrite,
        )
    except SweepIncomplete as exc:
        # every failed cell failed on its output (a full disk, an unwritable folder): exit 2
        outputs = bool(exc.failures) and all(
            str(v).startswith("OutputError:") for v in exc.failures.values()
        )
        _fail(str(exc), code=EXIT_INTERRUPTED if exc.interrupted else 2 if outputs else 1)
    if not quiet:
        click.echo(f"sweep complete: {out_dir / 'sweep.nc'}")


_SCALES = ("quick", "full", "smoke")


@main.command()
@click.option(
    "--quick",
    is_flag=True,
    help="Small sizes (default). Measured on 2 cores: 282 s on a quiet machine (2026-12-02, "
    "load 1.2-2.0), 3078 s on a loaded one (load 5-7, issue 21).",
)
@click.option(
    "--full",
    is_flag=True,
    help="Confirmatory scale: fresh seeds, rules frozen first, longer simulations. Measured on 2 "
    "loaded cores: 3939 s (2026-12-02).",
)
@click.option(
    "--smoke",
    is_flag=True,
    hidden=True,
    help="Tiny sizes for the test suite (verdicts carry no weight).",
)
@_workers
@_scheduler
@_scheduler_timeout
@_out_option("Output folder (report.html, report.md, claims.json, figures/).")
@click.option(
    "--only",
    multiple=True,
    metavar="CLAIM_ID",
    help="Run only these claims (repeatable; an id or an id prefix); default: all.",
)
@_overwrite
@_quiet
@_guarded(
    "interrupted; finished cells are kept under OUT/sweeps/, re-run the same command to resume"
)
def reproduce(
    quick: bool,
    full: bool,
    smoke: bool,
    out_dir: Path,
    workers: int | None,
    scheduler: str | None,
    scheduler_timeout: float,
    only: tuple[str, ...],
    overwrite: bool,
    quiet: bool,
) -> None:
    """Test every claim of the paper (docs/theory.md §10); write a report with measured verdicts."""
    from sgdfluct.experiments.reproduce import claim_ids
    from sgdfluct.experiments.reproduce import reproduce as run_reproduction
    from sgdfluct.experiments.sweep import SweepIncomplete
    from sgdfluct.io import folder_lock, prepare_output_dir

    chosen = [name for name, flag in zip(_SCALES, (quick, full, smoke), strict=True) if flag]
    if len(chosen) > 1:
        raise ConfigError(
            f"{' and '.join('--' + c for c in chosen)} are exclusive: give at most one scale"
        )
    scale = chosen[0] if chosen else "quick"
    ids = claim_ids()
    unknown = [o for o in only if not any(i.startswith(o) for i in ids)]
    if unknown:
        raise ConfigError(
            f"--only {', '.join(repr(u) for u in unknown)} matches no claim id: expected ids "
            f"(or prefixes) among {ids}"
        )
    scheduler = _checked_scheduler_address(workers, scheduler)
    _connect_scheduler(scheduler, scheduler_timeout)
    with folder_lock(out_dir) as out:
        prepare_output_dir(out, kind="reproduce", overwrite=overwrite)
        try:
            claims = run_reproduction(
                out,
                scale=scale,
                only=list(only) or None,
                workers=workers,
                scheduler=scheduler,
                progress=_cell_progress(quiet),
            )
        except SweepIncomplete as exc:
            if exc.interrupted:
                raise KeyboardInterrupt from None
            _fail(str(exc), code=1)
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
@_guarded("interrupted; nothing was written")
def bench(quick: bool, out_file: Path, quiet: bool) -> None:
    """Measure the SGD engine against a naive PyTorch loop and the machine's GEMM peak."""
    from sgdfluct.bench import run_benchmarks
    from sgdfluct.io import atomic_write_json, check_writable_file

    check_writable_file(out_file)  # before minutes of measuring
    results = run_benchmarks(quick=quick, progress=_show_progress(quiet))
    atomic_write_json(out_file, results)
    if not quiet:
        for problem in results.get("problems", []):
            click.echo(_bench_line(problem))
        click.echo(f"written to {out_file}")


@main.command()
@_config_argument
@_out_option("Output folder (config.toml, summary.json, result.nc, figures/).")
@_overwrite
@_quiet
@_guarded("interrupted; nothing was written to --out (re-run the same command)")
def probe(config_path: Path, out_dir: Path, overwrite: bool, quiet: bool) -> None:
    """Fluctuations, noise and IVFR of a PyTorch model (docs/theory.md §11; `probe` extra)."""
    from sgdfluct.io import claim_output_dir

    try:
        from sgdfluct.probe import run_probe_config
    except ImportError as exc:
        raise ConfigError(
            f"sgdfluct probe needs the optional 'probe' extra (torch, scikit-learn): {exc}; "
            f"install it {install_hint('probe')}"
        ) from None
    with claim_output_dir(out_dir, kind="probe", overwrite=overwrite) as tmp:
        with _run_heartbeat(quiet, "probe"):
            summary = run_probe_config(config_path, tmp, progress=_show_progress(quiet))
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


def _headline(summary: dict[str, Any]) -> str:
    keys = [k for k in ("rel_error_discrete", "rel_error_continuum") if k in summary]
    parts = [f"{k} = {summary[k]:.3g}" for k in keys if isinstance(summary[k], int | float)]
    return "; ".join(parts) if parts else "run complete"


if __name__ == "__main__":  # pragma: no cover
    main()
