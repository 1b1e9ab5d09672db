"""The flatness crossings (issue 19): the ITP refinement against the bisection reference.

Both refine a bracket ``[inside, outside]`` of a crossing of ``f = L − level`` until its width is
at most the initial width ``/ 2**bisections`` and return the final midpoint, so each is within half
that target width of a crossing; where the crossing in the bracket is unique they differ by at most
the target width per crossing (two crossings: twice that for the flatness).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from sgdfluct.probe import FluctuationProbe  # noqa: E402
from sgdfluct.probe._flatness import (  # noqa: E402
    BISECTION_STEPS,
    CALIBRATED_BISECTIONS,
    ITP_N0,
    PROFILE_POINTS,
    flatness,
    refine_crossings,
)

#: float64 round-off of a root of f: |δf| / |f'| with |δf| ~ 1e-15 |f| on O(1) functions
ROOT_ROUNDOFF = 1e-12


class _Counted:
    """``f`` of the brackets, counting evaluations."""

    def __init__(self, f, shift):
        self.f, self.shift, self.evaluations, self.rounds = f, shift, 0, 0

    def __call__(self, idx, s):
        self.evaluations += idx.size
        self.rounds += 1
        return self.f(s) - self.shift[idx]


def _brackets(roots):
    """Grid cells (spacing 0.1) around each root: inside nearer 0, outside beyond."""
    inside = np.sign(roots) * np.floor(np.abs(roots) * 10) / 10
    outside = inside + np.sign(roots) * 0.1
    return inside, outside


@pytest.mark.parametrize("bisections", [BISECTION_STEPS, CALIBRATED_BISECTIONS])
@pytest.mark.parametrize(
    ("name", "f", "inverse"),
    [
        ("quadratic", lambda s: s**2, lambda v, sign: sign * np.sqrt(v)),
        (
            "quartic",
            lambda s: s**4 + s**2,
            lambda v, sign: sign * np.sqrt(0.5 * (np.sqrt(1 + 4 * v) - 1)),
        ),
        (
            "exponential",
            lambda s: np.expm1(np.abs(s) * 3.0),
            lambda v, sign: sign * np.log1p(v) / 3.0,
        ),
    ],
)
def test_both_methods_find_the_known_crossing(name, f, inverse, bisections) -> None:
    """Crossings of f(s) = level (known in closed form) on both sides, within half the target."""
    levels = np.array([0.37, 1.3, 2.9, 0.8])
    signs = np.array([1.0, -1.0, 1.0, -1.0])
    roots = inverse(levels, signs)
    inside, outside = _brackets(roots)
    target = np.abs(outside - inside) * 2.0**-bisections
    counts = {}
    for method in ("bisection", "itp"):
        ev = _Counted(f, levels)
        got = refine_crossings(
            ev,
            inside,
            outside,
            f(inside) - levels,
            f(outside) - levels,
            bisections,
            method=method,
        )
        np.testing.assert_array_less(np.abs(got - roots), 0.5 * target + ROOT_ROUNDOFF)
        counts[method] = ev.evaluations
        assert ev.rounds <= bisections + ITP_N0
    assert counts["bisection"] == bisections * levels.size
    # superlinear on smooth f: fewer evaluations than the halvings (the point of the method)
    assert counts["itp"] < counts["bisection"]


def test_itp_projection_on_a_kink() -> None:
    """A kinked, nearly flat-then-steep f (regula falsi stalls there): ITP's projection still
    reaches the target width within bisections + n_0 rounds and brackets the crossing."""
    root = 0.4321

    def f(s):
        return np.where(s < root, 1e-9 * (s - root), 1e3 * (s - root))

    ev = _Counted(f, np.zeros(1))
    got = refine_crossings(
        ev, np.array([0.4]), np.array([0.5]), f(np.array([0.4])), f(np.array([0.5])), 30
    )
    assert abs(got[0] - root) <= 0.5 * 0.1 * 2.0**-30 + ROOT_ROUNDOFF
    assert ev.rounds <= 30 + ITP_N0


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="method"):
        refine_crossings(
            lambda i, s: s, np.zeros(1), np.ones(1), -np.ones(1), np.ones(1), 3, method="newton"
        )


@pytest.mark.parametrize("bisections", [BISECTION_STEPS, CALIBRATED_BISECTIONS])
def test_probe_flatness_itp_equals_bisection_within_resolution(bisections: int) -> None:
    """On a ReLU MLP (float64, cross-entropy): the flatness of 6 directions per layer by the
    ITP refinement equals the bisection reference within twice the target width."""
    gen = torch.Generator().manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.ReLU(), torch.nn.Linear(10, 3)).to(
        torch.float64
    )
    x = torch.randn(200, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(3, (200,), generator=gen)
    probe = FluctuationProbe(
        model,
        torch.nn.functional.cross_entropy,
        (x, y),
        learning_rate=0.05,
        batch_size=8,
        window=400,
        every=1,
        top_k=6,
    )
    params = probe._params()
    with torch.no_grad():
        loss0 = float(probe._full_loss(params))
    rng = np.random.default_rng(2)
    for lay in probe.layers:
        p = np.linalg.qr(rng.standard_normal((lay.dim, 6)))[0].T
        curv = np.diag(probe.projected_hessian(lay.index, p))
        pt = torch.as_tensor(p)
        var = np.full(6, 1e-4)
        flat = {}
        for method in ("bisection", "itp"):
            flat[method], offs, _ = flatness(
                probe, params, lay, pt, loss0, curv, var, bisections, method=method
            )
        assert np.isfinite(flat["bisection"]).all()
        cell = offs[:, 1] - offs[:, 0]
        assert offs.shape[1] == PROFILE_POINTS
        target = cell * 2.0**-bisections
        np.testing.assert_array_less(
            np.abs(flat["itp"] - flat["bisection"]), 2 * target + ROOT_ROUNDOFF
        )
