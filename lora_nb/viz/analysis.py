"""Figures of how LoRA learns: ranks over a run, rank advice, directions vs full FT, interference, intruders.

Each ``*_spec`` is a pure function to a plotly-shaped dict that ``svg.render`` draws; ``*_figure`` is its
``go.Figure``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.analysis.learned.history import RankMap
from . import figure, panel_layout
from .axes import text_px
from .png import palette
from .spectra import short_names

MAX_HEIGHT = 900  # a heatmap of many modules keeps a readable height (its row labels are thinned)
ROW = 12  # pixels per module row: one line of 11 px text
COLUMNS = 400  # a rank map's columns at most (the recorded steps, resampled onto a regular grid)
RANK_NOTE = ("effective rank: how many directions ΔW really uses; rank for a share of the energy: how many of its "
             "largest singular values hold that share of ‖ΔW‖² (the squared sum of all ΔW's entries).")


def _rows_height(rows: int) -> int:
    return min(MAX_HEIGHT, max(260, ROW * rows + 120))


def step_grid(steps: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(grid, index)``: regular step columns covering the recordings (at most ``COLUMNS``) and, for each, the
    latest recording at or before it (recordings may come at changing intervals)."""
    s = np.asarray(steps, dtype=float)
    if s.size < 2:
        return s, np.arange(s.size)
    spacing = max(float(np.min(np.diff(s))), (s[-1] - s[0]) / COLUMNS, 1.0)
    grid = s[0] + spacing * np.arange(int(round((s[-1] - s[0]) / spacing)) + 1)
    return grid, np.searchsorted(s, grid + 1e-9, side="right") - 1


def step_axis(steps: list[int]) -> dict:
    """The step axis both history charts share: the same range (half a column beyond the first and last
    recording) and so the same ticks."""
    grid, _ = step_grid(steps)
    half = (grid[1] - grid[0]) / 2 if grid.size > 1 else 0.5
    lo, hi = (float(grid[0]) - half, float(grid[-1]) + half) if grid.size else (0.0, 1.0)
    return {"title": {"text": "step"}, "range": [lo, hi], "tickformat": "d", "rangemode": "nonnegative"}


def history_margin(modules: list[str], colorbar: bool) -> dict:
    """Margins that line both history charts' plots up: room for the module names left, for the rank map's colour
    bar right (the renderer adds it to the heatmap's margin; the σ chart leaves the same room empty)."""
    from .svg import COLORBAR

    return {"l": int(min(text_px(short_names(modules)) + 42, 380)), "r": 20 + (0 if colorbar else COLORBAR),
            "t": 50, "b": 40}


def rank_map_spec(ranks: RankMap) -> dict:
    """Heatmap module × step of a rank measure (the recorded steps on a regular step axis, shared with the σ
    chart of :func:`values_over_steps_spec`)."""
    z = np.asarray(ranks.ranks, dtype=float).reshape(len(ranks.modules), -1)
    grid, index = step_grid(list(ranks.steps))
    whole = ranks.label != "effective rank"  # a rank for a share of the energy is a whole number
    heat = {"type": "heatmap", "z": z[:, index] if z.size else z, "x": grid.tolist(),
            "y": short_names(ranks.modules), "colorscale": "Viridis",
            "colorbar": {"title": {"text": "rank"}},
            "hovertemplate": "%{y}<br>step %{x}: %{z:" + (".0f" if whole else ".2f") + "}<extra></extra>"}
    layout = panel_layout(f"{ranks.label} of ΔW over the run", None, "module", _rows_height(len(ranks.modules)),
                          xaxis=step_axis(list(ranks.steps)), yaxis={"type": "category", "autorange": "reversed"},
                          margin=history_margin(ranks.modules, True), meta={"note": RANK_NOTE})
    return {"data": [heat], "layout": layout}


def values_over_steps_spec(steps: list[int], values: np.ndarray, module: str,
                           modules: list[str] | None = None) -> dict:
    """σ₁…σᵣ of one module (``values``: steps × r) as lines over the recorded steps, dark (σ₁) to light (σᵣ);
    with ``modules`` (the rank map's rows) its plot lines up with the rank map's, step for step."""
    values = np.asarray(values, dtype=float)
    r = values.shape[1] if values.ndim == 2 else 0
    ramp = palette("Viridis", max(r, 2))[: max(r, 1)] if r else []
    lines = [{"type": "scatter", "x": list(steps), "y": values[:, i], "mode": "lines", "name": f"σ{i + 1}",
              "line": {"color": "rgb({},{},{})".format(*ramp[int(i * (len(ramp) - 1) / max(r - 1, 1))])},
              "hovertemplate": f"σ{i + 1} at step %{{x}}: %{{y:.4g}}<extra></extra>"} for i in range(r)]
    more = {"margin": history_margin(modules, False)} if modules else {}
    layout = panel_layout(f"{module}: singular values of ΔW over the run", None, "singular value σ", 320,
                          xaxis=step_axis(list(steps)), **more,
                          meta={"note": "σ₁ (darkest) is ΔW's largest singular value: how far it stretches its main "
                                        "direction; lighter lines are the smaller ones."})
    return {"data": lines, "layout": layout}


def interference_spec(result: Any) -> dict:
    """Heatmap module × adapter pair of cos(ΔWᵢ, ΔWⱼ) (−1 … 1), with the mean φ in the hover text."""
    modules, pairs = list(result), result.pairs
    heat = {"type": "heatmap", "z": [[float(result[m][p]) for p in pairs] for m in modules],
            "x": [result.pair_label(p) for p in pairs], "y": short_names(modules),
            "customdata": [[result.phi[m][p] for p in pairs] for m in modules], "zmin": -1, "zmax": 1,
            "colorscale": "RdBu", "reversescale": True, "colorbar": {"title": {"text": "cos ΔW"}},
            "hovertemplate": "%{y}, %{x}<br>cos ΔW = %{z:.3f}<br>mean φ = %{customdata:.3f}<extra></extra>"}
    layout = panel_layout("overlap of adapters per module: cosine between their updates", "pair", "module",
                          _rows_height(len(modules)), xaxis={"type": "category"},
                          yaxis={"type": "category", "autorange": "reversed"})
    return {"data": [heat], "layout": layout}


def intruder_curve_spec(measured: dict[str, dict[float, float]], scale: float) -> dict:
    """Each metric against the intruder scale λ (points measured so far), with the current λ as a dotted line."""
    data = []
    for label, points in measured.items():
        xs = sorted(points)
        data.append({"type": "scatter", "x": xs, "y": [points[x] for x in xs], "mode": "lines+markers",
                     "name": label, "hovertemplate": f"{label} at λ=%{{x:.2f}}: %{{y:.4g}}<extra></extra>"})
    values = [v for points in measured.values() for v in points.values() if np.isfinite(v)]
    if values:
        data.append({"type": "scatter", "x": [scale, scale], "y": [min(values), max(values)], "mode": "lines",
                     "name": f"λ = {scale:.2f}", "showlegend": False, "line": {"dash": "dot", "color": "gray",
                                                                               "width": 1},
                     "hovertemplate": f"λ = {scale:.2f}<extra></extra>"})
    layout = panel_layout("metrics as intruder dimensions are scaled (λ = 1: the trained adapter)",
                          "intruder scale λ", "metric", 340, xaxis={"range": [-0.02, 1.02]})
    return {"data": data, "layout": layout}


def directions_spec(directions: Any) -> dict:
    """Per layer: subspace overlap of LoRA's and full FT's updates (both sides), and LoRA's factors vs ∇ at step 0.

    A random subspace's overlap on each side is drawn as markers: what "no shared direction" looks like.
    """
    from ..core.analysis.shortrun.directions import overlap

    layers = list(directions.values())
    short = short_names(list(directions))
    series = [("output side: LoRA vs full FT", [overlap(d.left) for d in layers]),
              ("input side: LoRA vs full FT", [overlap(d.right) for d in layers]),
              ("A₀ (init) vs top ∇ directions", [d.grad_a0 for d in layers]),
              ("trained B vs top ∇ directions", [d.grad_b for d in layers])]
    data = [{"type": "bar", "x": short, "y": ys, "name": label,
             "hovertemplate": "%{x}: %{y:.3f}<extra>" + label + "</extra>"}
            for label, ys in series if any(y is not None for y in ys)]
    for side, color in (("left", "black"), ("right", "gray")):
        label = f"a random subspace ({'output' if side == 'left' else 'input'} side)"
        data.append({"type": "scatter", "x": short, "y": [getattr(d, f"random_{side}") for d in layers],
                     "mode": "markers", "marker": {"color": color, "size": 8}, "name": label,
                     "hovertemplate": "%{x}: %{y:.3f}<extra>" + label + "</extra>"})
    layout = panel_layout("which directions LoRA and full fine-tuning move each layer in (mean cos²)", None,
                          "overlap (1 = same subspace)", 360, barmode="group", xaxis={"type": "category"},
                          yaxis={"range": [0, 1.05]})
    return {"data": data, "layout": layout}


def advice_spec(advice: Any) -> dict:
    """Per module (one row each): the adapter's rank now and the rank that holds the asked share of ΔW's energy."""
    names = short_names(list(advice))
    advised = f"advised ({advice.energy:.0%} energy)"
    data = [{"type": "bar", "orientation": "h", "y": names, "x": [a.r for a in advice.values()], "name": "r now",
             "hovertemplate": "%{y}: r = %{x}<extra></extra>"},
            {"type": "bar", "orientation": "h", "y": names, "x": [a.rank for a in advice.values()], "name": advised,
             "hovertemplate": "%{y}: advised rank %{x}<extra></extra>"}]
    title = (f"rank advice: global r={advice.global_r}, pattern saves "
             f"{advice.params('now') - advice.params('pattern'):,} parameters")
    note = (f"rank for {advice.energy:.0%} energy: how many of ΔW's largest singular values hold {advice.energy:.0%} "
            "of ‖ΔW‖². Apply it to a new adapter with: %lora attach model --name lean --rank-pattern advised")
    return {"data": data, "layout": panel_layout(title, "rank (directions)", None, max(260, 18 * len(names) + 110),
                                                 barmode="group", xaxis={"tickformat": "d", "rangemode": "tozero"},
                                                 yaxis={"type": "category", "autorange": "reversed"},
                                                 legend={"orientation": "h", "y": 1.02, "x": 0}, meta={"note": note})}


def rank_map_figure(ranks: RankMap) -> Any:
    """``go.Figure`` of :func:`rank_map_spec`."""
    return figure(rank_map_spec(ranks))


def values_over_steps_figure(steps: list[int], values: np.ndarray, module: str,
                             modules: list[str] | None = None) -> Any:
    """``go.Figure`` of :func:`values_over_steps_spec`."""
    return figure(values_over_steps_spec(steps, values, module, modules))


def interference_figure(result: Any) -> Any:
    """``go.Figure`` of :func:`interference_spec`."""
    return figure(interference_spec(result))


def intruder_curve_figure(measured: dict[str, dict[float, float]], scale: float) -> Any:
    """``go.Figure`` of :func:`intruder_curve_spec`."""
    return figure(intruder_curve_spec(measured, scale))


def directions_figure(directions: Any) -> Any:
    """``go.Figure`` of :func:`directions_spec`."""
    return figure(directions_spec(directions))


def advice_figure(advice: Any) -> Any:
    """``go.Figure`` of :func:`advice_spec`."""
    return figure(advice_spec(advice))
