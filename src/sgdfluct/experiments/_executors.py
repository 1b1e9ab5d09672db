"""Execution back-ends of :func:`sgdfluct.experiments.sweep.run_sweep`: local processes and Dask.

Both take the tasks still to compute, ``(cell, sweep folder)`` pairs in the order they should
start (:func:`~sgdfluct.experiments.sweep.schedule`: longest first; the tasks may belong to several
sweeps), and return ``{(sweep folder, cell_id): error message}`` for the cells that failed; a cell
is done when :func:`~sgdfluct.experiments.sweep.run_cell` has renamed its folder into place.
``KeyboardInterrupt`` propagates after the outstanding work is cancelled.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from sgdfluct.config import ConfigError
from sgdfluct.errors import install_hint

if TYPE_CHECKING:
    from sgdfluct.experiments.sweep import Cell, CellFn

__all__ = ["Task", "run_dask", "run_local"]

Task: TypeAlias = tuple["Cell", Path]
"""One cell to compute and the (absolute) folder of its sweep."""

_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
_KILLED = "its worker process died (killed or crashed)"
_CONNECT_TIMEOUT_S = 30.0  # seconds to wait for a Dask scheduler before giving up


#: seconds between the worker watchdog's checks that the sweep's main process is alive
_WATCHDOG_PERIOD_S = 0.5
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with(parent_pid: int) -> None:
    """Make this worker die when the sweep's main process dies, even by SIGKILL.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` fires when the process that forked us exits
    (the forkserver, which itself exits when the main process is gone). Everywhere: a daemon
    thread polls the main process and kills this worker once it has disappeared or we were
    re-parented, so no orphan keeps computing or writing.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import ctypes.util

            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl
            pass
    first_parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(_WATCHDOG_PERIOD_S)
            try:
                os.kill(parent_pid, 0)
                alive = os.getppid() == first_parent
            except ProcessLookupError:
                alive = False
            except PermissionError:  # pragma: no cover - pid reused by another user
                alive = False
            if not alive:
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="sgdfluct-parent-watchdog", daemon=True).start()


def _init_worker(threads: int, parent_pid: int | None = None) -> None:
    """Worker start-up: die with the parent; leave Ctrl-C to it; cap BLAS/OpenMP/numba threads."""
    if parent_pid is not None:
        _die_with(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in _THREAD_ENV:
        os.environ.setdefault(name, str(threads))
    try:  # numpy's BLAS is already loaded here; threadpoolctl (if present) caps it at run time
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # pragma: no cover - optional
        pass


def _mp_context() -> Any:
    """forkserver where available, spawn elsewhere; cell functions must be picklable and importable.

    The forkserver preloads the package once, so workers start fast (the preload list is
    process-wide; it only takes effect when the server starts).
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["sgdfluct.experiments.sweep", "sgdfluct.networks"])
    return context


def _stop_workers(executor: ProcessPoolExecutor) -> None:
    """Terminate the worker processes we started (cells in flight are lost, finished ones stay)."""
    processes = getattr(executor, "_processes", None) or {}
    for process in list(processes.values()):
        if process.is_alive():
            process.terminate()
    executor.shutdown(wait=True, cancel_futures=True)


def run_local(
    cell_fn: CellFn,
    todo: Sequence[Task],
    workers: int,
    retries: int,
    on_done: Callable[[int], Any],
) -> dict[tuple[Path, str], str]:
    """Run cells on a local process pool in the order given (the pool takes its tasks first in,
    first out); restart it up to ``retries`` times if a worker dies."""
    from sgdfluct.experiments.sweep import run_cell

    # one BLAS/OpenMP thread per worker, whatever the number of workers: results are then
    # bit-identical for any ``workers`` (and match Dask workers, whose nannies also pin 1 thread)
    threads = 1
    failures: dict[tuple[Path, str], str] = {}
    pending = list(todo)
    attempt = 0
    while pending:
        executor = ProcessPoolExecutor(
            max_workers=min(workers, len(pending)),
            mp_context=_mp_context(),
            initializer=_init_worker,
            initargs=(threads, os.getpid()),
        )
        lost: list[Task] = []
        try:
            futures: dict[Future[str], Task] = {
                executor.submit(run_cell, cell_fn, *task): task for task in pending
            }
            remaining = set(futures)
            while remaining:
                done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for future in done:
                    cell, out_dir = task = futures[future]
                    key = (out_dir, cell.cell_id)
                    try:
                        future.result()
                    except BrokenProcessPool:
                        if (out_dir / "cells" / cell.cell_id).is_dir():
                            on_done(1)  # finished just before the pool broke
                        else:
                            lost.append(task)
                            failures[key] = _KILLED
                    except Exception as exc:
                        failures[key] = f"{type(exc).__name__}: {exc}"
                    else:
                        failures.pop(key, None)
                        on_done(1)
        except BaseException:
            _stop_workers(executor)
            raise
        executor.shutdown(wait=True)
        if not lost or attempt >= retries:
            break
        attempt += 1
        pending = lost
    return failures


def run_dask(
    cell_fn: CellFn,
    todo: Sequence[Task],
    scheduler: Any,
    retries: int,
    on_done: Callable[[int], Any],
) -> dict[tuple[Path, str], str]:
    """Run cells on a Dask cluster (address string or ``distributed.Client``).

    The sweep folders must be on a file system the workers share with this process. The order of
    ``todo`` is passed on as Dask task priorities (the first task has the highest).
    """
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise ConfigError(
            f"--scheduler needs the optional Dask extra: install it {install_hint('dask')}"
        ) from exc
    from sgdfluct.experiments.sweep import run_cell

    own_client = isinstance(scheduler, str)
    if own_client:
        try:
            client = Client(scheduler, set_as_default=False, timeout=_CONNECT_TIMEOUT_S)
        except OSError as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from exc
    elif isinstance(scheduler, Client):
        client = scheduler
    else:
        raise ConfigError(
            f"scheduler = {scheduler!r}: expected an address 'tcp://host:port' or a Client"
        )
    failures: dict[tuple[Path, str], str] = {}
    futures: list[Any] = []
    try:
        task = functools.partial(run_cell, cell_fn)
        futures = [
            client.submit(task, cell, out_dir, pure=False, retries=retries, priority=-rank)
            for rank, (cell, out_dir) in enumerate(todo)
        ]
        by_key = {
            f.key: (out_dir, cell.cell_id) for f, (cell, out_dir) in zip(futures, todo, strict=True)
        }
        for future in as_completed(futures, loop=client.loop):
            if future.status == "finished":
                on_done(1)
            else:
                error = future.exception()
                failures[by_key[future.key]] = f"{type(error).__name__}: {error}"
    except BaseException:
        if futures:
            client.cancel(futures)
        raise
    finally:
        if own_client:
            client.close()
    return failures
