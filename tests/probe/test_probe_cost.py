"""The probe's cost rules (issue 19): sketch size from k, deferred orthonormalization, in-place
updates, memory-bounded chunks, and layer selection through the probe config."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from sgdfluct.errors import ConfigError  # noqa: E402
from sgdfluct.probe import (  # noqa: E402
    FluctuationProbe,
    NystromSketch,
    _stream,
    probe_config_from_dict,
)
from sgdfluct.probe._params import CHUNK_BYTES, memory_chunk  # noqa: E402
from sgdfluct.probe._recording import MIN_SKETCH_SIZE, SKETCH_FLOOR_BYTES  # noqa: E402

#: the deferred and the immediate orthonormalization are one Nyström approximation in exact
#: arithmetic; in float64 they differ by the conditioning of R (~2 for d/ℓ = 10) times ~1e-15
SKETCH_RTOL = 1e-12


def _stream_rows(d: int, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -3, d, dtype=torch.float64)
    return torch.randn(n, d, generator=gen, dtype=torch.float64) * scales + 2.0


def test_deferred_qr_gives_the_same_sketch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sketch on G orthonormalized at top() equals one streamed on Q = qr(G) from the start."""
    rows = _stream_rows(600, 120)
    monkeypatch.setattr(_stream, "DEFER_QR_FLOPS", 0.0)
    deferred = NystromSketch(rows[0], 60, torch.Generator().manual_seed(3))
    monkeypatch.setattr(_stream, "DEFER_QR_FLOPS", 1e12)
    immediate = NystromSketch(rows[0], 60, torch.Generator().manual_seed(3))
    assert not deferred._orthonormal and immediate._orthonormal
    immediate.omega = torch.linalg.qr(deferred.omega)[0]  # the same range
    for i, r in enumerate(rows):
        deferred.update(r)
        immediate.update(r)
        if i == 50:  # a mid-stream top() converts the deferred sketch to Q once, in place
            np.testing.assert_allclose(deferred.top(5)[0], immediate.top(5)[0], rtol=SKETCH_RTOL)
            assert deferred._orthonormal
    (v_d, p_d), (v_i, p_i) = deferred.top(10), immediate.top(10)
    np.testing.assert_allclose(v_d, v_i, rtol=SKETCH_RTOL)
    overlap = np.abs(np.sum(p_d * p_i, axis=1))  # same directions up to sign
    np.testing.assert_allclose(overlap, 1.0, atol=1e-9)


def test_sketch_memory_is_16_ell_bytes_per_parameter() -> None:
    d, ell = 5000, 60
    sk = NystromSketch(torch.zeros(d, dtype=torch.float64), ell, torch.Generator().manual_seed(0))
    assert sk.nbytes() == 8 * (2 * d * ell + 2 * d)


@pytest.mark.parametrize(
    ("n_in", "top_k", "want"),
    [
        (4, 20, MIN_SKETCH_SIZE),  # 150-parameter layer: the 256 floor (exact PCA)
        (4, 150, 320),  # k + p = 2k + 20 above the floor
        (4000, 20, 209),  # 20 005 parameters: the floor shrinks to 64 MiB / (16 d) = 209
        (20000, 20, 60),  # 80 004 parameters: k + p = 60 (16 * 60 = 960 bytes a parameter)
    ],
)
def test_default_sketch_size(n_in: int, top_k: int, want: int) -> None:
    hidden = {4: 30, 4000: 5, 20000: 4}[n_in]
    model = torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.Linear(hidden, 2)).double()
    x = torch.randn(10, n_in, dtype=torch.float64)
    y = torch.randn(10, 2, dtype=torch.float64)
    probe = FluctuationProbe(
        model,
        lambda o, t: ((o - t) ** 2).mean(),
        (x, y),
        learning_rate=0.01,
        batch_size=2,
        top_k=top_k,
        window=400,
        every=1,
    )
    d_max = max(lay.dim for lay in probe.layers)
    assert want == max(2 * top_k + 20, min(MIN_SKETCH_SIZE, SKETCH_FLOOR_BYTES // (16 * d_max)))
    assert probe.sketch_size == want


def test_memory_chunk() -> None:
    assert memory_chunk(256, 8 * 3000) == 256  # small models: the default (bitwise as before)
    assert memory_chunk(256, 4 * 1_068_810) == CHUNK_BYTES // (4 * 1_068_810) == 62
    assert memory_chunk(128, 10 * CHUNK_BYTES) == 1


def _config(layers: object) -> dict:
    return {
        "data": {"dataset": "digits", "n_train": 200},
        "sgd": {"steps": 5000},
        "probe": {"window": 1000, "layers": layers},
    }


@pytest.mark.parametrize(
    ("layers", "want"),
    [
        ("all", "all"),
        ([1, 3], (1, 3)),
        (["0", "*.weight"], ("0", "*.weight")),
        ([["0", "2"], 3], (("0", "2"), 3)),
    ],
)
def test_config_layers_accepts_names_globs_and_groups(layers: object, want: object) -> None:
    assert probe_config_from_dict(_config(layers)).probe.layers == want


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        ([0], r"probe\.layers\[0\] = 0"),
        ([""], r"probe\.layers\[0\] = '' is not allowed"),
        ([[]], r"probe\.layers\[0\] = \[\] is not allowed"),
        ([[["0"]]], r"probe\.layers\[0\]\[0\]"),
        ([1.5], r"probe\.layers\[0\] = 1.5"),
        ([], r"probe\.layers = \[\] is not allowed"),
        ("fc", r"probe\.layers"),
    ],
)
def test_config_layers_refused_by_name(layers: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        probe_config_from_dict(_config(layers))
