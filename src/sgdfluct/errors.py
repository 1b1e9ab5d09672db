"""The one error family of sgdfluct, and the exit code each member maps to.

Every mistake a user can make, and every run that cannot give a trustworthy number, raises a
subclass of :class:`SgdfluctError`; the command line maps them to exit codes in one place
(:data:`EXIT_CODES`, used by :mod:`sgdfluct.cli`) and prints the message, never a traceback.

====================  ====  ==========================================================
error                 exit  meaning
====================  ====  ==========================================================
``ConfigError``       2     a value is unknown, of the wrong type or out of range
``MeasurementError``  2     the run is too short or has too few records to measure
``OutputError``       2     an output path cannot be claimed, written or read
``UnstableError``     3     SGD is not mean-square stable (no stationary covariance)
``DivergenceError``   3     SGD diverged (non-finite or unbounded weights)
====================  ====  ==========================================================

The subclasses also derive from the built-in exception a caller would expect (``ValueError``,
``RuntimeError``, ``OSError``), so older ``except ValueError`` code keeps working.
"""

from __future__ import annotations

__all__ = [
    "EXIT_CODES",
    "ConfigError",
    "DivergenceError",
    "MeasurementError",
    "OutputError",
    "SgdfluctError",
    "UnstableError",
    "exit_code",
]


class SgdfluctError(Exception):
    """Base class of every error sgdfluct raises on purpose."""


class ConfigError(SgdfluctError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


class MeasurementError(SgdfluctError, ValueError):
    """A run is too short, or has too few records, for the measurement it was asked for."""


class OutputError(SgdfluctError, OSError):
    """An output path cannot be claimed, written or read (the message names the path)."""


class UnstableError(SgdfluctError, ValueError):
    """SGD is not mean-square stable: the stationary second moment does not exist."""


class DivergenceError(SgdfluctError, RuntimeError):
    """SGD left the basin: non-finite weights or unbounded growth."""


#: exit code of each error class (most specific first); anything else derived from
#: :class:`SgdfluctError` exits 2
EXIT_CODES: dict[type[SgdfluctError], int] = {
    UnstableError: 3,
    DivergenceError: 3,
    ConfigError: 2,
    MeasurementError: 2,
    OutputError: 2,
    SgdfluctError: 2,
}


def exit_code(error: BaseException) -> int:
    """Exit code of ``error`` (1 for anything outside the family: a bug, never a user mistake)."""
    for cls, code in EXIT_CODES.items():
        if isinstance(error, cls):
            return code
    return 1
