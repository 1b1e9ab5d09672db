"""The multi-replica SGD driver: chunking, recording, divergence checks, progress."""

from __future__ import annotations

import itertools
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sgdfluct import networks
from sgdfluct.errors import ConfigError, DivergenceError
from sgdfluct.simulate import _cpu, _kernels, _torch  # noqa: F401  (registrations)
from sgdfluct.simulate._checkpoint import Checkpoint, fingerprint
from sgdfluct.simulate._registry import DEVICES, DTYPES, Problem, get_engine, layer_layout
from sgdfluct.simulate._sampling import IndexStream, replica_seeds
from sgdfluct.simulate._stats import (
    PAIR_MAX,
    RECORD_BYTES,
    STATS_BYTES,
    SUBSPACE_RANK,
    RecordMoments,
    StreamingMoments,
    SubspaceMoments,
    SubspaceStatistics,
    streaming_bytes,
)

__all__ = ["DivergenceError", "SimulationResult", "auto_engine", "simulate"]

Array = NDArray[np.float64]

#: Default number of SGD steps per kernel call (bounded further by the snapshot memory).
CHUNK_STEPS = 2048
#: Maximum bytes of the per-chunk snapshot buffer (R x snapshots x d float64).
SNAPSHOT_BYTES = 32 * 2**20
#: Divergence: |theta - theta0| > GROWTH_BOUND * (1 + |theta0|) in any entry.
GROWTH_BOUND = 1e6


class _Stat:
    """A statistic of :class:`SimulationResult`: the value it was built with, or else read (and
    computed, for the records statistics) from the run's moments on first access."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return None  # the dataclass default
        value = obj.__dict__.get(self.name)
        if value is None:
            moments = obj.__dict__.get("_moments")
            value = None if moments is None else getattr(moments, self.name)
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = value


@dataclass(frozen=True, kw_only=True)
class SimulationResult:
    """Stationary statistics of a multi-replica SGD run.

    The statistics (``mean`` .. ``replica_means``) are read from the run's moments; with
    ``statistics == "records"`` each is computed on first access (a standard error nobody reads
    costs nothing). With ``statistics == "subspace"`` the d x d fields are ``None`` and
    ``subspace`` holds the top-k covariance. Built from arrays (e.g. a stored stage), the fields
    are those arrays.

    Attributes
    ----------
    mean : ndarray (d,)
        Stationary mean over replicas and recorded steps.
    mean_stderr : ndarray (d,)
        Batch-means standard error of ``mean``.
    cov : ndarray (d, d) or None
        Stationary covariance about ``mean``, pooled over replicas and records.
    cov_stderr : ndarray (d, d)
        Batch-means standard error of every entry of ``cov`` (records of each replica cut into
        ``n_batches`` contiguous batches; autocorrelation within a batch is accounted for).
    lag1 : ndarray (d, d)
        ``mean_k (theta_k - mean)(theta_{k+1} - mean)^T`` over recorded steps k, with ``k+1``
        the next SGD step; ``(lag1 - lag1.T) / (2 eta)`` estimates the current Q (docs/theory.md
        §6).
    lag1_stderr : ndarray (d, d)
        Entry-wise standard error of ``lag1``.
    lag1_antisym_stderr : ndarray (d, d)
        Standard error of ``lag1 - lag1.T`` (batch means of the antisymmetric part; use it for
        the current, since ``lag1_ij`` and ``lag1_ji`` are strongly correlated).
    replica_means : ndarray (R, d)
    n_records : int
        Records per replica.
    trajectory : ndarray (R, T, d) or None
        Snapshots every ``trajectory_every`` steps over the whole run (burn-in included).
    trajectory_steps : ndarray (T,) or None
        Step index of each snapshot.
    final : ndarray (R, d)
        Weights after the last step.
    engine : str
        The registered engine that ran (``"numba"``, ``"numpy"``, ``"torch"``, ...; never
        ``"auto"``).
    seconds : float
        Wall time of the run.
    device : str
        The device that ran the steps (``"cpu"``, ``"cuda:0"``, ...).
    dtype : str
        The engine's floating-point type (``"float64"`` or ``"float32"``); the statistics are
        accumulated in float64 either way.
    statistics : {"streaming", "records", "subspace"}
        How the statistics were kept: d x d streaming accumulators, the (few) records with lazy
        moments, or a top-k subspace sketch (above the memory budget; see ``subspace.note``).
    subspace : SubspaceStatistics or None
        Top-k eigenpairs of the covariance (``statistics == "subspace"`` only).
    diverged : bool
        Always False (divergence raises :class:`DivergenceError`); kept for the result contract.
    """

    mean: Array = _Stat()  # type: ignore[assignment]
    mean_stderr: Array = _Stat()  # type: ignore[assignment]
    cov: Array | None = _Stat()  # type: ignore[assignment]
    cov_stderr: Array | None = _Stat()  # type: ignore[assignment]
    lag1: Array | None = _Stat()  # type: ignore[assignment]
    lag1_stderr: Array | None = _Stat()  # type: ignore[assignment]
    lag1_antisym_stderr: Array | None = _Stat()  # type: ignore[assignment]
    replica_means: Array = _Stat()  # type: ignore[assignment]
    n_records: int
    trajectory: Array | None
    trajectory_steps: NDArray[np.int64] | None
    final: Array
    engine: str
    seconds: float
    device: str = "cpu"
    dtype: str = "float64"
    statistics: str = "streaming"
    diverged: bool = False

    @property
    def subspace(self) -> SubspaceStatistics | None:
        """Top-k covariance (``statistics == "subspace"``), else None."""
        return getattr(self.__dict__.get("_moments"), "subspace", None)


def _check_int(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _divergence(
    theta: Array,
    theta0: Array,
    step: int,
    shapes: Sequence[tuple[int, int]],
    inputs: Array,
    targets: Array,
    learning_rate: float,
) -> None:
    finite = bool(np.isfinite(theta).all())
    if finite:
        with np.errstate(over="ignore", invalid="ignore"):
            grown = bool(np.any(np.abs(theta - theta0) > GROWTH_BOUND * (1.0 + np.abs(theta0))))
        if not grown:
            return
    try:
        h = networks.hessian(theta0[0], shapes, inputs, targets)
        lam = float(np.linalg.eigvalsh(h)[-1])
    except (np.linalg.LinAlgError, ValueError, MemoryError):  # pragma: no cover
        lam = float("nan")
    bound = 2.0 / lam if lam > 0 else float("inf")
    what = "non-finite weights" if not finite else f"weights grew beyond {GROWTH_BOUND:g} x scale"
    raise DivergenceError(
        f"SGD diverged ({what}) by step {step}: learning_rate={learning_rate:g}, "
        f"lambda_max(H) at theta0 = {lam:.6g}, stability bound 2/lambda_max = {bound:.6g} "
        "(with finite batches the mean-square stability bound is lower still)"
    )


def auto_engine(
    shapes: Sequence[tuple[int, int]], replicas: int, device: str = "auto", dtype: str = "float64"
) -> str:
    """The engine ``engine="auto"`` runs: ``"torch"`` for ``device="cuda"`` or float32, else
    numba when importable (its BLAS kernel covers wide layers, where the NumPy engine used to be
    preferred; benchmarks/README.md), else NumPy."""
    if device == "cuda" or dtype == "float32":
        return "torch"
    if not _kernels.HAVE_NUMBA:
        return "numpy"
    return "numba"


_auto_engine = auto_engine  # the earlier private name


STATISTICS = ("auto", "full", "subspace")


def _choose_statistics(
    statistics: str, d: int, replicas: int, n_records: int, n_batches: int
) -> tuple[str, str]:
    """``(kind, note)``: "records", "streaming" or "subspace", and why (subspace only)."""
    if statistics not in STATISTICS:
        raise ConfigError(
            f"statistics = {statistics!r} is not allowed: expected one of {STATISTICS}"
        )
    per_batch = -(-n_records // n_batches)
    record_bytes = 2 * 8 * replicas * n_records * d
    stream_bytes = streaming_bytes(d, replicas)
    if statistics == "subspace":
        return "subspace", "statistics = 'subspace' was requested"
    records = per_batch <= PAIR_MAX and record_bytes <= max(RECORD_BYTES, stream_bytes)
    full_bytes = record_bytes + 10 * 8 * d * d if records else stream_bytes
    if statistics == "auto" and full_bytes > STATS_BYTES:
        note = (
            f"full d x d statistics need {full_bytes / 2**30:.1f} GiB > the budget "
            f"{STATS_BYTES / 2**30:.1f} GiB (d = {d}): only the mean, its standard error and the "
            "top-k covariance are kept; cov, cov_stderr, lag1 and its standard errors are None"
        )
        warnings.warn(note, stacklevel=3)
        return "subspace", note
    return ("records" if records else "streaming"), ""


def _statistics(
    mode: tuple[str, str], ref: Array, replicas: int, n_records: int, n_batches: int, rank: int
) -> StreamingMoments | RecordMoments | SubspaceMoments:
    kind, note = mode
    if kind == "records":
        return RecordMoments(ref, replicas, n_records, n_batches)
    if kind == "subspace":
        return SubspaceMoments(ref, replicas, n_records, n_batches, rank, note)
    return StreamingMoments(ref, replicas, n_records, n_batches)


def simulate(
    inputs: Array,
    targets: Array,
    shapes: Sequence[tuple[int, int]],
    theta0: Array,
    *,
    learning_rate: float,
    batch_size: int,
    sampling: str = "with_replacement",
    steps: int,
    burn_in: int,
    record_every: int = 1,
    replicas: int = 1,
    seed: int | np.random.SeedSequence = 0,
    n_batches: int = 16,
    trajectory_every: int | None = None,
    progress: bool = False,
    engine: str = "auto",
    device: str = "auto",
    dtype: str = "float64",
    statistics: str = "auto",
    subspace_rank: int = SUBSPACE_RANK,
    chunk_steps: int = CHUNK_STEPS,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: float = 60.0,
) -> SimulationResult:
    """Run ``replicas`` independent SGD chains and return their stationary statistics.

    Parameters
    ----------
    inputs : ndarray (P, N_i)
        Design matrix X.
    targets : ndarray (P, N_o)
        Labels y (a 1-D array of length P is read as N_o = 1).
    shapes : sequence of (rows, cols)
        Shapes of ``W_1 .. W_L`` (``cols_1 = N_i``, ``rows_L = N_o``, ``cols_{l+1} = rows_l``).
    theta0 : ndarray (d,) or (R, d)
        Start: shared by all replicas, or one row per replica.
    learning_rate : float
        eta > 0.
    batch_size : int
        S >= 1 (<= P unless sampling with replacement).
    sampling : {"with_replacement", "without_replacement", "epoch_shuffle"}
        See :func:`sgdfluct.simulate.batch_indices`.
    steps : int
        Total SGD steps per replica (burn-in included).
    burn_in : int
        Steps before the first record; records are ``theta_k`` for
        ``k = burn_in, burn_in + record_every, ... < steps``.
    record_every : int
        Thinning of the records.
    replicas : int
        R, chains advanced together.
    seed : int or SeedSequence
        Replica r uses ``SeedSequence(seed).spawn(R)[r]``.
    n_batches : int
        Batches per replica for the batch-means standard errors (>= 1, R * n_batches >= 2,
        ``n_batches <= n_records``).
    trajectory_every : int or None
        Also return ``theta_k`` for ``k = 0, trajectory_every, ... <= steps``.
    progress : bool
        Show a tqdm progress bar.
    engine : str
        A registered engine (``"numba"``, ``"numpy"``, ``"torch"``, or one added with
        :func:`sgdfluct.simulate.register_engine`) or ``"auto"``: torch for ``device="cuda"`` or
        float32; otherwise numba when importable, else NumPy.
    device : {"auto", "cpu", "cuda"}
        Where the engine runs (``"cuda"``: torch only; ``"auto"``: CUDA when torch sees one).
    dtype : {"float64", "float32"}
        The engine's arithmetic (float32: torch only). Statistics are float64 regardless; the
        torch engine keeps the records statistics (below) on its device.
    statistics : {"auto", "full", "subspace"}
        ``"full"``: the d x d moments with entry-wise standard errors, kept as streaming
        accumulators or, for few records per batch (<= 16), as the records themselves with lazily
        computed moments. ``"subspace"``: mean, its standard error and the top-``subspace_rank``
        covariance only, in O(d k) memory. ``"auto"``: full unless it needs more than
        ``STATS_BYTES`` (4 GiB), then subspace with a warning (``result.subspace.note``).
    subspace_rank : int
        k of the subspace statistics (0: no covariance sketch, only the mean and its standard
        error; ``subspace`` is then None).
    chunk_steps : int
        Steps per kernel call (results do not depend on it; for tests and tuning).
    checkpoint : path or None
        Save the run's state to this file every ``checkpoint_every`` seconds and at the end, and
        resume from it if it exists (same data, start and arguments, else ConfigError). A resumed
        run returns bitwise what an uninterrupted one would; a finished checkpoint returns the
        result without stepping. The caller deletes the file when it no longer needs it.
    checkpoint_every : float
        Seconds between checkpoint saves (0: after every chunk).

    Returns
    -------
    SimulationResult

    Raises
    ------
    DivergenceError
        Non-finite weights or growth beyond ``1e6 (1 + |theta0|)`` (checked after every chunk).

    Notes
    -----
    SGD (docs/theory.md §3): ``theta_{k+1} = theta_k - (eta/S) sum_{mu in B_k} grad l_mu(theta_k)``,
    ``l_mu = 1/2 ||y_mu - W_L ... W_1 x_mu||^2``. Statistics are accumulated on the fly about the
    replica-averaged ``theta_{burn_in}`` (memory independent of ``steps``).
    """
    t_start = time.perf_counter()
    x = np.ascontiguousarray(inputs, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    y = np.ascontiguousarray(y)
    for name, array in (("inputs", x), ("targets", y)):
        if not np.isfinite(array).all():  # bad data, not a divergence of SGD
            raise ConfigError(
                f"{name} contain {int(np.sum(~np.isfinite(array)))} non-finite values (NaN or "
                "inf): expected finite data"
            )
    if x.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"inputs (P, N_i) and targets (P, N_o) mismatch: {x.shape}, {y.shape}")
    shapes = [(int(r), int(c)) for r, c in shapes]
    if not shapes:
        raise ValueError("shapes must name at least one layer")
    if shapes[0][1] != x.shape[1] or shapes[-1][0] != y.shape[1]:
        raise ValueError(f"shapes {shapes} do not fit inputs {x.shape} and targets {y.shape}")
    for (r1, _), (_, c2) in itertools.pairwise(shapes):
        if r1 != c2:
            raise ValueError(f"shapes {shapes}: consecutive layers do not chain")
    d = networks.n_params(shapes)
    replicas = _check_int("replicas", replicas, 1)
    steps = _check_int("steps", steps, 1)
    burn_in = _check_int("burn_in", burn_in, 0)
    record_every = _check_int("record_every", record_every, 1)
    n_batches = _check_int("n_batches", n_batches, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    chunk_steps = _check_int("chunk_steps", chunk_steps, 1)
    subspace_rank = _check_int("subspace_rank", subspace_rank, 0)
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be finite and > 0, got {learning_rate}")
    if burn_in >= steps:
        raise ValueError(f"burn_in must be in [0, steps={steps}), got {burn_in}")
    n_records = len(range(burn_in, steps, record_every))
    if n_batches > n_records:
        raise ValueError(f"n_batches must be in [1, n_records={n_records}], got {n_batches}")
    if replicas * n_batches < 2:
        raise ValueError("need replicas * n_batches >= 2 for standard errors")
    if trajectory_every is not None:
        trajectory_every = _check_int("trajectory_every", trajectory_every, 1)
    if device not in DEVICES:
        raise ConfigError(f"device = {device!r} is not allowed: expected one of {DEVICES}")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype = {dtype!r} is not allowed: expected one of {DTYPES}")
    if engine == "auto":
        engine = auto_engine(shapes, replicas, device, dtype)
    eng = get_engine(engine)
    eng.check(device, dtype)

    th0 = np.asarray(theta0, dtype=np.float64)
    if th0.shape == (d,):
        th0 = np.broadcast_to(th0, (replicas, d))
    if th0.shape != (replicas, d):
        raise ValueError(f"theta0 must have shape ({d},) or ({replicas}, {d}), got {th0.shape}")
    if not np.isfinite(th0).all():
        raise ValueError("theta0 has non-finite entries")
    th0 = np.array(th0, dtype=np.float64, order="C")
    rows, cols, off = layer_layout(shapes)
    problem = Problem(x, y, tuple(shapes), rows, cols, off, float(learning_rate))
    stream = IndexStream(x.shape[0], batch_size, sampling, replica_seeds(seed, replicas))

    traj_steps = None if trajectory_every is None else np.arange(0, steps + 1, trajectory_every)
    traj = None if traj_steps is None else np.empty((replicas, traj_steps.size, d))
    ti = 0
    stats: StreamingMoments | RecordMoments | SubspaceMoments | None = None
    mode = _choose_statistics(statistics, d, replicas, n_records, n_batches)
    k = 0  # steps done
    theta_start = th0
    ckpt = None
    if checkpoint is not None:
        seed_key = (
            repr((seed.entropy, seed.spawn_key, seed.pool_size))
            if isinstance(seed, np.random.SeedSequence)
            else repr(seed)
        )
        params = dict(shapes=shapes, learning_rate=float(learning_rate), batch_size=batch_size,
                      sampling=sampling, steps=steps, burn_in=burn_in, record_every=record_every,
                      replicas=replicas, seed=seed_key,
                      n_batches=n_batches, trajectory_every=trajectory_every, engine=engine,
                      dtype=dtype, statistics=mode[0], subspace_rank=subspace_rank)  # fmt: skip
        ckpt = Checkpoint(checkpoint, checkpoint_every, fingerprint([x, y, th0], params))
        state = ckpt.load()
        if state is not None:
            k, theta_start, stream, stats = (
                state["k"],
                state["theta"],
                state["stream"],
                state["stats"],
            )
            traj, ti = state["traj"], state["ti"]
    stepper = eng.start(problem, theta_start, device, dtype)
    # an engine that can keep the records statistics on its device does so (the torch engine)
    on_device = mode[0] == "records" and hasattr(stepper, "advance_device")
    dev: Any = stepper  # its device methods (advance_device, record_moments, host)
    # chunk length bounded so that the snapshot buffer stays below SNAPSHOT_BYTES
    per_step = 2.0 / record_every + (0 if trajectory_every is None else 1.0 / trajectory_every)
    max_snap = max(2, SNAPSHOT_BYTES // (8 * replicas * d))
    chunk = int(max(1, min(chunk_steps, max_snap / per_step - 2)))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, unit="step", desc=f"SGD x{replicas} ({engine}, {stepper.device})")
        bar.update(k)
    try:
        while k < steps:
            # the reference point is set at burn_in: make it a chunk boundary
            end = min(steps, k + chunk)
            if k < burn_in < end:
                end = burn_in
            n = end - k
            idx = stream.take(n)
            # snapshots: records (k_rec and k_rec + 1) and trajectory points in [k, end]
            first = max(burn_in, k)
            first += (-(first - burn_in)) % record_every
            rec = np.arange(first, min(end, steps), record_every, dtype=np.int64)
            rec = rec[rec + 1 <= end]  # k_rec + 1 must be inside this chunk
            # a record at step end (== start of next chunk) is taken in the next chunk
            wanted = [rec - k, rec + 1 - k]
            if traj_steps is not None:
                tsel = traj_steps[(traj_steps >= k) & (traj_steps <= end)]
                if ti and tsel.size and tsel[0] == traj_steps[ti - 1]:
                    tsel = tsel[1:]
                wanted.append(tsel - k)
            else:
                tsel = np.empty(0, dtype=np.int64)
            snap_at = np.unique(np.concatenate(wanted)).astype(np.int64)
            out = dev.advance_device(idx, snap_at) if on_device else stepper.advance(idx, snap_at)
            theta = stepper.weights()
            _divergence(theta, th0, end, shapes, x, y, learning_rate)
            if rec.size:
                rec0 = out[:, np.searchsorted(snap_at, rec[0] - k)]
                if stats is None and on_device:
                    stats = dev.record_moments(rec0, replicas, n_records, n_batches)
                elif stats is None:
                    ref = rec0.mean(axis=0)
                    stats = _statistics(mode, ref, replicas, n_records, n_batches, subspace_rank)
                stats.add(
                    out[:, np.searchsorted(snap_at, rec - k)],
                    out[:, np.searchsorted(snap_at, rec + 1 - k)],
                )
            if traj is not None and tsel.size:
                snaps = out[:, np.searchsorted(snap_at, tsel - k)]
                traj[:, ti : ti + tsel.size] = dev.host(snaps) if on_device else snaps
                ti += tsel.size
            k = end
            if bar is not None:
                bar.update(n)
            if ckpt is not None and (k == steps or ckpt.due()):
                ckpt.save(dict(k=k, theta=stepper.weights(), stream=stream, stats=stats,
                               traj=traj, ti=ti))  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    assert stats is not None
    result = SimulationResult(
        n_records=n_records,
        trajectory=traj,
        trajectory_steps=traj_steps,
        final=stepper.weights(),
        engine=engine,
        seconds=time.perf_counter() - t_start,
        device=stepper.device,
        dtype=stepper.dtype,
        statistics=stats.kind,
    )
    object.__setattr__(result, "_moments", stats.result())
    return result
