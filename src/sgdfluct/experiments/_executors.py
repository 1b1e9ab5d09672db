"""Execution back-ends of :func:`sgdfluct.experiments.sweep.run_sweep`: local processes and Dask.

Both take the tasks still to compute, ``(cell, sweep folder)`` pairs in the order they should
start (:func:`~sgdfluct.experiments.sweep.schedule`: longest first; the tasks may belong to several
sweeps), and return ``{(sweep folder, cell_id): error message}`` for the cells that failed; a cell
is done when :func:`~sgdfluct.experiments.sweep.run_cell` has renamed its folder into place.
``KeyboardInterrupt`` propagates after the outstanding work is cancelled.
"""

from __future__ import annotations

import contextlib
import functools
import logging
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

__all__ = [
    "SCHEDULER_TIMEOUT_S",
    "Task",
    "check_scheduler",
    "map_in_processes",
    "run_dask",
    "run_local",
]

Task: TypeAlias = tuple["Cell", Path]
"""One cell to compute and the (absolute) folder of its sweep."""

_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
_KILLED = "its worker process died (killed or crashed)"
#: seconds to connect to a Dask scheduler and complete its handshake (``--scheduler-timeout``)
SCHEDULER_TIMEOUT_S = 30.0
_CONNECT_TIMEOUT_S = SCHEDULER_TIMEOUT_S
#: schemes whose addresses need a port
_NETWORK_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")
_EXAMPLE = "e.g. tcp://host:8786"
#: seconds to wait for the client to close (the scheduler may be gone)
_CLOSE_TIMEOUT_S = 5.0
_LOST = (
    "the Dask scheduler at {address!r} went away (connection lost) before this cell finished; "
    "a re-run resumes the missing cells"
)


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


def _quiet_worker() -> None:
    """Initializer of pool workers: leave Ctrl-C to the parent (which stops them) and take
    SIGTERM's default action. A worker that inherited the command's SIGTERM -> KeyboardInterrupt
    handler (``cli._terminate_as_interrupt``) printed a traceback when the pool shut down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def map_in_processes(fn: Callable[[Any], Any], tasks: Sequence[Any], workers: int) -> list[Any]:
    """``[fn(t) for t in tasks]`` on ``workers`` forked processes (in this process for one).

    ``fn`` must be importable by name and the tasks picklable: the workers come from the
    forkserver (:func:`_mp_context`), never from a fork of this process, which may hold threads
    (JAX, torch, BLAS pools) that a fork would copy mid-flight. The pool is closed and joined
    after the last result; on an error or an interrupt it is terminated and the error
    propagates.
    """
    if workers <= 1 or len(tasks) <= 1:
        return [fn(t) for t in tasks]
    pool = _mp_context().Pool(workers, initializer=_quiet_worker)
    try:
        results = pool.map(fn, tasks, chunksize=1)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    return list(results)


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


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError(
            f"--scheduler needs the optional Dask extra: install it {install_hint('dask')}"
        ) from exc
    return distributed


#: the address schemes distributed registers itself (``distributed.comm.registry.backends``;
#: a test keeps the list equal); plug-ins add theirs as entry points
_DISTRIBUTED_SCHEMES = ("inproc", "tcp", "tls", "ucx", "ws", "wss")


def _schemes() -> list[str]:
    """distributed's address schemes, read without importing it (a malformed address is refused
    in well under a second)."""
    from importlib.metadata import entry_points

    plugins = [e.name for e in entry_points(group="distributed.comm.backends")]
    return sorted({*_DISTRIBUTED_SCHEMES, *plugins})


def check_scheduler_address(address: str) -> str:
    """The address ``address`` of a Dask scheduler, checked without touching the network.

    Raises
    ------
    ConfigError
        If it is empty, its scheme is not one of distributed's (``tcp``, ``tls``, ``ws``,
        ``wss``, ``ucx``, ``inproc``), or a network address lacks its host or port.
    """
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        _import_distributed()  # raises the ConfigError naming the extra
    text = address.strip()
    if not text:
        raise ConfigError(f"--scheduler = {address!r} is empty: expected an address, {_EXAMPLE}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text  # distributed's default scheme
    known = _schemes()
    if scheme not in known:
        raise ConfigError(
            f"--scheduler = {address!r}: unknown address scheme {scheme!r}; expected one of "
            f"distributed's: {', '.join(known)} ({_EXAMPLE})"
        )
    if scheme in _NETWORK_SCHEMES:
        host, colon, port = rest.rpartition(":")
        if not colon or not port.isdigit() or not host or not 0 < int(port) < 65536:
            raise ConfigError(
                f"--scheduler = {address!r}: expected HOST:PORT after {scheme}:// with a port "
                f"in [1, 65535] ({_EXAMPLE})"
            )
    return f"{scheme}://{rest}"


#: seconds a server gets to greet first (a Dask server sends its handshake on accept) before the
#: probe speaks, so that a server waiting for a request (HTTP) shows what it is
_GREETING_GRACE_S = 1.0


def _greeting_kind(data: bytes) -> str:
    """``"dask"`` if ``data`` starts like distributed's TCP framing (8-byte little-endian total
    length, then the frame count), else a description of the server."""
    if data.startswith(b"HTTP/"):
        return "an HTTP server"
    if len(data) >= 16:
        total = int.from_bytes(data[:8], "little")
        frames = int.from_bytes(data[8:16], "little")
        if 0 < frames <= 64 and 16 <= total < 2**24:
            return "dask"
    if data[:4].isascii() and data[:4].isalnum():
        banner = data.split(b"\n")[0][:40].decode("ascii", "replace").strip()
        return f"a server that greets with {banner!r}"
    return "a server that does not speak distributed's protocol"


async def _tcp_greeting(host: str, port: int, deadline: float) -> str:
    """Connect to ``host:port`` and classify its first bytes (:func:`_greeting_kind`)."""
    import asyncio

    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        try:
            grace = max(0.0, min(_GREETING_GRACE_S, deadline - loop.time()))
            data = await asyncio.wait_for(reader.read(64), grace)
        except TimeoutError:  # silent so far: ask as a request-driven (HTTP) server expects
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(64), max(0.0, deadline - loop.time()))
        if not data:
            return "a server that closed the connection without a word"
        return _greeting_kind(data)
    finally:
        writer.close()


async def _identify(address: str, timeout: float) -> dict[str, Any]:
    """Ask the server at ``address`` who it is (TCP: its greeting first, then distributed's
    handshake and an ``identity`` request), all within ``timeout`` seconds."""
    import asyncio

    from distributed.comm import connect

    deadline = asyncio.get_running_loop().time() + timeout
    scheme, _, rest = address.partition("://")
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        kind = await _tcp_greeting(host.strip("[]"), int(port), deadline)
        if kind != "dask":
            return {"type": None, "kind": kind}
    remaining = max(0.0, deadline - asyncio.get_running_loop().time())
    comm = await connect(address, timeout=remaining)
    try:
        await comm.write({"op": "identity", "reply": True})
        reply = await comm.read()
    finally:
        comm.abort()
    return reply if isinstance(reply, dict) else {"reply": reply}


def check_scheduler(address: str, timeout: float = SCHEDULER_TIMEOUT_S) -> str:
    """Check, before anything starts, that a Dask scheduler answers at ``address``.

    The address is checked first (:func:`check_scheduler_address`, no network); then the TCP
    connection, distributed's handshake and an ``identity`` request share one deadline of
    ``timeout`` seconds (a port that accepts but never answers fails after ``timeout``).

    Returns
    -------
    str
        The normalized address (with its scheme).

    Raises
    ------
    ConfigError
        A malformed address; nothing answers in time; the server is not a Dask scheduler (e.g.
        an HTTP server on that port), named as such.
    """
    import asyncio

    address = check_scheduler_address(address)
    if not (timeout > 0 and timeout < float("inf")):
        raise ConfigError(f"--scheduler-timeout = {timeout!r}: expected seconds > 0")
    try:
        reply = asyncio.run(asyncio.wait_for(_identify(address, timeout), timeout))
    except TimeoutError:
        raise ConfigError(
            f"no Dask scheduler answered at {address!r} within --scheduler-timeout = {timeout:g} "
            "s (connect and handshake): check the address and that the scheduler is running"
        ) from None
    except OSError as exc:
        reason = " ".join(str(exc).split())
        if "Timed out" in reason or "timed out" in reason:
            raise ConfigError(
                f"cannot reach a Dask scheduler at {address!r} within --scheduler-timeout = "
                f"{timeout:g} s: {reason}"
            ) from None
        raise ConfigError(f"cannot reach a Dask scheduler at {address!r}: {reason}") from None
    except (MemoryError, Exception) as exc:  # garbage where distributed's frames should be
        raise ConfigError(
            f"the server at {address!r} is not a Dask scheduler: it does not speak distributed's "
            f"protocol ({type(exc).__name__}); check the address and port"
        ) from None
    if "kind" in reply:
        raise ConfigError(
            f"the server at {address!r} is not a Dask scheduler: it is {reply['kind']}; check "
            "the address and port"
        )
    if reply.get("type") != "Scheduler":
        raise ConfigError(
            f"the server at {address!r} is not a Dask scheduler: it identifies as "
            f"{reply.get('type', 'unknown')!r}; give the scheduler's address"
        )
    return address


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
    _import_distributed()
    from distributed import Client, as_completed

    from sgdfluct.experiments.sweep import run_cell

    own_client = isinstance(scheduler, str)
    if own_client:
        scheduler = check_scheduler(scheduler)  # the library path gets the CLI's checks too
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
    # a lost scheduler is reported per cell (_LOST); the client's own reconnect tracebacks are not
    client_log = logging.getLogger("distributed.client")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
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
                continue
            error = None
            if future.status == "error":
                try:
                    error = future.exception()
                except Exception:  # the scheduler went away while asking
                    error = None
            failures[by_key[future.key]] = (
                f"{type(error).__name__}: {error}"
                if error is not None
                else _LOST.format(address=getattr(client.scheduler, "address", scheduler))
            )
    except BaseException:
        if futures:
            client.cancel(futures)
        raise
    finally:
        if own_client:
            with contextlib.suppress(Exception):  # a scheduler that went away: do not wait long
                client.close(timeout=_CLOSE_TIMEOUT_S)
        client_log.setLevel(level)
    return failures
