"""Checkpoints of a running :func:`sgdfluct.simulate.simulate` call, and exact resumption.

A checkpoint holds everything the driver needs to continue at a chunk boundary: the step counter,
the weights (float64 host copy; exact for float32 engines too), the index stream (counter-based
for ``with_replacement``; the per-replica generators otherwise), the partial statistics and the
stored trajectory. Since the indices and the statistics do not depend on how a run is chunked, a
resumed run gives bitwise the same result as an uninterrupted one (for the streaming and records
statistics; the subspace sketch to round-off).

The file is a pickle written atomically (temporary file + ``os.replace``), tagged with a
fingerprint of the data, the start and every argument that changes the numbers; a checkpoint of a
different run is refused with :class:`~sgdfluct.errors.ConfigError`. The pickle is framed by a
magic string and the SHA-256 of its bytes, verified before anything is unpickled: a damaged file
(truncated, zeroed, flipped bytes: a power cut, a full disk) is discarded with a one-line warning
on stderr and the run restarts from step 0, which gives bitwise the same result. Load checkpoints
only from folders you trust (pickle).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sgdfluct.errors import ConfigError, OutputError

__all__ = ["FORMAT", "MAGIC", "Checkpoint", "fingerprint"]

#: bumped when the checkpoint layout changes (an older file is then refused, not misread)
FORMAT = 2
#: first bytes of a checkpoint file, followed by the SHA-256 (32 bytes) of the pickle after it
MAGIC = b"SGDFLUCT-CKPT\n"
_DIGEST_BYTES = 32


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
            blob = self.path.read_bytes()
        except OSError as exc:
            raise OutputError(f"checkpoint {self.path} cannot be read: {exc}") from None
        head = len(MAGIC) + _DIGEST_BYTES
        payload = blob[head:]
        intact = (
            blob.startswith(MAGIC)
            and len(blob) > head
            and hashlib.sha256(payload).digest() == blob[len(MAGIC) : head]
        )
        state = None
        if intact:
            try:
                state = pickle.loads(payload)
            except Exception:
                intact = False
        if not intact:
            reason = "truncated" if len(blob) <= head else "checksum mismatch"
            sys.stderr.write(
                f"warning: checkpoint {str(self.path)!r} is damaged ({reason}): discarded, the "
                "simulation restarts from step 0\n"
            )
            self.path.unlink(missing_ok=True)
            return None
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
            payload = pickle.dumps({**state, "format": FORMAT, "tag": self.tag}, protocol=5)
            with tmp.open("wb") as fh:
                fh.write(MAGIC + hashlib.sha256(payload).digest())
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"checkpoint {self.path} cannot be written: {exc}") from None
        self.last = time.monotonic()
