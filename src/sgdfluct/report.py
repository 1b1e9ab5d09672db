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

Reading rules (issue 21), applied to every claim alike:

- the summary table gives each claim's **headline**: the quantity named by
  ``ClaimResult.headline``, or else the first measured value that carries an interval;
- a value that is undefined (``None``: a statistic this measurement cannot give, or a layer that
  does not apply) is **omitted**, and the claim says once, in words, which ones and why (a
  ``<key>_note`` next to it gives the reason; otherwise the generic one of
  :data:`UNDEFINED_NOTE`);
- an interval that lies within :data:`ROUNDOFF_ATOL` of zero (or of a claim's own
  ``roundoff_tol``) is shown as ``0 (exact ...)`` with the tolerance, never as a measurement;
- a figure byte-identical to an earlier claim's is not repeated: the later claim points to it.
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
    "ROUNDOFF_ATOL",
    "UNDEFINED_NOTE",
    "VERDICTS",
    "ClaimResult",
    "config_hash",
    "design_text",
    "format_measured",
    "headline",
    "machine_info",
    "undefined_paths",
    "write_report",
]

VERDICTS = ("holds", "fails", "inconclusive")
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

#: an interval whose value and both ends lie within this of zero is float64 round-off of a
#: quantity that is zero by construction (a difference of two equal O(1) numbers after ~1e6
#: operations: 2.2e-16 x 1e6 ~ 1e-10); shown as "0 (exact)" with the tolerance. A measured value
#: may carry its own ``roundoff_tol``
ROUNDOFF_ATOL = 1e-10

#: why a value can be undefined, said once per claim when no ``<key>_note`` gives the reason
UNDEFINED_NOTE = (
    "no finite value at this scale: a statistic that needs more seeds, per-seed standard errors "
    "or more grid points than this measurement has, or a layer or cell it does not apply to"
)


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
    headline : str
        The key of ``measured`` shown in the summary table (a top-level key, or a dotted path
        into nested mappings); empty: the first measured value with an interval
        (:func:`headline`).
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
    headline: str = ""

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


def _is_undefined(value: Any) -> bool:
    """``None``, or a mapping or list with nothing defined inside (all omitted)."""
    if value is None:
        return True
    if isinstance(value, Mapping):
        if "value" in value:
            return value["value"] is None
        return bool(value) and all(
            _is_undefined(v) for k, v in value.items() if not str(k).endswith("_note")
        )
    return False


def _roundoff(value: Mapping[str, Any]) -> str | None:
    """``"0 (exact ...)"`` for an interval within its round-off tolerance of zero, else None."""
    tol = value.get("roundoff_tol", ROUNDOFF_ATOL)
    ci = value.get("ci")
    if not isinstance(ci, list | tuple) or len(ci) != 2:
        return None
    numbers = [value["value"], *ci]
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in numbers):
        return None
    if max(abs(float(x)) for x in numbers) < tol:
        return f"0 (exact: the value and its interval lie within {tol:.0e} of 0, round-off)"
    return None


def format_measured(value: Any) -> str:
    """Render one measured value: ``x ± s``, ``x [lo, hi]``, a number, plain text, or (nested
    mappings and lists of them) an indented block of ``key: value`` lines.

    Undefined entries (``None``, and mappings with nothing defined) are omitted, and so are
    their ``<key>_note`` companions (:func:`undefined_paths` lists them, with the notes); an
    interval within round-off of zero is ``0 (exact ...)`` (:data:`ROUNDOFF_ATOL`). A value that
    is undefined as a whole renders as ``"undefined"``.
    """
    value = to_jsonable(value)
    if _is_undefined(value):
        return "undefined"
    if isinstance(value, Mapping) and "value" in value:
        exact = _roundoff(value)
        if exact is not None:
            return exact
        text = _format_number(value["value"])
        if value.get("stderr") is not None:
            text += f" ± {_format_number(value['stderr'])}"
        ci = value.get("ci")
        if isinstance(ci, list | tuple) and len(ci) == 2 and None not in ci:
            text += f" [{_format_number(ci[0])}, {_format_number(ci[1])}]"
        extra = {
            k: v
            for k, v in value.items()
            if k not in ("value", "stderr", "ci", "roundoff_tol") and not _is_undefined(v)
        }
        if extra:
            text += " (" + ", ".join(f"{k}: {format_measured(v)}" for k, v in extra.items()) + ")"
        return text
    if isinstance(value, Mapping):
        lines = []
        for k, v in value.items():
            if _is_undefined(v) or _is_note_of_undefined(value, k):
                continue
            inner = format_measured(v)
            if "\n" in inner:
                lines.append(f"{k}:")
                lines.extend("  " + line for line in inner.splitlines())
            else:
                lines.append(f"{k}: {inner}")
        return "\n".join(lines)
    if isinstance(value, list):
        if all(not isinstance(v, Mapping | list) for v in value):
            items = (_format_number(v) if v is not None else "undefined" for v in value)
            return "[" + ", ".join(items) + "]"
        out: list[str] = []
        for v in value:
            block = format_measured(v).splitlines() or [""]
            out.append("- " + block[0])
            out.extend("  " + line for line in block[1:])
        return "\n".join(out)
    return _format_number(value)


def _is_note_of_undefined(mapping: Mapping[str, Any], key: Any) -> bool:
    key = str(key)
    return key.endswith("_note") and _is_undefined(mapping.get(key[: -len("_note")], 0))


def undefined_paths(measured: Mapping[str, Any] | str) -> dict[str, str]:
    """Every undefined entry of ``measured`` (dotted path → reason), as omitted by
    :func:`format_measured`; the reason is the entry's ``<key>_note`` or :data:`UNDEFINED_NOTE`.

    Entries of the same name under several parents are grouped (``heterogeneity`` of five
    quantities is one entry ``heterogeneity (5x)``).
    """
    found: dict[str, str] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                if str(k).endswith("_note") or k in ("value", "ci", "stderr"):
                    continue
                sub = f"{path}.{k}" if path else str(k)
                if _is_undefined(v):
                    note = value.get(f"{k}_note")
                    found[sub] = str(note) if note else UNDEFINED_NOTE
                else:
                    walk(v, sub)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                label = v.get("cell", i) if isinstance(v, Mapping) else i
                walk(v, f"{path}[{label}]")

    if isinstance(measured, Mapping):
        walk(to_jsonable(measured), "")
    return found


def _undefined_sentence(measured: Mapping[str, Any] | str) -> str:
    """One sentence naming the omitted entries, grouped by their last name, with the reasons."""
    paths = undefined_paths(measured)
    if not paths:
        return ""
    by_reason: dict[str, dict[str, int]] = {}
    for path, reason in paths.items():
        name = re.sub(r"\[[^\]]*\]", "", path).split(".")[-1]
        names = by_reason.setdefault(reason, {})
        names[name] = names.get(name, 0) + 1
    parts = []
    for reason, names in by_reason.items():
        listed = ", ".join(f"{n} ({c}x)" if c > 1 else n for n, c in names.items())
        parts.append(f"{listed}: {reason}")
    return "Not defined here, so omitted above — " + "; ".join(parts) + "."


def _number_only(value: Any) -> str:
    """A measured value without its extra fields (the summary table's headline)."""
    if isinstance(value, Mapping) and "value" in value:
        value = {k: value[k] for k in ("value", "stderr", "ci", "roundoff_tol") if k in value}
    return format_measured(value)


def headline(claim: ClaimResult) -> tuple[str, str]:
    """``(name, rendered value)`` of the claim's headline quantity (``("", "")`` if none).

    ``claim.headline`` names it (a dotted path; list items by index); otherwise it is the first
    measured value, depth first, that has an interval (``{"value", "ci"}``, or ``x`` next to
    ``x_ci``), named by its path (with the ``cell`` label of a list item); ``("", "")`` if there
    is none.
    """
    measured = to_jsonable(claim.measured)
    if not isinstance(measured, Mapping):
        return "", ""
    if claim.headline:
        node: Any = measured
        for part in claim.headline.split("."):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                raise KeyError(f"headline {claim.headline!r} of claim {claim.id}: no {part!r}")
        return claim.headline, _number_only(node)

    def interval(value: Any) -> bool:
        return isinstance(value, list) and len(value) == 2 and None not in value

    def first(value: Any, path: list[str], loose: bool) -> tuple[str, str] | None:
        """Depth first: a value with an interval (``{"value", "ci"}`` or ``x`` with ``x_ci``);
        ``loose``: else any number."""
        if isinstance(value, Mapping):
            if "value" in value and (interval(value.get("ci")) or loose):
                if value["value"] is not None:
                    return " · ".join(path), _number_only(value)
            for k, v in value.items():
                ci = value.get(f"{k}_ci")
                if _is_number(v) and interval(ci):
                    pair = {"value": v, "ci": ci}
                    return " · ".join([*path, str(k)]), _number_only(pair)
            for k, v in value.items():
                if k == "cell" or str(k).endswith(("_ci", "_note")):
                    continue
                if loose and _is_number(v):
                    return " · ".join([*path, str(k)]), _format_number(v)
                hit = first(v, [*path, str(k)], loose)
                if hit:
                    return hit
        elif isinstance(value, list):
            for v in value:
                # a list of cells: the cell's label replaces the list's name
                labelled = isinstance(v, Mapping) and "cell" in v
                hit = first(v, [*path[:-1], str(v["cell"])] if labelled else path, loose)
                if hit:
                    return hit
        return None

    # no number-only fallback: the first number of a claim without intervals (a cell count, a
    # raw error) would mislead; such a claim names its headline
    return first(measured, [], False) or ("", "")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _measured_rows(measured: Mapping[str, Any] | str) -> list[tuple[str, str]]:
    if isinstance(measured, str):
        return [("", measured)]
    return [
        (str(k), format_measured(v))
        for k, v in measured.items()
        if not _is_undefined(to_jsonable(v)) and not _is_note_of_undefined(measured, k)
    ]


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------


class _Figures(dict[str, list[Path]]):
    """Claim id -> its figures (relative to the report folder); ``same_as`` maps a figure that is
    byte-identical to an earlier claim's to that claim's id (shown once, there)."""

    same_as: dict[tuple[str, Path], str]


def _collect_figures(out_dir: Path, claims: Sequence[ClaimResult]) -> _Figures:
    """Make sure every figure lies under ``out_dir/figures``; return paths relative to out_dir,
    with the byte-identical repeats marked (``same_as``)."""
    figures_dir = out_dir / "figures"
    placed = _Figures()
    placed.same_as = {}
    first_owner: dict[str, str] = {}
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
            digest = hashlib.sha256(source.read_bytes()).hexdigest()
            owner = first_owner.setdefault(digest, claim.id)
            if owner != claim.id:
                placed.same_as[(claim.id, Path("figures") / rel)] = owner
        placed[claim.id] = rel_paths
    return placed


def _repeat_note(owner: str) -> str:
    return f"The figure of this claim is identical to that of claim {owner} (shown there)."


def _data_uri(path: Path) -> str:
    mime = _MIME[path.suffix.lower()]
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _seed_text(seeds: Any) -> str:
    if not isinstance(seeds, Mapping):
        return ""
    parts = []
    for name, values in seeds.items():
        values = list(values) if isinstance(values, list | tuple) else [values]
        if name == "replicates" or len(values) <= 3:
            parts.append(f"{name} {', '.join(str(v) for v in values)}")
        else:
            parts.append(f"{name} {values[0]}…{values[-1]} ({len(values)})")
    return "; ".join(parts)


def _flag(claim: ClaimResult) -> str:
    """The summary table's mark of a rule changed after this run's data were seen."""
    design = getattr(claim, "design", None) or {}
    return " (rule changed after data)" if design.get("rule_changed_after_data") else ""


def design_text(claim: ClaimResult) -> str:
    """One line on how a claim was tested (the ``design`` fields of ``claims.json``, where the
    result has them): the evidence and scale, the seeds, the rule's hash and when it was frozen
    and last changed; a rule changed after this run's data were seen is said first."""
    design = getattr(claim, "design", None)
    if not design:
        return ""
    parts = []
    if design.get("rule_changed_after_data"):
        parts.append("RULE CHANGED AFTER THIS RUN'S DATA WERE SEEN (not confirmatory)")
    if design.get("evidence"):
        parts.append(f"{design['evidence']} ({design.get('scale')} scale)")
    seeds = _seed_text(design.get("seeds"))
    if seeds:
        parts.append(f"seeds: {seeds}")
    if design.get("rule_hash"):
        rule = f"rule {design['rule_hash']}"
        if design.get("rule_frozen"):
            rule += f", frozen {design['rule_frozen']}"
        if design.get("rule_last_changed"):
            rule += f", last changed {design['rule_last_changed']}"
        parts.append(rule)
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------------
# markdown
# --------------------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _render_markdown(
    claims: Sequence[ClaimResult],
    header: Mapping[str, Any],
    figures: _Figures,
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
    lines += ["| claim | statement | verdict | headline |", "|---|---|---|---|"]
    for c in claims:
        name, value = headline(c)
        head = f"{name}: {value}" if name else ""
        lines.append(
            f"| [{c.id}](#{c.id.lower()}) | {_md_cell(c.statement)} | **{c.verdict}**{_flag(c)} | "
            f"{_md_cell(head)} |"
        )
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
        design = design_text(c)
        if design:
            lines += [f"**Design.** {design}", ""]
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
        undefined = _undefined_sentence(c.measured)
        if undefined:
            lines += [f"*{undefined}*", ""]
        for rel in figures[c.id]:
            owner = figures.same_as.get((c.id, rel))
            if owner is not None:
                lines += [f"*{_repeat_note(owner)}*", ""]
                continue
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
p.note { font-size: .9rem; color: #555; font-style: italic; }
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


def _headline_html(claim: ClaimResult) -> str:
    name, value = headline(claim)
    if not name:
        return ""
    return f"<small>{html.escape(name)}</small><br>{html.escape(value)}"


def _badge(verdict: str) -> str:
    return f'<span class="badge {verdict}">{html.escape(verdict)}</span>'


def _render_html(
    claims: Sequence[ClaimResult],
    header: Mapping[str, Any],
    figures: _Figures,
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
        f'<td>{_badge(c.verdict)}{e(_flag(c))}</td><td class="num">{_headline_html(c)}</td></tr>'
        for c in claims
    )
    parts.append(
        "<table><tr><th>claim</th><th>statement</th><th>verdict</th><th>headline</th></tr>"
        f"{summary}</table>"
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
        undefined = _undefined_sentence(c.measured)
        if undefined:
            parts.append(f'<p class="note">{e(undefined)}</p>')
        parts.append(f"<p><strong>Verdict:</strong> {_badge(c.verdict)}</p>")
        design = design_text(c)
        if design:
            parts.append(f"<p><strong>Design.</strong> {e(design)}</p>")
        for rel in figures[c.id]:
            owner = figures.same_as.get((c.id, rel))
            if owner is not None:
                parts.append(
                    f'<p class="note">{e(_repeat_note(owner))} '
                    f'<a href="#{e(owner)}">Go to {e(owner)}</a>.</p>'
                )
                continue
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
