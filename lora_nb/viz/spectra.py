"""Figures of singular-value spectra and subspace similarity (data in, ``go.Figure`` out)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..core.analysis.spectra import Similarity, Spectra


def short_names(names: list[str]) -> list[str]:
    """Module names without the prefix they all share (``model.layers.`` → ``0.self_attn.q_proj``)."""
    if len(names) < 2:
        return names
    prefix = names[0]
    for n in names[1:]:
        while not n.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix[: prefix.rfind(".") + 1]
    return [n[len(prefix):] or n for n in names]


def spectrum_title(result: Spectra, name: str) -> str:
    st = result.stats[name]
    out, inp, r = result.shapes[name]
    return (f"{name} — ΔW {out}×{inp}, r={r}: effective rank {st.effective_rank:.2f}, "
            f"stable rank {st.stable_rank:.2f}")


def spectrum_figure(result: Spectra, name: str) -> go.Figure:
    """Bars of ΔW's singular values for module ``name``, with its effective and stable rank."""
    values = result[name]
    fig = go.Figure(go.Bar(x=np.arange(1, len(values) + 1), y=values, name="σᵢ(ΔW)",
                           hovertemplate="σ%{x} = %{y:.4g}<extra></extra>"))
    fig.update_layout(
        title=spectrum_title(result, name),
        xaxis_title="index i", yaxis_title="singular value σᵢ", height=340, margin=dict(t=50, b=40),
        xaxis=dict(tickformat="d", dtick=1 if len(values) <= 16 else None),  # whole indices only
    )
    return fig


def _positive(values: np.ndarray) -> list[float | None]:
    return [float(v) if v > 0 else None for v in values]  # a log axis cannot show zeros


def base_spectrum_figure(result: Spectra, name: str) -> go.Figure:
    """W vs W+ΔW singular values of module ``name`` on a log scale (ΔW's own values as markers)."""
    if result.base is None or name not in result.base:
        raise ValueError("this result has no base spectra; compute it with spectra(..., base=True)")
    b = result.base[name]
    x = np.arange(1, len(b.w) + 1)
    fig = go.Figure([
        go.Scatter(x=x, y=_positive(b.w), mode="lines", name="W"),
        go.Scatter(x=x, y=_positive(b.w_delta), mode="lines", name="W+ΔW"),
        go.Scatter(x=np.arange(1, len(result[name]) + 1), y=_positive(result[name]), mode="markers", name="ΔW"),
    ])
    kind = "" if b.exact else f" (top {len(b.w)}, randomized SVD)"
    fig.update_layout(title=f"{name} — singular values of W and W+ΔW{kind}", xaxis_title="index i",
                      yaxis_title="σᵢ", yaxis_type="log", height=340, margin=dict(t=50, b=40))
    return fig


def effective_rank_figure(result: Spectra) -> go.Figure:
    """Effective rank and stable rank of ΔW per module, against the adapter rank r."""
    names = list(result)
    labels = short_names(names)
    fig = go.Figure([
        go.Bar(x=labels, y=[result.stats[n].effective_rank for n in names], name="effective rank",
               customdata=names, hovertemplate="%{customdata}: %{y:.2f}<extra></extra>"),
        go.Bar(x=labels, y=[result.stats[n].stable_rank for n in names], name="stable rank",
               customdata=names, hovertemplate="%{customdata}: %{y:.2f}<extra></extra>"),
        go.Scatter(x=labels, y=[min(result.shapes[n]) for n in names], mode="lines", name="min(r, out, in)",
                   line=dict(dash="dot")),
    ])
    fig.update_layout(title=f"adapter `{result.adapter}`: how many directions ΔW uses", barmode="group",
                      yaxis_title="rank", height=360, margin=dict(t=50, b=40))
    return fig


def similarity_figure(sim: Similarity, name: str) -> go.Figure:
    """Heatmap of φ(i, j) for module ``name`` (1 = the top-i and top-j subspaces coincide)."""
    p = sim[name]
    fig = go.Figure(go.Heatmap(
        z=p, x=np.arange(1, p.shape[1] + 1), y=np.arange(1, p.shape[0] + 1), zmin=0.0, zmax=1.0,
        colorscale="Viridis", colorbar=dict(title="φ"), hovertemplate="i=%{y}, j=%{x}: φ=%{z:.3f}<extra></extra>",
    ))
    fig.update_layout(title=f"{name} — φ(i, j) between `{sim.a}` and `{sim.b}`",
                      xaxis_title=f"j (top-j directions of `{sim.b}`)", yaxis_title=f"i (top-i of `{sim.a}`)",
                      height=400, margin=dict(t=50, b=40))
    return fig
