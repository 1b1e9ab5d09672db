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
    # an undefined value is omitted and explained once, never shown as a fragment
    assert "non-finite" not in page and "n/a" not in page
    assert page.count("Not defined here, so omitted above") == 1 and "bad:" in page


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
    assert format_measured(float("inf")) == "undefined"
    # undefined parts are omitted (issue 21): a mapping keeps only what is defined
    assert format_measured({"value": 1.0, "ci": [0.5, 1.5], "het": {"i2": None}}) == "1 [0.5, 1.5]"
    assert format_measured({"a": 1.0, "b": None, "b_note": "needs 3 points"}) == "a: 1"
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


# --- a report a referee reads in five minutes (issue 21) ----------------------------------------


def _fig_bytes(path: Path, seed: int) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [0, seed + 1])
    fig.suptitle(f"figure {seed}")
    fig.savefig(path)
    return path


def _referee_claims(tmp_path: Path) -> list[ClaimResult]:
    shared = _fig_bytes(tmp_path / "shared.png", 0)
    copy = tmp_path / "copy.png"
    copy.write_bytes(shared.read_bytes())  # byte-identical, another file name
    return [
        ClaimResult(
            id="5_two_layer",
            statement="s5",
            expected="e5",
            verdict="holds",
            measured={
                "note": "text first",
                "psi": {"value": 0.119, "ci": [0.068, 0.17], "n_seeds": 5,
                        "heterogeneity": {"i2": None, "q": None, "p": None}},
                "slope": {"value": 0.5, "ci": [0.4, 0.6],
                          "heterogeneity": {"i2": None, "q": None, "p": None}},
                "layer_2": None,
                "log-log slope": None,
                "log-log slope_note": "needs three learning rates",
            },
            figures=[shared],
        ),
        ClaimResult(
            id="7e_finite_eta",
            statement="s7e",
            expected="e7e",
            verdict="holds",
            measured={"cells": [{"cell": "eta = 0.05", "gap": {"value": 0.03, "ci": [0.0, 0.06]}}]},
            figures=[copy],
        ),
        ClaimResult(
            id="7g_roundoff",
            statement="s7g",
            expected="e7g",
            verdict="holds",
            measured={"fluct_diff": {"value": 7.975e-29, "ci": [-2.6e-28, 4.195e-28]}},
            headline="fluct_diff",
            figures=[_fig_bytes(tmp_path / "own.png", 3)],
        ),
    ]  # fmt: skip


def test_summary_table_has_each_claims_headline_number_and_interval(tmp_path: Path) -> None:
    write_report(tmp_path / "r", _referee_claims(tmp_path), header=HEADER)
    md = (tmp_path / "r" / "report.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| [")]
    assert table[0].endswith("| psi: 0.119 [0.068, 0.17] |")  # first interval, extras dropped
    assert table[1].endswith("| eta = 0.05 · gap: 0.03 [0, 0.06] |")  # the cell's label
    assert "| fluct_diff: 0 (exact" in table[2]  # the named headline
    page = (tmp_path / "r" / "report.html").read_text()
    assert page.count("<th>headline</th>") == 1 and "0.119 [0.068, 0.17]" in page


def test_no_undefined_fragments_and_one_explanation(tmp_path: Path) -> None:
    write_report(tmp_path / "r", _referee_claims(tmp_path), header=HEADER)
    for name in ("report.md", "report.html"):
        text = re.sub(r'src="data:[^"]+"', "", (tmp_path / "r" / name).read_text())
        assert "non-finite" not in text and "n/a" not in text and "None" not in text
        assert "i2" not in text and "layer_2:" not in text.replace("layer_2: no finite", "")
        assert text.count("Not defined here, so omitted above") == 1  # once, for claim 5
        assert "log-log slope: needs three learning rates" in text  # the claim's own reason
        assert "heterogeneity (2x)" in text


def test_roundoff_is_exact_zero_with_its_tolerance(tmp_path: Path) -> None:
    assert format_measured({"value": 7.975e-29, "ci": [-2.6e-28, 4.195e-28]}).startswith(
        "0 (exact: the value and its interval lie within 1e-10 of 0"
    )
    assert format_measured({"value": 2e-9, "ci": [1e-9, 3e-9]}) == "2e-09 [1e-09, 3e-09]"
    own = {"value": 2e-9, "ci": [1e-9, 3e-9], "roundoff_tol": 1e-8}
    assert format_measured(own).startswith("0 (exact: the value and its interval lie within 1e-08")
    write_report(tmp_path / "r", _referee_claims(tmp_path), header=HEADER)
    assert "7.975e-29" not in (tmp_path / "r" / "report.md").read_text()


def test_report_never_shows_a_figure_twice(tmp_path: Path) -> None:
    """Byte-identical figures of two claims are shown once; the later claim points to it."""
    write_report(tmp_path / "r", _referee_claims(tmp_path), header=HEADER)
    page = (tmp_path / "r" / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == len(set(sources)) == 2
    assert "identical to that of claim 5_two_layer" in page
    md = (tmp_path / "r" / "report.md").read_text()
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    digests = [(tmp_path / "r" / p).read_bytes() for p in shown]
    assert len(digests) == len(set(digests))


@pytest.mark.slow
def test_smoke_reproduction_report_reads(tmp_path: Path) -> None:
    """End to end (claims 5 and 7e share a sweep and a figure function): the report embeds no
    figure twice and has no undefined-value fragments."""
    from click.testing import CliRunner

    from sgdfluct.cli import main

    args = ["reproduce", "--smoke", "--only", "5_", "--only", "7e", "--workers", "2", "-q"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "rep" / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sources and len(sources) == len(set(sources))
    text = re.sub(r'src="data:[^"]+"', "", page)
    assert "non-finite" not in text and "n/a" not in text
    assert "<th>headline</th>" in text
