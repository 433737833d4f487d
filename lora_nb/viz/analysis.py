"""Figures of how LoRA learns: ranks over a run, rank advice, directions vs full FT, interference, intruders."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..core.analysis.history import RankMap
from .spectra import short_names


def rank_map_figure(ranks: RankMap) -> go.Figure:
    """Heatmap module × recorded step of a rank measure."""
    fig = go.Figure(go.Heatmap(
        z=ranks.ranks, x=ranks.steps, y=short_names(ranks.modules), colorscale="Viridis", colorbar=dict(title="rank"),
        hovertemplate="%{y}<br>step %{x}: %{z:.2f}<extra></extra>"))
    fig.update_layout(title=f"{ranks.label} of ΔW over the run", xaxis_title="step", yaxis_title="module",
                      height=max(260, 24 * len(ranks.modules) + 120), margin=dict(t=50, b=40))
    return fig


def values_over_steps_figure(steps: list[int], values: np.ndarray, module: str) -> go.Figure:
    """σ₁…σᵣ of one module (``values``: steps × r) as lines over the recorded steps."""
    fig = go.Figure([go.Scatter(x=steps, y=values[:, i], mode="lines", name=f"σ{i + 1}",
                                hovertemplate=f"σ{i + 1} at step %{{x}}: %{{y:.4g}}<extra></extra>")
                     for i in range(values.shape[1])])
    fig.update_layout(title=f"{module}: singular values of ΔW over the run", xaxis_title="step",
                      yaxis_title="singular value", height=340, margin=dict(t=50, b=40))
    return fig


def interference_figure(result) -> go.Figure:
    """Heatmap module × adapter pair of cos(ΔWᵢ, ΔWⱼ) (−1 … 1), with the mean φ in the hover text."""
    modules, pairs = list(result), result.pairs
    z = [[float(result[m][p]) for p in pairs] for m in modules]
    phis = [[result.phi[m][p] for p in pairs] for m in modules]
    fig = go.Figure(go.Heatmap(
        z=z, x=[result.pair_label(p) for p in pairs], y=short_names(modules), customdata=phis, zmin=-1, zmax=1,
        colorscale="RdBu", reversescale=True, colorbar=dict(title="cos ΔW"),
        hovertemplate="%{y}, %{x}<br>cos ΔW = %{z:.3f}<br>mean φ = %{customdata:.3f}<extra></extra>"))
    fig.update_layout(title="overlap of adapters per module: cosine between their updates", xaxis_title="pair",
                      yaxis_title="module", height=max(260, 24 * len(modules) + 120), margin=dict(t=50, b=40))
    return fig


def intruder_curve_figure(measured: dict[str, dict[float, float]], scale: float) -> go.Figure:
    """Each metric against the intruder scale λ (points measured so far), with the current λ marked."""
    fig = go.Figure()
    for label, points in measured.items():
        xs = sorted(points)
        fig.add_trace(go.Scatter(x=xs, y=[points[x] for x in xs], mode="lines+markers", name=label,
                                 hovertemplate=f"{label} at λ=%{{x:.2f}}: %{{y:.4g}}<extra></extra>"))
    fig.add_vline(x=scale, line_dash="dot", line_color="gray")
    fig.update_layout(title="metrics as intruder dimensions are scaled (λ = 1: the trained adapter)",
                      xaxis_title="intruder scale λ", yaxis_title="metric", xaxis_range=[-0.02, 1.02], height=340,
                      margin=dict(t=50, b=40))
    return fig


def directions_figure(directions) -> go.Figure:
    """Per layer: subspace overlap of LoRA's and full FT's updates (both sides), and LoRA's factors vs ∇ at step 0."""
    from ..core.analysis.directions import overlap

    names = list(directions)
    short = short_names(names)
    series = [("output side: LoRA vs full FT", [overlap(d.left) for d in directions.values()]),
              ("input side: LoRA vs full FT", [overlap(d.right) for d in directions.values()]),
              ("A₀ (init) vs top ∇ directions", [d.grad_a0 for d in directions.values()]),
              ("trained B vs top ∇ directions", [d.grad_b for d in directions.values()])]
    fig = go.Figure([go.Bar(x=short, y=ys, name=label, hovertemplate="%{x}: %{y:.3f}<extra>" + label + "</extra>")
                     for label, ys in series if any(y is not None for y in ys)])
    for side, color in (("left", "black"), ("right", "gray")):
        fig.add_trace(go.Scatter(x=short, y=[getattr(d, f"random_{side}") for d in directions.values()],
                                 mode="markers", marker=dict(symbol="line-ew-open", size=24, color=color),
                                 name=f"a random subspace ({'output' if side == 'left' else 'input'} side)"))
    fig.update_layout(title="which directions LoRA and full fine-tuning move each layer in (mean cos²)",
                      barmode="group", yaxis_title="overlap (1 = same subspace)", yaxis_range=[0, 1.05], height=360,
                      margin=dict(t=50, b=40))
    return fig


def advice_figure(advice) -> go.Figure:
    """Per module: the adapter's rank now and the rank that holds the asked share of ΔW's energy."""
    names = short_names(list(advice))
    advised = f"advised ({advice.energy:.0%} energy)"
    fig = go.Figure([go.Bar(x=names, y=[a.r for a in advice.values()], name="r now"),
                     go.Bar(x=names, y=[a.rank for a in advice.values()], name=advised)])
    fig.update_layout(title=f"rank advice: global r={advice.global_r}, pattern saves "
                            f"{advice.params('now') - advice.params('pattern'):,} parameters",
                      barmode="group", yaxis_title="rank", height=340, margin=dict(t=50, b=40))
    return fig
