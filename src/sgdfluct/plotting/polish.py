"""Make any finished figure readable: ticks, clipped intervals, legends (issue 21).

:func:`polish_figure` is applied by the reproduction to every claim's figure before it is saved,
whatever drew it, so each claim's figure code only says *what* to draw. It changes no data: it

* labels log axes with at least two major ticks (a view inside one decade gets 1-2-5 ticks) and
  drops the crowded minor labels;
* puts integer ticks on a linear axis whose plotted coordinates are all integers (layer indices,
  widths), never fractional ones;
* clips an error bar that leaves a logarithmic axis (a lower end at or below zero, or beyond the
  view) at the axis and marks the clipped end with a triangle (▼ below, ▲ above), with a note
  in the corner, so that an interval never silently runs off the plot;
* moves a legend that covers a data point outside the axes, to the right.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["CLIPPED_NOTE", "polish_figure"]

#: the corner note of an axes with clipped intervals
CLIPPED_NOTE = "▼/▲: interval clipped at the axis"

#: integer ticks only for axes with at most this many distinct integer positions
_MAX_INTEGER_TICKS = 25


def polish_figure(fig: Any) -> Any:
    """Polish every axes of ``fig`` in place (see the module docstring); returns ``fig``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.canvas is None or not hasattr(fig.canvas, "get_renderer"):
        FigureCanvasAgg(fig)
    moved = False
    for ax in fig.axes:
        _log_ticks(ax)
        _integer_ticks(ax)
        _clip_log_errorbars(ax)
    fig.canvas.draw()  # legend and data positions in display coordinates
    for ax in fig.axes:
        moved |= _move_covering_legend(ax)
    if moved:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tight_layout warns on axes it cannot fit
            fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------


def _axes_data(ax: Any, which: str) -> np.ndarray:
    """Every plotted coordinate along ``which`` ("x" or "y"): lines, markers, bars, scatter."""
    values: list[np.ndarray] = []
    index = 0 if which == "x" else 1
    for line in ax.get_lines():
        data = line.get_xdata() if which == "x" else line.get_ydata()
        values.append(np.asarray(data, dtype=float).ravel())
    for collection in ax.collections:
        offsets = np.asarray(collection.get_offsets(), dtype=float)
        if offsets.ndim == 2 and offsets.shape[0] > 1:
            values.append(offsets[:, index])
    for patch in ax.patches:
        if hasattr(patch, "get_x") and hasattr(patch, "get_width"):
            if which == "x":
                values.append(np.array([patch.get_x() + patch.get_width() / 2]))
    if not values:
        return np.zeros(0)
    out = np.concatenate(values)
    return out[np.isfinite(out)]


def _log_ticks(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis, scale, limits in (
        (ax.xaxis, ax.get_xscale(), ax.get_xlim()),
        (ax.yaxis, ax.get_yscale(), ax.get_ylim()),
    ):
        if scale != "log":
            continue
        axis.set_minor_formatter(NullFormatter())
        lo, hi = sorted(limits)
        majors = [t for t in axis.get_majorticklocs() if lo <= t <= hi]
        if len(majors) < 2:
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # every tick labelled
            majors = [t for t in axis.get_majorticklocs() if lo <= t <= hi]
            if len(majors) < 2:  # inside a 1-2-5 step: every integer multiple of the decade
                axis.set_major_locator(LogLocator(base=10, subs=tuple(range(1, 10))))


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import FixedLocator, MaxNLocator

    for which, axis, scale in (("x", ax.xaxis, ax.get_xscale()), ("y", ax.yaxis, ax.get_yscale())):
        if scale != "linear" or isinstance(axis.get_major_locator(), FixedLocator):
            continue  # explicit ticks (set_xticks) are the figure's choice
        data = _axes_data(ax, which)
        distinct = np.unique(data)
        if 0 < distinct.size <= _MAX_INTEGER_TICKS and np.all(distinct == np.round(distinct)):
            axis.set_major_locator(MaxNLocator(integer=True))


def _clip_log_errorbars(ax: Any) -> None:
    """Clip vertical error bars at the view of a log y axis and mark the clipped ends."""
    from matplotlib.container import ErrorbarContainer

    if ax.get_yscale() != "log":
        return
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, top)  # freeze the view: clipping must not rescale it
    clipped_any = False
    for container in ax.containers:
        if not isinstance(container, ErrorbarContainer) or not container.has_yerr:
            continue
        data_line, caplines, barcols = container.lines
        color = data_line.get_color() if data_line is not None else "k"
        for barcol in barcols:
            segments = [np.asarray(s, dtype=float).copy() for s in barcol.get_segments()]
            if not segments or not all(s.shape == (2, 2) for s in segments):
                continue
            if not np.allclose([s[0, 0] for s in segments], [s[1, 0] for s in segments]):
                continue  # horizontal bars (xerr)
            low_x, high_x = [], []
            for s in segments:
                lo, hi = sorted((s[0, 1], s[1, 1]))
                if not lo > bottom:
                    low_x.append(s[0, 0])
                    lo = bottom
                if not hi < top:
                    high_x.append(s[0, 0])
                    hi = top
                s[:, 1] = (lo, hi)
            barcol.set_segments(segments)
            for xs, y, marker in ((low_x, bottom, "v"), (high_x, top, "^")):
                if xs:
                    clipped_any = True
                    ax.plot(xs, [y] * len(xs), linestyle="none", marker=marker, color=color,
                            markersize=6, clip_on=False, zorder=5)  # fmt: skip
        for cap in caplines:  # caps of a clipped end would sit outside the view
            ys = np.asarray(cap.get_ydata(), dtype=float)
            cap.set_ydata(np.where((ys > bottom) & (ys < top), ys, np.nan))
    if clipped_any:
        ax.text(0.99, 0.01, CLIPPED_NOTE, transform=ax.transAxes, ha="right", va="bottom",
                fontsize=7, color="0.3")  # fmt: skip


def _move_covering_legend(ax: Any) -> bool:
    """Move the legend outside the axes if it covers a plotted point; True if it moved."""
    legend = ax.get_legend()
    if legend is None:
        return False
    box = legend.get_window_extent()
    points = []
    for line in ax.get_lines():
        xy = np.column_stack(
            [np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)]
        )
        points.append(xy[np.all(np.isfinite(xy), axis=1)])
    for collection in ax.collections:
        offsets = np.asarray(collection.get_offsets(), dtype=float)
        if offsets.ndim == 2 and offsets.shape[1] == 2 and offsets.shape[0] > 1:
            points.append(offsets[np.all(np.isfinite(offsets), axis=1)])
        for segment in getattr(collection, "get_segments", lambda: [])():
            segment = np.asarray(segment, dtype=float)  # error bars: points along each bar
            if segment.ndim == 2 and segment.shape == (2, 2):
                t = np.linspace(0.0, 1.0, 21)[:, None]
                points.append(segment[0] + t * (segment[1] - segment[0]))
    points = [p for p in points if p.size]
    if not points:
        return False
    xy = np.concatenate(points)
    if xy.size == 0:
        return False
    display = ax.transData.transform(xy)
    inside = (
        (display[:, 0] >= box.x0)
        & (display[:, 0] <= box.x1)
        & (display[:, 1] >= box.y0)
        & (display[:, 1] <= box.y1)
    )
    if not inside.any():
        return False
    handles, labels = ax.get_legend_handles_labels()
    fontsize = legend.get_texts()[0].get_fontsize() if legend.get_texts() else "small"
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
              fontsize=fontsize)  # fmt: skip
    return True
