"""Figures of the depth >= 2 analysis: imbalance drift and per-layer covariance spectra."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from numpy.typing import NDArray

__all__ = ["plot_imbalance", "plot_layer_spectra"]

Array = NDArray[np.float64]


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new = plt.subplots(figsize=(5, 3.5))
    return new


def plot_imbalance(
    steps: Array,
    eigenvalues: Array,
    predicted: Array | None = None,
    *,
    hidden_layer: int = 1,
    ax: Axes | None = None,
) -> Axes:
    """Imbalance eigenvalues vs SGD step, replica mean with a ±1 s.d. band, and the prediction.

    Parameters
    ----------
    steps : (T,) array
    eigenvalues : (R, T, L-1, N_h) array
        From :func:`sgdfluct.theory.symmetry.imbalance_eigenvalues`.
    predicted : (N_h,) array, optional
        Noise-equilibrium values (:func:`sgdfluct.theory.symmetry.noise_equilibrium`).
    hidden_layer : int
        Which hidden layer (1-based).
    ax : matplotlib Axes, optional
    """
    ax = _axes(ax)
    ev = np.asarray(eigenvalues)[:, :, hidden_layer - 1, :]
    mean, sd = ev.mean(axis=0), ev.std(axis=0)
    for j in range(mean.shape[1]):
        (line,) = ax.plot(steps, mean[:, j], lw=1.2, label="simulation" if j == 0 else None)
        ax.fill_between(
            steps, mean[:, j] - sd[:, j], mean[:, j] + sd[:, j], alpha=0.2, color=line.get_color()
        )
        if predicted is not None:
            ax.axhline(
                predicted[j],
                ls="--",
                color=line.get_color(),
                lw=1,
                label="noise equilibrium" if j == 0 else None,
            )
    ax.set_xlabel("SGD step")
    ax.set_ylabel(r"eig $(W_l W_l^T - W_{l+1}^T W_{l+1})$")
    ax.legend(frameon=False, fontsize="small")
    return ax


def plot_layer_spectra(
    simulated: Sequence[Array],
    theories: Mapping[str, Sequence[Array]],
    *,
    simulated_stderr: Sequence[Array] | None = None,
    ax: Axes | Sequence[Axes] | None = None,
) -> Sequence[Axes]:
    """Eigenvalues (descending, log scale) of every layer's covariance block: theory vs simulation.

    Parameters
    ----------
    simulated : sequence of (n_l, n_l) arrays
        Measured covariance block of each layer.
    theories : mapping name -> sequence of (n_l, n_l) arrays
        Theory blocks per layer (e.g. ``{"continuum": [...], "multiplicative": [...]}``).
    simulated_stderr : sequence of (n_l, n_l) arrays, optional
        Not plotted as bars (eigenvalues are non-linear); used to mark the noise floor
        ``||SE||_F`` as a horizontal line.
    ax : Axes or sequence of Axes (one per layer), optional
    """
    n = len(simulated)
    if ax is None:
        import matplotlib.pyplot as plt

        _, axs = plt.subplots(1, n, figsize=(4.5 * n, 3.5), squeeze=False)
        axes: Sequence[Axes] = list(axs[0])
    elif isinstance(ax, Axes):
        axes = [ax] * n
    else:
        axes = list(ax)
    for l, a in enumerate(axes):
        sim = np.linalg.eigvalsh(simulated[l])[::-1]
        keep = sim > 1e-12 * sim[0]
        a.semilogy(np.arange(keep.sum()), sim[keep], "ko", ms=3, label="simulation")
        for name, blocks in theories.items():
            ev = np.linalg.eigvalsh(blocks[l])[::-1][: keep.sum()]
            a.semilogy(np.arange(ev.size), np.clip(ev, 1e-300, None), "-", lw=1, label=name)
        if simulated_stderr is not None:
            a.axhline(
                float(np.linalg.norm(simulated_stderr[l])),
                color="grey",
                ls=":",
                lw=1,
                label="noise floor",
            )
        a.set_title(f"layer {l + 1}")
        a.set_xlabel("index")
        a.set_ylabel("variance")
        a.legend(frameon=False, fontsize="small")
    return axes
