"""Progress a person can see anywhere: bars on a terminal, log lines everywhere else.

A long command (``sgdfluct sweep``, ``sgdfluct reproduce``) reports its progress over finished
items (sweep cells, claims) in one of three modes:

* ``"bar"`` — a tqdm bar (an interactive terminal);
* ``"log"`` — one line per finished item, and a heartbeat line at least every
  :data:`HEARTBEAT_SECONDS` while nothing finishes, each with the elapsed time and an estimated
  time to completion (output that is not a terminal: ``nohup``, CI, a pipe, a file);
* ``"off"`` — nothing (``--quiet``).

The estimate comes from a cost model (for sweeps :func:`sgdfluct.experiments.sweep.cell_cost`):
each item has a cost in arbitrary units; once an item has finished, the remaining time is the
remaining cost divided by the cost finished per second so far; before that it is the remaining
cost times a prior ``seconds_per_cost`` divided by the number of workers (``"ETA ~…
(prior)"``). A rate measured while long items are still running underestimates the speed, so
early estimates err on the long side.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from sgdfluct.errors import ConfigError

__all__ = ["HEARTBEAT_SECONDS", "PROGRESS_MODES", "Progress", "format_seconds", "progress_mode"]

#: a log line at least this often (seconds) while nothing finishes (issue 21: "at least every 60 s")
HEARTBEAT_SECONDS = 60.0

PROGRESS_MODES = ("bar", "log", "off")


def progress_mode(progress: bool | str, stream: IO[str] | None = None) -> str:
    """Resolve a ``progress`` argument to one of :data:`PROGRESS_MODES`.

    ``True`` or ``"auto"``: a bar when ``stream`` (default ``sys.stderr``) is a terminal, log lines
    otherwise; ``False``: ``"off"``; ``"bar"``, ``"log"``, ``"off"``: as given.
    """
    if progress is False:
        return "off"
    if progress is True or progress == "auto":
        stream = sys.stderr if stream is None else stream
        isatty = getattr(stream, "isatty", None)
        return "bar" if callable(isatty) and isatty() else "log"
    if progress in PROGRESS_MODES:
        return str(progress)
    raise ConfigError(
        f"progress = {progress!r}: expected True, False, 'auto', 'bar', 'log' or 'off'"
    )


def format_seconds(seconds: float) -> str:
    """``h:mm:ss`` (``m:ss`` under an hour)."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Progress over ``total`` items of which ``done`` are finished already (see module doc).

    Parameters
    ----------
    total, done : int
        All items, and those finished before this run (a resumed sweep).
    desc : str
        What is counted, e.g. ``"sweep"`` (the prefix of every line).
    mode : {"bar", "log", "off"}
        From :func:`progress_mode`.
    unit : str
        Name of one item (``"cell"``).
    remaining_cost : float
        Cost-model units of the items still to do (0: no estimate).
    seconds_per_cost : float, optional
        Prior seconds per cost unit on one worker (no estimate before the first item without it).
    workers : int
        Items running at once (divides the prior).
    stream : file, optional
        Where log lines go (default ``sys.stderr`` at construction).
    interval : float
        Heartbeat period in seconds (log mode).
    clock : callable
        Monotonic clock (tests pass a fake one).
    """

    def __init__(
        self,
        *,
        total: int,
        done: int = 0,
        desc: str,
        mode: str,
        unit: str = "cell",
        remaining_cost: float = 0.0,
        seconds_per_cost: float | None = None,
        workers: int = 1,
        stream: IO[str] | None = None,
        interval: float = HEARTBEAT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in PROGRESS_MODES:
            raise ConfigError(f"mode = {mode!r}: expected one of {PROGRESS_MODES}")
        if not interval > 0:
            raise ConfigError(f"interval = {interval}: expected > 0 seconds")
        self.total, self.done, self.desc, self.mode, self.unit = total, done, desc, mode, unit
        self.remaining_cost = float(remaining_cost)
        self.cost_done = 0.0
        self.seconds_per_cost = seconds_per_cost
        self.workers = max(1, int(workers))
        self.stream = sys.stderr if stream is None else stream
        self.interval = float(interval)
        self.clock = clock
        self.start = clock()
        self._last_line = self.start
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        if mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=done, unit=unit, desc=desc)
        elif mode == "log":
            self._line(f"started, {total - done} of {total} {unit}s to do")
            self._thread = threading.Thread(target=self._heartbeat, daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ estimate and lines

    def eta(self) -> str:
        """The estimated time to completion in words (``""`` without an estimate)."""
        if self.done >= self.total:
            return "ETA 0:00"
        if self.remaining_cost <= 0:
            return ""
        elapsed = self.clock() - self.start
        if self.cost_done > 0 and elapsed > 0:
            return f"ETA {format_seconds(self.remaining_cost * elapsed / self.cost_done)}"
        if self.seconds_per_cost:
            seconds = self.remaining_cost * self.seconds_per_cost / self.workers
            return f"ETA ~{format_seconds(seconds)} (prior)"
        return ""

    def _line(self, what: str) -> None:
        now = self.clock()
        parts = [
            f"[{self.desc}] {self.done}/{self.total} {self.unit}s",
            f"{format_seconds(now - self.start)} elapsed",
        ]
        eta = self.eta()
        if eta:
            parts.append(eta)
        print(", ".join(parts) + f": {what}", file=self.stream, flush=True)
        self._last_line = now

    def _heartbeat(self) -> None:
        """A line whenever ``interval`` seconds passed since the last one (a daemon thread)."""
        while True:
            with self._lock:
                due = self._last_line + self.interval - self.clock()
                if due <= 0:
                    self._line(f"working ({self.workers} at once)")
                    due = self.interval
            if self._stop.wait(due):
                return

    # ------------------------------------------------------------------ interface

    def advance(self, label: str = "", cost: float = 0.0) -> None:
        """One more item is finished (``label`` names it; ``cost`` in cost-model units)."""
        with self._lock:
            self.done += 1
            self.cost_done += cost
            self.remaining_cost = max(0.0, self.remaining_cost - cost)
            if self._bar is not None:
                self._bar.update(1)
            elif self.mode == "log":
                self._line(f"finished {label}" if label else f"finished a {self.unit}")

    def note(self, message: str) -> None:
        """A log line (log mode only), e.g. a claim decided after the sweeps."""
        if self.mode == "log":
            with self._lock:
                self._line(message)

    def close(self) -> None:
        """Stop the heartbeat and the bar (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
