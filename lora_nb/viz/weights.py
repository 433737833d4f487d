"""Figures of adapter weights: the layer × module-type norm map, A/B/ΔW heatmaps, histograms (specs and figures)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.analysis.learned.weights import ModuleMatrices, NormMap, WeightSummary
from . import figure, panel_layout

VALUE_LABELS = {"delta_norm": "‖ΔW‖", "ratio": "‖ΔW‖ / ‖W‖", "a_norm": "‖A‖", "b_norm": "‖B‖"}
NORM_NOTE = ("‖·‖ is the Frobenius norm: the square root of the sum of a matrix's squared entries, so ‖ΔW‖ says "
             "how much the adapter changes that module's weights overall.")


def norm_z(nm: NormMap) -> list[list[float | None]]:
    """The norm map's values for a heatmap (empty cells as gaps)."""
    return [[None if np.isnan(v) else float(v) for v in row] for row in nm.z]


def diverging_range(m: np.ndarray) -> tuple[float | None, float | None]:
    """A colour range symmetric about zero (automatic for an all-zero matrix)."""
    bound = float(np.abs(m).max()) if m.size else 0.0
    return (-bound, bound) if bound > 0 else (None, None)


def value_histogram(values: np.ndarray, bins: int = 60) -> tuple[np.ndarray, np.ndarray, float]:
    """``(bin centres, counts, bin width)``: a histogram sent as 60 bars, not as every value."""
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return (edges[:-1] + edges[1:]) / 2, counts, float(edges[1] - edges[0])


def norm_map_spec(summary: WeightSummary, value: str = "delta_norm") -> dict:
    """Heatmap of ``value`` per layer (rows) and module type (columns); hover names the module."""
    nm = summary.norm_map(value)
    label = VALUE_LABELS.get(value, value)
    heat = {"type": "heatmap", "z": norm_z(nm), "x": list(nm.cols), "y": list(nm.rows), "customdata": nm.names,
            "colorscale": "Viridis", "colorbar": {"title": {"text": label}},
            "hovertemplate": "%{customdata}<br>" + label + " = %{z:.4g}<extra></extra>"}
    return {"data": [heat], "layout": panel_layout(
        f"adapter “{summary.adapter}”: {label} per layer and module", "module", "layer",
        max(260, 60 + 22 * len(nm.rows)), xaxis={"type": "category"},
        yaxis={"type": "category", "autorange": "reversed"}, meta={"note": NORM_NOTE})}


def block_centres(cells: int, size: int) -> list[float]:
    """Where each of ``cells`` block averages of ``size`` rows (or columns) sits on the matrix's own index axis."""
    block = size / max(cells, 1)
    return [(i + 0.5) * block - 0.5 for i in range(cells)]


def matrix_spec(m: np.ndarray, title: str, x_title: str, y_title: str, shape: tuple[int, int] | None = None) -> dict:
    """A diverging heatmap of matrix ``m`` centred on zero; ``shape``: the full matrix's, when ``m`` holds its
    block averages (the axes then count the full matrix's rows and columns)."""
    lo, hi = diverging_range(m)
    m = np.asarray(m, dtype=float)
    rows, cols = shape or m.shape
    heat = {"type": "heatmap", "z": m, "colorscale": "RdBu", "zmid": 0.0, "zmin": lo, "zmax": hi,
            "x": block_centres(m.shape[1], cols), "y": block_centres(m.shape[0], rows),
            "hovertemplate": "row %{y:.0f}, col %{x:.0f}: %{z:.4g}<extra></extra>"}
    return {"data": [heat], "layout": panel_layout(title, x_title, y_title, 320, yaxis={"autorange": "reversed"},
                                                   xaxis={"tickformat": "d"})}


def module_specs(mm: ModuleMatrices) -> dict[str, dict]:
    """``{"A", "B", "ΔW"}`` heatmaps of one module (block averages when pooled)."""
    out, inp = mm.shape
    note = f", block-averaged to {mm.delta.shape[0]}×{mm.delta.shape[1]}" if mm.pooled else ""
    return {
        "A": matrix_spec(mm.A, f"A ({mm.r}×{inp}{' pooled' if mm.A.shape[1] < inp else ''})", "input", "rank",
                         (mm.r, inp)),
        "B": matrix_spec(mm.B, f"B ({out}×{mm.r}{' pooled' if mm.B.shape[0] < out else ''})", "rank", "output",
                         (out, mm.r)),
        "ΔW": matrix_spec(mm.delta, f"ΔW = s·B·A ({out}×{inp}{note})", "input", "output", (out, inp)),
    }


def histogram_spec(mm: ModuleMatrices) -> dict:
    """Overlaid histograms of the entries of A and B (all zeros in B: the adapter has not learned)."""
    traces = []
    for label, values in (("A", mm.a_values), ("B", mm.b_values)):
        x, counts, width = value_histogram(values)
        traces.append({"type": "bar", "x": x, "y": counts, "width": width, "name": label, "opacity": 0.6})
    return {"data": traces, "layout": panel_layout(f"{mm.name} — values of A and B", "value", "count", 300,
                                             barmode="overlay")}


def norm_map_figure(summary: WeightSummary, value: str = "delta_norm") -> Any:
    """``go.Figure`` of :func:`norm_map_spec`."""
    return figure(norm_map_spec(summary, value))


def matrix_figure(m: np.ndarray, title: str, x_title: str, y_title: str, shape: tuple[int, int] | None = None) -> Any:
    """``go.Figure`` of :func:`matrix_spec`."""
    return figure(matrix_spec(m, title, x_title, y_title, shape))


def module_figures(mm: ModuleMatrices) -> dict[str, Any]:
    """``go.Figure``s of :func:`module_specs`."""
    return {k: figure(v) for k, v in module_specs(mm).items()}


def histogram_figure(mm: ModuleMatrices) -> Any:
    """``go.Figure`` of :func:`histogram_spec`."""
    return figure(histogram_spec(mm))
