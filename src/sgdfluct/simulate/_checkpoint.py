"""Checkpoints of a running :func:`sgdfluct.simulate.simulate` call, and exact resumption.

A checkpoint holds everything the driver needs to continue at a chunk boundary: the step counter,
the weights (float64 host copy; exact for float32 engines too), the index stream (counter-based
for ``with_replacement``; the per-replica generators otherwise), the partial statistics and the
stored trajectory. Since the indices and the statistics do not depend on how a run is chunked, a
resumed run gives bitwise the same result as an uninterrupted one (for the streaming and records
statistics; the subspace sketch to round-off).

The file is a pickle written atomically (temporary file + ``os.replace``), tagged with a
fingerprint of the data, the start and every argument that changes the numbers; a checkpoint of a
different run is refused with :class:`~sgdfluct.errors.ConfigError`. Load checkpoints only from
folders you trust (pickle).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np

from sgdfluct.errors import ConfigError, OutputError

__all__ = ["FORMAT", "Checkpoint", "fingerprint"]

#: bumped when the checkpoint layout changes (an older file is then refused, not misread)
FORMAT = 1


def fingerprint(arrays: list[np.ndarray], params: dict[str, Any]) -> str:
    """SHA-256 of the arrays' bytes, shapes and dtypes and of ``repr(sorted(params))``."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    h.update(repr(sorted(params.items())).encode())
    return h.hexdigest()


class Checkpoint:
    """Save the driver state to ``path`` every ``every`` seconds (and at the end); load it back.

    Parameters
    ----------
    path : str or Path
        The checkpoint file (its folder must exist).
    every : float
        Seconds between saves (0: after every chunk).
    tag : str
        The run's :func:`fingerprint`.
    """

    def __init__(self, path: str | os.PathLike[str], every: float, tag: str) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise OutputError(f"checkpoint folder {self.path.parent} does not exist")
        if not (every >= 0 and np.isfinite(every)):
            raise ConfigError(f"checkpoint_every = {every!r} is not allowed: expected >= 0 s")
        self.every = float(every)
        self.tag = tag
        self.last = time.monotonic()

    def load(self) -> dict[str, Any] | None:
        """The saved state, ``None`` if there is no file; ConfigError if it belongs elsewhere."""
        if not self.path.exists():
            return None
        try:
            with self.path.open("rb") as fh:
                state = pickle.load(fh)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
            raise OutputError(f"checkpoint {self.path} cannot be read: {exc}") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ConfigError(f"checkpoint {self.path} has an unknown format; delete it to restart")
        if state.get("tag") != self.tag:
            raise ConfigError(
                f"checkpoint {self.path} belongs to a different run (data, start or arguments "
                "differ); delete it or choose another path"
            )
        return state

    def due(self) -> bool:
        """Whether ``every`` seconds have passed since the last save."""
        return time.monotonic() - self.last >= self.every

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` atomically."""
        tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        try:
            with tmp.open("wb") as fh:
                pickle.dump({**state, "format": FORMAT, "tag": self.tag}, fh, protocol=5)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"checkpoint {self.path} cannot be written: {exc}") from None
        self.last = time.monotonic()
