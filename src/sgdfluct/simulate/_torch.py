"""The PyTorch engine ``sgd.engine = "torch"``: replicas as a batch dimension, CPU or CUDA,
float64 or float32.

It steps on the driver's counter-based batch indices (the same indices as the numba and NumPy
engines, so float64 runs agree with them to round-off) and keeps the weights on the device. With the
records statistics (few records per batch, the usual case of long thinned runs) the records stay on
the device too (:class:`DeviceRecordMoments`: float64 tensors, ``mean``, ``cov`` and ``lag1`` by
device GEMMs; only the final d x d estimates, and the records themselves if a standard error is
read, come back to the host); otherwise, and for stored trajectories, snapshots come back as host
float64 arrays. The statistics are accumulated in float64 whatever the engine's dtype. One step
(docs/theory.md §3) for all replicas at once::

    a_0 = X[B]                        (R, S, N_i)
    a_l = a_{l-1} W_l^T               (bmm)
    delta_L = a_L - Y[B];  delta_{l-1} = delta_l W_l
    W_l -= (eta / S) delta_l^T a_{l-1}

torch is imported only when the engine starts (``import sgdfluct.simulate`` stays light).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sgdfluct.errors import ConfigError
from sgdfluct.simulate._registry import Problem, register_engine
from sgdfluct.simulate._stats import LazyFields

__all__ = ["DeviceRecordMoments", "TorchEngine", "TorchStepper", "resolve_device"]

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a CUDA device, else ``"cpu"``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class TorchStepper:
    """Weights (R, d) as one torch tensor; each layer a (R, rows, cols) view of it."""

    def __init__(self, problem: Problem, theta0: Array, device: str, dtype: str) -> None:
        import torch

        self.torch = torch
        dev = torch.device(resolve_device(device))
        self.tdtype = torch.float64 if dtype == "float64" else torch.float32
        self.dtype = dtype
        self.x = torch.as_tensor(problem.inputs, dtype=self.tdtype, device=dev)
        self.y = torch.as_tensor(problem.targets, dtype=self.tdtype, device=dev)
        self.theta = torch.as_tensor(np.ascontiguousarray(theta0), device=dev).to(self.tdtype)
        self.theta = self.theta.clone()
        n_rep = self.theta.shape[0]
        self.views = [
            self.theta[:, o : o + r * c].view(n_rep, int(r), int(c))
            for r, c, o in zip(problem.rows, problem.cols, problem.off, strict=True)
        ]
        self.learning_rate = problem.learning_rate
        self.dev = dev
        self.device = str(dev) if dev.type == "cpu" else f"{dev.type}:{dev.index or 0}"

    def _step(self, b: Any, scale: float) -> None:
        torch = self.torch
        acts = [self.x[b]]  # (R, S, N_i)
        for w in self.views:
            acts.append(torch.bmm(acts[-1], w.transpose(1, 2)))
        delta = acts[-1] - self.y[b]
        grads: list[Any] = [None] * len(self.views)
        for layer in range(len(self.views) - 1, -1, -1):
            grads[layer] = torch.bmm(delta.transpose(1, 2), acts[layer])
            if layer:
                delta = torch.bmm(delta, self.views[layer])
        for w, g in zip(self.views, grads, strict=True):
            w.sub_(g, alpha=scale)

    def advance(self, idx: IntArray, snap_at: IntArray) -> Array:
        return self.host(self.advance_device(idx, snap_at))

    def host(self, snapshots: Any) -> Array:
        """A device tensor as a host float64 array."""
        return np.asarray(snapshots.to(device="cpu", dtype=self.torch.float64).numpy())

    def record_moments(
        self, first: Any, n_replicas: int, n_records: int, n_batches: int
    ) -> DeviceRecordMoments:
        """Records statistics on this device, about the replica mean of ``first`` (R, d)."""
        ref = first.to(self.torch.float64).mean(dim=0)
        return DeviceRecordMoments(ref, n_replicas, n_records, n_batches)

    def advance_device(self, idx: IntArray, snap_at: IntArray) -> Any:
        """:meth:`advance`, leaving the snapshots on the device in the engine's dtype."""
        torch = self.torch
        n_rep, n_steps, batch = idx.shape
        idx_t = torch.as_tensor(idx, device=self.dev)
        out = torch.empty((n_rep, snap_at.size, self.theta.shape[1]), dtype=self.tdtype,
                          device=self.dev)  # fmt: skip
        scale = self.learning_rate / batch
        snaps = snap_at.tolist()
        si = 0
        with torch.no_grad():
            while si < len(snaps) and snaps[si] == 0:
                out[:, si] = self.theta
                si += 1
            for j in range(n_steps):
                self._step(idx_t[:, j], scale)
                while si < len(snaps) and snaps[si] == j + 1:
                    out[:, si] = self.theta
                    si += 1
        return out

    def weights(self) -> Array:
        return self.theta.to(device="cpu", dtype=self.torch.float64).numpy().copy()


class DeviceRecordMoments:
    """The records statistics (:class:`sgdfluct.simulate._stats.RecordMoments`) with the records
    kept on the engine's device as float64 tensors.

    ``mean``, ``replica_means``, ``cov`` and ``lag1`` are computed there (one GEMM each, on first
    access) and returned as host arrays; a standard error, when read, copies the records to the
    host once and uses the host estimator (:class:`~sgdfluct.simulate._stats.LazyMoments`), so both
    paths share one definition of the batch-means errors.
    """

    kind = "records"

    def __init__(self, ref: Any, n_replicas: int, n_records: int, n_batches: int) -> None:
        import torch

        self.ref = ref
        self.d = int(ref.shape[0])
        self.n_replicas = n_replicas
        self.n_records = n_records
        self.n_batches = n_batches
        shape = (n_replicas, n_records, self.d)
        self.v = torch.empty(shape, dtype=torch.float64, device=ref.device)
        self.w = torch.empty(shape, dtype=torch.float64, device=ref.device)
        self.count = 0

    def add(self, theta_k: Any, theta_next: Any) -> None:
        """Add records: device tensors (R, n, d) of ``theta_k`` and ``theta_{k+1}``."""
        n = int(theta_k.shape[1])
        end = self.count + n
        self.v[:, self.count : end] = theta_k.to(self.v.dtype) - self.ref
        self.w[:, self.count : end] = theta_next.to(self.w.dtype) - self.ref
        self.count = end

    def result(self) -> DeviceLazyMoments:
        if self.count != self.n_records:
            raise RuntimeError(f"received {self.count} of {self.n_records} records")
        return DeviceLazyMoments(self)


class DeviceLazyMoments(LazyFields):
    """Moments of :class:`DeviceRecordMoments`, each computed on first access (then cached)."""

    def __init__(self, acc: DeviceRecordMoments) -> None:
        self._acc = acc
        self._cache: dict[str, Any] = {}

    def _host(self, t: Any) -> Array:
        return np.asarray(t.to(device="cpu").numpy())

    def _device(self, name: str) -> None:
        """``name`` and the cheap means from the device records (a d x d GEMM: cov, lag1 only)."""
        acc = self._acc
        n_tot = acc.n_replicas * acc.n_records
        v = acc.v.reshape(n_tot, acc.d)
        m = v.mean(dim=0)
        self._cache.update(
            mean=self._host(acc.ref + m), replica_means=self._host(acc.ref + acc.v.mean(dim=1))
        )
        u = v - m
        if name == "cov":
            cov = (u.T @ u) / n_tot
            self._cache["cov"] = self._host(0.5 * (cov + cov.T))
        elif name == "lag1":
            w = acc.w.reshape(n_tot, acc.d)
            self._cache["lag1"] = self._host((u.T @ (w - w.mean(dim=0))) / n_tot)

    def _host_moments(self) -> Any:
        from sgdfluct.simulate._stats import RecordMoments

        if "_host" not in self._cache:
            acc = self._acc
            host = RecordMoments(self._host(acc.ref), acc.n_replicas, acc.n_records, acc.n_batches)
            host.v[...] = self._host(acc.v)
            host.w[...] = self._host(acc.w)
            host.count = acc.n_records
            self._cache["_host"] = host.result()
        return self._cache["_host"]

    def _get(self, name: str) -> Any:
        if name not in self._cache:
            if name in ("mean", "replica_means", "cov", "lag1"):
                self._device(name)
            else:
                self._cache[name] = getattr(self._host_moments(), name)
        return self._cache[name]


class TorchEngine:
    """``engine="torch"``: ``device`` ``"auto" | "cpu" | "cuda"``, ``dtype`` float64 or float32."""

    def check(self, device: str, dtype: str) -> None:
        if importlib.util.find_spec("torch") is None:
            raise ConfigError(
                "engine = 'torch' is not available: PyTorch is not installed (pip install torch, "
                "or the 'probe' extra); use engine = 'auto', 'numba' or 'numpy'"
            )
        if dtype not in ("float64", "float32"):
            raise ConfigError(f"dtype = {dtype!r} is not allowed: expected 'float64' or 'float32'")
        if device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device = {device!r} is not allowed: expected 'auto', 'cpu', 'cuda'")
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(
                    "device = 'cuda' is not available: torch.cuda.is_available() is False "
                    "(use device = 'cpu' or 'auto')"
                )

    def start(self, problem: Problem, theta0: Array, device: str, dtype: str) -> TorchStepper:
        return TorchStepper(problem, theta0, device, dtype)


register_engine("torch", TorchEngine())
