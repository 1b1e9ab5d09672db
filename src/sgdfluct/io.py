"""Output files and folders that can be neither mixed nor lost.

Files are written atomically: to a temporary file in the same folder, then ``os.replace``, so a
reader (or a resumed sweep) sees either the old file or the complete new one, never a partial one.

Folders are *claimed* (:func:`claim_output_dir`): a lock keeps a second process out, a folder that
holds something else is refused (an earlier run only with ``overwrite=True``), the work happens in
a temporary folder next to the target, and the finished folder replaces the target in one rename.
A run killed at any point therefore leaves either the old folder untouched or the new one
complete; its temporary folder is removed by the next claim of the same target.

Every file and folder gets the user's umask (``tempfile`` creates them private, 0600 / 0700), so
colleagues sharing a results folder can read them.

Test hook: with ``SGDFLUCT_TEST_PAUSE_WRITES=<seconds>`` in the environment, every write step
(each atomic file and the final rename of a claimed folder) sleeps that long first, and
``SGDFLUCT_TEST_PAUSE_MARKER=<file>`` gets one line per step; fault-injection tests kill the
process in these windows.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import ctypes.util
import dataclasses
import errno
import fcntl
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sgdfluct.errors import OutputError

__all__ = [
    "MARKER",
    "apply_umask",
    "atomic_path",
    "atomic_save_figure",
    "atomic_write_dataset",
    "atomic_write_json",
    "atomic_write_text",
    "check_free_space",
    "check_writable_file",
    "checkpoint_interval",
    "claim_output_dir",
    "dataset_bytes_estimate",
    "discard_damaged",
    "folder_lock",
    "load_stage",
    "output_kind",
    "prepare_output_dir",
    "require_finite",
    "resumable",
    "resume_dir",
    "save_stage",
    "to_jsonable",
    "umask",
    "warn_damaged",
]

#: file marking a folder as an sgdfluct output: ``{"kind": "run" | "sweep" | ..., "version"}``
MARKER = ".sgdfluct-output.json"
#: files whose presence marks a folder as an sgdfluct output written before the marker existed
_LEGACY_SIGNS = {
    "run": ("summary.json", "config.toml", "result.nc"),
    "sweep": ("cells.json", "sweep.nc"),
    "reproduce": ("claims.json", "report.md", "report.html", "sweeps"),
}
PAUSE_ENV = "SGDFLUCT_TEST_PAUSE_WRITES"
PAUSE_MARKER_ENV = "SGDFLUCT_TEST_PAUSE_MARKER"
#: errors of the storage, not of the program: reported as OutputError naming the path
_STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
)
_TMP_TAG = ".tmp-"
_OLD_TAG = ".old-"


# --------------------------------------------------------------------------------------------------
# permissions, test hook
# --------------------------------------------------------------------------------------------------


def umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        pass
    mask = os.umask(0o022)  # pragma: no cover
    os.umask(mask)  # pragma: no cover
    return mask  # pragma: no cover


def apply_umask(path: Path, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have (0666/0777 minus the umask)."""
    with contextlib.suppress(OSError):
        os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def _pause(step: str) -> None:
    """Fault-injection hook (see the module docstring); a no-op unless the variable is set."""
    seconds = os.environ.get(PAUSE_ENV)
    if not seconds:
        return
    marker = os.environ.get(PAUSE_MARKER_ENV)
    if marker:
        with open(marker, "a") as fh:
            fh.write(f"{os.getpid()} {step}\n")
    time.sleep(float(seconds))


# --------------------------------------------------------------------------------------------------
# atomic files
# --------------------------------------------------------------------------------------------------


def _output_error(path: Path, exc: OSError, doing: str) -> OutputError:
    reason = exc.strerror or str(exc)
    return OutputError(f"cannot {doing} {str(path)!r}: {reason}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    Raises
    ------
    OutputError
        If the folder cannot be created or written (the message names the path).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _output_error(path, exc, "write") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        apply_umask(tmp_path)
        _pause(f"write {path.name}")
        os.replace(tmp_path, path)
    except OutputError:
        raise
    except OSError as exc:  # disk full, quota, read-only file system, ...
        if exc.errno not in _STORAGE_ERRNOS:
            raise
        error = _output_error(path, exc, "write")
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            error = _no_space(f"{error}; free some space, then re-run the same command")
        raise error from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays (recursively) to plain Python; non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        value = float(obj)
        return value if np.isfinite(value) else None
    return obj


def _non_finite(obj: Any, prefix: str = "") -> list[str]:
    """Dotted keys of the non-finite numbers in a nested mapping/list (None is not a number)."""
    if isinstance(obj, dict):
        return [k for key, v in obj.items() for k in _non_finite(v, f"{prefix}{key}.")]
    if isinstance(obj, list | tuple):
        return [k for i, v in enumerate(obj) for k in _non_finite(v, f"{prefix}{i}.")]
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "fc":
        return [] if np.isfinite(obj).all() else [prefix.rstrip(".")]
    if isinstance(obj, float | np.floating) and not np.isfinite(obj):
        return [prefix.rstrip(".")]
    return []


def require_finite(summary: Any, what: str = "the run") -> None:
    """Refuse to report non-finite metrics (JSON would turn them into ``null`` silently).

    Raises
    ------
    MeasurementError
        Naming the metrics that are NaN or infinite.
    """
    from sgdfluct.errors import MeasurementError

    bad = _non_finite(summary)
    if bad:
        shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        raise MeasurementError(
            f"{what} produced non-finite metrics ({shown}): the numbers overflow or are "
            "undefined for this config (e.g. a huge data.label_noise); nothing was written. "
            "Rescale the problem (smaller data.label_noise or inputs) and run again"
        )


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (numpy values converted, NaN/inf -> null)."""
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


#: free space asked for on top of a netCDF file's array bytes: HDF5 metadata and chunk
#: indices (measured: a 25 kB result.nc of a tiny run holds 9 kB of arrays), the figures and
#: summary written after it (a run's figures: ~0.3 MB)
DISK_MARGIN_BYTES = 2 * 1024**2
#: relative margin on the array bytes
DISK_MARGIN_FACTOR = 1.25
#: HDF5 metadata per variable (bytes)
DISK_BYTES_PER_VARIABLE = 8 * 1024
#: netCDF files up to this size are serialized in memory and written with plain file writes,
#: so a full disk is an ordinary ``OSError`` (h5py writing to a full disk can crash the process)
IN_MEMORY_NETCDF_BYTES = 512 * 1024**2


def dataset_bytes_estimate(dataset: Any) -> int:
    """Bytes a netCDF file of ``dataset`` needs: its arrays and attributes with the margins
    :data:`DISK_MARGIN_FACTOR`, :data:`DISK_BYTES_PER_VARIABLE` and :data:`DISK_MARGIN_BYTES`."""
    variables = {**dataset.coords, **dataset.data_vars}
    arrays = sum(int(v.nbytes) for v in variables.values())
    attrs = sum(len(str(v)) for v in dataset.attrs.values()) + sum(
        len(str(a)) for v in variables.values() for a in v.attrs.values()
    )
    return int(
        DISK_MARGIN_FACTOR * (arrays + attrs)
        + DISK_BYTES_PER_VARIABLE * len(variables)
        + DISK_MARGIN_BYTES
    )


def check_free_space(folder: str | Path, needed: int, what: str) -> None:
    """Refuse, before writing, when ``folder`` has fewer than ``needed`` bytes free.

    Raises
    ------
    OutputError
        Naming the folder, the bytes needed and the bytes free (exit 2). The run's checkpoints
        are kept (:func:`resumable`): once space is freed, the same command resumes.
    """
    folder = Path(folder)
    try:
        free = int(shutil.disk_usage(folder).free)
    except OSError:
        return  # cannot tell: the write itself reports a full disk
    shown = folder
    if folder.name.startswith(".") and _TMP_TAG in folder.name:  # a claimed folder's temporary
        shown = folder.parent / folder.name[1 : folder.name.index(_TMP_TAG)]
    if free < needed:
        raise _no_space(
            f"not enough free space in {str(shown)!r} to write {what}: {needed} bytes needed "
            f"(an estimate from the array sizes, with margin), {free} bytes free; free some "
            "space or choose another output folder, then re-run the same command"
        )


def _no_space(message: str) -> OutputError:
    """An :class:`OutputError` for a full disk: :func:`resumable` keeps the checkpoints."""
    error = OutputError(message)
    error.keep_checkpoints = True  # type: ignore[attr-defined]
    return error


def _local_write_lock() -> contextlib.AbstractContextManager[Any]:
    """Inside a Dask worker, xarray locks an in-memory netCDF write with a ``distributed.Lock``
    named after the ``BytesIO`` object, which the scheduler rejects ("Semaphore or Lock ... not
    known"): every cell of ``sweep --scheduler`` failed. The write is local to this process, so
    the local (synchronous-scheduler) lock is the right one."""
    if "distributed" not in sys.modules:
        return contextlib.nullcontext()
    import dask

    return dask.config.set(scheduler="synchronous")


def atomic_write_dataset(path: str | Path, dataset: Any) -> None:
    """Write an ``xarray.Dataset`` to netCDF (h5netcdf engine) atomically.

    The free space is checked first (:func:`check_free_space` with
    :func:`dataset_bytes_estimate`). Files up to :data:`IN_MEMORY_NETCDF_BYTES` are serialized
    in memory and written with plain file writes; any error of the netCDF library on a larger
    file becomes an :class:`OutputError` naming the path (never a crash on a full disk).
    """
    path = Path(path)
    estimate = dataset_bytes_estimate(dataset)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
    check_free_space(path.parent, estimate, path.name)
    with atomic_path(path) as tmp:
        if estimate <= IN_MEMORY_NETCDF_BYTES:
            with _local_write_lock():
                data = dataset.to_netcdf(engine="h5netcdf")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        else:  # streamed through a Python file object: the OS errors surface in Python
            try:
                dataset.to_netcdf(tmp, engine="h5netcdf")
            except Exception as exc:
                _close_hdf5_files()  # else HDF5 retries the failed flush at exit and crashes
                reason = " ".join(str(exc).split())[:300]
                message = f"cannot write {str(path)!r}: {reason}"
                try:
                    full = shutil.disk_usage(path.parent).free < estimate
                except OSError:
                    full = False
                raise (_no_space(message) if full else OutputError(message)) from None


def _close_hdf5_files() -> None:
    """After a failed netCDF write: mark the h5netcdf files left open as closed (their
    finalizer would flush into the failed HDF5 file and crash the interpreter, SIGSEGV) and close
    the HDF5 files h5py still holds (errors ignored)."""
    import gc

    try:
        import h5netcdf
        import h5py
    except ImportError:  # pragma: no cover - the h5netcdf engine needs both
        return
    for obj in gc.get_objects():
        if isinstance(obj, h5netcdf.File) and not getattr(obj, "_closed", True):
            obj._closed = True  # skip the flush of __del__
    for fid in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        with contextlib.suppress(Exception):
            while fid.valid:
                fid.close()


def atomic_save_figure(figure: Any, path: str | Path, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically (format from the suffix of ``path``)."""
    path = Path(path)
    kwargs.setdefault("dpi", 120)
    kwargs.setdefault("bbox_inches", "tight")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs)


def check_writable_file(path: str | Path) -> None:
    """Check, before computing, that ``path`` can be written (creates its folder).

    Raises
    ------
    OutputError
        If the path is a folder, or its folder cannot be created or written.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output file {str(path)!r} is a folder: expected a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=path.parent)
    except OSError as exc:
        raise _output_error(path, exc, "write") from None
    os.close(fd)
    os.unlink(tmp)


# --------------------------------------------------------------------------------------------------
# folders: lock, recognize, claim
# --------------------------------------------------------------------------------------------------


def _resolve(out_dir: str | Path) -> Path:
    out = Path(out_dir).expanduser()
    out = Path(os.path.abspath(out))
    if out.parent == out:
        raise OutputError(f"output folder {str(out)!r} is a file system root: give a sub-folder")
    return out


@contextlib.contextmanager
def folder_lock(out_dir: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on the output folder ``out_dir`` (which need not exist yet).

    The lock is ``.<name>.lock`` beside the folder (an ``flock``, released by the kernel if the
    process dies), so the folder itself can be replaced by a rename while it is held. Yields the
    absolute folder path.

    Raises
    ------
    OutputError
        If another process holds the lock, or the parent folder cannot be created or written.
    """
    out = _resolve(out_dir)
    lock_path = out.parent / f".{out.name}.lock"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _output_error(out.parent, exc, "create the folder") from None
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise _output_error(out, exc, "write into the folder of") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise OutputError(
                    f"output folder {str(out)!r} is being written by another sgdfluct process "
                    f"(lock {str(lock_path)!r}): wait for it to finish or use another --out folder"
                ) from None
            raise _output_error(lock_path, exc, "lock") from None
        # the holder before us may have removed the file after unlocking: lock the live file
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield out
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)


def output_kind(folder: str | Path) -> str | None:
    """What an existing folder holds: ``"empty"``, an sgdfluct output kind (``"run"``,
    ``"sweep"``, ``"reproduce"``, ``"probe"``), ``"other"`` (files sgdfluct did not write), or
    None if it does not exist.

    Raises
    ------
    OutputError
        If the path exists but is not a folder, or cannot be listed.
    """
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return None
    if not folder.is_dir():
        raise OutputError(f"output folder {str(folder)!r} is a file: expected a folder")
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError as exc:
        raise _output_error(folder, exc, "read the folder") from None
    if not names:
        return "empty"
    if MARKER in names:
        try:
            kind = json.loads((folder / MARKER).read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        if isinstance(kind, str):
            return kind
    for kind, signs in _LEGACY_SIGNS.items():
        if any(s in names for s in signs):
            return kind
    return "other"


def _write_marker(folder: Path, kind: str) -> None:
    from sgdfluct._version import __version__

    atomic_write_json(folder / MARKER, {"kind": kind, "version": __version__, "pid": os.getpid()})


def _refuse(out: Path, kind: str, held: str | None, overwrite: bool) -> None:
    """Raise unless ``out`` (holding ``held``) may be written as a ``kind`` output."""
    if held in (None, "empty"):
        return
    if held == "other":
        raise OutputError(
            f"output folder {str(out)!r} holds files that sgdfluct did not write: refusing to "
            "touch them (also with --overwrite); give an empty or new --out folder"
        )
    cwd = Path.cwd().resolve()
    if overwrite and (cwd == out.resolve() or out.resolve() in cwd.parents):
        raise OutputError(
            f"output folder {str(out)!r} is the current folder or contains it: cannot replace it"
        )
    if not overwrite:
        what = f"an earlier {held}" if held == kind else f"the output of a {held}"
        raise OutputError(
            f"output folder {str(out)!r} already holds {what}: use --overwrite to replace it, "
            "or another --out folder"
        )


def _remove_stale(out: Path) -> None:
    """Remove temporary folders of earlier, killed claims of ``out`` (call with the lock held)."""
    for prefix in (f".{out.name}{_TMP_TAG}", f".{out.name}{_OLD_TAG}"):
        for entry in out.parent.glob(f"{_glob_escape(prefix)}*"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)


def _glob_escape(text: str) -> str:
    """``text`` with glob metacharacters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OutputError(f"cannot replace {str(b)!r}: {os.strerror(err)}")


def _commit(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` in place of ``out`` in one step."""
    _pause(f"commit {out.name}")
    try:
        if output_kind(out) in (None, "empty"):
            os.rename(tmp, out)  # replaces an empty folder atomically
            return
        if _exchange(tmp, out):
            shutil.rmtree(tmp, ignore_errors=True)  # now holds the old content
            return
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}{_OLD_TAG}", dir=out.parent))
        os.rename(out, old / "old")
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise _output_error(out, exc, "move the finished output into") from None


@contextlib.contextmanager
def claim_output_dir(
    out_dir: str | Path,
    *,
    kind: str = "run",
    overwrite: bool = False,
    resume_key: str | None = None,
) -> Iterator[Path]:
    """Claim ``out_dir`` for one output and yield a temporary folder to fill.

    On normal exit the temporary folder replaces ``out_dir`` in one rename; on an exception it
    is removed and ``out_dir`` is untouched. Everything that can be checked is checked before
    the caller computes anything: the lock, what the folder holds, writability.

    Parameters
    ----------
    out_dir : str or Path
        The final output folder.
    kind : str
        What is written (``"run"``, ``"probe"``): recorded in the folder's marker file.
    overwrite : bool
        Replace a folder holding an earlier sgdfluct output. A folder holding other files is
        refused regardless.
    resume_key : str, optional
        Identity of the computation (e.g. the resolved config). With it, checkpoints written
        meanwhile (:func:`resume_dir`, :func:`save_stage`) survive an interruption and are
        reused by the next claim with the same key.

    Raises
    ------
    OutputError
        Another process writes the folder; it holds another output (and not ``overwrite``) or
        foreign files; it or its parent cannot be written.
    """
    with folder_lock(out_dir) as out:
        _remove_stale(out)
        _refuse(out, kind, output_kind(out), overwrite)
        cwd = Path.cwd().resolve()
        if cwd == out.resolve() or out.resolve() in cwd.parents:
            raise OutputError(
                f"output folder {str(out)!r} is the current folder or contains it: the finished "
                "output replaces the folder, so give a sub-folder (e.g. --out results)"
            )
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{_TMP_TAG}", dir=out.parent))
        except OSError as exc:
            raise _output_error(out.parent, exc, "write into") from None
        checkpoints = (
            contextlib.nullcontext()
            if resume_key is None
            else resumable(out.parent / f".{out.name}{_RESUME_TAG}", f"{kind}\n{resume_key}")
        )
        try:
            with checkpoints:
                apply_umask(tmp, directory=True)
                _write_marker(tmp, kind)
                yield tmp
                _commit(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# checkpoints of a claimed run (resume after an interruption)
# --------------------------------------------------------------------------------------------------

_RESUME_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "sgdfluct_resume_dir", default=None
)
_RESUME_TAG = ".resume"
#: SHA-256 of the key of the computation owning :data:`_RESUME_DIR` (mixed into stage checksums)
_RESUME_KEY: contextvars.ContextVar[str] = contextvars.ContextVar("sgdfluct_resume_key", default="")


@contextlib.contextmanager
def resumable(folder: str | Path, key: str) -> Iterator[Path]:
    """Make ``folder`` the checkpoint folder (:func:`resume_dir`) of the computation inside.

    The folder is reused if it holds the checkpoints of the same ``key`` (and package version),
    emptied otherwise. It is kept when the computation is interrupted (KeyboardInterrupt,
    SystemExit, or a killed process), so that a re-run resumes, and removed when the block ends
    normally or with an error (an error would recur: the next run starts afresh). The caller
    must own the folder exclusively (a lock).
    """
    import hashlib

    from sgdfluct._version import __version__

    folder = _open_resume(Path(folder), key)
    token = _RESUME_DIR.set(folder)
    key_token = _RESUME_KEY.set(hashlib.sha256(f"{__version__}\n{key}".encode()).hexdigest())
    keep = True
    try:
        yield folder
        keep = False  # done: nothing to resume
    except (KeyboardInterrupt, SystemExit):
        raise  # interrupted: the checkpoints let the same command resume
    except OutputError as exc:
        keep = getattr(exc, "keep_checkpoints", False)  # a full disk: resume once freed
        raise
    except BaseException:
        keep = False
        raise
    finally:
        _RESUME_DIR.reset(token)
        _RESUME_KEY.reset(key_token)
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _key_text(key: str) -> str:
    """Content of a checkpoint folder's ``key`` file: the SHA-256 of the key, then the key."""
    import hashlib

    return f"{hashlib.sha256(key.encode()).hexdigest()}\n{key}"


def _open_resume(folder: Path, key: str) -> Path:
    """The checkpoint folder ``folder`` for ``key`` (emptied if it holds the checkpoints of
    another computation or version).

    The ``key`` file carries its own SHA-256: a damaged one (unreadable, truncated, flipped) is
    rewritten with a warning and the stages are kept, since each stage's checksum covers the
    key too (:func:`load_stage` discards one of another computation).
    """
    import hashlib

    from sgdfluct._version import __version__

    key = f"{__version__}\n{key}"
    key_file = folder / "key"
    try:
        stored: str | None = key_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        stored = None if not key_file.exists() else ""
    damaged = False
    if stored is not None and stored != _key_text(key):
        digest, _, text = stored.partition("\n")
        damaged = hashlib.sha256(text.encode()).hexdigest() != digest
    if stored is None or (stored != _key_text(key) and not damaged):
        shutil.rmtree(folder, ignore_errors=True)  # none yet, or another computation's
    elif damaged:
        warn_damaged(key_file, "checksum mismatch", "rewritten, the stages are checked one by one")
    if stored != _key_text(key):
        try:
            folder.mkdir(exist_ok=True)
            apply_umask(folder, directory=True)
            atomic_write_text(key_file, _key_text(key))
        except OSError as exc:
            raise _output_error(folder, exc, "create the checkpoint folder") from None
    return folder


def resume_dir() -> Path | None:
    """Checkpoint folder of the run being computed under :func:`claim_output_dir` (None outside
    one, or when the caller gave no ``resume_key``).

    It survives an interruption (Ctrl-C, SIGTERM, kill -9) and is handed to the next claim of the
    same output folder with the same key (config and version), so a re-run of the same command
    resumes; it is removed once the output is complete.
    """
    return _RESUME_DIR.get()


#: environment variable: seconds between engine checkpoints of a claimed run
CHECKPOINT_ENV = "SGDFLUCT_CHECKPOINT_SECONDS"
#: default seconds between engine checkpoints ("every few minutes" costs < 0.1 % of a run)
CHECKPOINT_SECONDS = 120.0


def checkpoint_interval() -> float:
    """Seconds between engine checkpoints of a claimed run: ``$SGDFLUCT_CHECKPOINT_SECONDS`` or
    :data:`CHECKPOINT_SECONDS` (0 saves after every chunk).

    Raises
    ------
    ConfigError
        If the variable is not a number >= 0.
    """
    from sgdfluct.errors import ConfigError

    text = os.environ.get(CHECKPOINT_ENV)
    if not text:
        return CHECKPOINT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and np.isfinite(value)):
        raise ConfigError(f"{CHECKPOINT_ENV} = {text!r}: expected a number of seconds >= 0")
    return value


#: name of the checksum entry of a stored stage (``.npz``): SHA-256 of every other entry
_STAGE_CHECKSUM = "__sha256__"


def _stage_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the stage's entries (names, dtypes, shapes and bytes, in name order) and of the
    key of the computation that owns the checkpoint folder."""
    import hashlib

    h = hashlib.sha256(_RESUME_KEY.get().encode())
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(repr((key, a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def warn_damaged(
    path: Path, reason: str, action: str = "discarded, that stage is recomputed"
) -> None:
    """One line on stderr: the checkpoint ``path`` is damaged (``reason``) and what is done."""
    reason = " ".join(reason.split())  # one line
    sys.stderr.write(f"warning: checkpoint {str(path)!r} is damaged ({reason}): {action}\n")
    sys.stderr.flush()


def discard_damaged(path: Path, reason: str) -> None:
    """Warn (:func:`warn_damaged`) and remove the damaged checkpoint ``path`` (only that file)."""
    warn_damaged(path, reason)
    with contextlib.suppress(OSError):
        path.unlink()


def save_stage(name: str, result: Any) -> None:
    """Store a finished stage (a dataclass of arrays and scalars) in the checkpoint folder.

    A no-op outside a resumable claim. Written atomically (``.npz``, no pickle) with the SHA-256
    of its entries, which :func:`load_stage` verifies.
    """
    folder = resume_dir()
    if folder is None:
        return
    arrays: dict[str, Any] = {}
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        if value is not None:
            arrays[f.name] = np.asarray(value)
    arrays[_STAGE_CHECKSUM] = np.asarray(_stage_digest(arrays))
    with atomic_path(folder / f"{name}.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def load_stage(name: str, cls: type) -> Any | None:
    """The stage ``name`` stored by :func:`save_stage` as a ``cls``, or None if there is none.

    A stage that cannot be read, or whose entries do not match their stored SHA-256 (truncated,
    zeroed or flipped bytes: what a power cut or a full disk leaves), is discarded with a
    one-line warning naming it (:func:`warn_damaged`) and None is returned: the caller
    recomputes that stage. Other stages are left alone.
    """
    folder = resume_dir()
    path = None if folder is None else folder / f"{name}.npz"
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as exc:
        discard_damaged(path, f"unreadable: {type(exc).__name__}: {exc}")
        return None
    stored = arrays.pop(_STAGE_CHECKSUM, None)
    if stored is None or stored.shape != () or str(stored) != _stage_digest(arrays):
        discard_damaged(path, "checksum mismatch: damaged, or of another computation")
        return None
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        array = arrays.get(f.name)
        values[f.name] = None if array is None else (array.item() if array.ndim == 0 else array)
    try:
        return cls(**values)
    except (ValueError, TypeError, KeyError):
        return None  # intact but of another layout (another version): recompute


def prepare_output_dir(out: Path, *, kind: str, overwrite: bool) -> None:
    """Make the locked folder ``out`` ready for an in-place, resumable output (sweep, reproduce).

    A new or empty folder is created and marked; one holding an earlier output of the same
    ``kind`` is kept (resume) or, with ``overwrite``, emptied; anything else is refused. Call it
    inside :func:`folder_lock`.

    Raises
    ------
    OutputError
        As :func:`claim_output_dir`.
    """
    held = output_kind(out)
    if held == kind and not overwrite:
        return
    _refuse(out, kind, held, overwrite)
    try:
        if held not in (None, "empty"):
            for entry in list(out.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise _output_error(out, exc, "write into") from None
    apply_umask(out, directory=True)
    _write_marker(out, kind)
