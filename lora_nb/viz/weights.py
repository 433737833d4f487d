"""Figures of adapter weights: the layer × module-type norm map, A/B/ΔW heatmaps, histograms."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..core.analysis.weights import ModuleMatrices, NormMap, WeightSummary

VALUE_LABELS = {"delta_norm": "‖ΔW‖_F", "ratio": "‖ΔW‖_F / ‖W‖_F", "a_norm": "‖A‖_F", "b_norm": "‖B‖_F"}


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


def norm_map_figure(summary: WeightSummary, value: str = "delta_norm") -> go.Figure:
    """Heatmap of ``value`` per layer (rows) and module type (columns); hover names the module."""
    nm = summary.norm_map(value)
    label = VALUE_LABELS.get(value, value)
    fig = go.Figure(go.Heatmap(
        z=norm_z(nm), x=nm.cols, y=nm.rows, customdata=nm.names, colorscale="Viridis", colorbar=dict(title=label),
        hovertemplate="%{customdata}<br>" + label + " = %{z:.4g}<extra></extra>",
    ))
    fig.update_layout(title=f"adapter `{summary.adapter}`: {label} per layer and module",
                      xaxis_title="module", yaxis_title="layer", yaxis_autorange="reversed",
                      xaxis_type="category", yaxis_type="category",
                      height=max(260, 60 + 22 * len(nm.rows)), margin=dict(t=50, b=40))
    return fig


def matrix_figure(m: np.ndarray, title: str, x_title: str, y_title: str) -> go.Figure:
    """A diverging heatmap of matrix ``m`` centred on zero."""
    lo, hi = diverging_range(m)
    fig = go.Figure(go.Heatmap(z=m, colorscale="RdBu", zmid=0.0, zmin=lo, zmax=hi,
                               hovertemplate="row %{y}, col %{x}: %{z:.4g}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, yaxis_autorange="reversed",
                      height=320, margin=dict(t=50, b=40))
    return fig


def module_figures(mm: ModuleMatrices) -> dict[str, go.Figure]:
    """``{"A", "B", "ΔW"}`` heatmaps of one module (block averages when pooled)."""
    out, inp = mm.shape
    note = f", block-averaged to {mm.delta.shape[0]}×{mm.delta.shape[1]}" if mm.pooled else ""
    return {
        "A": matrix_figure(mm.A, f"A ({mm.r}×{inp}{' pooled' if mm.A.shape[1] < inp else ''})", "input", "rank"),
        "B": matrix_figure(mm.B, f"B ({out}×{mm.r}{' pooled' if mm.B.shape[0] < out else ''})", "rank", "output"),
        "ΔW": matrix_figure(mm.delta, f"ΔW = s·B·A ({out}×{inp}{note})", "input", "output"),
    }


def histogram_figure(mm: ModuleMatrices) -> go.Figure:
    """Overlaid histograms of the entries of A and B (all zeros in B: the adapter has not learned)."""
    traces = []
    for label, values in (("A", mm.a_values), ("B", mm.b_values)):
        x, counts, width = value_histogram(values)
        traces.append(go.Bar(x=x, y=counts, width=width, name=label, opacity=0.6))
    fig = go.Figure(traces)
    fig.update_layout(title=f"{mm.name} — values of A and B", barmode="overlay", xaxis_title="value",
                      yaxis_title="count", height=300, margin=dict(t=50, b=40))
    return fig
