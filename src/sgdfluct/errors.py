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

Exit 0 is success, 1 failed sweep cells, an incomplete reproduction or a bug, 130 an interruption;
:func:`exit_code_descriptions` says it in words, once, for ``sgdfluct --help`` and the README.

The subclasses also derive from the built-in exception a caller would expect (``ValueError``,
``RuntimeError``, ``OSError``), so older ``except ValueError`` code keeps working.
"""

from __future__ import annotations

import re

__all__ = [
    "EXIT_CODES",
    "EXIT_INCOMPLETE",
    "EXIT_INTERRUPTED",
    "ConfigError",
    "DivergenceError",
    "MeasurementError",
    "OutputError",
    "SgdfluctError",
    "UnstableError",
    "exit_code",
    "exit_code_descriptions",
    "exit_codes_markdown",
    "install_hint",
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


#: exit status of failed sweep cells or an incomplete reproduction, and of anything raised outside
#: the family (a bug: Python prints the traceback and exits 1)
EXIT_INCOMPLETE = 1

#: exit status of a command stopped by Ctrl-C or SIGTERM (128 + SIGINT, the shell convention)
EXIT_INTERRUPTED = 130

#: what an exit status means, before the error classes mapped to it (exit_code_descriptions)
_EXIT_MEANINGS: dict[int, str] = {
    0: "success",
    EXIT_INCOMPLETE: (
        "failed sweep cells or an incomplete reproduction (the message names the missing cells; "
        "re-run the same command to compute only those), or a bug in sgdfluct (a traceback: "
        "please report it)"
    ),
    2: (
        "bad input, one message naming the key or path and what to change, never a traceback: a "
        "usage error of the command line, a run that does not fit in memory, a sweep whose "
        "failed cells all failed on their output (a full disk, an unwritable folder),"
    ),
    3: (
        "SGD unstable or diverged (the message states the learning rate, lambda_max(H) and the "
        "bound 2/lambda_max):"
    ),
    EXIT_INTERRUPTED: (
        "interrupted (Ctrl-C or SIGTERM): finished work is kept and nothing half-written is left; "
        "re-run the same command to resume"
    ),
}


def exit_code_descriptions() -> list[tuple[int, str]]:
    """Every exit status of the command line and its meaning, in increasing order.

    Generated from :data:`EXIT_CODES` (each error class that maps to a status is listed with the
    first line of its docstring), so the help text (``sgdfluct --help``) and the README, which a
    test compares with this list, say the same.

    Returns
    -------
    list of (int, str)
    """
    by_code: dict[int, list[str]] = {}
    for cls, code in EXIT_CODES.items():
        if cls is SgdfluctError:  # the base class: never raised on its own
            continue
        doc = (cls.__doc__ or "").strip().splitlines()[0].rstrip(".")
        doc = re.sub(r"\s*\([^()]*\)$", "", doc)  # a trailing aside: no nested parentheses
        first = doc.split()[0]
        if not (first.isupper() and len(first) > 1):  # "A run" -> "a run"; "SGD" stays
            doc = doc[0].lower() + doc[1:]
        by_code.setdefault(code, []).append(f"{cls.__name__} ({doc})")
    missing = set(by_code) - set(_EXIT_MEANINGS)
    if missing:  # a new exit status needs its words
        raise RuntimeError(f"exit codes {sorted(missing)} have no meaning in _EXIT_MEANINGS")
    out = []
    for code in sorted(_EXIT_MEANINGS):
        text = _EXIT_MEANINGS[code]
        if code in by_code:
            text = f"{text} {', '.join(by_code[code])}"
        out.append((code, text))
    return out


def exit_codes_markdown() -> str:
    """The README's list of exit codes (markdown bullets), from :func:`exit_code_descriptions`."""
    return "\n".join(f"- `{code}`: {text}" for code, text in exit_code_descriptions())


def install_hint(extra: str) -> str:
    """How to install an optional extra (sgdfluct is installed from its clone, not from PyPI;
    torch's CPU build first, so that pip never pulls a CUDA build)."""
    torch_first = (
        "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu, then "
        if extra in ("probe", "torch", "bench")
        else ""
    )
    return f"from the sgdfluct clone: {torch_first}pip install -e '.[{extra}]'"
