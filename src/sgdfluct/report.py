"""The reproduction report: ``report.html``, ``report.md`` and ``claims.json``.

The experiment code measures each claim of docs/theory.md §10 and decides its verdict; this module
only
renders :class:`ClaimResult` objects. It never decides or alters a verdict.

Outputs (all written atomically) in ``out_dir``:

- ``report.html`` — self-contained (inline CSS, figures embedded as base64 data URIs): a header
  table (version, config hashes, seeds, machine, runtime), a summary table of claims with verdict
  badges, then one section per claim with statement, expectation, measured values with
  uncertainties, verdict, figures and details;
- ``report.md`` — the same content, figures referenced as relative paths ``figures/<name>``;
- ``claims.json`` — a list of ``{"id", "statement", "measured", "expected", "verdict", "rule",
  "rule_history"}`` objects,
  ``verdict`` one of ``"holds"``, ``"fails"``, ``"inconclusive"``;
- ``figures/`` — every figure of a claim, copied there if it lives elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import platform
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgdfluct.io import atomic_path, atomic_write_json, atomic_write_text, to_jsonable

__all__ = [
    "VERDICTS",
    "ClaimResult",
    "config_hash",
    "format_measured",
    "machine_info",
    "write_report",
]

VERDICTS = ("holds", "fails", "inconclusive")
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


@dataclass(frozen=True, kw_only=True)
class ClaimResult:
    """The measured outcome of one claim.

    Attributes
    ----------
    id : str
        Short identifier (letters, digits, ``_ . -``), e.g. ``"claim1_spectra"``; unique per report.
    statement : str
        The claim in words (docs/theory.md §10).
    expected : str
        What the theory/paper expects, with the criterion used for the verdict.
    measured : dict or str
        Measured quantities. A value may be a number, a string, or a mapping
        ``{"value": x, "stderr": s}`` / ``{"value": x, "ci": [lo, hi]}`` (rendered ``x ± s`` /
        ``x [lo, hi]``); numpy scalars and arrays are converted.
    verdict : str
        ``"holds"``, ``"fails"`` or ``"inconclusive"``, decided by the experiment code.
    figures : sequence of Path
        Figure files (PNG, SVG or JPEG); relative paths are taken relative to the report folder.
    details : str
        Free text (light markdown: paragraphs, ``- `` lists, ``code``) on method and caveats.
    rule : str
        The decision rule in words, with its thresholds, as it stands now (written before the
        measurement unless ``rule_history`` records a change made after seeing data).
    rule_history : sequence of mapping
        Every change of the rule: ``{"date", "change", "after_seeing_data": bool}`` (empty if
        the rule never changed).
    """

    id: str
    statement: str
    expected: str
    measured: Mapping[str, Any] | str
    verdict: str
    figures: Sequence[Path] = field(default_factory=tuple)
    details: str = ""
    rule: str = ""
    rule_history: Sequence[Mapping[str, Any]] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID_PATTERN.match(self.id):
            raise ValueError(
                f"ClaimResult.id = {self.id!r}: expected letters, digits, '_', '.', '-' "
                "(starting with a letter or digit)"
            )
        if self.verdict not in VERDICTS:
            raise ValueError(
                f"ClaimResult.verdict = {self.verdict!r} (claim {self.id}): expected one of "
                + ", ".join(repr(v) for v in VERDICTS)
            )
        if not isinstance(self.measured, Mapping | str):
            raise TypeError(
                f"ClaimResult.measured (claim {self.id}) must be a dict or a string, "
                f"got {type(self.measured).__name__}"
            )
        object.__setattr__(self, "figures", tuple(Path(f) for f in self.figures))
        history = tuple(dict(h) for h in self.rule_history)
        for h in history:
            if set(h) != {"date", "change", "after_seeing_data"} or not isinstance(
                h["after_seeing_data"], bool
            ):
                raise ValueError(
                    f"ClaimResult.rule_history (claim {self.id}): each entry needs exactly "
                    "'date', 'change' and a boolean 'after_seeing_data', got "
                    f"{sorted(h)}"
                )
        object.__setattr__(self, "rule_history", history)
        if isinstance(self.measured, Mapping):
            object.__setattr__(self, "measured", dict(self.measured))

    def to_json(self) -> dict[str, Any]:
        """The ``claims.json`` record: id, statement, measured, expected, verdict, rule and
        rule_history."""
        return {
            "id": self.id,
            "statement": self.statement,
            "measured": to_jsonable(self.measured),
            "expected": self.expected,
            "verdict": self.verdict,
            "rule": self.rule,
            "rule_history": [dict(h) for h in self.rule_history],
        }


def config_hash(config: Any) -> str:
    """Short SHA-256 (12 hex digits) of a config's resolved TOML text (or of ``str(config)``)."""
    from sgdfluct.config import ExperimentConfig, config_to_toml

    text = config_to_toml(config) if isinstance(config, ExperimentConfig) else str(config)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def machine_info() -> dict[str, Any]:
    """Python, platform and CPU facts for the report header."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def _format_number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def format_measured(value: Any) -> str:
    """Render one measured value: ``x ± s``, ``x [lo, hi]``, a number, plain text, or (nested
    mappings and lists of them) an indented block of ``key: value`` lines."""
    value = to_jsonable(value)
    if isinstance(value, Mapping) and "value" in value:
        text = _format_number(value["value"])
        if value.get("stderr") is not None:
            text += f" ± {_format_number(value['stderr'])}"
        ci = value.get("ci")
        if isinstance(ci, list | tuple) and len(ci) == 2:
            text += f" [{_format_number(ci[0])}, {_format_number(ci[1])}]"
        extra = {k: v for k, v in value.items() if k not in ("value", "stderr", "ci")}
        if extra:
            text += " (" + ", ".join(f"{k}: {format_measured(v)}" for k, v in extra.items()) + ")"
        return text
    if isinstance(value, Mapping):
        lines = []
        for k, v in value.items():
            inner = format_measured(v)
            if "\n" in inner:
                lines.append(f"{k}:")
                lines.extend("  " + line for line in inner.splitlines())
            else:
                lines.append(f"{k}: {inner}")
        return "\n".join(lines)
    if isinstance(value, list):
        if all(not isinstance(v, Mapping | list) for v in value):
            items = (_format_number(v) if v is not None else "n/a" for v in value)
            return "[" + ", ".join(items) + "]"
        out: list[str] = []
        for v in value:
            block = format_measured(v).splitlines() or [""]
            out.append("- " + block[0])
            out.extend("  " + line for line in block[1:])
        return "\n".join(out)
    if value is None:
        return "n/a (non-finite)"
    return _format_number(value)


def _measured_rows(measured: Mapping[str, Any] | str) -> list[tuple[str, str]]:
    if isinstance(measured, str):
        return [("", measured)]
    return [(str(k), format_measured(v)) for k, v in measured.items()]


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------


def _collect_figures(out_dir: Path, claims: Sequence[ClaimResult]) -> dict[str, list[Path]]:
    """Make sure every figure lies under ``out_dir/figures``; return paths relative to out_dir."""
    figures_dir = out_dir / "figures"
    placed: dict[str, list[Path]] = {}
    for claim in claims:
        rel_paths: list[Path] = []
        for figure in claim.figures:
            source = figure if figure.is_absolute() else out_dir / figure
            if not source.is_file():
                raise FileNotFoundError(
                    f"figure {str(figure)!r} of claim {claim.id} does not exist"
                )
            if source.suffix.lower() not in _MIME:
                raise ValueError(
                    f"figure {str(figure)!r} of claim {claim.id}: expected one of "
                    + ", ".join(sorted(_MIME))
                )
            try:
                rel = source.resolve().relative_to(figures_dir.resolve())
            except ValueError:
                rel = Path(f"{claim.id}__{source.name}")
                with atomic_path(figures_dir / rel) as tmp:
                    shutil.copyfile(source, tmp)
            rel_paths.append(Path("figures") / rel)
        placed[claim.id] = rel_paths
    return placed


def _data_uri(path: Path) -> str:
    mime = _MIME[path.suffix.lower()]
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


# --------------------------------------------------------------------------------------------------
# markdown
# --------------------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _render_markdown(
    claims: Sequence[ClaimResult],
    header: Mapping[str, Any],
    figures: Mapping[str, list[Path]],
    title: str,
) -> str:
    lines = [f"# {title}", ""]
    if header:
        lines += ["| | |", "|---|---|"]
        lines += [
            f"| {_md_cell(str(k))} | {_md_cell(_header_value(v))} |" for k, v in header.items()
        ]
        lines.append("")
    counts = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    lines += [", ".join(f"**{n}** {v}" for v, n in counts.items()), ""]
    lines += ["| claim | statement | verdict |", "|---|---|---|"]
    for c in claims:
        lines.append(f"| [{c.id}](#{c.id.lower()}) | {_md_cell(c.statement)} | **{c.verdict}** |")
    lines.append("")
    for c in claims:
        lines += [f"## {c.id}", "", f"**Statement.** {c.statement}", ""]
        lines += [f"**Expected.** {c.expected}", ""]
        if c.rule:
            lines += [f"**Rule.** {c.rule}", ""]
        for h in c.rule_history:
            seen = "after seeing data" if h["after_seeing_data"] else "before seeing data"
            lines += [f"- *rule changed {h['date']} ({seen}):* {h['change']}"]
        if c.rule_history:
            lines.append("")
        lines += [f"**Verdict: {c.verdict}**", ""]
        lines += ["**Measured.**", ""]
        rows = _measured_rows(c.measured)
        if len(rows) == 1 and rows[0][0] == "":
            lines += [rows[0][1], ""]
        else:
            flat = [(k, v) for k, v in rows if "\n" not in v]
            nested = [(k, v) for k, v in rows if "\n" in v]
            if flat:
                lines += ["| quantity | value |", "|---|---|"]
                lines += [f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in flat]
                lines.append("")
            for k, v in nested:  # structured values keep their layout in a code block
                lines += [f"*{k}*", "", "```", v, "```", ""]
        for rel in figures[c.id]:
            lines += [f"![{c.id}: {rel.name}]({rel.as_posix()})", ""]
        if c.details:
            lines += [c.details.strip(), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# html
# --------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 60rem;
       margin: 2rem auto; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.7rem; margin-bottom: .5rem; }
h2 { font-size: 1.25rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: .8rem 0; width: 100%; }
th, td { border: 1px solid #ddd; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f6f6f6; }
td.num { font-family: ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap; }
table.header td:first-child { width: 12rem; color: #555; }
.badge { display: inline-block; padding: .1rem .55rem; border-radius: .8rem; font-size: .85rem;
         font-weight: 600; color: #fff; }
.holds { background: #2e7d32; } .fails { background: #c62828; }
.inconclusive { background: #9e7700; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #666; }
code { background: #f3f3f3; padding: 0 .2rem; border-radius: .2rem; }
.counts span { margin-right: 1rem; }
"""


def _inline_markdown(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _markdown_to_html(text: str) -> str:
    """Minimal markdown: blank-line paragraphs, ``- `` bullet lists, ``code`` and **bold**."""
    blocks = [b for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    out = []
    for block in blocks:
        lines = block.splitlines()
        if all(line.lstrip().startswith(("- ", "* ")) for line in lines):
            items = "".join(f"<li>{_inline_markdown(line.lstrip()[2:])}</li>" for line in lines)
            out.append(f"<ul>{items}</ul>")
        else:
            out.append(f"<p>{_inline_markdown(' '.join(lines))}</p>")
    return "\n".join(out)


def _header_value(value: Any) -> str:
    value = to_jsonable(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _badge(verdict: str) -> str:
    return f'<span class="badge {verdict}">{html.escape(verdict)}</span>'


def _render_html(
    claims: Sequence[ClaimResult],
    header: Mapping[str, Any],
    figures: Mapping[str, list[Path]],
    out_dir: Path,
    title: str,
) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if header:
        header_rows = "".join(
            f"<tr><td>{e(str(k))}</td><td>{e(_header_value(v))}</td></tr>"
            for k, v in header.items()
        )
        parts.append(f'<table class="header">{header_rows}</table>')
    counts = "".join(
        f"<span>{_badge(v)} {sum(c.verdict == v for c in claims)}</span>" for v in VERDICTS
    )
    parts.append(f'<p class="counts">{counts}</p>')
    summary = "".join(
        f'<tr><td><a href="#{e(c.id)}">{e(c.id)}</a></td><td>{e(c.statement)}</td>'
        f"<td>{_badge(c.verdict)}</td></tr>"
        for c in claims
    )
    parts.append(
        f"<table><tr><th>claim</th><th>statement</th><th>verdict</th></tr>{summary}</table>"
    )
    for c in claims:
        parts.append(f'<section id="{e(c.id)}"><h2>{e(c.id)} {_badge(c.verdict)}</h2>')
        parts.append(f"<p><strong>Statement.</strong> {e(c.statement)}</p>")
        parts.append(f"<p><strong>Expected.</strong> {e(c.expected)}</p>")
        if c.rule:
            parts.append(f"<p><strong>Rule.</strong> {e(c.rule)}</p>")
        if c.rule_history:
            items = "".join(
                f"<li><em>changed {e(str(h['date']))} "
                f"({'after' if h['after_seeing_data'] else 'before'} seeing data):</em> "
                f"{e(str(h['change']))}</li>"
                for h in c.rule_history
            )
            parts.append(f"<ul>{items}</ul>")
        rows = _measured_rows(c.measured)
        if len(rows) == 1 and rows[0][0] == "":
            parts.append(f"<p><strong>Measured.</strong> {e(rows[0][1])}</p>")
        else:
            body = "".join(f'<tr><td>{e(k)}</td><td class="num">{e(v)}</td></tr>' for k, v in rows)
            parts.append(
                "<p><strong>Measured.</strong></p>"
                f"<table><tr><th>quantity</th><th>value</th></tr>{body}</table>"
            )
        parts.append(f"<p><strong>Verdict:</strong> {_badge(c.verdict)}</p>")
        for rel in figures[c.id]:
            parts.append(
                f'<figure><img src="{_data_uri(out_dir / rel)}" alt="{e(c.id)}: {e(rel.name)}">'
                f"<figcaption>{e(rel.name)}</figcaption></figure>"
            )
        if c.details:
            parts.append(_markdown_to_html(c.details))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    out_dir: str | Path,
    claims: Sequence[ClaimResult],
    *,
    header: Mapping[str, Any],
    title: str = "sgdfluct: reproduction of arXiv 2311.14120",
) -> None:
    """Write ``report.html``, ``report.md`` and ``claims.json`` (and ``figures/``) into ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Report folder (created if needed).
    claims : sequence of ClaimResult
        In report order; ids must be unique.
    header : mapping
        Run facts shown at the top, e.g. ``{"version": ..., "config hashes": {...}, "seeds": ...,
        "machine": machine_info(), "runtime": "812 s"}``; values may be nested mappings.
    title : str
        Report title.

    Raises
    ------
    ValueError
        Duplicate claim ids, or an object that is not a :class:`ClaimResult`.
    FileNotFoundError
        A figure of a claim does not exist.
    """
    out_dir = Path(out_dir)
    claims = list(claims)
    for claim in claims:
        if not isinstance(claim, ClaimResult):
            raise ValueError(f"claims must be ClaimResult objects, got {type(claim).__name__}")
    ids = [c.id for c in claims]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate claim ids: {duplicates}")
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = _collect_figures(out_dir, claims)
    atomic_write_json(out_dir / "claims.json", [c.to_json() for c in claims])
    atomic_write_text(out_dir / "report.md", _render_markdown(claims, header, figures, title))
    atomic_write_text(
        out_dir / "report.html", _render_html(claims, header, figures, out_dir, title)
    )
