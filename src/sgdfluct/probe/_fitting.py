"""The IVFR fits of one layer: Feng & Tu's (PCA, bootstrap over directions) and the calibrated one.

docs/theory.md §9 ("Estimating ψ") and §11.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray

from sgdfluct.landscape import fit_ivfr, spearman

from ._curvature import hvp_batch, layer_tangents
from ._flatness import CALIBRATED_BISECTIONS, LossAlong, flatness
from ._params import HVP_CHUNK
from ._result import none_if_undefined
from ._select import Layer
from ._split import SplitRecorder

if TYPE_CHECKING:
    from ._core import FluctuationProbe


__all__ = ["CURVATURE_PATH", "calibrated", "calibrated_one", "fit_pca"]


Array = NDArray[np.float64]

#: the calibrated sets' curvature ``p_iᵀ H p_i``: "directional" (the second derivative of the loss
#: along p_i on the affine path of ``probe._flatness.LossAlong``, where the model allows it; else
#: the Hessian-vector product) or "hvp" (the reference: ``torch.func.jvp`` of ``grad``, batched)
CURVATURE_PATH = "directional"


def fit_pca(
    probe: FluctuationProbe, var: Array, flat: Array, gen: np.random.Generator
) -> dict[str, Any]:
    ok = np.isfinite(flat) & (flat > 0) & (var > 0)
    out: dict[str, Any] = {
        "n": int(ok.sum()),
        "psi": None,
        "psi_ci": None,
        "psi_stderr": None,
        "spearman": None,
        "spearman_pvalue": None,
    }
    if ok.sum() < 3:
        out["note"] = f"{int(ok.sum())} direction(s) with finite flatness: fit needs >= 3"
        return out
    try:
        fit = fit_ivfr(var[ok], flat[ok], bootstrap=probe.bootstrap, rng=gen)
    except ValueError as exc:
        out["note"] = str(exc)
        return out
    rho, pval = spearman(var[ok], flat[ok])
    out.update(
        psi=fit.psi,
        psi_ci=[fit.psi_ci[0], fit.psi_ci[1]],
        psi_stderr=fit.psi_stderr,
        spearman=none_if_undefined(rho),
        spearman_pvalue=none_if_undefined(pval),
    )
    return out


def calibrated(
    probe: FluctuationProbe, lay: Layer, params: Mapping[str, torch.Tensor], loss0: float
) -> dict[str, Any]:
    """The calibrated IVFR estimate of one layer (docs/theory.md §9, "Estimating ψ").

    Directions frozen at mid-window (:class:`SplitRecorder`); variances, AR(1) errors, drift
    test and effective sample sizes from the second half's projected series
    (:func:`sgdfluct.ivfr_estimator.series_variances`), PCA directions that lose more than
    half their variance out of sample left out; curvature ``p_iᵀ H p_i`` and Feng–Tu flatness
    at the window mean; the errors-in-variables fit. In PCA mode a second direction set from
    the first quarter, measured on the same half, removes the direction-noise bias
    (:func:`sgdfluct.ivfr_estimator.richardson_fit`).
    """
    from sgdfluct.ivfr_estimator import richardson_fit

    rec = probe._split.get(lay.index)
    if rec is None or rec.count < 8:
        return {"estimator": "split_eiv", "psi": None, "note": "no second-half series"}
    fit, arrays = calibrated_one(probe, rec, lay, params, loss0)
    quarter = probe._split_quarter.get(lay.index)
    if quarter is not None:
        fit = richardson_fit(fit, calibrated_one(probe, quarter, lay, params, loss0)[0])
    out = fit.to_json()
    used = arrays["used"]
    flat, var = arrays["flatness"], arrays["variances"]
    rho = spearman(var[used], flat[used])[0] if used.sum() >= 3 else math.nan
    out.update(
        spearman=none_if_undefined(rho),
        n_records=rec.count,
        directions_from="pca_first_half"
        if rec.selection_eigenvalues is not None
        else "hessian_window_start",
        direction_noise_correction=quarter is not None,
        directions=rec.directions,
        **arrays,
    )
    return out


def calibrated_one(
    probe: FluctuationProbe,
    rec: SplitRecorder,
    lay: Layer,
    params: Mapping[str, torch.Tensor],
    loss0: float,
) -> tuple[Any, dict[str, Array]]:
    """The errors-in-variables fit on one recorder's directions, and its per-direction data."""
    from sgdfluct.ivfr_estimator import (
        fit_ivfr_calibrated,
        out_of_sample_stable,
        series_variances,
    )

    meas = series_variances(rec.moments)
    if rec.selection_eigenvalues is not None:
        meas = out_of_sample_stable(meas, rec.selection_eigenvalues)
    p = torch.as_tensor(rec.directions, dtype=probe.x.dtype, device=probe.x.device)
    along = LossAlong(probe, params, lay, p)
    direct = along.curvature() if CURVATURE_PATH == "directional" else None
    if direct is not None:
        curv = direct.to(torch.float64).cpu().numpy()
    else:
        curv = np.empty(p.shape[0])
        for c in range(0, p.shape[0], HVP_CHUNK):
            chunk = p[c : c + HVP_CHUNK]
            hv = hvp_batch(probe, params, layer_tangents(probe, params, lay, chunk))
            flat_hv = torch.cat([hv[n].reshape(chunk.shape[0], -1) for n in lay.param_names], 1)
            curv[c : c + chunk.shape[0]] = (flat_hv * chunk).sum(1).to(torch.float64).cpu().numpy()
    flat = np.full(p.shape[0], np.nan)
    pos = curv > 0
    if pos.any():
        keep = np.flatnonzero(pos)
        flat[pos] = flatness(
            probe,
            params,
            lay,
            p[torch.as_tensor(pos)],
            loss0,
            curv[pos],
            meas.variances[pos],
            bisections=CALIBRATED_BISECTIONS,
            profile=False,  # only the flatness: the profiles of these directions are not stored
            along=along.restrict(keep),
        )[0]
    fit = fit_ivfr_calibrated(meas, flat)
    return fit, {
        "variances": meas.variances,
        "stderr": meas.stderr,
        "n_eff": meas.n_eff,
        "drift_z": meas.drift_z,
        "curvature": curv,
        "flatness": flat,
        "used": fit.used,
    }
