"""sgdfluct.plotting.polish_figure: readable ticks, clipped intervals, legends off the data."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sgdfluct.plotting.polish import CLIPPED_NOTE, polish_figure


def _drawn(fig: Figure) -> Figure:
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig


def test_layer_axis_gets_integer_ticks() -> None:
    fig = Figure()
    ax = fig.subplots()
    ax.errorbar([1, 2, 3], [0.1, -0.2, 0.3], yerr=0.05, marker="o")
    polish_figure(fig)
    _drawn(fig)
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_log_axis_inside_one_decade_has_two_labels() -> None:
    fig = Figure()
    ax = fig.subplots()
    ax.plot([1, 2, 3], [0.3, 0.5, 0.8], "o")
    ax.set_yscale("log")
    _drawn(fig)
    polish_figure(fig)
    _drawn(fig)
    lo, hi = ax.get_ylim()
    shown = [t for t in ax.get_yticks() if lo <= t <= hi]
    assert len(shown) >= 2


def test_interval_running_off_a_log_axis_is_clipped_and_marked() -> None:
    fig = Figure()
    ax = fig.subplots()
    # the second interval reaches below zero: on a log axis it would run off the plot
    ax.errorbar([1, 2, 3], [1e-2, 2e-3, 5e-2], yerr=[[5e-3, 4e-3, 1e-2], [5e-3, 1e-3, 1e-2]])
    ax.set_yscale("log")
    _drawn(fig)
    polish_figure(fig)
    bottom, top = ax.get_ylim()
    segments = ax.containers[0].lines[2][0].get_segments()
    assert all(bottom <= min(s[:, 1]) and max(s[:, 1]) <= top for s in segments)
    markers = [ln for ln in ax.get_lines() if ln.get_marker() == "v"]
    assert len(markers) == 1 and list(markers[0].get_xdata()) == [2]
    assert any(t.get_text() == CLIPPED_NOTE for t in ax.texts)


def test_legend_covering_a_point_moves_outside() -> None:
    fig = Figure()
    ax = fig.subplots()
    x = np.linspace(0, 1, 30)
    for k in range(4):  # lines everywhere: no inside spot is free
        ax.plot(x, x * 0 + k / 3, "o", label=f"line {k}")
    ax.legend(loc="upper left")
    _drawn(fig)
    polish_figure(fig)
    _drawn(fig)
    box = ax.get_legend().get_window_extent()
    assert box.x0 >= ax.get_window_extent().x1  # right of the axes


def test_legend_in_a_free_corner_stays() -> None:
    fig = Figure()
    ax = fig.subplots()
    ax.plot([0, 1], [0, 0.2], "o-", label="low")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right")
    _drawn(fig)
    before = ax.get_legend().get_window_extent()
    polish_figure(fig)
    assert ax.get_legend().get_window_extent().x1 == before.x1


def test_legend_covering_an_error_bar_moves_outside() -> None:
    fig = Figure()
    ax = fig.subplots()
    ax.errorbar([1, 2, 3], [0.0, 0.0, 0.0], yerr=[0.1, 0.1, 3.0], fmt="o", label="psi")
    ax.set_ylim(-1, 3.2)
    ax.legend(loc="upper right")  # over the long bar of the third point, not over a marker
    _drawn(fig)
    polish_figure(fig)
    _drawn(fig)
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1
