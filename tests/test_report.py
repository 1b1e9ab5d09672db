"""The report writer: report.html (self-contained), report.md, claims.json (sgdfluct.report)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from sgdfluct.config import ExperimentConfig
from sgdfluct.report import (
    VERDICTS,
    ClaimResult,
    config_hash,
    format_measured,
    machine_info,
    write_report,
)


def _figure(path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _claims(tmp_path: Path) -> list[ClaimResult]:
    elsewhere = _figure(tmp_path / "spectra.png")
    return [
        ClaimResult(
            id="claim1_spectra",
            statement="C_0 deviates from H near alpha -> 1 <and> converges",
            expected="distance falls like sqrt(q): slope 0.5 within its 95% CI",
            measured={
                "slope": {"value": np.float64(0.48), "stderr": 0.03},
                "psi": {"value": 1.2, "ci": [0.9, 1.5]},
                "n_points": np.int64(6),
                "note": "W1 distance",
                "bad": float("nan"),
            },
            verdict="holds",
            figures=[elsewhere],
            details=(
                "Method: **Wasserstein-1** on `normalized` spectra.\n\n- point one\n- point two"
            ),
        ),
        ClaimResult(
            id="claim3_isotropy",
            statement="no IVFR in the single layer",
            expected="|Spearman| < 0.3",
            measured="Spearman rho = 0.1 ± 0.2",
            verdict="inconclusive",
        ),
    ]


HEADER = {
    "version": "0.1.0",
    "config hashes": {"single_layer": config_hash(ExperimentConfig())},
    "seeds": [0, 1],
    "machine": machine_info(),
    "runtime": "12 s",
}


def test_writes_all_three_files(tmp_path: Path) -> None:
    out = tmp_path / "report"
    write_report(out, _claims(tmp_path), header=HEADER)
    records = json.loads((out / "claims.json").read_text())
    assert [r["id"] for r in records] == ["claim1_spectra", "claim3_isotropy"]
    keys = {"id", "statement", "measured", "expected", "verdict", "rule", "rule_history"}
    assert all(set(r) == keys for r in records)
    assert all(r["verdict"] in VERDICTS for r in records)
    assert records[0]["measured"]["slope"] == {"value": 0.48, "stderr": 0.03}
    assert records[0]["measured"]["bad"] is None  # non-finite -> null, never NaN in JSON
    # the figure was copied under figures/ and the markdown references it relatively
    copied = out / "figures" / "claim1_spectra__spectra.png"
    assert copied.is_file()
    md = (out / "report.md").read_text()
    assert "](figures/claim1_spectra__spectra.png)" in md
    assert "0.48 ± 0.03" in md and "1.2 [0.9, 1.5]" in md and "**inconclusive**" in md


def test_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    claims = _claims(tmp_path)
    write_report(tmp_path, claims, header=HEADER)
    page = (tmp_path / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 1 and sources[0].startswith("data:image/png;base64,")
    png = base64.b64decode(sources[0].split(",", 1)[1])
    assert png == claims[0].figures[0].read_bytes()
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # no external resources
    assert "&lt;and&gt;" in page and "<and>" not in page
    # verdict counts, summary table, section heading, verdict line
    assert page.count('class="badge holds"') == 4
    assert "<strong>Wasserstein-1</strong>" in page and "<li>point two</li>" in page
    assert "n/a (non-finite)" in page


def test_figures_already_in_place_are_not_copied(tmp_path: Path) -> None:
    (tmp_path / "figures").mkdir()
    fig = _figure(tmp_path / "figures" / "fig.png")
    claim = ClaimResult(
        id="c",
        statement="s",
        expected="e",
        measured={},
        verdict="fails",
        figures=[Path("figures/fig.png")],
    )
    write_report(tmp_path, [claim], header={})
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [fig.name]
    assert "](figures/fig.png)" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("verdict", ["passes", "HOLDS", "", None])
def test_verdict_is_validated(verdict: object) -> None:
    with pytest.raises(ValueError, match="verdict"):
        ClaimResult(id="x", statement="s", expected="e", measured={}, verdict=verdict)  # type: ignore[arg-type]


def test_bad_claims_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="id"):
        ClaimResult(id="has space", statement="s", expected="e", measured={}, verdict="holds")
    with pytest.raises(TypeError, match="measured"):
        ClaimResult(id="x", statement="s", expected="e", measured=3.0, verdict="holds")  # type: ignore[arg-type]
    same = ClaimResult(id="x", statement="s", expected="e", measured={}, verdict="holds")
    with pytest.raises(ValueError, match="duplicate"):
        write_report(tmp_path, [same, same], header={})
    ghost = ClaimResult(
        id="y",
        statement="s",
        expected="e",
        measured={},
        verdict="holds",
        figures=[tmp_path / "no.png"],
    )
    with pytest.raises(FileNotFoundError, match=r"no\.png"):
        write_report(tmp_path, [ghost], header={})
    assert not (tmp_path / "claims.json").exists()


def test_format_measured() -> None:
    assert format_measured({"value": 2.0, "stderr": 0.25}) == "2 ± 0.25"
    assert format_measured({"value": 1, "ci": (0.5, 1.5), "n": 10}) == "1 [0.5, 1.5] (n: 10)"
    assert format_measured(np.float32(0.5)) == "0.5"
    assert format_measured([1.0, 2.0]) == "[1, 2]"
    assert format_measured("text") == "text"
    assert format_measured(float("inf")) == "n/a (non-finite)"
    assert config_hash(ExperimentConfig()) == config_hash(ExperimentConfig())
    assert len(config_hash(ExperimentConfig())) == 12


def test_rule_history_entries_are_checked_and_rendered(tmp_path):
    history = [{"date": "2026-11-28", "change": "intervals again", "after_seeing_data": True}]
    claim = ClaimResult(
        id="c1",
        statement="s",
        expected="e",
        measured={"x": 1.0},
        verdict="fails",
        rule="fails when x > 0",
        rule_history=history,
    )
    write_report(tmp_path / "r", [claim], header=HEADER)
    record = json.loads((tmp_path / "r" / "claims.json").read_text())[0]
    assert record["rule"] == "fails when x > 0" and record["rule_history"] == history
    assert "after seeing data" in (tmp_path / "r" / "report.md").read_text()
    with pytest.raises(ValueError, match="after_seeing_data"):
        ClaimResult(
            id="c2",
            statement="s",
            expected="e",
            measured={},
            verdict="holds",
            rule_history=[{"date": "x", "change": "y"}],
        )
