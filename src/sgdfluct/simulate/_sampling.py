"""Mini-batch index streams (docs/theory.md §3), one independent random stream per replica.

``with_replacement`` indices are counter-based (a hash of the replica key, the step and the slot,
see :mod:`._counter`); the other modes draw from a NumPy generator per replica in fixed blocks of
:data:`BLOCK_STEPS` steps. Either way the indices (and hence every simulated number) do not depend
on how a run is chunked internally.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from sgdfluct.config import SAMPLING_MODES
from sgdfluct.simulate._counter import counter_indices, replica_keys

__all__ = ["BLOCK_STEPS", "SAMPLING_MODES", "IndexStream", "batch_indices", "replica_seeds"]

#: Steps generated per refill of a replica's index buffer (fixed: chunk invariance depends on it).
BLOCK_STEPS = 512

IndexArray = NDArray[np.int64]


def replica_seeds(
    seed: int | np.random.SeedSequence, replicas: int
) -> list[np.random.SeedSequence]:
    """Children ``SeedSequence(seed).spawn(replicas)``, one per replica.

    A ``SeedSequence`` argument is copied first (same entropy and spawn key), so calling this twice
    with the same object gives the same children.
    """
    if isinstance(seed, np.random.SeedSequence):
        base = np.random.SeedSequence(
            entropy=seed.entropy, spawn_key=seed.spawn_key, pool_size=seed.pool_size
        )
    elif isinstance(seed, int | np.integer) and not isinstance(seed, bool) and seed >= 0:
        base = np.random.SeedSequence(int(seed))
    else:
        raise ValueError(f"seed must be a non-negative int or a SeedSequence, got {seed!r}")
    return base.spawn(replicas)


def _validate(n_samples: int, batch_size: int, sampling: str) -> None:
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if not 1 <= batch_size:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if sampling != "with_replacement" and batch_size > n_samples:
        raise ValueError(
            f"batch_size must be in [1, n_samples={n_samples}] for sampling={sampling!r}, "
            f"got {batch_size}"
        )


class _ReplicaStream:
    """Index buffer of one replica: refilled ``BLOCK_STEPS`` steps at a time."""

    def __init__(
        self, n_samples: int, batch_size: int, sampling: str, seed: np.random.SeedSequence
    ):
        self.p, self.s, self.mode = n_samples, batch_size, sampling
        self.rng = np.random.default_rng(seed)
        self.buffer = np.empty((0, batch_size), dtype=np.int64)
        self.pos = 0
        # epoch_shuffle: leftover batches of the current epoch not yet handed to the buffer
        self.epoch_left = np.empty((0, batch_size), dtype=np.int64)

    def _block(self) -> IndexArray:
        p, s, rng = self.p, self.s, self.rng
        if self.mode == "with_replacement":
            return rng.integers(0, p, size=(BLOCK_STEPS, s), dtype=np.int64)
        if self.mode == "without_replacement":
            # S distinct indices per step: the S smallest of P i.i.d. uniforms (a uniform random
            # subset, in the order of argpartition; the order within a batch does not matter).
            keys = rng.random((BLOCK_STEPS, p))
            if s == p:
                return np.argsort(keys, axis=1, kind="stable").astype(np.int64)
            part = np.argpartition(keys, s - 1, axis=1)[:, :s]
            return np.ascontiguousarray(part, dtype=np.int64)
        # epoch_shuffle: a fresh permutation per epoch cut into floor(P/S) consecutive batches;
        # the last P mod S samples of each permutation are dropped (like drop_last=True).
        per_epoch = p // s
        chunks = [self.epoch_left]
        have = self.epoch_left.shape[0]
        while have < BLOCK_STEPS:
            perm = rng.permutation(p).astype(np.int64)
            chunks.append(perm[: per_epoch * s].reshape(per_epoch, s))
            have += per_epoch
        allb = np.concatenate(chunks, axis=0)
        self.epoch_left = allb[BLOCK_STEPS:]
        return allb[:BLOCK_STEPS]

    def take(self, n: int, out: IndexArray) -> None:
        """Write the next ``n`` batches into ``out`` (n, S)."""
        done = 0
        while done < n:
            if self.pos == self.buffer.shape[0]:
                self.buffer = self._block()
                self.pos = 0
            k = min(n - done, self.buffer.shape[0] - self.pos)
            out[done : done + k] = self.buffer[self.pos : self.pos + k]
            self.pos += k
            done += k


class IndexStream:
    """Batch indices of ``replicas`` replicas advancing together.

    Parameters
    ----------
    n_samples : int
        P, the size of the data set.
    batch_size : int
        S.
    sampling : {"with_replacement", "without_replacement", "epoch_shuffle"}
        Sampling mode (docs/theory.md §3).
    seeds : list of SeedSequence
        One per replica (see :func:`replica_seeds`).
    """

    def __init__(
        self,
        n_samples: int,
        batch_size: int,
        sampling: str,
        seeds: list[np.random.SeedSequence],
    ) -> None:
        _validate(n_samples, batch_size, sampling)
        self.batch_size = batch_size
        self.n_samples = n_samples
        self.step = 0
        if sampling == "with_replacement":
            # counter-based: index (t, j) of replica r is a hash of (key_r, t, j); generated for
            # all replicas at once (see _counter), hence no per-replica buffers
            self.keys: NDArray[np.uint64] | None = replica_keys(seeds)
            self.streams = []
        else:
            self.keys = None
            self.streams = [_ReplicaStream(n_samples, batch_size, sampling, sd) for sd in seeds]

    def take(self, n: int) -> IndexArray:
        """The next ``n`` steps' batches; int64 array (R, n, S)."""
        if self.keys is not None:
            out = counter_indices(self.keys, self.step, n, self.batch_size, self.n_samples)
            self.step += n
            return out
        out = np.empty((len(self.streams), n, self.batch_size), dtype=np.int64)
        for r, stream in enumerate(self.streams):
            stream.take(n, out[r])
        return out


def batch_indices(
    n_samples: int,
    batch_size: int,
    steps: int,
    *,
    sampling: str = "with_replacement",
    replicas: int = 1,
    seed: int | np.random.SeedSequence = 0,
    start: int = 0,
) -> IndexArray:
    """The exact mini-batch indices that :func:`sgdfluct.simulate.simulate` uses.

    Parameters
    ----------
    n_samples : int
        P >= 1.
    batch_size : int
        S >= 1 (S <= P unless ``sampling="with_replacement"``).
    steps : int
        Number of SGD steps to return.
    sampling : {"with_replacement", "without_replacement", "epoch_shuffle"}
        ``with_replacement``: S i.i.d. uniform indices per step (counter-based hash, see
        :mod:`sgdfluct.simulate._counter`). ``without_replacement``: S distinct
        indices per step, drawn afresh each step. ``epoch_shuffle``: a fresh permutation per epoch
        cut into ``floor(P/S)`` consecutive batches; the last ``P mod S`` indices of each
        permutation are dropped (every epoch has ``floor(P/S)`` steps).
    replicas : int
        R; replica ``r`` uses the stream seeded by ``SeedSequence(seed).spawn(R)[r]``.
    seed : int or SeedSequence
        Same value as passed to ``simulate``.
    start : int
        Index of the first step returned (steps ``start .. start+steps-1`` of the stream).

    Returns
    -------
    ndarray of int64, shape (R, steps, S)
        ``out[r, k]`` are the sample indices of batch ``B_k`` of replica ``r`` (step ``k`` maps
        ``theta_k`` to ``theta_{k+1}``).
    """
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if steps < 0 or start < 0:
        raise ValueError(f"steps and start must be >= 0, got steps={steps}, start={start}")
    stream = IndexStream(n_samples, batch_size, sampling, replica_seeds(seed, replicas))
    if start:
        stream.take(start)
    return stream.take(steps)
