"""Figures of singular-value spectra and subspace similarity (data in, spec / ``go.Figure`` out)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.analysis.learned.spectra import Similarity, Spectra
from . import figure, panel_layout


def short_names(names: list[str]) -> list[str]:
    """Module names a chart can print: without the prefix they all share, and without the words most of them repeat
    where the names stay apart (``bert.encoder.layer.0.attention.self.query`` → ``0.attention.query``)."""
    if len(names) < 2:
        return names
    prefix = names[0]
    for n in names[1:]:
        while not n.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix[: prefix.rfind(".") + 1]
    parts = [(n[len(prefix):] or n).split(".") for n in names]
    counts: dict[str, int] = {}
    for p in parts:
        for word in set(p[:-1]):
            counts[word] = counts.get(word, 0) + 1
    for word in sorted(counts, key=lambda w: -counts[w]):
        if word.isdigit() or 2 * counts[word] < len(names):
            continue
        shorter = [[w for w in p if w != word] if word in p[:-1] else p for p in parts]
        if len({".".join(p) for p in shorter}) == len(names):
            parts = shorter
    return [".".join(p) for p in parts]


RANK_NOTE = ("effective rank: how many directions ΔW really uses (the exponential of the entropy of its normalised "
             "singular values); stable rank: ‖ΔW‖² / σ₁² (all squared singular values summed, over the largest "
             "one squared), small when one direction dominates; "
             "min(r, out, in): the most directions this adapter can have.")


def spectrum_title(result: Spectra, name: str) -> str:
    st = result.stats[name]
    out, inp, r = result.shapes[name]
    return (f"{name} — ΔW {out}×{inp}, r={r}: effective rank {st.effective_rank:.2f}, "
            f"stable rank {st.stable_rank:.2f}")


def spectrum_spec(result: Spectra, name: str) -> dict:
    """Bars of ΔW's singular values for module ``name``, with its effective and stable rank (a log axis when they
    span more than two decades)."""
    values = np.asarray(result[name], dtype=float)
    bars = {"type": "bar", "x": list(range(1, len(values) + 1)), "y": values, "name": "σᵢ(ΔW)",
            "hovertemplate": "σ%{x} = %{y:.4g}<extra></extra>"}
    axis = {"tickformat": "d", **({"dtick": 1} if len(values) <= 16 else {})}  # whole indices only
    positive = values[values > 0]
    log = positive.size > 1 and positive.max() > 100 * positive.min()
    layout = panel_layout(spectrum_title(result, name), "index i", "singular value σᵢ", 340, xaxis=axis,
                          yaxis={"type": "log"} if log else {})
    layout["meta"] = {"note": "σᵢ: how far ΔW stretches its i-th direction. " + RANK_NOTE}
    if log:
        bars["y"] = _positive(values)
    return {"data": [bars], "layout": layout}


def _positive(values: np.ndarray) -> list[float | None]:
    return [float(v) if v > 0 else None for v in values]  # a log axis cannot show zeros


def base_spectrum_spec(result: Spectra, name: str) -> dict:
    """W vs W+ΔW singular values of module ``name`` on a log scale (ΔW's own values as markers)."""
    if result.base is None or name not in result.base:
        raise ValueError("this result has no base spectra; compute it with spectra(..., base=True)")
    b = result.base[name]
    x = list(range(1, len(b.w) + 1))
    data = [{"type": "scatter", "x": x, "y": _positive(b.w), "mode": "lines", "name": "W"},
            {"type": "scatter", "x": x, "y": _positive(b.w_delta), "mode": "lines", "name": "W+ΔW"},
            {"type": "scatter", "x": list(range(1, len(result[name]) + 1)), "y": _positive(result[name]),
             "mode": "markers", "name": "ΔW"}]
    kind = "" if b.exact else f" (top {len(b.w)}, randomized SVD)"
    return {"data": data, "layout": panel_layout(f"{name} — singular values of W and W+ΔW{kind}", "index i", "σᵢ", 340,
                                           yaxis={"type": "log"}, xaxis={"tickformat": "d"})}


def effective_rank_spec(result: Spectra, selected: str | None = None) -> dict:
    """Effective rank and stable rank of ΔW per module (one row each, the ``selected`` one outlined), against the
    most it can be, min(r, out, in)."""
    names = list(result)
    labels = short_names(names)
    hover = "%{customdata}: %{x:.2f}<extra></extra>"
    outline = {"line": {"color": "#111", "width": [2 if n == selected else 0 for n in names]}}
    data = [
        {"type": "bar", "orientation": "h", "y": labels, "x": [result.stats[n].effective_rank for n in names],
         "name": "effective rank", "customdata": names, "hovertemplate": hover, "marker": outline},
        {"type": "bar", "orientation": "h", "y": labels, "x": [result.stats[n].stable_rank for n in names],
         "name": "stable rank", "customdata": names, "hovertemplate": hover, "marker": outline},
        {"type": "scatter", "y": labels, "x": [min(result.shapes[n]) for n in names], "mode": "markers",
         "name": "min(r, out, in)", "marker": {"symbol": "diamond", "color": "#444", "size": 8}},
    ]
    title = f"adapter “{result.adapter}”: how many directions ΔW uses"
    if selected in names:
        title += f" (outlined: {labels[names.index(selected)]})"
    layout = panel_layout(title, "rank (directions)", None, max(300, 18 * len(names) + 130), barmode="group",
                          xaxis={"tickformat": "d", "rangemode": "tozero"},
                          yaxis={"type": "category", "autorange": "reversed"},
                          legend={"orientation": "h", "y": 1.02, "x": 0}, meta={"note": RANK_NOTE})
    return {"data": data, "layout": layout}


def similarity_spec(sim: Similarity, name: str) -> dict:
    """Heatmap of φ(i, j) for module ``name`` (1 = the top-i and top-j subspaces coincide)."""
    p = np.asarray(sim[name], dtype=float)
    heat = {"type": "heatmap", "z": p, "x": list(range(1, p.shape[1] + 1)), "y": list(range(1, p.shape[0] + 1)),
            "zmin": 0.0, "zmax": 1.0, "colorscale": "Viridis", "colorbar": {"title": {"text": "φ"}},
            "hovertemplate": "i=%{y}, j=%{x}: φ=%{z:.3f}<extra></extra>"}
    return {"data": [heat], "layout": panel_layout(f"{name} — φ(i, j) between “{sim.a}” and “{sim.b}”",
                                             f"j (top-j directions of “{sim.b}”)", f"i (top-i of “{sim.a}”)", 400)}


def spectrum_figure(result: Spectra, name: str) -> Any:
    """``go.Figure`` of :func:`spectrum_spec`."""
    return figure(spectrum_spec(result, name))


def base_spectrum_figure(result: Spectra, name: str) -> Any:
    """``go.Figure`` of :func:`base_spectrum_spec`."""
    return figure(base_spectrum_spec(result, name))


def effective_rank_figure(result: Spectra, selected: str | None = None) -> Any:
    """``go.Figure`` of :func:`effective_rank_spec`."""
    return figure(effective_rank_spec(result, selected))


def similarity_figure(sim: Similarity, name: str) -> Any:
    """``go.Figure`` of :func:`similarity_spec`."""
    return figure(similarity_spec(sim, name))
