"""Figures of a LoRA-vs-full-fine-tuning comparison: both loss curves overlaid, and the data-size sweep.

``curves_figure()`` is the empty layout the live view fills in place (one trace per entry of
``CURVES``, in that order); ``result_curves_figure(result)`` draws both arms' whole histories
(decimated); ``sweep_figure(result)`` plots eval loss, generalization gap and (classifiers)
accuracy against the training-set size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..core.training.reporting import Ema
from .training import SMOOTHING, decimate

LABELS = {"lora": "LoRA", "full": "full fine-tuning"}
COLORS = {"lora": (31, 119, 180), "full": (255, 127, 14)}


class Curve(NamedTuple):
    arm: str  # "lora" | "full"
    kind: str  # "loss" (raw) | "smoothed" | "eval"


CURVES = tuple(Curve(arm, kind) for kind in ("loss", "smoothed", "eval") for arm in ("lora", "full"))


def _style(curve: Curve) -> dict:
    r, g, b = COLORS[curve.arm]
    label = LABELS[curve.arm]
    if curve.kind == "loss":
        return dict(name=f"{label} train loss", mode="lines", line=dict(color=f"rgba({r},{g},{b},0.25)", width=1),
                    showlegend=False, hoverinfo="skip")
    if curve.kind == "smoothed":
        return dict(name=f"{label} train loss (smoothed)", mode="lines", line=dict(color=f"rgb({r},{g},{b})", width=2))
    return dict(name=f"{label} eval loss", mode="lines+markers",
                line=dict(color=f"rgb({r},{g},{b})", width=2, dash="dash"))


def curves_figure(title: str | None = None) -> go.Figure:
    """Empty overlaid-curves layout: loss against optimizer step, one trace per ``CURVES`` entry."""
    fig = go.Figure([go.Scatter(x=[], y=[], **_style(c)) for c in CURVES])
    fig.update_layout(height=360, title=title or "LoRA vs full fine-tuning: loss", xaxis_title="step",
                      yaxis_title="loss", margin=dict(l=50, r=20, t=50, b=40),
                      legend=dict(orientation="h", y=-0.2, x=0))
    return fig


def curve_values(history: Sequence[dict], evals: Sequence[dict]) -> dict[str, tuple[list, list]]:
    """``{kind: (steps, values)}`` of one arm's history."""
    steps = [r["step"] for r in history]
    ema = Ema(SMOOTHING)
    return {"loss": (steps, [r["loss"] for r in history]),
            "smoothed": (steps, [ema.add(r["loss"]) for r in history]),
            "eval": ([e["step"] for e in evals], [e["eval_loss"] for e in evals])}


def result_curves_figure(result: Any, max_points: int = 2000) -> go.Figure:
    """Both arms' whole loss histories (``result``: a ``VsFullResult``), at most ``max_points`` per trace."""
    fig = curves_figure(f"loss: {result.headline()}" if len(result.headline()) < 90 else None)
    values = {arm: curve_values(a.history, a.evals) for arm, a in (("lora", result.lora), ("full", result.full))}
    for i, curve in enumerate(CURVES):
        xs, ys = decimate(*values[curve.arm][curve.kind], max_points)
        fig.data[i].x, fig.data[i].y = xs, ys
    return fig


def sweep_figure(result: Any) -> go.Figure:
    """Eval loss, generalization gap (eval − train) and accuracy (if measured) against training-set size."""
    sizes = result.sizes
    accuracy = bool(sizes) and result.sweep_arm("lora", sizes[0]).eval_accuracy is not None
    panels = ["eval loss", "generalization gap (eval − train loss)"] + (["eval accuracy"] if accuracy else [])
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=panels, horizontal_spacing=0.08)
    for arm in ("lora", "full"):
        arms = [result.sweep_arm(arm, n) for n in sizes]
        r, g, b = COLORS[arm]
        values = [[a.eval_loss for a in arms], [a.gap for a in arms]]
        if accuracy:
            values.append([a.eval_accuracy for a in arms])
        for col, ys in enumerate(values, 1):
            fig.add_trace(go.Scatter(x=sizes, y=ys, mode="lines+markers", name=LABELS[arm], legendgroup=arm,
                                     showlegend=col == 1, line=dict(color=f"rgb({r},{g},{b})", width=2)),
                          row=1, col=col)
    fig.update_xaxes(type="log", title_text="training examples", tickvals=sizes)
    if accuracy:
        fig.update_yaxes(tickformat=".0%", row=1, col=3)
    fig.update_layout(height=340, title=f"data-size sweep: {result.settings['lora'].steps} steps per run",
                      margin=dict(l=50, r=20, t=70, b=50), legend=dict(orientation="h", y=-0.28, x=0))
    return fig
